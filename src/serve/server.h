// `lintime serve`: the OpenAI-compatible HTTP server (cpp-httplib, as llama.cpp's server) in
// front of the engine. HTTP worker threads parse requests (openai_api.h), tokenize, submit to
// the engine and stream its tokens back as text (Server-Sent Events with stream: true); one
// engine thread batches every running sequence. Endpoints: POST /v1/completions,
// POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics.
#pragma once

#include "serve/engine.h"
#include "serve/metrics.h"
#include "serve/openai_api.h"
#include "text/tokenizer.h"

#include <c10/core/Device.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace httplib {
class Server;
}

namespace lintime::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (bound_port() tells which)
  std::string model_name;             // what /v1/models lists and requests must name ("" = the folder's name)
  int64_t max_prompt_tokens = 4096;
  int64_t max_new_tokens = 1024;      // cap on any request's max_tokens (and chat's default)
  std::string api_key;                // "" = none required
  std::optional<ChatFormat> chat_format;  // nullopt = detected from the folder
  EngineOptions engine;
};

class Server {
 public:
  // Loads nothing itself: `model` and `tokenizer` come from the caller and outlive the server.
  Server(models::CausalLm& model, const text::Tokenizer& tokenizer, const std::string& model_dir,
         const ServerOptions& options);
  ~Server();

  // Binds the address (throws lintime::Error with one line when it cannot).
  void bind();
  int bound_port() const { return port_; }
  // Serves until stop() (blocking).
  void listen();
  // Stops admitting: new generation requests get 503; running ones go on.
  void stop_admitting() { engine_->stop_admitting(); }
  int64_t pending() const { return engine_->pending(); }
  // Stops listening; listen() returns.
  void stop();

  Engine& engine() { return *engine_; }
  Metrics& metrics() { return metrics_; }

 private:
  void install_routes();

  models::CausalLm& model_;
  const text::Tokenizer& tokenizer_;
  ServerOptions options_;
  ChatFormat chat_format_;
  Metrics metrics_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  int listening_socket_ = -1;  // the HTTP server's bound socket (set through its socket options)
  int64_t created_ = 0;
  c10::Device device_ = c10::kCPU;  // the model's (its memory peak is a metric)
  std::atomic<int64_t> next_id_{0};
};

}  // namespace lintime::serve
