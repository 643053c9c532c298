// `lintime perplexity MODEL_DIR TEXT_FILE [--context N --stride S]`: the perplexity of a model
// folder's causal LM on a text, scored in windows of N tokens that advance by S (each token is
// scored once, with up to N − 1 tokens of context; S = N: disjoint windows), as Hugging Face's
// fixed-length-model recipe does. No BOS is added.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/device.h"
#include "core/error.h"
#include "core/progress.h"
#include "models/architecture.h"
#include "text/tokenizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

namespace lintime::cli {
namespace {

struct PerplexityArgs {
  std::string model_dir, text_file, dtype = "float32", device = "auto";
  int64_t context = 2048, stride = 0;
};

int run_perplexity(const PerplexityArgs& args) {
  LINTIME_CHECK(args.context >= 2, "--context must be >= 2, got ", args.context);
  const int64_t stride = args.stride > 0 ? args.stride : args.context;
  LINTIME_CHECK(stride <= args.context, "--stride must lie in [1, --context = ", args.context, "], got ", stride);
  std::ifstream in(args.text_file, std::ios::binary);
  LINTIME_CHECK(in, "perplexity: cannot open '", args.text_file, "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const at::ScalarType dtype = parse_dtype(args.dtype);
  const c10::Device device = resolve_device(args.device);
  auto tokenizer = text::load_tokenizer(args.model_dir);
  auto model = models::load_causal_lm(args.model_dir, dtype, device);
  std::vector<int64_t> ids;
  try {
    ids = tokenizer->encode(buffer.str());
  } catch (const Error& error) {  // bad UTF-8: say in which file
    fail("perplexity: '", args.text_file, "': ", error.what());
  }
  const int64_t length = static_cast<int64_t>(ids.size());
  LINTIME_CHECK(length >= 2, "perplexity: '", args.text_file, "' encodes to ", length, " tokens, expected at least 2");
  const at::Tensor all = at::tensor(ids, at::kLong);
  LINTIME_CHECK(all.max().item<int64_t>() < model->vocab_size(), "perplexity: the tokenizer gives ids beyond the model's vocabulary of ",
                model->vocab_size());

  at::NoGradGuard no_grad;
  double nll_sum = 0;
  int64_t scored = 0, previous_end = 0, windows = 0;
  const int64_t total_windows = (std::max<int64_t>(length - args.context, 0) + stride - 1) / stride + 1;
  ProgressOptions progress_options;
  progress_options.label = "perplexity";
  progress_options.total = total_windows;
  ProgressReporter progress(progress_options);  // a bar on a terminal, a line now and then in logs
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(begin + args.context, length);
    const int64_t first_target = std::max(previous_end, begin + 1);  // tokens not scored yet
    const at::Tensor window = all.slice(0, begin, end).unsqueeze(0).to(device);
    const at::Tensor log_probs = model->forward(window).squeeze(0).to(at::kCPU, at::kDouble).log_softmax(-1);
    // Token j is predicted by the logits at position j − 1.
    const at::Tensor predicted = log_probs.slice(0, first_target - 1 - begin, end - 1 - begin);
    const at::Tensor targets = all.slice(0, first_target, end).unsqueeze(1);
    nll_sum -= predicted.gather(1, targets).sum().item<double>();
    scored += end - first_target;
    previous_end = end;
    ++windows;
    progress.update(windows, {{"tokens", static_cast<double>(scored)}, {"ppl", std::exp(nll_sum / scored)}});
    if (end == length) break;
  }
  progress.finish();
  std::printf("perplexity %.4f over %lld tokens (%s tokenizer; context %lld, stride %lld; mean NLL %.6f nats)\n",
              std::exp(nll_sum / scored), static_cast<long long>(scored), tokenizer->kind().c_str(),
              static_cast<long long>(args.context), static_cast<long long>(stride), nll_sum / scored);
  return 0;
}

}  // namespace

std::function<int()> add_perplexity_command(CLI::App& app) {
  auto* command = app.add_subcommand("perplexity", "Perplexity of a model folder's causal LM on a text file");
  auto args = std::make_shared<PerplexityArgs>();
  command->add_option("MODEL_DIR", args->model_dir, "Folder with config.json, weights and a tokenizer")->required();
  command->add_option("TEXT_FILE", args->text_file, "UTF-8 text to score")->required()->check(CLI::ExistingFile);
  command->add_option("--context", args->context, "Tokens per window (default 2048)")->check(integer_in(2, kMaxTokens));
  command->add_option("--stride", args->stride, "Tokens each window advances (default: --context)")
      ->check(integer_in(1, kMaxTokens));
  command->add_option("--dtype", args->dtype, "float32, bfloat16 or float16");
  command->add_option("--device", args->device, "cpu, cuda or auto");
  return [args]() { return run_perplexity(*args); };
}

}  // namespace lintime::cli
