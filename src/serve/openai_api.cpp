#include "serve/openai_api.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace lintime::serve {

using nlohmann::json;

namespace {

// A value as quoted in error messages: its JSON text (strings keep their quotes, so "3" and 3
// differ), cut at 60 characters so that a huge body cannot make a huge message.
std::string shown(const json& value) {
  std::string text = value.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

// An error about `place` (a field, or a spot inside one such as "messages[2].role") reported
// under the top-level field `param`: "place: problem".
ApiError invalid(const std::string& param, const std::string& place, const std::string& problem) {
  return bad_request(param, place + ": " + problem);
}
ApiError invalid(const std::string& field, const std::string& problem) { return invalid(field, field, problem); }

const char* endpoint_path(Endpoint endpoint) {
  return endpoint == Endpoint::kCompletions ? "/v1/completions" : "/v1/chat/completions";
}

// Fields both endpoints take, and each endpoint's own. Fields listed for the other endpoint are
// refused as such (a client that sent them to the wrong URL learns so), the rest as unknown.
const std::set<std::string> kCommonFields = {
    "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options",
    "n", "user", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias"};
const std::set<std::string> kCompletionsFields = {"prompt", "echo", "best_of", "suffix"};
const std::set<std::string> kChatFields = {"messages", "max_completion_tokens"};

// The value of an integer field: JSON integers, and floats only when integral (3.0 reads as 3,
// as config files allow; 3.5 does not). nullopt for anything else, or beyond int64.
std::optional<int64_t> integer_value(const json& value) {
  if (value.is_number_unsigned()) {
    const uint64_t number = value.get<uint64_t>();
    if (number > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(number);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number_float()) {
    const double number = value.get<double>();
    // 2^53: beyond it a double no longer names one integer.
    if (std::isfinite(number) && number == std::floor(number) && std::fabs(number) <= 9007199254740992.0) {
      return static_cast<int64_t>(number);
    }
  }
  return std::nullopt;
}

// A number field (booleans are not numbers in JSON, nor for nlohmann: is_number() is false).
double number_in(const std::string& field, const json& value, double low, bool low_open, double high) {
  std::ostringstream expected_text;  // bounds as people write them: [0, 2], not [0.0, 2.0]
  expected_text << "expected a number in " << (low_open ? "(" : "[") << low << ", " << high << "]";
  const std::string expected = expected_text.str();
  if (!value.is_number()) throw invalid(field, expected + ", got " + shown(value));
  const double number = value.get<double>();
  const bool above_low = low_open ? number > low : number >= low;
  if (!above_low || !(number <= high)) throw invalid(field, expected + ", got " + shown(value));
  return number;
}

int64_t integer_at_least(const std::string& field, const json& value, int64_t minimum, const char* expected) {
  const std::optional<int64_t> number = integer_value(value);
  if (!number || *number < minimum) throw invalid(field, std::string("expected ") + expected + ", got " + shown(value));
  return *number;
}

bool boolean(const std::string& field, const json& value) {
  if (!value.is_boolean()) throw invalid(field, "expected true or false, got " + shown(value));
  return value.get<bool>();
}

// A field lintime does not implement, accepted only at its default value (or null).
void require_default(const std::string& field, const json& value, bool accepted, const char* expected) {
  if (!value.is_null() && !accepted) {
    throw invalid(field, std::string("not supported (expected ") + expected + "), got " + shown(value));
  }
}

bool is_zero(const json& value) { return value.is_number() && value.get<double>() == 0; }

// A list of token ids: non-empty, every entry a non-negative integer.
std::optional<std::vector<int64_t>> token_ids(const json& list) {
  if (!list.is_array() || list.empty()) return std::nullopt;
  std::vector<int64_t> ids;
  ids.reserve(list.size());
  for (const json& entry : list) {
    const std::optional<int64_t> id = integer_value(entry);  // never true/false: not numbers
    if (!id || *id < 0) return std::nullopt;
    ids.push_back(*id);
  }
  return ids;
}

void parse_prompt(const json& prompt, CompletionRequest& request) {
  const char* expected =
      "expected a string, a list of token ids (non-negative integers), or a list holding one of either";
  if (prompt.is_string()) {
    request.prompt_text = prompt.get<std::string>();
    return;
  }
  if (!prompt.is_array() || prompt.empty()) throw invalid("prompt", std::string(expected) + ", got " + shown(prompt));
  // A list of strings or of lists is a batch of prompts; a list of numbers is one prompt.
  if (prompt[0].is_string() || prompt[0].is_array()) {
    if (prompt.size() > 1) {
      throw invalid("prompt", "only one prompt per request is supported, got " + std::to_string(prompt.size()));
    }
    if (prompt[0].is_string()) {
      request.prompt_text = prompt[0].get<std::string>();
      return;
    }
    if (auto ids = token_ids(prompt[0])) {
      request.prompt_ids = std::move(*ids);
      return;
    }
    throw invalid("prompt", std::string(expected) + ", got " + shown(prompt));
  }
  if (auto ids = token_ids(prompt)) {
    request.prompt_ids = std::move(*ids);
    return;
  }
  throw invalid("prompt", std::string(expected) + ", got " + shown(prompt));
}

const std::set<std::string> kRoles = {"system", "user", "assistant"};

void check_role(const std::string& place, const json& role) {
  if (!role.is_string() || !kRoles.count(role.get<std::string>())) {
    throw invalid("messages", place + ".role", "expected one of system, user, assistant, got " + shown(role));
  }
}

// A message's content: a string, or OpenAI's list of text parts joined without separator (as
// OpenAI itself joins them).
std::string message_content(const std::string& place, const json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    throw invalid("messages", place + ".content",
                  "expected a string or a list of {\"type\": \"text\", \"text\": ...} parts, got " + shown(content));
  }
  std::string joined;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string part_place = place + ".content[" + std::to_string(i) + "]";
    if (!part.is_object()) {
      throw invalid("messages", part_place, "expected an object {\"type\": \"text\", \"text\": ...}, got " + shown(part));
    }
    for (const auto& [key, value] : part.items()) {
      if (key != "type" && key != "text") {
        throw invalid("messages", part_place, "unknown field " + shown(json(key)) + ", expected type and text");
      }
    }
    const json type = part.value("type", json());
    if (type != "text") {
      throw invalid("messages", part_place + ".type", "only \"text\" parts are supported, got " + shown(type));
    }
    const json text = part.value("text", json());
    if (!text.is_string()) throw invalid("messages", part_place + ".text", "expected a string, got " + shown(text));
    joined += text.get<std::string>();
  }
  return joined;
}

std::vector<ChatMessage> parse_messages(const json& messages) {
  if (!messages.is_array()) {
    throw invalid("messages", "expected a list of {\"role\", \"content\"} objects, got " + shown(messages));
  }
  if (messages.empty()) throw invalid("messages", "expected at least one message, got []");
  std::vector<ChatMessage> parsed;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& message = messages[i];
    const std::string place = "messages[" + std::to_string(i) + "]";
    if (!message.is_object()) {
      throw invalid("messages", place, "expected an object with role and content, got " + shown(message));
    }
    for (const auto& [key, value] : message.items()) {
      // "name" (a participant's name) is accepted and ignored: no template here renders it.
      if (key != "role" && key != "content" && key != "name") {
        throw invalid("messages", place, "unknown field " + shown(json(key)) + ", expected role, content, name");
      }
    }
    if (!message.contains("role")) throw invalid("messages", place + ".role", "required");
    check_role(place, message["role"]);
    if (!message.contains("content")) throw invalid("messages", place + ".content", "required");
    if (message.contains("name") && !message["name"].is_string()) {
      throw invalid("messages", place + ".name", "expected a string, got " + shown(message["name"]));
    }
    parsed.push_back({message["role"].get<std::string>(), message_content(place, message["content"])});
  }
  return parsed;
}

std::vector<std::string> parse_stop(const json& stop) {
  const char* expected = "expected a non-empty string or a list of up to 4 non-empty strings";
  if (stop.is_string()) {
    if (stop.get<std::string>().empty()) throw invalid("stop", std::string(expected) + ", got \"\"");
    return {stop.get<std::string>()};
  }
  if (!stop.is_array()) throw invalid("stop", std::string(expected) + ", got " + shown(stop));
  if (stop.size() > 4) {
    throw invalid("stop", std::string(expected) + ", got " + std::to_string(stop.size()) + " strings");
  }
  std::vector<std::string> strings;
  for (const json& entry : stop) {
    if (!entry.is_string() || entry.get<std::string>().empty()) {
      throw invalid("stop", std::string(expected) + ", got " + shown(stop));
    }
    strings.push_back(entry.get<std::string>());
  }
  return strings;
}

std::optional<uint64_t> parse_seed(const json& seed) {
  // uint64 in full: seeds are often drawn as 64-bit values.
  if (seed.is_number_unsigned()) return seed.get<uint64_t>();
  const std::optional<int64_t> number = integer_value(seed);
  if (!number || *number < 0) throw invalid("seed", "expected a non-negative integer or null, got " + shown(seed));
  return static_cast<uint64_t>(*number);
}

bool parse_stream_options(const json& options) {
  if (!options.is_object()) {
    throw invalid("stream_options", "expected an object like {\"include_usage\": true}, got " + shown(options));
  }
  bool include_usage = false;
  for (const auto& [key, value] : options.items()) {
    if (key != "include_usage") {
      throw invalid("stream_options", "unknown field " + shown(json(key)) + ", expected only include_usage");
    }
    if (!value.is_null() && !value.is_boolean()) {
      throw invalid("stream_options", "stream_options.include_usage", "expected true or false, got " + shown(value));
    }
    include_usage = value.is_boolean() && value.get<bool>();
  }
  return include_usage;
}

}  // namespace

ApiError bad_request(const std::string& param, const std::string& message) {
  return ApiError(400, "invalid_request_error", param, message);
}

json error_json(const ApiError& error) {
  return {{"error",
           {{"message", error.what()},
            {"type", error.type()},
            {"param", error.param().empty() ? json(nullptr) : json(error.param())},
            {"code", nullptr}}}};
}

CompletionRequest parse_completion_request(const json& body, Endpoint endpoint) {
  if (!body.is_object()) throw bad_request("", "expected a JSON object as the request body");
  const bool chat = endpoint == Endpoint::kChatCompletions;
  const std::set<std::string>& own_fields = chat ? kChatFields : kCompletionsFields;
  const std::set<std::string>& other_fields = chat ? kCompletionsFields : kChatFields;
  for (const auto& [key, value] : body.items()) {
    if (kCommonFields.count(key) || own_fields.count(key)) continue;
    if (other_fields.count(key)) {
      throw invalid(key, std::string("not accepted by ") + endpoint_path(endpoint) + " (a " +
                             endpoint_path(chat ? Endpoint::kCompletions : Endpoint::kChatCompletions) + " field)");
    }
    throw bad_request(key, "unknown field " + shown(json(key)));
  }
  // Absent and null read the same: OpenAI's clients send null for "not set".
  auto given = [&](const char* key) -> const json* {
    const auto found = body.find(key);
    return found == body.end() || found->is_null() ? nullptr : &*found;
  };

  CompletionRequest request;
  const json* model = given("model");
  if (!model) throw invalid("model", "required, expected a string naming the model");
  if (!model->is_string() || model->get<std::string>().empty()) {
    throw invalid("model", "expected a non-empty string, got " + shown(*model));
  }
  request.model = model->get<std::string>();

  if (chat) {
    const json* messages = given("messages");
    if (!messages) throw invalid("messages", "required, expected a list of {\"role\", \"content\"} objects");
    request.messages = parse_messages(*messages);
  } else {
    const json* prompt = given("prompt");
    if (!prompt) throw invalid("prompt", "required, expected a string or a list of token ids");
    parse_prompt(*prompt, request);
  }

  request.max_tokens = chat ? 0 : 16;
  const json* max_tokens = given("max_tokens");
  const json* max_completion_tokens = chat ? given("max_completion_tokens") : nullptr;
  if (max_tokens && max_completion_tokens) {
    throw invalid("max_completion_tokens", "give max_tokens or max_completion_tokens, not both");
  }
  if (max_tokens) request.max_tokens = integer_at_least("max_tokens", *max_tokens, 1, "a positive integer");
  if (max_completion_tokens) {
    request.max_tokens =
        integer_at_least("max_completion_tokens", *max_completion_tokens, 1, "a positive integer");
  }

  if (const json* value = given("temperature")) request.temperature = number_in("temperature", *value, 0, false, 2);
  if (const json* value = given("top_p")) request.top_p = number_in("top_p", *value, 0, true, 1);
  if (const json* value = given("top_k")) request.top_k = integer_at_least("top_k", *value, 0, "an integer >= 0");
  if (const json* value = given("seed")) request.seed = parse_seed(*value);
  if (const json* value = given("stop")) request.stop = parse_stop(*value);
  if (const json* value = given("stream")) request.stream = boolean("stream", *value);
  if (const json* value = given("stream_options")) {
    if (!request.stream) throw invalid("stream_options", "allowed only when stream is true");
    request.include_usage = parse_stream_options(*value);
  }
  if (const json* value = given("n")) {
    if (integer_value(*value) != 1) {
      throw invalid("n", "only n = 1 is supported, got " + shown(*value));
    }
  }
  if (const json* value = given("user")) {
    if (!value->is_string()) throw invalid("user", "expected a string, got " + shown(*value));
  }

  // Fields with a default lintime implements only at that default.
  const auto field = [&](const char* key) { return body.contains(key) ? body[key] : json(); };
  require_default("logprobs", field("logprobs"), field("logprobs") == false, "null or false");
  require_default("presence_penalty", field("presence_penalty"), is_zero(field("presence_penalty")), "0");
  require_default("frequency_penalty", field("frequency_penalty"), is_zero(field("frequency_penalty")), "0");
  require_default("logit_bias", field("logit_bias"), field("logit_bias") == json::object(), "null or {}");
  if (!chat) {
    require_default("echo", field("echo"), field("echo") == false, "false");
    require_default("best_of", field("best_of"),
                    integer_value(field("best_of")) == 1, "1");
    require_default("suffix", field("suffix"), false, "null");
  }
  return request;
}

ChatFormat chat_format_named(const std::string& name) {
  for (ChatFormat format :
       {ChatFormat::kPlain, ChatFormat::kLlama2, ChatFormat::kMistral, ChatFormat::kChatML, ChatFormat::kLlama3}) {
    if (chat_format_name(format) == name) return format;
  }
  fail("--chat-format: expected one of plain, llama2, mistral, chatml, llama3, got \"", name, "\"");
}

std::string chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::kPlain: return "plain";
    case ChatFormat::kLlama2: return "llama2";
    case ChatFormat::kMistral: return "mistral";
    case ChatFormat::kChatML: return "chatml";
    case ChatFormat::kLlama3: return "llama3";
  }
  fail("chat_format_name: unknown ChatFormat ", static_cast<int>(format));
}

ChatFormat detect_chat_format(const std::string& model_dir) {
  const std::filesystem::path path = std::filesystem::path(model_dir) / "tokenizer_config.json";
  std::ifstream file(path);
  if (!file) return ChatFormat::kPlain;
  std::stringstream text;
  text << file.rdbuf();
  // A config that does not parse says nothing about the template: plain, as with none.
  const json config = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("chat_template")) return ChatFormat::kPlain;
  const json& entry = config["chat_template"];
  std::string chat_template;
  if (entry.is_string()) {
    chat_template = entry.get<std::string>();
  } else if (entry.is_array()) {
    // Several named templates (e.g. "default", "tool_use", "rag"): the default one is the chat.
    for (const json& named : entry) {
      if (named.is_object() && named.value("name", json()) == "default" && named.value("template", json()).is_string()) {
        chat_template = named["template"].get<std::string>();
      }
    }
  }
  const auto has = [&](const char* marker) { return chat_template.find(marker) != std::string::npos; };
  if (has("<|im_start|>")) return ChatFormat::kChatML;
  if (has("<|start_header_id|>")) return ChatFormat::kLlama3;
  if (has("<<SYS>>")) return ChatFormat::kLlama2;
  if (has("[INST]")) return ChatFormat::kMistral;
  return ChatFormat::kPlain;
}

namespace {

// Python's str.strip(): Meta's Llama 2 reference code strips every turn, and Llama 3's template
// trims them, so the models saw their turns that way in training.
std::string trimmed(const std::string& text) {
  const char* space = " \t\n\r\f\v";
  const size_t begin = text.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(space) - begin + 1);
}

// Llama 2 and Mistral: an optional first system message, then user and assistant alternating,
// starting and ending with user.
void check_alternating(const std::vector<ChatMessage>& messages, ChatFormat format) {
  const std::string name = chat_format_name(format);
  const size_t first_turn = messages[0].role == "system" ? 1 : 0;
  for (size_t i = first_turn; i < messages.size(); ++i) {
    const char* expected = (i - first_turn) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != expected) {
      throw invalid("messages", "messages[" + std::to_string(i) + "].role",
                    "the " + name + " chat format expects \"" + expected +
                        "\" here (user and assistant alternate after an optional first system message), got \"" +
                        messages[i].role + "\"");
    }
  }
  if (messages.back().role != "user") {
    throw invalid("messages", "the " + name + " chat format expects the conversation to end with a user message, got \"" +
                                  messages.back().role + "\" last");
  }
}

std::string format_llama2(const std::vector<ChatMessage>& messages) {
  std::string prompt;
  size_t i = 0;
  std::string system;
  if (messages[0].role == "system") system = "<<SYS>>\n" + messages[i++].content + "\n<</SYS>>\n\n";
  for (bool first = true; i < messages.size(); ++i, first = false) {
    const ChatMessage& message = messages[i];
    if (message.role == "user") {
      prompt += "<s>[INST] " + trimmed((first ? system : "") + message.content) + " [/INST]";
    } else {
      prompt += ' ';  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on " " + string
      prompt += trimmed(message.content);
      prompt += " </s>";
    }
  }
  return prompt;
}

std::string format_mistral(const std::vector<ChatMessage>& messages) {
  std::string prompt = "<s>";
  size_t i = 0;
  std::string system;
  if (messages[0].role == "system") system = messages[i++].content + "\n\n";
  for (bool first = true; i < messages.size(); ++i, first = false) {
    const ChatMessage& message = messages[i];
    if (message.role == "user") {
      prompt += "[INST] " + (first ? system : "") + message.content + " [/INST]";
    } else {
      prompt += message.content + "</s>";
    }
  }
  return prompt;
}

}  // namespace

std::string format_chat(const std::vector<ChatMessage>& messages, ChatFormat format) {
  if (messages.empty()) throw invalid("messages", "expected at least one message, got []");
  for (size_t i = 0; i < messages.size(); ++i) {
    check_role("messages[" + std::to_string(i) + "]", json(messages[i].role));
  }
  std::string prompt;
  switch (format) {
    case ChatFormat::kPlain: {
      for (const ChatMessage& message : messages) {
        std::string role = message.role;
        role[0] = static_cast<char>(role[0] - 'a' + 'A');
        prompt += role + ": " + message.content + "\n";
      }
      return prompt + "Assistant:";
    }
    case ChatFormat::kLlama2:
      check_alternating(messages, format);
      return format_llama2(messages);
    case ChatFormat::kMistral:
      check_alternating(messages, format);
      return format_mistral(messages);
    case ChatFormat::kChatML: {
      for (const ChatMessage& message : messages) {
        prompt += "<|im_start|>" + message.role + "\n" + message.content + "<|im_end|>\n";
      }
      return prompt + "<|im_start|>assistant\n";
    }
    case ChatFormat::kLlama3: {
      prompt = "<|begin_of_text|>";
      for (const ChatMessage& message : messages) {
        prompt += "<|start_header_id|>" + message.role + "<|end_header_id|>\n\n" + trimmed(message.content) + "<|eot_id|>";
      }
      return prompt + "<|start_header_id|>assistant<|end_header_id|>\n\n";
    }
  }
  fail("format_chat: unknown ChatFormat ", static_cast<int>(format));
}

namespace {

json usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

}  // namespace

json completion_response(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                         const std::string& text, const std::string& finish_reason, const Usage& usage) {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  const bool chat = endpoint == Endpoint::kChatCompletions;
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  return {{"id", id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})},
          {"usage", usage_json(usage)}};
}

json stream_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                  const std::string& delta, const std::optional<std::string>& finish_reason, bool first) {
  json choice = {{"index", 0},
                 {"logprobs", nullptr},
                 {"finish_reason", finish_reason ? json(*finish_reason) : json(nullptr)}};
  const bool chat = endpoint == Endpoint::kChatCompletions;
  if (chat) {
    // The last chunk's delta is {} when it carries no text; text that comes with the finish
    // reason (or in the first chunk) is still sent rather than dropped.
    json delta_object = json::object();
    if (first) delta_object["role"] = "assistant";
    if (first || !delta.empty() || !finish_reason) delta_object["content"] = delta;
    choice["delta"] = delta_object;
  } else {
    choice["text"] = delta;
  }
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                 const Usage& usage) {
  return {{"id", id},
          {"object", endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

json models_response(const std::string& model, int64_t created) {
  return {{"object", "list"},
          {"data", json::array({{{"id", model}, {"object", "model"}, {"created", created}, {"owned_by", "lintime"}}})}};
}

size_t find_stop(const std::string& text, const std::vector<std::string>& stop) {
  size_t first = std::string::npos;
  for (const std::string& candidate : stop) {
    if (candidate.empty()) continue;  // would match everywhere; the parser refuses it anyway
    first = std::min(first, text.find(candidate));
  }
  return first;
}

size_t releasable_length(const std::string& text, const std::vector<std::string>& stop) {
  size_t held = 0;  // the longest tail of text that begins some stop string without completing it
  for (const std::string& candidate : stop) {
    const size_t longest = std::min(text.size(), candidate.empty() ? 0 : candidate.size() - 1);
    for (size_t length = longest; length > held; --length) {
      if (text.compare(text.size() - length, length, candidate, 0, length) == 0) {
        held = length;
        break;
      }
    }
  }
  return std::min(text.size() - held, find_stop(text, stop));
}

}  // namespace lintime::serve
