// GsaConfig: defaults, fla config.json parsing (a gsa-1.3B-like literal), round trips through
// JSON and files, and one-line rejection messages naming the key.
#include "models/gsa_config.h"
#include "core/error.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <fstream>
#include <string>

namespace {

using lintime::models::GsaConfig;
using nlohmann::json;

// The shape of fla-hub/gsa-1.3B-100B's config.json (legacy "norm_first" era, fla's keys).
const char* kFlaConfig = R"({
  "_name_or_path": "fla-hub/gsa-1.3B-100B",
  "architectures": ["GSAForCausalLM"],
  "attn": null,
  "attn_mode": "chunk",
  "bos_token_id": 1,
  "clamp_max": null,
  "clamp_min": null,
  "conv_size": 4,
  "elementwise_affine": true,
  "eos_token_id": 2,
  "expand_k": 1,
  "expand_v": 1,
  "feature_map": "swish",
  "fuse_cross_entropy": true,
  "fuse_norm": true,
  "fuse_swiglu": true,
  "gate_logit_normalizer": 8,
  "hidden_act": "swish",
  "hidden_ratio": 4,
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": null,
  "max_position_embeddings": 2048,
  "model_type": "gsa",
  "norm_eps": 1e-06,
  "norm_first": true,
  "num_heads": 4,
  "num_hidden_layers": 24,
  "num_kv_heads": null,
  "num_slots": 64,
  "share_conv_kernel": true,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0",
  "use_cache": true,
  "use_norm": true,
  "use_output_gate": false,
  "use_rope": false,
  "use_short_conv": false,
  "vocab_size": 32000
})";

// std::remove, not std::filesystem::remove_all: libtorch.so's exported copy of remove_all
// crashes when it wins symbol resolution.
void remove_directory(const std::string& directory, std::initializer_list<std::string> files) {
  for (const auto& file : files) std::remove(file.c_str());
  std::remove(directory.c_str());
}

std::string error_of(const json& input) {
  try {
    GsaConfig::from_json(input);
  } catch (const lintime::Error& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(GsaConfig, ParsesFlaConfig) {
  auto config = GsaConfig::from_json(json::parse(kFlaConfig));
  EXPECT_EQ(config.hidden_size, 2048);
  EXPECT_EQ(config.num_hidden_layers, 24);
  EXPECT_EQ(config.num_heads, 4);
  EXPECT_EQ(config.resolved_num_kv_heads(), 4);
  EXPECT_EQ(config.resolved_num_slots(), 64);
  EXPECT_EQ(config.resolved_intermediate_size(), 5632);
  EXPECT_DOUBLE_EQ(config.norm_eps, 1e-6);
  EXPECT_EQ(config.norm_first, std::optional<bool>(true));
  EXPECT_EQ(config.hub.torch_dtype, std::optional<std::string>("bfloat16"));
  EXPECT_EQ(config.vocab_size, 32000);
  EXPECT_FALSE(config.tie_word_embeddings);
  EXPECT_TRUE(config.fuse_flags.at("fuse_swiglu"));
}

TEST(GsaConfig, DefaultsAreFlas) {
  GsaConfig config;
  EXPECT_NO_THROW(config.validate());
  EXPECT_EQ(config.hidden_size, 2048);
  EXPECT_EQ(config.num_slots, std::optional<int64_t>(64));
  EXPECT_DOUBLE_EQ(config.gate_logit_normalizer, 8.0);
  EXPECT_EQ(config.feature_map, "swish");
  EXPECT_EQ(config.bos_token_id, std::optional<int64_t>(1));
  auto minimal = GsaConfig::from_json(json{{"model_type", "gsa"}});
  EXPECT_EQ(minimal.to_json(), config.to_json());
}

TEST(GsaConfig, RoundTripsThroughJsonAndFile) {
  auto config = GsaConfig::from_json(json::parse(kFlaConfig));
  config.num_kv_heads = 2;
  config.use_short_conv = true;
  config.intermediate_size = 1000;
  config.attn = json{{"layers", json::array()}, {"num_heads", 4}};
  config.fuse_flags["fuse_linear_cross_entropy"] = true;
  auto again = GsaConfig::from_json(config.to_json());
  EXPECT_EQ(again.to_json(), config.to_json());
  EXPECT_EQ(again.num_kv_heads, std::optional<int64_t>(2));
  EXPECT_EQ(again.intermediate_size, std::optional<int64_t>(1000));

  auto directory = std::filesystem::temp_directory_path() / ("lintime_gsa_config_" + std::to_string(::getpid()));
  std::filesystem::create_directories(directory);
  const std::string path = (directory / "config.json").string();
  config.save(path);
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());
  EXPECT_EQ(GsaConfig::load(path).to_json(), config.to_json());
  remove_directory(directory.string(), {path});
}

TEST(GsaConfig, RejectsWithOneClearLine) {
  auto base = json::parse(kFlaConfig);
  auto with = [&](const std::string& key, const json& value) {
    auto copy = base;
    copy[key] = value;
    return error_of(copy);
  };
  EXPECT_EQ(with("num_layers", 24), "config key \"num_layers\": unknown key for model_type \"gsa\"");
  EXPECT_EQ(with("hidden_size", "2048"), "config key \"hidden_size\": expected an integer, got string \"2048\"");
  EXPECT_EQ(with("hidden_size", 2048.5), "config key \"hidden_size\": expected an integer, got number 2048.5");
  EXPECT_EQ(with("use_short_conv", 1), "config key \"use_short_conv\": expected a boolean (true or false), got number 1");
  EXPECT_EQ(with("num_heads", 3),
            "config key \"num_heads\": expected a divisor of hidden_size * expand_k = 2048, got 3");
  EXPECT_EQ(with("num_kv_heads", 3), "config key \"num_kv_heads\": expected a divisor of num_heads = 4, got 3");
  EXPECT_EQ(with("model_type", "gla"), "config key \"model_type\": expected \"gsa\", got \"gla\"");
  EXPECT_EQ(with("feature_map", "t2r"), "config key \"feature_map\": expected \"swish\" or \"relu\", got \"t2r\"");
  EXPECT_EQ(with("attn", "none"), "config key \"attn\": expected an object, a list of objects or null, got string \"none\"");
  EXPECT_EQ(with("fuse_norm", "yes"), "config key \"fuse_norm\": expected a boolean (true or false), got string \"yes\"");
  EXPECT_EQ(with("num_slots", 0), "config key \"num_slots\": expected a positive value of at most 65536, got 0");
  EXPECT_EQ(with("vocab_size", uint64_t{1} << 63),  // not wrapped to a negative int64
            "config key \"vocab_size\": expected an integer below 2^63, got 9223372036854775808");
  EXPECT_EQ(with("use_output_gate", true), "config key \"use_output_gate\": expected false (GSA has no output gate)");
  EXPECT_EQ(with("eos_token_id", 32000),
            "config key \"eos_token_id\": expected null or a token id in [0, vocab_size = 32000), got 32000");
  auto missing = base;
  missing.erase("model_type");
  EXPECT_EQ(error_of(missing), "config key \"model_type\": missing, expected \"gsa\"");
  EXPECT_EQ(error_of(json::array()), "GSA config: expected a JSON object, got array");
}

TEST(GsaConfig, LoadNamesTheFile) {
  auto directory = std::filesystem::temp_directory_path() / ("lintime_gsa_bad_" + std::to_string(::getpid()));
  std::filesystem::create_directories(directory);
  const std::string path = (directory / "config.json").string();
  {
    std::ofstream file(path);
    file << R"({"model_type": "gsa", "hidden_size": -1})";
  }
  try {
    GsaConfig::load(path);
    ADD_FAILURE() << "expected an error";
  } catch (const lintime::Error& error) {
    EXPECT_EQ(std::string(error.what()), path + ": config key \"hidden_size\": expected a positive value of at most 1048576, got -1");
  }
  {
    std::ofstream file(path);
    file << "{not json";
  }
  EXPECT_THROW(GsaConfig::load(path), lintime::Error);
  EXPECT_THROW(GsaConfig::load((directory / "absent.json").string()), lintime::Error);
  remove_directory(directory.string(), {path});
}

}  // namespace
