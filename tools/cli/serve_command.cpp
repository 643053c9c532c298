// `lintime serve MODEL_DIR`: the OpenAI-compatible HTTP server (serve/server.h) over one model
// folder. SIGTERM or SIGINT stops admitting, lets running requests finish within
// --grace-seconds, then exits 0.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/device.h"
#include "core/error.h"
#include "models/architecture.h"
#include "serve/server.h"
#include "text/tokenizer.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

namespace lintime::cli {
namespace {

std::atomic<bool> stop_requested{false};
extern "C" void request_stop(int) { stop_requested = true; }

struct ServeArgs {
  std::string model_dir, dtype = "float32", device = "auto", state_dtype = "float32", chat_format;
  int64_t prefix_cache_mb = 256;
  double grace_seconds = 30;
  bool cuda_graphs = true;
  serve::ServerOptions server;
};

int run_serve(ServeArgs& args) {
  LINTIME_CHECK(args.state_dtype == "float32" || args.state_dtype == "bfloat16",
                "--state-dtype: expected float32 or bfloat16, got \"", args.state_dtype, "\"");
  LINTIME_CHECK(args.prefix_cache_mb >= 0, "--prefix-cache-mb must be >= 0, got ", args.prefix_cache_mb);
  LINTIME_CHECK(args.grace_seconds >= 0, "--grace-seconds must be >= 0, got ", args.grace_seconds);
  if (!args.chat_format.empty()) args.server.chat_format = serve::chat_format_named(args.chat_format);
  args.server.engine.prefix_cache_bytes = args.prefix_cache_mb << 20;
  args.server.engine.step_mode = args.cuda_graphs ? serve::EngineOptions::StepMode::kAuto : serve::EngineOptions::StepMode::kSlots;
  const c10::Device device = resolve_device(args.device);
  auto tokenizer = text::load_tokenizer(args.model_dir);
  auto model = models::load_causal_lm(args.model_dir, parse_dtype(args.dtype), device);
  if (args.state_dtype == "bfloat16") model->decoder().set_recurrent_state_dtype(at::kBFloat16);
  serve::Server server(*model, *tokenizer, args.model_dir, args.server);
  server.bind();
  std::signal(SIGTERM, request_stop);
  std::signal(SIGINT, request_stop);
  std::fprintf(stderr, "lintime serve: listening on http://%s:%d (%s, %lld sequence slots%s, chat format %s)\n",
               args.server.host.c_str(), server.bound_port(), model->name().c_str(),
               static_cast<long long>(args.server.engine.max_sequences),
               server.engine().bucketed_steps() ? ", decode steps replayed as CUDA graphs" : "",
               serve::chat_format_name(args.server.chat_format.value_or(serve::detect_chat_format(args.model_dir))).c_str());
  std::fflush(stderr);
  std::thread watcher([&] {
    while (!stop_requested) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    server.stop_admitting();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(args.grace_seconds);
    while (server.pending() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // Let the last responses' bytes leave before the sockets close.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    server.stop();
  });
  server.listen();
  stop_requested = true;
  watcher.join();
  std::fprintf(stderr, "lintime serve: stopped\n");
  return 0;
}

}  // namespace

std::function<int()> add_serve_command(CLI::App& app) {
  auto* command = app.add_subcommand("serve", "Serve a model folder over HTTP with the OpenAI API (continuous batching)");
  auto args = std::make_shared<ServeArgs>();
  auto& s = args->server;
  command->add_option("MODEL_DIR", args->model_dir, "Folder with config.json, weights and a tokenizer")->required();
  command->add_option("--host", s.host, "Address to listen on (default 127.0.0.1)")
      ->check(non_empty());
  command->add_option("--port", s.port, "Port (default 8080; 0: any free port, printed at start)")->check(integer_in(0, 65535));
  command->add_option("--model-name", s.model_name, "The model's name in the API (default: the folder's name)");
  command->add_option("--max-sequences", s.engine.max_sequences, "Sequences decoded together (state slots; default 16)")
      ->check(integer_in(1, kMaxServedRequests));
  command->add_option("--max-queue", s.engine.max_queue, "Requests waiting for a slot before 503 (default 64)")
      ->check(integer_in(0, kMaxServedRequests));
  command->add_option("--max-prompt-tokens", s.max_prompt_tokens, "Longest prompt accepted (default 4096); with --max-new-tokens, the tokens a KV cache reserves per slot")
      ->check(integer_in(1, kMaxTokens));
  command->add_option("--max-new-tokens", s.max_new_tokens, "Cap on max_tokens, and chat's default (default 1024)")
      ->check(integer_in(1, kMaxTokens));
  command->add_option("--prefill-chunk", s.engine.prefill_chunk, "Prompt tokens prefilled per step and sequence (default 256)")
      ->check(integer_in(1, kMaxTokens));
  command->add_option("--prefix-cache-mb", args->prefix_cache_mb, "Memory for cached prefix states (default 256; 0: off)")
      ->check(integer_in(0, 1 << 30));
  command->add_option("--api-key", s.api_key, "Require 'Authorization: Bearer KEY' on /v1/ endpoints");
  command->add_option("--chat-format", args->chat_format,
                      "plain, llama2, mistral, chatml or llama3 (default: from the folder's chat template)")
      ->check(non_empty());
  command->add_option("--state-dtype", args->state_dtype,
                      "Recurrent decoding states kept in float32 (default) or bfloat16 (half the memory; "
                      "computed in fp32, rounded once per step)");
  command->add_option("--grace-seconds", args->grace_seconds, "On SIGTERM, time running requests get to finish (default 30)");
  command->add_option("--dtype", args->dtype, "float32, bfloat16 or float16");
  command->add_option("--device", args->device, "cpu, cuda, cuda:N or auto");
  command->add_option("--cuda-graphs", args->cuda_graphs,
                      "On a GPU, replay batched decode steps as CUDA graphs recorded for batch-size buckets "
                      "where the model allows it (GSA; default true)")
      ->check(boolean_text());
  return [args]() { return run_serve(*args); };
}

}  // namespace lintime::cli
