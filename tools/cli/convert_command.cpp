// `lintime convert SRC_DIR OUT_DIR --to gsa|gla`: a Llama or Mistral folder into an fla-layout
// GSA or GLA folder to finetune (T2R; models/convert.h says what is copied and what is new).
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "models/convert.h"

#include <cstdio>

namespace lintime::cli {

std::function<int()> add_convert_command(CLI::App& app) {
  auto* command = app.add_subcommand(
      "convert", "Convert a Llama/Mistral folder into a GSA or GLA folder to finetune (Transformer-to-RNN)");
  struct Options {
    std::string source, out;
    models::ConvertOptions convert;
    int64_t seed = 0;
  };
  auto options = std::make_shared<Options>();
  command->add_option("SRC_DIR", options->source, "Hugging Face Llama or Mistral folder")->required();
  command->add_option("OUT_DIR", options->out, "The converted folder (written through OUT_DIR.tmp)")->required();
  command->add_option("--to", options->convert.to, "gsa or gla")->check(CLI::IsMember({"gsa", "gla"}))->required();
  command->add_option("--num-slots", options->convert.num_slots, "GSA: memory slots per head (default 64)")
      ->check(integer_in(1, 1 << 16));
  command->add_option("--gate-logit-normalizer", options->convert.gate_logit_normalizer,
                      "GSA: the forget gate's logit normaliser (default 8, fla's)")
      ->check(positive_real());
  command->add_option("--feature-map", options->convert.feature_map,
                      "On q and k. GSA: swish (default) or relu; GLA: relu (default, the paper's adaptation), "
                      "swish or none (fla's GLA default)")
      ->check(CLI::IsMember({"swish", "relu", "none"}));
  command->add_flag("--gla-output-gate", options->convert.gla_output_gate,
                    "GLA: keep fla's output gate (the paper's adaptation has none)");
  command->add_option("--softmax-layers", options->convert.softmax_layers,
                      "Layers kept as softmax attention (fla's hybrid attn), e.g. 0,12")
      ->delimiter(',')
      ->check(integer_in(0, 1 << 20));
  command->add_option("--seed", options->seed, "Seed of the new parameters' initialisation")->check(integer_in(0, std::numeric_limits<int64_t>::max()));
  command->add_flag("--force", options->convert.force, "Replace an existing OUT_DIR");
  return [options]() {
    options->convert.seed = static_cast<uint64_t>(options->seed);
    const auto report = models::convert_transformer(options->source, options->out, options->convert);
    std::string copied;
    for (const std::string& file : report.tokenizer_files) copied += (copied.empty() ? "; copied " : ", ") + file;
    std::printf("lintime convert: %s -> %s (%s, %s): %lld tensors copied, %lld new, %lld parameters%s\n",
                options->source.c_str(), options->out.c_str(), options->convert.to.c_str(), report.dtype.c_str(),
                static_cast<long long>(report.copied_tensors), static_cast<long long>(report.new_tensors),
                static_cast<long long>(report.parameters), copied.c_str());
    return 0;
  };
}

}  // namespace lintime::cli
