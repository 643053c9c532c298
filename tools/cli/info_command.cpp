// `lintime info CONFIG|CHECKPOINT_DIR`: parameter count and recurrent state bytes per
// sequence of an MQAR training config (.toml), a lintime checkpoint, an fla GSA config.json or a
// HazyResearch BASED config.json (a file or a model folder holding one).
#include "tools/cli/commands.h"

#include "core/error.h"
#include "models/based_config.h"
#include "models/based_model.h"
#include "models/gsa_config.h"
#include "models/gsa_model.h"
#include "models/llama_config.h"
#include "models/llama_model.h"
#include "train/checkpoint.h"
#include "train/mqar_config.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace lintime::cli {
namespace {
namespace fs = std::filesystem;

void print_mqar(const train::MqarTrainConfig& config) {
  std::printf("model: MQAR (mqar.md §2), d_model %lld, vocab %lld, layers:",
              static_cast<long long>(config.model.d_model), static_cast<long long>(config.model.vocab_size));
  for (const auto& layer : config.model.layers) std::printf(" %s", layer.c_str());
  std::printf("\nparameters: %lld\n", static_cast<long long>(config.model.parameter_count()));
  std::printf("recurrent state: %lld bytes per sequence\n",
              static_cast<long long>(config.model.state_bytes_per_sequence()));
}

void print_gsa(const models::GsaConfig& config) {
  std::printf("model: GSA causal LM (fla model_type gsa), hidden %lld, %lld layers, %lld heads (%lld kv), %lld slots, vocab %lld\n",
              static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_hidden_layers),
              static_cast<long long>(config.num_heads), static_cast<long long>(config.resolved_num_kv_heads()),
              static_cast<long long>(config.resolved_num_slots()), static_cast<long long>(config.vocab_size));
  std::printf("parameters: %lld\n", static_cast<long long>(models::GsaModel::parameter_count_for(config)));
  std::printf("recurrent state: %lld bytes per sequence\n",
              static_cast<long long>(models::GsaModel::state_bytes_per_sequence_for(config)));
}

void print_based(const models::BasedConfig& config) {
  int64_t counts[3] = {0, 0, 0};
  for (int64_t layer = 0; layer < config.num_layers; ++layer) ++counts[static_cast<int>(config.mixer_of(layer))];
  std::printf("model: BASED LM (based.md §4), d %lld, %lld layers (%lld short conv, %lld Taylor linear attention "
              "d' %lld, %lld sliding window of %lld keys), vocab %lld\n",
              static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_layers),
              static_cast<long long>(counts[0]), static_cast<long long>(counts[1]),
              static_cast<long long>(config.feature_dim), static_cast<long long>(counts[2]),
              static_cast<long long>(config.window), static_cast<long long>(config.padded_vocab_size()));
  std::printf("parameters: %lld\n", static_cast<long long>(models::BasedModel::parameter_count_for(config)));
  std::printf("recurrent state: %lld bytes per sequence\n",
              static_cast<long long>(models::BasedModel::state_bytes_per_sequence_for(config)));
}

void print_llama(const models::LlamaConfig& config) {
  std::printf("model: %s causal LM (Hugging Face model_type %s), hidden %lld, %lld layers, %lld heads of %lld "
              "(%lld kv), rope %s theta %g%s, vocab %lld\n",
              config.model_type == "mistral" ? "Mistral" : "Llama", config.model_type.c_str(),
              static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_hidden_layers),
              static_cast<long long>(config.num_attention_heads), static_cast<long long>(config.resolved_head_dim()),
              static_cast<long long>(config.resolved_num_key_value_heads()), config.rope.rope_type.c_str(),
              config.rope.rope_theta,
              config.sliding_window ? (", sliding window " + std::to_string(*config.sliding_window)).c_str() : "",
              static_cast<long long>(config.vocab_size));
  std::printf("parameters: %lld\n", static_cast<long long>(models::LlamaModel::parameter_count_for(config)));
  std::printf("KV cache: %lld bytes per token per sequence (fp32; half in bf16), growing with the sequence%s\n",
              static_cast<long long>(models::LlamaModel::kv_bytes_per_token_for(config, at::kFloat)),
              config.sliding_window ? " up to the window" : "");
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  LINTIME_CHECK(in.good(), "info: cannot read '", path.string(), "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& error) {
    fail("info: '", path.string(), "' is not valid JSON: ", error.what());
  }
}

}  // namespace

std::function<int()> add_info_command(CLI::App& app) {
  auto* command = app.add_subcommand("info", "Parameter count and state bytes of a config or checkpoint");
  auto target = std::make_shared<std::string>();
  command->add_option("CONFIG_OR_DIR", *target,
                      "An MQAR config (.toml), a lintime checkpoint directory, or a GSA (fla), Llama / Mistral "
                      "(Hugging Face) or BASED (HazyResearch) config.json / model folder")
      ->required();
  return [target]() {
    fs::path path(*target);
    LINTIME_CHECK(fs::exists(path), "info: '", *target, "' does not exist (expected a .toml config, a config.json or a directory)");
    if (path.extension() == ".toml") {
      print_mqar(train::load_mqar_train_config(path.string(), {}));
      return 0;
    }
    if (fs::is_directory(path)) {
      if (train::checkpoint_exists((path / "checkpoint").string())) path /= "checkpoint";
      if (train::checkpoint_exists(path.string())) {
        print_mqar(train::MqarTrainConfig::from_document(train::read_trainer_state(path.string()).config));
        return 0;
      }
      LINTIME_CHECK(fs::exists(path / "config.json"), "info: '", *target,
                    "' holds neither config.json nor a lintime checkpoint");
      path /= "config.json";
    }
    auto json = read_json(path);
    // HazyResearch's BASED configs are GPT-2 configs (model_type "gpt2") with mixer objects.
    if (json.is_object() && (json.contains("alt_mixer") || json.contains("alt_mixer_layers"))) {
      print_based(models::BasedConfig::from_json(json));
      return 0;
    }
    const std::string model_type = json.is_object() ? json.value("model_type", "") : "";
    if (model_type == "llama" || model_type == "mistral") {
      print_llama(models::LlamaConfig::from_json(json));
      return 0;
    }
    LINTIME_CHECK(model_type == "gsa", "info: '", path.string(), "' has model_type ",
                  json.is_object() && json.contains("model_type") ? json["model_type"].dump() : "(none)",
                  "; expected \"gsa\", \"llama\", \"mistral\" or a BASED config (HazyResearch's, with \"alt_mixer\")");
    print_gsa(models::GsaConfig::from_json(json));
    return 0;
  };
}

}  // namespace lintime::cli
