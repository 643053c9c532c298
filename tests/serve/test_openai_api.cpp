// The OpenAI protocol of `lintime serve`: request bodies parsed strictly (every accepted field
// and its default, each kind of refusal with its exact message and param), chat prompts in each
// model family's format, the family read from tokenizer_config.json, the JSON of responses,
// stream chunks and errors, and the stop-string helpers that keep a split stop string unsent.
#include "serve/openai_api.h"

#include "core/error.h"
#include "support/test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace {

using nlohmann::json;
using lintime::serve::ApiError;
using lintime::serve::ChatFormat;
using lintime::serve::ChatMessage;
using lintime::serve::CompletionRequest;
using lintime::serve::Endpoint;
using lintime::serve::parse_completion_request;

constexpr Endpoint kCompletions = Endpoint::kCompletions;
constexpr Endpoint kChat = Endpoint::kChatCompletions;

json completion_body() { return {{"model", "tiny"}, {"prompt", "Hello"}}; }
json chat_body() { return {{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", "Hello"}}}}}; }
json body_for(Endpoint endpoint) { return endpoint == kChat ? chat_body() : completion_body(); }

// `body` with `key` set to `value` (or removed when value is "discarded").
json with(json body, const std::string& key, const json& value) {
  if (value.is_discarded()) {
    body.erase(key);
  } else {
    body[key] = value;
  }
  return body;
}
const json kRemoved = json::value_t::discarded;

// Parses a body that must be refused with a 400 invalid_request_error naming `param` and
// saying exactly `message`.
void expect_refused(const json& body, Endpoint endpoint, const std::string& param, const std::string& message) {
  SCOPED_TRACE(body.dump());
  try {
    parse_completion_request(body, endpoint);
  } catch (const ApiError& error) {
    EXPECT_EQ(error.status(), 400);
    EXPECT_EQ(error.type(), "invalid_request_error");
    EXPECT_EQ(error.param(), param);
    EXPECT_EQ(std::string(error.what()), message);
    return;
  }
  ADD_FAILURE() << "accepted, expected the refusal: " << message;
}

// The same field refused the same way by both endpoints.
void expect_refused_by_both(const std::string& key, const json& value, const std::string& param,
                            const std::string& message) {
  for (Endpoint endpoint : {kCompletions, kChat}) {
    expect_refused(with(body_for(endpoint), key, value), endpoint, param, message);
  }
}

// ---- Accepted fields and defaults ----

TEST(ParseRequest, CompletionsDefaults) {
  const CompletionRequest request = parse_completion_request(completion_body(), kCompletions);
  EXPECT_EQ(request.model, "tiny");
  EXPECT_EQ(request.prompt_text, std::optional<std::string>("Hello"));
  EXPECT_TRUE(request.prompt_ids.empty());
  EXPECT_TRUE(request.messages.empty());
  EXPECT_EQ(request.max_tokens, 16);  // OpenAI's default for /v1/completions
  EXPECT_EQ(request.temperature, 1.0);
  EXPECT_EQ(request.top_p, 1.0);
  EXPECT_EQ(request.top_k, 0);
  EXPECT_FALSE(request.seed.has_value());
  EXPECT_TRUE(request.stop.empty());
  EXPECT_FALSE(request.stream);
  EXPECT_FALSE(request.include_usage);
}

TEST(ParseRequest, ChatDefaults) {
  const CompletionRequest request = parse_completion_request(chat_body(), kChat);
  EXPECT_EQ(request.model, "tiny");
  EXPECT_FALSE(request.prompt_text.has_value());
  EXPECT_TRUE(request.prompt_ids.empty());
  ASSERT_EQ(request.messages.size(), 1u);
  EXPECT_EQ(request.messages[0].role, "user");
  EXPECT_EQ(request.messages[0].content, "Hello");
  EXPECT_EQ(request.max_tokens, 0);  // until EOS or the server's cap
  EXPECT_EQ(request.temperature, 1.0);
  EXPECT_EQ(request.top_p, 1.0);
  EXPECT_EQ(request.top_k, 0);
  EXPECT_FALSE(request.seed.has_value());
  EXPECT_TRUE(request.stop.empty());
  EXPECT_FALSE(request.stream);
  EXPECT_FALSE(request.include_usage);
}

TEST(ParseRequest, CompletionsEveryAcceptedField) {
  const json body = {{"model", "tiny"},
                     {"prompt", "Once"},
                     {"max_tokens", 5},
                     {"temperature", 0.5},
                     {"top_p", 0.9},
                     {"top_k", 40},
                     {"seed", 7},
                     {"stop", {"\n", "END"}},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}},
                     {"n", 1},
                     {"user", "someone"},
                     {"echo", false},
                     {"logprobs", nullptr},
                     {"presence_penalty", 0},
                     {"frequency_penalty", 0.0},
                     {"best_of", 1},
                     {"suffix", nullptr},
                     {"logit_bias", json::object()}};
  const CompletionRequest request = parse_completion_request(body, kCompletions);
  EXPECT_EQ(request.prompt_text, std::optional<std::string>("Once"));
  EXPECT_EQ(request.max_tokens, 5);
  EXPECT_EQ(request.temperature, 0.5);
  EXPECT_EQ(request.top_p, 0.9);
  EXPECT_EQ(request.top_k, 40);
  EXPECT_EQ(request.seed, std::optional<uint64_t>(7));
  EXPECT_EQ(request.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(request.stream);
  EXPECT_TRUE(request.include_usage);
}

TEST(ParseRequest, ChatEveryAcceptedField) {
  const json body = {{"model", "tiny"},
                     {"messages",
                      {{{"role", "system"}, {"content", "Be brief."}},
                       {{"role", "user"}, {"content", "Hi"}, {"name", "ann"}},
                       {{"role", "assistant"}, {"content", "Hello."}},
                       {{"role", "user"}, {"content", "More?"}}}},
                     {"max_completion_tokens", 9},
                     {"temperature", 0},
                     {"top_p", 1},
                     {"top_k", 1},
                     {"seed", 0},
                     {"stop", "###"},
                     {"stream", true},
                     {"stream_options", {{"include_usage", false}}},
                     {"n", 1},
                     {"user", "someone"},
                     {"logprobs", false},
                     {"presence_penalty", 0.0},
                     {"frequency_penalty", 0},
                     {"logit_bias", nullptr}};
  const CompletionRequest request = parse_completion_request(body, kChat);
  ASSERT_EQ(request.messages.size(), 4u);
  EXPECT_EQ(request.messages[0].role, "system");
  EXPECT_EQ(request.messages[0].content, "Be brief.");
  EXPECT_EQ(request.messages[1].role, "user");
  EXPECT_EQ(request.messages[2].role, "assistant");
  EXPECT_EQ(request.messages[3].content, "More?");
  EXPECT_EQ(request.max_tokens, 9);
  EXPECT_EQ(request.temperature, 0.0);
  EXPECT_EQ(request.top_k, 1);
  EXPECT_EQ(request.seed, std::optional<uint64_t>(0));
  EXPECT_EQ(request.stop, std::vector<std::string>{"###"});
  EXPECT_TRUE(request.stream);
  EXPECT_FALSE(request.include_usage);

  EXPECT_EQ(parse_completion_request(with(chat_body(), "max_tokens", 12), kChat).max_tokens, 12);
}

TEST(ParseRequest, NullMeansTheDefault) {
  for (Endpoint endpoint : {kCompletions, kChat}) {
    json body = body_for(endpoint);
    for (const char* key : {"max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options",
                            "n", "user", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias"}) {
      body[key] = nullptr;
    }
    const CompletionRequest request = parse_completion_request(body, endpoint);
    EXPECT_EQ(request.max_tokens, endpoint == kChat ? 0 : 16);
    EXPECT_EQ(request.temperature, 1.0);
    EXPECT_EQ(request.top_p, 1.0);
    EXPECT_EQ(request.top_k, 0);
    EXPECT_FALSE(request.seed.has_value());
    EXPECT_TRUE(request.stop.empty());
    EXPECT_FALSE(request.stream);
    EXPECT_FALSE(request.include_usage);
  }
  EXPECT_EQ(parse_completion_request(with(chat_body(), "max_completion_tokens", nullptr), kChat).max_tokens, 0);
}

TEST(ParseRequest, IntegerFieldsTakeIntegralFloats) {
  // 3.0 is the integer 3 (some clients serialise every number as a float); 3.5 is not.
  EXPECT_EQ(parse_completion_request(with(completion_body(), "max_tokens", 3.0), kCompletions).max_tokens, 3);
  EXPECT_EQ(parse_completion_request(with(completion_body(), "top_k", 2.0), kCompletions).top_k, 2);
  EXPECT_EQ(parse_completion_request(with(completion_body(), "seed", 5.0), kCompletions).seed,
            std::optional<uint64_t>(5));
  EXPECT_NO_THROW(parse_completion_request(with(completion_body(), "n", 1.0), kCompletions));
  EXPECT_NO_THROW(parse_completion_request(with(completion_body(), "best_of", 1.0), kCompletions));
  expect_refused(with(completion_body(), "max_tokens", 3.5), kCompletions, "max_tokens",
                 "max_tokens: expected a positive integer, got 3.5");
  expect_refused(with(completion_body(), "top_k", 1.5), kCompletions, "top_k", "top_k: expected an integer >= 0, got 1.5");
}

TEST(ParseRequest, SeedTakesTheWholeUint64Range) {
  const uint64_t largest = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(parse_completion_request(with(completion_body(), "seed", largest), kCompletions).seed,
            std::optional<uint64_t>(largest));
  EXPECT_EQ(parse_completion_request(with(chat_body(), "seed", 0), kChat).seed, std::optional<uint64_t>(0));
  expect_refused_by_both("seed", -1, "seed", "seed: expected a non-negative integer or null, got -1");
  expect_refused_by_both("seed", "42", "seed", "seed: expected a non-negative integer or null, got \"42\"");
  expect_refused_by_both("seed", 1.5, "seed", "seed: expected a non-negative integer or null, got 1.5");
  expect_refused_by_both("seed", true, "seed", "seed: expected a non-negative integer or null, got true");
}

TEST(ParseRequest, PromptForms) {
  const auto parsed = [](const json& prompt) {
    return parse_completion_request(with(completion_body(), "prompt", prompt), kCompletions);
  };
  EXPECT_EQ(parsed("Once upon").prompt_text, std::optional<std::string>("Once upon"));
  EXPECT_EQ(parsed("").prompt_text, std::optional<std::string>(""));  // the server decides what an empty prompt means
  EXPECT_EQ(parsed(json::array({"Once"})).prompt_text, std::optional<std::string>("Once"));
  const CompletionRequest ids = parsed({1, 0, 31999});
  EXPECT_FALSE(ids.prompt_text.has_value());
  EXPECT_EQ(ids.prompt_ids, (std::vector<int64_t>{1, 0, 31999}));
  EXPECT_EQ(parsed(json::array({json::array({5, 6})})).prompt_ids, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(parsed(json::array({json::array({5.0})})).prompt_ids, (std::vector<int64_t>{5}));
}

TEST(ParseRequest, PromptRefusals) {
  const std::string expected =
      "prompt: expected a string, a list of token ids (non-negative integers), or a list holding one of either, got ";
  const auto refused = [&](const json& prompt, const std::string& message) {
    expect_refused(with(completion_body(), "prompt", prompt), kCompletions, "prompt", message);
  };
  refused({"a", "b"}, "prompt: only one prompt per request is supported, got 2");
  refused(json::array({json::array({1}), json::array({2}), json::array({3})}),
          "prompt: only one prompt per request is supported, got 3");
  refused(json::array(), expected + "[]");
  refused(json::array({json::array()}), expected + "[[]]");
  refused({1, -2}, expected + "[1,-2]");
  refused({1, "a"}, expected + "[1,\"a\"]");
  refused({1, 2.5}, expected + "[1,2.5]");
  refused({true}, expected + "[true]");
  refused(json::array({json::array({1, "x"})}), expected + "[[1,\"x\"]]");
  refused(5, expected + "5");
  refused({{"text", "hi"}}, expected + "{\"text\":\"hi\"}");
  expect_refused(with(completion_body(), "prompt", kRemoved), kCompletions, "prompt",
                 "prompt: required, expected a string or a list of token ids");
  expect_refused(with(completion_body(), "prompt", nullptr), kCompletions, "prompt",
                 "prompt: required, expected a string or a list of token ids");
}

TEST(ParseRequest, ChatContentPartsAreJoined) {
  const json body = with(chat_body(), "messages",
                         {{{"role", "user"},
                           {"content", {{{"type", "text"}, {"text", "Hello, "}}, {{"type", "text"}, {"text", "world"}}}}}});
  const CompletionRequest request = parse_completion_request(body, kChat);
  ASSERT_EQ(request.messages.size(), 1u);
  EXPECT_EQ(request.messages[0].content, "Hello, world");
  // An empty list of parts is empty content.
  EXPECT_EQ(parse_completion_request(with(chat_body(), "messages", {{{"role", "user"}, {"content", json::array()}}}),
                                     kChat)
                .messages[0]
                .content,
            "");
}

TEST(ParseRequest, MessageRefusals) {
  const auto refused = [](const json& messages, const std::string& message) {
    expect_refused(with(chat_body(), "messages", messages), kChat, "messages", message);
  };
  refused(json::array(), "messages: expected at least one message, got []");
  refused("Hello", "messages: expected a list of {\"role\", \"content\"} objects, got \"Hello\"");
  refused({"Hello"}, "messages[0]: expected an object with role and content, got \"Hello\"");
  refused({{{"role", "tool"}, {"content", "42"}}}, "messages[0].role: expected one of system, user, assistant, got \"tool\"");
  refused({{{"role", "user"}, {"content", "a"}}, {{"role", 1}, {"content", "b"}}},
          "messages[1].role: expected one of system, user, assistant, got 1");
  refused({{{"content", "Hi"}}}, "messages[0].role: required");
  refused({{{"role", "user"}}}, "messages[0].content: required");
  refused({{{"role", "assistant"}, {"content", nullptr}}},
          "messages[0].content: expected a string or a list of {\"type\": \"text\", \"text\": ...} parts, got null");
  refused({{{"role", "user"}, {"content", "Hi"}, {"tool_calls", json::array()}}},
          "messages[0]: unknown field \"tool_calls\", expected role, content, name");
  refused({{{"role", "user"}, {"content", "Hi"}, {"name", 3}}}, "messages[0].name: expected a string, got 3");
  refused({{{"role", "user"},
            {"content", {{{"type", "text"}, {"text", "Look:"}}, {{"type", "image_url"}, {"image_url", "x"}}}}}},
          "messages[0].content[1]: unknown field \"image_url\", expected type and text");
  refused({{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}},
          "messages[0].content[0].type: only \"text\" parts are supported, got \"image_url\"");
  refused({{{"role", "user"}, {"content", {"plain"}}}},
          "messages[0].content[0]: expected an object {\"type\": \"text\", \"text\": ...}, got \"plain\"");
  refused({{{"role", "user"}, {"content", {{{"type", "text"}}}}}}, "messages[0].content[0].text: expected a string, got null");
  expect_refused(with(chat_body(), "messages", kRemoved), kChat, "messages",
                 "messages: required, expected a list of {\"role\", \"content\"} objects");
}

TEST(ParseRequest, WrongTypes) {
  expect_refused_by_both("model", 5, "model", "model: expected a non-empty string, got 5");
  expect_refused_by_both("model", "", "model", "model: expected a non-empty string, got \"\"");
  expect_refused_by_both("model", kRemoved, "model", "model: required, expected a string naming the model");
  expect_refused_by_both("temperature", "hot", "temperature", "temperature: expected a number in [0, 2], got \"hot\"");
  expect_refused_by_both("temperature", true, "temperature", "temperature: expected a number in [0, 2], got true");
  expect_refused_by_both("top_p", "1", "top_p", "top_p: expected a number in (0, 1], got \"1\"");
  expect_refused_by_both("max_tokens", "16", "max_tokens", "max_tokens: expected a positive integer, got \"16\"");
  expect_refused_by_both("max_tokens", true, "max_tokens", "max_tokens: expected a positive integer, got true");
  expect_refused_by_both("top_k", "40", "top_k", "top_k: expected an integer >= 0, got \"40\"");
  expect_refused_by_both("stream", "yes", "stream", "stream: expected true or false, got \"yes\"");
  expect_refused_by_both("stream", 1, "stream", "stream: expected true or false, got 1");
  expect_refused_by_both("user", 5, "user", "user: expected a string, got 5");
  expect_refused_by_both("stop", 5, "stop", "stop: expected a non-empty string or a list of up to 4 non-empty strings, got 5");
  expect_refused(with(chat_body(), "max_completion_tokens", "9"), kChat, "max_completion_tokens",
                 "max_completion_tokens: expected a positive integer, got \"9\"");
}

TEST(ParseRequest, OutOfRange) {
  expect_refused_by_both("temperature", 3, "temperature", "temperature: expected a number in [0, 2], got 3");
  expect_refused_by_both("temperature", -0.5, "temperature", "temperature: expected a number in [0, 2], got -0.5");
  EXPECT_EQ(parse_completion_request(with(chat_body(), "temperature", 2), kChat).temperature, 2.0);
  expect_refused_by_both("top_p", 0, "top_p", "top_p: expected a number in (0, 1], got 0");
  expect_refused_by_both("top_p", 1.5, "top_p", "top_p: expected a number in (0, 1], got 1.5");
  expect_refused_by_both("max_tokens", 0, "max_tokens", "max_tokens: expected a positive integer, got 0");
  expect_refused_by_both("max_tokens", -5, "max_tokens", "max_tokens: expected a positive integer, got -5");
  expect_refused(with(chat_body(), "max_completion_tokens", 0), kChat, "max_completion_tokens",
                 "max_completion_tokens: expected a positive integer, got 0");
  expect_refused_by_both("top_k", -1, "top_k", "top_k: expected an integer >= 0, got -1");
}

TEST(ParseRequest, MaxTokensAndMaxCompletionTokensNotBoth) {
  expect_refused(with(with(chat_body(), "max_tokens", 5), "max_completion_tokens", 5), kChat, "max_completion_tokens",
                 "max_completion_tokens: give max_tokens or max_completion_tokens, not both");
}

TEST(ParseRequest, StopForms) {
  const auto stop_of = [](const json& stop) {
    return parse_completion_request(with(completion_body(), "stop", stop), kCompletions).stop;
  };
  EXPECT_EQ(stop_of("\n"), std::vector<std::string>{"\n"});
  EXPECT_EQ(stop_of({"a", "b", "c", "d"}), (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_TRUE(stop_of(json::array()).empty());
  EXPECT_TRUE(stop_of(nullptr).empty());
  const std::string expected = "stop: expected a non-empty string or a list of up to 4 non-empty strings, got ";
  expect_refused_by_both("stop", {"a", "b", "c", "d", "e"}, "stop", expected + "5 strings");
  expect_refused_by_both("stop", "", "stop", expected + "\"\"");
  expect_refused_by_both("stop", {"a", ""}, "stop", expected + "[\"a\",\"\"]");
  expect_refused_by_both("stop", {"a", 1}, "stop", expected + "[\"a\",1]");
}

TEST(ParseRequest, OnlyOneChoice) {
  expect_refused_by_both("n", 2, "n", "n: only n = 1 is supported, got 2");
  expect_refused_by_both("n", 0, "n", "n: only n = 1 is supported, got 0");
  expect_refused_by_both("n", "1", "n", "n: only n = 1 is supported, got \"1\"");
  expect_refused_by_both("n", true, "n", "n: only n = 1 is supported, got true");
}

TEST(ParseRequest, UnsupportedFieldsAcceptOnlyTheirDefault) {
  expect_refused_by_both("frequency_penalty", 0.5, "frequency_penalty",
                         "frequency_penalty: not supported (expected 0), got 0.5");
  expect_refused_by_both("presence_penalty", 1, "presence_penalty", "presence_penalty: not supported (expected 0), got 1");
  expect_refused_by_both("presence_penalty", "0", "presence_penalty",
                         "presence_penalty: not supported (expected 0), got \"0\"");
  expect_refused_by_both("logprobs", true, "logprobs", "logprobs: not supported (expected null or false), got true");
  expect_refused_by_both("logprobs", 0, "logprobs", "logprobs: not supported (expected null or false), got 0");
  expect_refused_by_both("logit_bias", {{"50256", -100}}, "logit_bias",
                         "logit_bias: not supported (expected null or {}), got {\"50256\":-100}");
  expect_refused(with(completion_body(), "echo", true), kCompletions, "echo",
                 "echo: not supported (expected false), got true");
  expect_refused(with(completion_body(), "best_of", 2), kCompletions, "best_of", "best_of: not supported (expected 1), got 2");
  expect_refused(with(completion_body(), "suffix", "tail"), kCompletions, "suffix",
                 "suffix: not supported (expected null), got \"tail\"");
}

TEST(ParseRequest, TheOtherEndpointsFields) {
  expect_refused(with(completion_body(), "messages", json::array()), kCompletions, "messages",
                 "messages: not accepted by /v1/completions (a /v1/chat/completions field)");
  expect_refused(with(completion_body(), "max_completion_tokens", 5), kCompletions, "max_completion_tokens",
                 "max_completion_tokens: not accepted by /v1/completions (a /v1/chat/completions field)");
  for (const char* key : {"prompt", "echo", "best_of", "suffix"}) {
    expect_refused(with(chat_body(), key, nullptr), kChat, key,
                   std::string(key) + ": not accepted by /v1/chat/completions (a /v1/completions field)");
  }
}

TEST(ParseRequest, UnknownFields) {
  expect_refused_by_both("foo", 1, "foo", "unknown field \"foo\"");
  expect_refused(with(chat_body(), "tools", json::array()), kChat, "tools", "unknown field \"tools\"");
  expect_refused(with(completion_body(), "with \"quote\"", 1), kCompletions, "with \"quote\"",
                 "unknown field \"with \\\"quote\\\"\"");
}

TEST(ParseRequest, BodyMustBeAnObject) {
  for (const json& body : {json::array({1}), json("text"), json(nullptr), json(3)}) {
    for (Endpoint endpoint : {kCompletions, kChat}) {
      expect_refused(body, endpoint, "", "expected a JSON object as the request body");
    }
  }
}

TEST(ParseRequest, StreamOptions) {
  const json streaming = with(chat_body(), "stream", true);
  EXPECT_TRUE(parse_completion_request(with(streaming, "stream_options", {{"include_usage", true}}), kChat).include_usage);
  EXPECT_FALSE(parse_completion_request(with(streaming, "stream_options", json::object()), kChat).include_usage);
  EXPECT_FALSE(parse_completion_request(with(chat_body(), "stream_options", nullptr), kChat).include_usage);
  expect_refused(with(chat_body(), "stream_options", {{"include_usage", true}}), kChat, "stream_options",
                 "stream_options: allowed only when stream is true");
  expect_refused(with(with(chat_body(), "stream", false), "stream_options", {{"include_usage", true}}), kChat,
                 "stream_options", "stream_options: allowed only when stream is true");
  expect_refused(with(streaming, "stream_options", {{"continuous_usage_stats", true}}), kChat, "stream_options",
                 "stream_options: unknown field \"continuous_usage_stats\", expected only include_usage");
  expect_refused(with(streaming, "stream_options", {{"include_usage", "yes"}}), kChat, "stream_options",
                 "stream_options.include_usage: expected true or false, got \"yes\"");
  expect_refused(with(streaming, "stream_options", true), kChat, "stream_options",
                 "stream_options: expected an object like {\"include_usage\": true}, got true");
}

// ---- Errors ----

TEST(ErrorJson, OpenAiShape) {
  const ApiError error = lintime::serve::bad_request("temperature", "temperature: expected a number in [0, 2], got 3");
  EXPECT_EQ(error.status(), 400);
  EXPECT_EQ(error.type(), "invalid_request_error");
  EXPECT_EQ(lintime::serve::error_json(error),
            json::parse(R"({"error": {"message": "temperature: expected a number in [0, 2], got 3",
                                      "type": "invalid_request_error", "param": "temperature", "code": null}})"));
  const ApiError no_param(401, "authentication_error", "", "missing or wrong API key");
  EXPECT_EQ(lintime::serve::error_json(no_param),
            json::parse(R"({"error": {"message": "missing or wrong API key", "type": "authentication_error",
                                      "param": null, "code": null}})"));
}

// ---- Chat formats ----

const std::vector<ChatMessage> kConversation = {
    {"system", "You are terse."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Name a color."}};

std::string formatted(ChatFormat format, const std::vector<ChatMessage>& messages = kConversation) {
  return lintime::serve::format_chat(messages, format);
}

TEST(FormatChat, Plain) {
  EXPECT_EQ(formatted(ChatFormat::kPlain),
            "System: You are terse.\nUser: Hi\nAssistant: Hello.\nUser: Name a color.\nAssistant:");
}

TEST(FormatChat, Llama2) {
  EXPECT_EQ(formatted(ChatFormat::kLlama2),
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Name a color. [/INST]");
  EXPECT_EQ(formatted(ChatFormat::kLlama2, {{"user", "Hi"}}), "<s>[INST] Hi [/INST]");
  // Turns are stripped, as Meta's reference code does.
  EXPECT_EQ(formatted(ChatFormat::kLlama2, {{"user", " Hi\n"}, {"assistant", " Hello. "}, {"user", "Bye "}}),
            "<s>[INST] Hi [/INST] Hello. </s><s>[INST] Bye [/INST]");
}

TEST(FormatChat, Mistral) {
  EXPECT_EQ(formatted(ChatFormat::kMistral),
            "<s>[INST] You are terse.\n\nHi [/INST]Hello.</s>[INST] Name a color. [/INST]");
  EXPECT_EQ(formatted(ChatFormat::kMistral, {{"user", "Hi"}}), "<s>[INST] Hi [/INST]");
}

TEST(FormatChat, ChatML) {
  EXPECT_EQ(formatted(ChatFormat::kChatML),
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n"
            "<|im_start|>user\nName a color.<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(FormatChat, Llama3) {
  EXPECT_EQ(formatted(ChatFormat::kLlama3),
            "<|begin_of_text|>"
            "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Contents are trimmed, as Meta's template does.
  EXPECT_EQ(formatted(ChatFormat::kLlama3, {{"user", "\n Hi \n"}}),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

// The bad_request("messages", ...) that format_chat throws, as "param | message".
std::string chat_refusal(const std::vector<ChatMessage>& messages, ChatFormat format) {
  try {
    lintime::serve::format_chat(messages, format);
  } catch (const ApiError& error) {
    EXPECT_EQ(error.status(), 400);
    return error.param() + " | " + error.what();
  }
  return "accepted";
}

TEST(FormatChat, Llama2AndMistralNeedAlternatingTurnsEndingWithUser) {
  for (ChatFormat format : {ChatFormat::kLlama2, ChatFormat::kMistral}) {
    const std::string name = lintime::serve::chat_format_name(format);
    SCOPED_TRACE(name);
    EXPECT_EQ(chat_refusal({{"user", "Hi"}, {"assistant", "Hello."}}, format),
              "messages | messages: the " + name +
                  " chat format expects the conversation to end with a user message, got \"assistant\" last");
    EXPECT_EQ(chat_refusal({{"system", "Be brief."}}, format),
              "messages | messages: the " + name +
                  " chat format expects the conversation to end with a user message, got \"system\" last");
    EXPECT_EQ(chat_refusal({{"user", "Hi"}, {"user", "Again"}}, format),
              "messages | messages[1].role: the " + name +
                  " chat format expects \"assistant\" here (user and assistant alternate after an optional first "
                  "system message), got \"user\"");
    EXPECT_EQ(chat_refusal({{"assistant", "Hello."}, {"user", "Hi"}}, format),
              "messages | messages[0].role: the " + name +
                  " chat format expects \"user\" here (user and assistant alternate after an optional first system "
                  "message), got \"assistant\"");
    EXPECT_EQ(chat_refusal({{"user", "Hi"}, {"system", "Be brief."}, {"user", "Hi"}}, format),
              "messages | messages[1].role: the " + name +
                  " chat format expects \"assistant\" here (user and assistant alternate after an optional first "
                  "system message), got \"system\"");
  }
  // The other formats take any order, and still end with the generation prompt.
  EXPECT_EQ(formatted(ChatFormat::kPlain, {{"user", "Hi"}, {"user", "Again"}, {"assistant", "Yes"}}),
            "User: Hi\nUser: Again\nAssistant: Yes\nAssistant:");
  EXPECT_EQ(formatted(ChatFormat::kChatML, {{"assistant", "Yes"}}),
            "<|im_start|>assistant\nYes<|im_end|>\n<|im_start|>assistant\n");
}

TEST(FormatChat, RefusesBadRolesAndNoMessages) {
  for (ChatFormat format :
       {ChatFormat::kPlain, ChatFormat::kLlama2, ChatFormat::kMistral, ChatFormat::kChatML, ChatFormat::kLlama3}) {
    SCOPED_TRACE(lintime::serve::chat_format_name(format));
    EXPECT_EQ(chat_refusal({{"user", "Hi"}, {"tool", "42"}}, format),
              "messages | messages[1].role: expected one of system, user, assistant, got \"tool\"");
    EXPECT_EQ(chat_refusal({}, format), "messages | messages: expected at least one message, got []");
  }
}

TEST(ChatFormatNames, RoundTripAndRefusal) {
  for (const char* name : {"plain", "llama2", "mistral", "chatml", "llama3"}) {
    EXPECT_EQ(lintime::serve::chat_format_name(lintime::serve::chat_format_named(name)), name);
  }
  EXPECT_EQ(lintime::testing::error_of([] { lintime::serve::chat_format_named("vicuna"); }),
            "--chat-format: expected one of plain, llama2, mistral, chatml, llama3, got \"vicuna\"");
}

// ---- Chat format detection ----

// Realistic snippets of each family's chat_template (from their tokenizer_config.json files).
const char* const kChatMLTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
const char* const kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
const char* const kLlama2Template =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    "%}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif "
    "%}{% endfor %}";
const char* const kMistralTemplate =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";

void write_text(const std::string& path, const std::string& text) {
  std::ofstream file(path);
  file << text;
}

ChatFormat detected_from(const json& tokenizer_config) {
  lintime::testing::TempDir folder;
  json config = {{"add_bos_token", true}, {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"model_max_length", 4096}};
  config.update(tokenizer_config);
  write_text(folder.file("tokenizer_config.json"), config.dump(2));
  return lintime::serve::detect_chat_format(folder.path());
}

TEST(DetectChatFormat, EachFamilyByItsMarkers) {
  EXPECT_EQ(detected_from({{"chat_template", kChatMLTemplate}}), ChatFormat::kChatML);
  EXPECT_EQ(detected_from({{"chat_template", kLlama3Template}}), ChatFormat::kLlama3);
  EXPECT_EQ(detected_from({{"chat_template", kLlama2Template}}), ChatFormat::kLlama2);
  EXPECT_EQ(detected_from({{"chat_template", kMistralTemplate}}), ChatFormat::kMistral);
  EXPECT_EQ(detected_from({{"chat_template", "{% for message in messages %}{{ message['content'] }}{% endfor %}"}}),
            ChatFormat::kPlain);
}

TEST(DetectChatFormat, ListFormTakesTheDefaultEntry) {
  const json templates = {{{"name", "tool_use"}, {"template", kLlama3Template}},
                          {{"name", "default"}, {"template", kChatMLTemplate}},
                          {{"name", "rag"}, {"template", kLlama2Template}}};
  EXPECT_EQ(detected_from({{"chat_template", templates}}), ChatFormat::kChatML);
  const json without_default = {{{"name", "tool_use"}, {"template", kLlama3Template}}};
  EXPECT_EQ(detected_from({{"chat_template", without_default}}), ChatFormat::kPlain);
}

TEST(DetectChatFormat, PlainWithoutATemplate) {
  EXPECT_EQ(detected_from(json::object()), ChatFormat::kPlain);
  EXPECT_EQ(detected_from({{"chat_template", nullptr}}), ChatFormat::kPlain);
  EXPECT_EQ(detected_from({{"chat_template", 3}}), ChatFormat::kPlain);
  lintime::testing::TempDir empty;
  EXPECT_EQ(lintime::serve::detect_chat_format(empty.path()), ChatFormat::kPlain);
  EXPECT_EQ(lintime::serve::detect_chat_format(empty.file("absent")), ChatFormat::kPlain);
  lintime::testing::TempDir broken;
  write_text(broken.file("tokenizer_config.json"), "{\"chat_template\": \"<|im_start|>");
  EXPECT_EQ(lintime::serve::detect_chat_format(broken.path()), ChatFormat::kPlain);
  lintime::testing::TempDir listed;
  write_text(listed.file("tokenizer_config.json"), "[\"<|im_start|>\"]");
  EXPECT_EQ(lintime::serve::detect_chat_format(listed.path()), ChatFormat::kPlain);
}

// ---- Responses, chunks, usage ----

TEST(Responses, Completion) {
  EXPECT_EQ(lintime::serve::completion_response(kCompletions, "cmpl-1", 1700000000, "tiny", " there", "length", {5, 3}),
            json::parse(R"({"id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "tiny",
                            "choices": [{"index": 0, "text": " there", "logprobs": null, "finish_reason": "length"}],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})"));
}

TEST(Responses, ChatCompletion) {
  EXPECT_EQ(lintime::serve::completion_response(kChat, "chatcmpl-1", 1700000000, "tiny", "Blue.", "stop", {12, 2}),
            json::parse(R"({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "tiny",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Blue."},
                                         "logprobs": null, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}})"));
}

TEST(Responses, CompletionChunks) {
  EXPECT_EQ(lintime::serve::stream_chunk(kCompletions, "cmpl-1", 7, "tiny", " the", std::nullopt, true),
            json::parse(R"({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "tiny",
                            "choices": [{"index": 0, "text": " the", "logprobs": null, "finish_reason": null}]})"));
  EXPECT_EQ(lintime::serve::stream_chunk(kCompletions, "cmpl-1", 7, "tiny", "", "length", false),
            json::parse(R"({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "tiny",
                            "choices": [{"index": 0, "text": "", "logprobs": null, "finish_reason": "length"}]})"));
}

TEST(Responses, ChatChunks) {
  const auto chunk = [](const std::string& delta, const std::optional<std::string>& finish_reason, bool first) {
    return lintime::serve::stream_chunk(kChat, "chatcmpl-1", 7, "tiny", delta, finish_reason, first);
  };
  const auto expected = [](const std::string& delta, const std::string& finish_reason) {
    return json::parse(R"({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "tiny",
                           "choices": [{"index": 0, "delta": )" +
                       delta + R"(, "logprobs": null, "finish_reason": )" + finish_reason + "}]}");
  };
  EXPECT_EQ(chunk("", std::nullopt, true), expected(R"({"role": "assistant", "content": ""})", "null"));
  EXPECT_EQ(chunk("Blue", std::nullopt, false), expected(R"({"content": "Blue"})", "null"));
  EXPECT_EQ(chunk("", "stop", false), expected("{}", "\"stop\""));
  // Text that arrives with the finish reason is sent, not dropped.
  EXPECT_EQ(chunk(".", "length", false), expected(R"({"content": "."})", "\"length\""));
}

TEST(Responses, UsageChunks) {
  EXPECT_EQ(lintime::serve::usage_chunk(kChat, "chatcmpl-1", 7, "tiny", {12, 2}),
            json::parse(R"({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "tiny",
                            "choices": [],
                            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}})"));
  EXPECT_EQ(lintime::serve::usage_chunk(kCompletions, "cmpl-1", 7, "tiny", {5, 0}),
            json::parse(R"({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "tiny",
                            "choices": [],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}})"));
}

TEST(Responses, Models) {
  EXPECT_EQ(lintime::serve::models_response("gsa-1.3b", 1700000000),
            json::parse(R"({"object": "list", "data": [{"id": "gsa-1.3b", "object": "model", "created": 1700000000,
                                                       "owned_by": "lintime"}]})"));
}

// ---- Stop strings ----

using lintime::serve::find_stop;
using lintime::serve::releasable_length;

// What a server streams when the text arrives in `pieces`: after each piece it releases what
// releasable_length allows, and at a complete stop string the text before it; at the end
// (EOS) the rest. `released` gets each release, so tests can see what was held back when.
std::string streamed(const std::vector<std::string>& pieces, const std::vector<std::string>& stop,
                     std::vector<std::string>* released = nullptr) {
  std::string pending, sent;
  const auto release = [&](size_t length) {
    if (released) released->push_back(pending.substr(0, length));
    sent += pending.substr(0, length);
    pending.erase(0, length);
  };
  for (const std::string& piece : pieces) {
    pending += piece;
    const size_t stop_at = find_stop(pending, stop);
    if (stop_at != std::string::npos) {
      release(stop_at);
      return sent;
    }
    release(releasable_length(pending, stop));
  }
  release(pending.size());
  return sent;
}

TEST(StopStrings, NoStopStrings) {
  EXPECT_EQ(releasable_length("Hello\n\nUser:", {}), 12u);
  EXPECT_EQ(find_stop("Hello\n\nUser:", {}), std::string::npos);
  EXPECT_EQ(releasable_length("", {}), 0u);
  EXPECT_EQ(streamed({"a", "b"}, {}), "ab");
}

TEST(StopStrings, HoldsATailThatMayBeginAStopString) {
  const std::vector<std::string> stop = {"\n\nUser:"};
  EXPECT_EQ(releasable_length("Hello", stop), 5u);
  EXPECT_EQ(releasable_length("Hello\n", stop), 5u);
  EXPECT_EQ(releasable_length("Hello\n\nUs", stop), 5u);
  EXPECT_EQ(releasable_length("Hello\n\nUx", stop), 9u);  // no longer a stop string's beginning
  EXPECT_EQ(releasable_length("\n\nUse", stop), 0u);     // the whole text may begin one
  EXPECT_EQ(find_stop("Hello\n\nUs", stop), std::string::npos);
  EXPECT_EQ(find_stop("Hello\n\nUser: more", stop), 5u);
  EXPECT_EQ(releasable_length("Hello\n\nUser: more", stop), 5u);  // never past a complete stop string
  EXPECT_EQ(releasable_length("\n\nUser:", stop), 0u);
}

TEST(StopStrings, SplitAcrossChunksIsNeverStreamed) {
  std::vector<std::string> released;
  EXPECT_EQ(streamed({"The an", "swer is 4", "2.\n", "\nUs", "er: and more"}, {"\n\nUser:"}, &released),
            "The answer is 42.");
  EXPECT_EQ(released, (std::vector<std::string>{"The an", "swer is 4", "2.", "", ""}));
  // A tail held back that turns out not to be a stop string is released with the next piece.
  released.clear();
  EXPECT_EQ(streamed({"a\n", "\nb"}, {"\n\nUser:"}, &released), "a\n\nb");
  EXPECT_EQ(released, (std::vector<std::string>{"a", "\n\nb", ""}));
  // At the end the held tail goes out.
  EXPECT_EQ(streamed({"a\n\nUse"}, {"\n\nUser:"}), "a\n\nUse");
}

TEST(StopStrings, SeveralStopStrings) {
  const std::vector<std::string> stop = {"END", "###"};
  EXPECT_EQ(releasable_length("abc##", stop), 3u);
  EXPECT_EQ(releasable_length("abc#E", stop), 4u);
  EXPECT_EQ(releasable_length("xEN", stop), 1u);
  EXPECT_EQ(releasable_length("EN", stop), 0u);
  EXPECT_EQ(find_stop("x###yEND", stop), 1u);  // the first one in the text, whichever string
  EXPECT_EQ(find_stop("xENDy###", stop), 1u);
  EXPECT_EQ(releasable_length("xENDy###", stop), 1u);
  EXPECT_EQ(find_stop("ENxx##", stop), std::string::npos);
  // The longest held tail over all stop strings counts: "\n" begins one, "\n\n" begins another.
  EXPECT_EQ(releasable_length("ab\n\n", {"\nQ", "\n\nA:"}), 2u);
  EXPECT_EQ(streamed({"one #", "## two E", "ND"}, stop), "one ");
  EXPECT_EQ(streamed({"one E", "N", "D"}, stop), "one ");
}

TEST(StopStrings, AStopStringInsideAnother) {
  // "\n" is a stop string and a prefix of "\n\n": the first complete one wins at once.
  const std::vector<std::string> stop = {"\n\n", "\n"};
  EXPECT_EQ(find_stop("ab\n", stop), 2u);
  EXPECT_EQ(releasable_length("ab\n", stop), 2u);
  EXPECT_EQ(streamed({"ab", "\ncd"}, stop), "ab");
}

}  // namespace
