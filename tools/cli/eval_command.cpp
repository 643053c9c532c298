// `lintime eval CHECKPOINT_DIR`: test accuracy per segment of a trained MQAR checkpoint.
#include "tools/cli/commands.h"

#include "train/mqar_trainer.h"

#include <cstdio>

namespace lintime::cli {

std::function<int()> add_eval_command(CLI::App& app) {
  auto* command = app.add_subcommand("eval", "Evaluate an MQAR checkpoint on its test segments");
  auto dir = std::make_shared<std::string>();
  auto device = std::make_shared<std::string>("auto");
  command->add_option("CHECKPOINT_DIR", *dir, "A run directory or its checkpoint/ folder")->required();
  command->add_option("--device", *device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  return [dir, device]() {
    auto evaluation = train::evaluate_mqar_checkpoint(*dir, *device);
    std::printf("%-34s %10s\n", "test segment", "accuracy");
    for (size_t i = 0; i < evaluation.segment_accuracy.size(); ++i)
      std::printf("%-34s %9.2f%%\n", evaluation.segment_names[i].c_str(), 100.0 * evaluation.segment_accuracy[i]);
    std::printf("%-34s %9.2f%%\n", "overall", 100.0 * evaluation.accuracy);
    return 0;
  };
}

}  // namespace lintime::cli
