// `lintime forward MODEL_DIR --input-ids IN.safetensors --out OUT.safetensors`: the float32
// logits [B, T, vocab] of the int64 tensor `input_ids` [B, T], for parity checks against other
// implementations. The output is written atomically.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/device.h"
#include "core/error.h"
#include "models/architecture.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>
#include <memory>

namespace lintime::cli {

std::function<int()> add_forward_command(CLI::App& app) {
  auto* command = app.add_subcommand("forward", "Logits of a model folder's causal LM for given token ids");
  auto model_dir = std::make_shared<std::string>();
  auto input = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("float32");
  auto device = std::make_shared<std::string>("auto");
  command->add_option("MODEL_DIR", *model_dir, "Folder with config.json and safetensors weights")->required();
  command->add_option("--input-ids", *input, "safetensors file holding int64 input_ids [B, T]")->required();
  command->add_option("--out", *output, "safetensors file to write float32 logits [B, T, vocab] to")->required()
      ->check(non_empty());
  command->add_option("--dtype", *dtype, "float32, bfloat16 or float16");
  command->add_option("--device", *device, "cpu, cuda or auto");
  return [=]() {
    const at::ScalarType model_dtype = parse_dtype(*dtype);
    const c10::Device model_device = resolve_device(*device);
    io::SafetensorsFile file(*input);
    LINTIME_CHECK(file.contains("input_ids"), "'", *input, "' holds no tensor 'input_ids'");
    const io::TensorInfo& info = file.info("input_ids");
    LINTIME_CHECK(info.dtype == at::kLong && info.shape.size() == 2, "'", *input, "': input_ids is ", info.dtype_name,
                  " with ", info.shape.size(), " dimensions, expected I64 [B, T]");
    const at::Tensor ids = file.get("input_ids");
    auto model = models::load_causal_lm(*model_dir, model_dtype, model_device);
    const int64_t vocab = model->vocab_size();
    if (ids.numel() > 0) {
      const int64_t low = ids.min().item<int64_t>(), high = ids.max().item<int64_t>();
      LINTIME_CHECK(low >= 0 && high < vocab, "'", *input, "': input_ids hold values in [", low, ", ", high,
                    "], expected token ids in [0, ", vocab, ")");
    }
    at::NoGradGuard no_grad;
    const at::Tensor logits = model->forward(ids.to(model_device)).to(at::kCPU, at::kFloat).contiguous();
    io::save_safetensors(*output, {{"logits", logits}});
    std::printf("wrote logits [%lld, %lld, %lld] to %s\n", static_cast<long long>(logits.size(0)),
                static_cast<long long>(logits.size(1)), static_cast<long long>(logits.size(2)), output->c_str());
    return 0;
  };
}

}  // namespace lintime::cli
