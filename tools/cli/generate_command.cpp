// `lintime generate MODEL_DIR --prompt TEXT`: prefill with the chunked ops, then one decode step
// per token from the constant-size recurrent state; tokens stream to stdout as they come (batch
// 1) and generation stops at EOS. Timing goes to stderr.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/device.h"
#include "core/error.h"
#include "infer/generate.h"
#include "infer/text_stream.h"
#include "models/architecture.h"
#include "text/tokenizer.h"

#include <ATen/ATen.h>
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

namespace lintime::cli {
namespace {

struct GenerateArgs {
  std::string model_dir, prompt, prompt_file, dtype = "float32", device = "auto";
  int64_t max_new_tokens = 128, batch = 1;
  uint64_t seed = 0;
  bool cuda_graphs = true;
  bool prompt_given = false;  // --prompt "" is given, and empty
  infer::SamplingOptions sampling;
};

int run_generate(const GenerateArgs& args) {
  LINTIME_CHECK(args.prompt_given != !args.prompt_file.empty(), "generate: give exactly one of --prompt and --prompt-file");
  LINTIME_CHECK(!args.prompt_given || !args.prompt.empty(), "--prompt: the prompt is empty; expected some text");
  LINTIME_CHECK(args.max_new_tokens >= 1, "--max-new-tokens must be >= 1, got ", args.max_new_tokens);
  LINTIME_CHECK(args.batch >= 1, "--batch must be >= 1, got ", args.batch);
  infer::validate(args.sampling);
  std::string prompt = args.prompt;
  if (!args.prompt_file.empty()) {
    std::ifstream in(args.prompt_file, std::ios::binary);
    LINTIME_CHECK(in, "--prompt-file: cannot open '", args.prompt_file, "'");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    prompt = buffer.str();
  }
  const at::ScalarType dtype = parse_dtype(args.dtype);
  const c10::Device device = resolve_device(args.device);
  auto tokenizer = text::load_tokenizer(args.model_dir);
  auto model = models::load_causal_lm(args.model_dir, dtype, device);
  std::vector<int64_t> prompt_ids;
  try {
    prompt_ids = tokenizer->encode(prompt);
  } catch (const Error& error) {  // bad UTF-8: say where the prompt came from
    fail(args.prompt_file.empty() ? "--prompt: " : "--prompt-file '" + args.prompt_file + "': ", error.what());
  }
  // SentencePiece models (Llama, Mistral) are fed a BOS first, as their Hugging Face tokenizers do.
  if (tokenizer->kind() == "sentencepiece" && tokenizer->bos_id()) prompt_ids.insert(prompt_ids.begin(), *tokenizer->bos_id());
  LINTIME_CHECK(!prompt_ids.empty(), "generate: the prompt encodes to no tokens");
  const int64_t vocab = model->vocab_size();
  for (int64_t id : prompt_ids)
    LINTIME_CHECK(id < vocab, "generate: the tokenizer gives id ", id, " but the model's vocabulary has ", vocab, " entries");

  if (device.is_cuda()) c10::getDeviceAllocator(c10::kCUDA)->resetPeakStats(device.index());
  const at::Tensor ids = at::tensor(prompt_ids, at::kLong).unsqueeze(0).expand({args.batch, -1}).contiguous();
  infer::GenerateOptions options;
  options.cuda_graphs = args.cuda_graphs;
  options.max_new_tokens = args.max_new_tokens;
  options.sampling = args.sampling;
  options.seed = args.seed;
  options.eos = tokenizer->eos_id();
  options.choices = tokenizer->vocab_size();
  infer::TextStream stream([&](const std::vector<int64_t>& tokens) { return tokenizer->decode(tokens); });
  const auto print = [](const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  };
  const infer::GenerateResult result = infer::generate(*model, ids.to(device), options, [&](const infer::GenerateResult& so_far) {
    if (args.batch == 1) print(stream.push(so_far.tokens[0]));  // stream what has become whole characters
  });
  const auto& generated = result.tokens;
  if (args.batch == 1) {
    print(stream.finish(generated[0]) + "\n");
  } else {
    for (int64_t b = 0; b < args.batch; ++b) std::printf("[%lld] %s\n", static_cast<long long>(b), tokenizer->decode(generated[b]).c_str());
  }
  const double seconds = result.seconds, first_token_seconds = result.first_token_seconds;
  const int64_t steps = result.steps;
  int64_t new_tokens = 0;
  for (const auto& sequence : generated) new_tokens += static_cast<int64_t>(sequence.size());
  std::fprintf(stderr,
               "prompt %zu tokens, batch %lld, %lld steps, %lld new tokens in %.3f s (%.1f tokens/s); "
               "time to first token %.1f ms; %s on %s; decoding state %lld bytes per sequence at the end\n",
               prompt_ids.size(), static_cast<long long>(args.batch), static_cast<long long>(steps),
               static_cast<long long>(new_tokens), seconds, new_tokens / std::max(seconds, 1e-9),
               1e3 * first_token_seconds, model->name().c_str(), device.str().c_str(),
               static_cast<long long>(model->state_bytes_per_sequence(static_cast<int64_t>(prompt_ids.size()) + steps)));
  if (device.is_cuda()) {  // the memory a long generation needs: flat for GSA, growing with a KV cache
    const auto stats = c10::getDeviceAllocator(c10::kCUDA)->getDeviceStats(device.index());
    std::fprintf(stderr, "peak device memory %.1f MiB\n", static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 20));
  }
  return 0;
}

}  // namespace

std::function<int()> add_generate_command(CLI::App& app) {
  auto* command = app.add_subcommand("generate", "Generate text from a model folder (prefill, then constant-memory decoding)");
  auto args = std::make_shared<GenerateArgs>();
  command->add_option("MODEL_DIR", args->model_dir, "Folder with config.json, weights and a tokenizer")->required();
  command->add_option("--prompt", args->prompt, "Prompt text")->each([args](const std::string&) { args->prompt_given = true; });
  command->add_option("--prompt-file", args->prompt_file, "File holding the prompt (UTF-8)")->check(CLI::ExistingFile);
  command->add_option("--max-new-tokens", args->max_new_tokens, "Tokens to generate at most (default 128)")
      ->check(integer_in(1, kMaxTokens));
  command->add_option("--temperature", args->sampling.temperature, "Sampling temperature (0: greedy)")
      ->check(finite_real());
  command->add_option("--top-k", args->sampling.top_k, "Keep the k most likely tokens (0: all)")
      ->check(integer_in(0, int64_t{1} << 31));
  command->add_option("--top-p", args->sampling.top_p, "Nucleus sampling mass (1: off)")
      ->check(finite_real());
  command->add_option("--seed", args->seed, "Seed of the sampler")->check(integer_in(0, kAnySeed));
  command->add_option("--batch", args->batch, "Sequences generated together from the prompt")
      ->check(integer_in(1, kMaxBatch));
  command->add_flag("--greedy", args->sampling.greedy, "Take the most likely token every step");
  command->add_option("--dtype", args->dtype, "float32, bfloat16 or float16");
  command->add_option("--device", args->device, "cpu, cuda or auto");
  command->add_option("--cuda-graphs", args->cuda_graphs,
                      "Replay each decode step as a CUDA graph where the model allows it (GSA; default true)")
      ->check(boolean_text());
  return [args]() { return run_generate(*args); };
}

}  // namespace lintime::cli
