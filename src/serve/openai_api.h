// The OpenAI HTTP API as `lintime serve` speaks it (the subset llama.cpp's server and vLLM
// serve): request bodies parsed strictly into CompletionRequest, chat messages formatted into a
// prompt by the model family's template, and the JSON of responses, stream chunks and errors.
// No I/O here: server.cpp moves bytes, engine.h generates; this file is only the protocol.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lintime::serve {

// A request the server refuses: its HTTP status (400, 401, 404, 503, ...), OpenAI's error
// "type" ("invalid_request_error", "authentication_error", ...), the offending field ("param",
// empty when none) and a one-line message naming what is wrong and what was expected.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string param, const std::string& message)
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string type_, param_;
};

// A 400 invalid_request_error about `param`.
ApiError bad_request(const std::string& param, const std::string& message);

// OpenAI's error body: {"error": {"message", "type", "param" (null when empty), "code": null}}.
nlohmann::json error_json(const ApiError& error);

enum class Endpoint { kCompletions, kChatCompletions };

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;  // a string, or OpenAI's list of {"type": "text", "text": ...} parts joined
};

struct CompletionRequest {
  std::string model;                        // required
  // /v1/completions: `prompt` as a string or as a list of token ids (one prompt; a list of
  // strings with more than one entry is refused: batching is the server's job).
  std::optional<std::string> prompt_text;
  std::vector<int64_t> prompt_ids;
  std::vector<ChatMessage> messages;        // /v1/chat/completions: at least one
  int64_t max_tokens = 16;                  // completions: OpenAI's default 16; chat: 0 = until the
                                            // context limit or EOS (the server's cap applies)
  double temperature = 1.0;                 // [0, 2]; 0 = greedy
  double top_p = 1.0;                       // (0, 1]
  int64_t top_k = 0;                        // >= 0 (llama.cpp's extension; 0 = off)
  std::optional<uint64_t> seed;             // >= 0
  std::vector<std::string> stop;            // a string or a list of up to 4 non-empty strings
  bool stream = false;
  bool include_usage = false;               // stream_options.include_usage: a last chunk with usage
};

// Parses and validates a request body. Accepted fields: model, prompt (completions) or messages
// (chat), max_tokens (chat also max_completion_tokens), temperature, top_p, top_k, seed, stop,
// stream, stream_options, n (only 1), user (ignored), and fields whose value is their default
// (echo false, logprobs null/false, presence_penalty 0, frequency_penalty 0, best_of 1,
// suffix null, logit_bias null or {}). Anything else, a wrong type, a value out of range, or
// a field of the other endpoint throws bad_request naming the field, e.g.
//   "n: only n = 1 is supported, got 2", "frequency_penalty: not supported (expected 0), got 0.5",
//   "temperature: expected a number in [0, 2], got 3", "unknown field \"foo\"".
// `body` that is not an object: bad_request("", "expected a JSON object as the request body").
CompletionRequest parse_completion_request(const nlohmann::json& body, Endpoint endpoint);

// How chat messages become one prompt string.
enum class ChatFormat {
  kPlain,    // base models: "System: ...\nUser: ...\nAssistant: ..." ending with "Assistant:"
  kLlama2,   // "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ..."
  kMistral,  // "<s>[INST] {system}\n\n{user} [/INST]{assistant}</s>[INST] ..." (system joined to the first user turn)
  kChatML,   // "<|im_start|>{role}\n{content}<|im_end|>\n" ... "<|im_start|>assistant\n"
  kLlama3,   // "<|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>" ...
             // "<|start_header_id|>assistant<|end_header_id|>\n\n"
};

// --chat-format NAME: "plain", "llama2", "mistral", "chatml", "llama3"; anything else throws
// lintime::Error listing them.
ChatFormat chat_format_named(const std::string& name);
std::string chat_format_name(ChatFormat format);

// The family of a model folder's chat template: tokenizer_config.json's "chat_template" (a string,
// or a list of {"name", "template"} whose "default" entry counts), recognised by the markers each
// family's template contains ("<|im_start|>" ChatML; "<|start_header_id|>" Llama 3; "<<SYS>>" Llama 2;
// "[INST]" without "<<SYS>>" Mistral); kPlain when the folder has no template or none matches.
ChatFormat detect_chat_format(const std::string& model_dir);

// The prompt text of `messages` in `format`, ending where the assistant's reply begins. Roles
// other than system/user/assistant, or a conversation that does not end with a user message
// (Llama 2, Mistral), throw bad_request("messages", ...). The text carries the format's special
// tokens as text (the tokenizer decides how they encode).
std::string format_chat(const std::vector<ChatMessage>& messages, ChatFormat format);

// Why a completion ended: "stop" (EOS or a stop string), "length" (max_tokens or the context).
struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// The non-streaming response bodies:
//   completions: {"id", "object": "text_completion", "created", "model",
//                 "choices": [{"index": 0, "text", "logprobs": null, "finish_reason"}], "usage"}
//   chat:        {"id", "object": "chat.completion", "created", "model",
//                 "choices": [{"index": 0, "message": {"role": "assistant", "content"},
//                              "logprobs": null, "finish_reason"}], "usage"}
// usage = {"prompt_tokens", "completion_tokens", "total_tokens"}.
nlohmann::json completion_response(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const std::string& finish_reason, const Usage& usage);

// One Server-Sent Events chunk's JSON (the server writes "data: " + dump + "\n\n"):
//   completions: {"id", "object": "text_completion", "created", "model",
//                 "choices": [{"index": 0, "text": delta, "logprobs": null, "finish_reason": null or reason}]}
//   chat:        {"id", "object": "chat.completion.chunk", "created", "model",
//                 "choices": [{"index": 0, "delta": {...}, "logprobs": null, "finish_reason": ...}]}
//   where the chat delta is {"role": "assistant", "content": ""} for the first chunk (first = true),
//   {"content": delta} after, and {} in the last chunk (the one with finish_reason).
// With `usage` (stream_options.include_usage), a final chunk with "choices": [] and "usage".
nlohmann::json stream_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                            const std::string& delta, const std::optional<std::string>& finish_reason, bool first);
nlohmann::json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                           const Usage& usage);

// GET /v1/models: {"object": "list", "data": [{"id": model, "object": "model", "created", "owned_by": "lintime"}]}
nlohmann::json models_response(const std::string& model, int64_t created);

// Stop strings: the length of `text` that may be released while a stop string could still
// begin in its tail (so that a stop string split across tokens is never streamed), and where
// the first complete stop string begins (npos when none).
size_t releasable_length(const std::string& text, const std::vector<std::string>& stop);
size_t find_stop(const std::string& text, const std::vector<std::string>& stop);

}  // namespace lintime::serve
