#include "serve/server.h"

#include "core/device.h"
#include "core/error.h"
#include "infer/text_stream.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

namespace lintime::serve {

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Generated text may hold bytes that are not UTF-8 (a byte-level tokenizer's piece of a
// character, a model that emits nonsense): JSON cannot carry them, so each becomes U+FFFD.
std::string to_text(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, const ApiError& error) {
  res.status = error.status();
  res.set_content(to_text(error_json(error)), "application/json");
}

const char* finish_reason(Stream::Finish finish) { return finish == Stream::Finish::kLength ? "length" : "stop"; }

// A finished stream that is not a normal end becomes the error the client gets.
std::optional<ApiError> failure_of(const Stream& stream, Stream::Finish finish) {
  if (finish == Stream::Finish::kError) {
    // The client gets the error; the server's log gets it too (a failure in the engine, not in the request).
    std::fprintf(stderr, "lintime serve: generation failed: %s\n", stream.error().c_str());
    return ApiError(500, "server_error", "", "generation failed: " + stream.error());
  }
  if (finish == Stream::Finish::kCancelled) {
    return ApiError(503, "server_error", "", stream.error().empty() ? "the request was cancelled" : stream.error());
  }
  return std::nullopt;
}

// The text of a stream's tokens as it may be released: whole UTF-8 characters only, cut at the
// first stop string, and holding back a tail that could still begin one.
struct TextSoFar {
  std::string text;
  size_t releasable = 0;
  bool stopped = false;  // a stop string was found: text ends before it
};

// `decoder` holds the stream's text so far and decodes only its newest tokens (infer/text_stream.h).
TextSoFar text_so_far(infer::TextStream& decoder, const std::vector<int64_t>& tokens,
                      const std::vector<std::string>& stop, bool finished) {
  TextSoFar result;
  if (finished) {
    decoder.finish(tokens);
  } else {
    decoder.push(tokens);
  }
  result.text = decoder.text();
  if (const size_t at = find_stop(result.text, stop); at != std::string::npos) {
    result.text.resize(at);
    result.stopped = true;
  }
  result.releasable = result.stopped || finished ? result.text.size() : releasable_length(result.text, stop);
  return result;
}

}  // namespace

Server::Server(models::CausalLm& model, const text::Tokenizer& tokenizer, const std::string& model_dir,
               const ServerOptions& options)
    : model_(model), tokenizer_(tokenizer), options_(options), created_(unix_seconds()) {
  LINTIME_CHECK(options.max_prompt_tokens >= 1, "serve: --max-prompt-tokens must be >= 1, got ", options.max_prompt_tokens);
  LINTIME_CHECK(options.max_new_tokens >= 1, "serve: --max-new-tokens must be >= 1, got ", options.max_new_tokens);
  if (options_.model_name.empty()) {
    options_.model_name = std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (options_.model_name.empty()) options_.model_name = std::filesystem::path(model_dir).parent_path().filename().string();
  }
  chat_format_ = options.chat_format.value_or(detect_chat_format(model_dir));
  model.module().for_each_parameter([this](const std::string&, at::Tensor& parameter) { device_ = parameter.device(); });
  EngineOptions engine_options = options.engine;
  engine_options.choices = std::min(tokenizer.vocab_size(), model.logits_width());
  engine_options.tokens_per_sequence = options.max_prompt_tokens + options.max_new_tokens;
  engine_ = std::make_unique<Engine>(model, engine_options, &metrics_);
  http_ = std::make_unique<httplib::Server>();
  // One worker per client that may be waiting on the engine, plus a few for health and metrics.
  const auto workers = static_cast<size_t>(engine_options.max_sequences + engine_options.max_queue + 8);
  http_->new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  http_->set_payload_max_length(8 << 20);
  http_->set_socket_options([this](int socket) {
    httplib::default_socket_options(socket);
    listening_socket_ = socket;  // the last socket made is the one bound (bind_to_any_port tries several)
  });
  install_routes();
}

Server::~Server() {
  stop();
  engine_.reset();  // finishes every stream before the HTTP threads are gone
}

void Server::bind() {
  if (options_.port == 0) {
    port_ = http_->bind_to_any_port(options_.host);
    LINTIME_CHECK(port_ > 0, "serve: cannot bind ", options_.host, " to any port");
  } else {
    LINTIME_CHECK(http_->bind_to_port(options_.host, options_.port), "serve: cannot bind ", options_.host, ":",
                  options_.port, " (in use, or not an address of this machine)");
    port_ = options_.port;
  }
  // cpp-httplib listens with a backlog of 5: where a network stack resets connections beyond a
  // full queue, clients connecting at once would be refused (64 streams starting together were
  // reset on a GPU machine, cause not established). Listening again on the bound socket raises
  // the backlog to the system's maximum.
  if (listening_socket_ >= 0) ::listen(listening_socket_, SOMAXCONN);
}

void Server::listen() { http_->listen_after_bind(); }

void Server::stop() {
  if (http_ && http_->is_running()) http_->stop();
}

void Server::install_routes() {
  http_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
    const std::string expected = "Bearer " + options_.api_key;
    if (req.get_header_value("Authorization") == expected) return httplib::Server::HandlerResponse::Unhandled;
    const bool missing = !req.has_header("Authorization");
    send_error(res, ApiError(401, "authentication_error", "",
                             missing ? "missing API key: expected the header 'Authorization: Bearer KEY'"
                                     : "incorrect API key in the Authorization header"));
    metrics_.count_request(req.path, 401);
    return httplib::Server::HandlerResponse::Handled;
  });
  http_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message = res.status == 404 ? "unknown endpoint " + req.method + " " + req.path
                                                  : "HTTP error " + std::to_string(res.status);
    send_error(res, ApiError(res.status, "invalid_request_error", "", message));
  });
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "server_error", "", message));
  });

  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool up = engine_->admitting();
    res.status = up ? 200 : 503;
    res.set_content(to_text(json{{"status", up ? "ok" : "shutting down"}}), "application/json");
  });
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    metrics_.set_memory_peak_bytes(peak_memory_bytes(device_));
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });
  http_->Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    res.set_content(to_text(models_response(options_.model_name, created_)), "application/json");
    metrics_.count_request(req.path, 200);
  });

  auto generation = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request& req, httplib::Response& res) {
      const std::string path = req.path;
      try {
        json body;
        try {
          body = json::parse(req.body);
        } catch (const json::exception& error) {
          throw bad_request("", std::string("malformed JSON in the request body: ") + error.what());
        }
        CompletionRequest request = parse_completion_request(body, endpoint);
        if (request.model != options_.model_name) {
          throw ApiError(404, "invalid_request_error", "model",
                         "model \"" + request.model + "\" is not served here; expected \"" + options_.model_name + "\"");
        }
        // The prompt's tokens.
        std::vector<int64_t> prompt = request.prompt_ids;
        const char* prompt_field = endpoint == Endpoint::kChatCompletions ? "messages" : "prompt";
        if (prompt.empty()) {
          std::string text = endpoint == Endpoint::kChatCompletions ? format_chat(request.messages, chat_format_)
                                                                    : request.prompt_text.value_or("");
          const bool sentencepiece = tokenizer_.kind() == "sentencepiece" && tokenizer_.bos_id();
          // A template's leading "<s>" is the BOS token, which SentencePiece does not encode from text.
          if (sentencepiece && text.rfind("<s>", 0) == 0) text.erase(0, 3);
          prompt = tokenizer_.encode(text);
          if (sentencepiece) prompt.insert(prompt.begin(), *tokenizer_.bos_id());
        }
        if (prompt.empty()) throw bad_request(prompt_field, "the prompt has no tokens; expected at least one");
        const int64_t vocab = std::min(tokenizer_.vocab_size(), model_.logits_width());
        for (int64_t id : prompt) {
          if (id < 0 || id >= vocab) {
            throw bad_request(prompt_field, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                                std::to_string(vocab) + ")");
          }
        }
        if (static_cast<int64_t>(prompt.size()) > options_.max_prompt_tokens) {
          throw bad_request(prompt_field, "the prompt has " + std::to_string(prompt.size()) +
                                              " tokens, over the server's limit of " +
                                              std::to_string(options_.max_prompt_tokens) + " (--max-prompt-tokens)");
        }
        const int64_t max_tokens = request.max_tokens > 0 ? request.max_tokens : options_.max_new_tokens;
        if (max_tokens > options_.max_new_tokens) {
          throw bad_request("max_tokens", "max_tokens " + std::to_string(max_tokens) + " is over the server's limit of " +
                                              std::to_string(options_.max_new_tokens) + " (--max-new-tokens)");
        }
        GenerationRequest generation_request;
        generation_request.prompt = prompt;
        generation_request.max_new_tokens = max_tokens;
        generation_request.sampling.greedy = request.temperature == 0.0;
        generation_request.sampling.temperature = request.temperature;
        generation_request.sampling.top_k = request.top_k;
        generation_request.sampling.top_p = request.top_p;
        generation_request.seed = request.seed.value_or(std::random_device{}());
        generation_request.eos = tokenizer_.eos_id();
        std::shared_ptr<Stream> stream = engine_->submit(std::move(generation_request));
        if (!stream) {
          res.set_header("Retry-After", "1");
          throw ApiError(503, "server_error", "",
                         engine_->admitting() ? "the server is busy: every sequence slot and queue place is taken; retry later"
                                              : "the server is shutting down and admits no new requests");
        }
        const std::string id = (endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") +
                               std::to_string(created_) + "-" + std::to_string(next_id_++);
        const int64_t created = unix_seconds();
        const std::string model_name = options_.model_name;
        metrics_.count_request(path, 200);

        if (!request.stream) {
          std::vector<int64_t> tokens;
          Stream::Finish finish = Stream::Finish::kNone;
          TextSoFar text;
          infer::TextStream decoder([this](const std::vector<int64_t>& ids) { return tokenizer_.decode(ids); });
          while (true) {
            finish = stream->wait(tokens.size(), tokens, 200ms);
            text = text_so_far(decoder, tokens, request.stop, finish != Stream::Finish::kNone);
            if (text.stopped || finish != Stream::Finish::kNone) break;
          }
          if (text.stopped) {
            stream->cancel();
            finish = Stream::Finish::kEos;
          } else if (auto failure = failure_of(*stream, finish)) {
            throw *failure;
          }
          const Usage usage{static_cast<int64_t>(prompt.size()), static_cast<int64_t>(tokens.size())};
          res.set_content(
              to_text(completion_response(endpoint, id, created, model_name, text.text, finish_reason(finish), usage)),
              "application/json");
          return;
        }

        // Server-Sent Events: one chunk per released piece of text, then the end.
        struct StreamState {
          explicit StreamState(const text::Tokenizer& tokenizer)
              : decoder([&tokenizer](const std::vector<int64_t>& ids) { return tokenizer.decode(ids); }) {}
          size_t seen_tokens = 0;  // tokens already turned into text
          size_t released = 0;     // bytes of text sent
          bool first = true;
          infer::TextStream decoder;
        };
        auto state = std::make_shared<StreamState>(tokenizer_);
        const bool include_usage = request.include_usage;
        const std::vector<std::string> stop = request.stop;
        const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
        res.set_header("Cache-Control", "no-cache");
        res.set_chunked_content_provider(
            "text/event-stream",
            [this, stream, state, endpoint, id, created, model_name, include_usage, stop, prompt_tokens](
                size_t, httplib::DataSink& sink) {
              auto send = [&](const json& chunk) {
                const std::string event = "data: " + to_text(chunk) + "\n\n";
                return sink.write(event.data(), event.size());
              };
              std::vector<int64_t> tokens;
              Stream::Finish finish = stream->wait(state->seen_tokens, tokens, 100ms);
              state->seen_tokens = tokens.size();
              if (sink.is_writable && !sink.is_writable()) {
                stream->cancel();
                return false;
              }
              const TextSoFar text = text_so_far(state->decoder, tokens, stop, finish != Stream::Finish::kNone);
              if (text.releasable > state->released || state->first) {
                const std::string delta = text.text.substr(state->released, text.releasable - state->released);
                if (!delta.empty() || (state->first && endpoint == Endpoint::kChatCompletions)) {
                  if (!send(stream_chunk(endpoint, id, created, model_name, delta, std::nullopt, state->first))) {
                    stream->cancel();
                    return false;
                  }
                  state->first = false;
                }
                state->released = text.releasable;
              }
              if (text.stopped && finish == Stream::Finish::kNone) {
                stream->cancel();
                finish = Stream::Finish::kEos;
              }
              if (finish == Stream::Finish::kNone) return true;  // called again: wait for more
              if (auto failure = failure_of(*stream, finish); failure && !text.stopped) {
                send(error_json(*failure));
              } else {
                send(stream_chunk(endpoint, id, created, model_name, "", std::string(finish_reason(finish)), false));
                if (include_usage) {
                  send(usage_chunk(endpoint, id, created, model_name,
                                   Usage{prompt_tokens, static_cast<int64_t>(tokens.size())}));
                }
              }
              const std::string done = "data: [DONE]\n\n";
              sink.write(done.data(), done.size());
              sink.done();
              return true;
            },
            [stream](bool success) {
              if (!success) stream->cancel();  // the client went away: free its slot
            });
      } catch (const ApiError& error) {
        send_error(res, error);
        metrics_.count_request(path, error.status());
      } catch (const std::exception& error) {
        const ApiError wrapped(400, "invalid_request_error", "", error.what());
        send_error(res, wrapped);
        metrics_.count_request(path, 400);
      }
    };
  };
  http_->Post("/v1/completions", generation(Endpoint::kCompletions));
  http_->Post("/v1/chat/completions", generation(Endpoint::kChatCompletions));
}

}  // namespace lintime::serve
