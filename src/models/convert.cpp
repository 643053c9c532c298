#include "models/convert.h"

#include "core/error.h"
#include "core/paths.h"
#include "io/safetensors.h"
#include "models/architecture.h"
#include "models/causal_lm.h"
#include "models/llama_config.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>

namespace lintime::models {
namespace fs = std::filesystem;

namespace {

// The tokenizer and generation files a Hugging Face folder may hold, copied as they are.
const char* const kTokenizerFiles[] = {"tokenizer.json",          "tokenizer.model", "tokenizer_config.json",
                                       "special_tokens_map.json", "vocab.json",      "merges.txt",
                                       "added_tokens.json",       "generation_config.json"};

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  LINTIME_CHECK(in.good(), "convert: cannot read '", path.string(), "' (expected a Hugging Face model folder)");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& error) {
    fail("convert: '", path.string(), "' is not valid JSON: ", error.what());
  }
}

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    default: fail("convert: the source's weights are ", c10::toString(dtype), ", expected a float dtype");
  }
}

// What the source is, checked for what the targets can take.
struct Source {
  LlamaConfig config;
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
};

Source read_source(const fs::path& dir) {
  const nlohmann::json json = read_json(dir / "config.json");
  const std::string type = json.value("model_type", std::string());
  LINTIME_CHECK(type == "llama" || type == "mistral", "convert: '", dir.string(), "' holds a model_type \"", type,
                "\" model; convert reads Llama and Mistral folders (model_type \"llama\" or \"mistral\")");
  Source source;
  try {
    source.config = LlamaConfig::from_json(json);
  } catch (const Error& error) {  // name the file, as every config error does
    fail((dir / "config.json").string(), ": ", error.what());
  }
  const LlamaConfig& c = source.config;
  LINTIME_CHECK(!c.attention_bias && !c.mlp_bias, "convert: the source's projections have biases (attention_bias or ",
                "mlp_bias); GSA's and GLA's have none");
  LINTIME_CHECK(c.hidden_act == "silu", "convert: the source's MLP uses \"", c.hidden_act,
                "\"; the targets' SwiGLU takes \"silu\" only");
  source.heads = c.num_attention_heads;
  source.kv_heads = c.resolved_num_key_value_heads();
  source.head_dim = c.resolved_head_dim();
  return source;
}

// expand_k = expand_v such that int(hidden_size * expand) is the source's query width, as fla's
// layers compute their widths.
double expansion(const Source& source) {
  const int64_t width = source.heads * source.head_dim, hidden = source.config.hidden_size;
  const double expand = static_cast<double>(width) / static_cast<double>(hidden);
  LINTIME_CHECK(static_cast<int64_t>(static_cast<double>(hidden) * expand) == width, "convert: the source's ",
                source.heads, " heads of ", source.head_dim, " make ", width, " columns, which no expand_k reaches from ",
                "hidden_size ", hidden, " (fla's layers truncate hidden_size * expand_k)");
  return expand;
}

nlohmann::json softmax_layers_spec(const Source& source, const std::vector<int64_t>& layers) {
  const LlamaConfig& c = source.config;
  LINTIME_CHECK(c.hidden_size % source.heads == 0 && c.hidden_size / source.heads == source.head_dim,
                "--softmax-layers: fla's Attention uses heads of hidden_size / num_heads = ",
                c.hidden_size / source.heads, " columns, the source's are ", source.head_dim, " wide");
  LINTIME_CHECK(c.rope.rope_type == "default", "--softmax-layers: fla's Attention takes rope_theta only; the source ",
                "scales its RoPE (rope_type \"", c.rope.rope_type, "\")");
  for (int64_t layer : layers) {
    LINTIME_CHECK(layer >= 0 && layer < c.num_hidden_layers, "--softmax-layers: layer ", layer,
                  " does not exist (the source has ", c.num_hidden_layers, " layers)");
  }
  return {{"layers", layers}, {"num_heads", source.heads}, {"num_kv_heads", source.kv_heads}, {"qkv_bias", false},
          {"window_size", c.sliding_window ? nlohmann::json(*c.sliding_window) : nlohmann::json(nullptr)},
          {"rope_theta", c.rope.rope_theta}};
}

// The target's config.json, with the field names fla's config classes read.
nlohmann::json target_config(const Source& source, const ConvertOptions& options) {
  const LlamaConfig& c = source.config;
  const double expand = expansion(source);
  nlohmann::json config = {
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_heads", source.heads},
      {"expand_k", expand},
      {"expand_v", expand},
      {"intermediate_size", c.intermediate_size},
      {"hidden_act", "swish"},
      {"norm_eps", c.rms_norm_eps},
      {"max_position_embeddings", c.max_position_embeddings},
      {"initializer_range", c.initializer_range},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"use_short_conv", false},
      {"elementwise_affine", true},
      {"bos_token_id", c.bos_token_id ? nlohmann::json(*c.bos_token_id) : nlohmann::json(nullptr)},
      {"eos_token_id", c.eos_token_ids.empty() ? nlohmann::json(nullptr) : nlohmann::json(c.eos_token_ids.front())},
      {"pad_token_id", c.pad_token_id ? nlohmann::json(*c.pad_token_id) : nlohmann::json(nullptr)},
      {"fuse_norm", false},
      {"fuse_swiglu", false},
      {"fuse_cross_entropy", false},
  };
  if (options.to == "gsa") {
    LINTIME_CHECK(options.num_slots > 0, "--num-slots: must be positive, got ", options.num_slots);
    LINTIME_CHECK(options.gate_logit_normalizer > 0, "--gate-logit-normalizer: must be positive, got ",
                  options.gate_logit_normalizer);
    const std::string feature_map = options.feature_map.empty() ? "swish" : options.feature_map;
    LINTIME_CHECK(feature_map == "swish" || feature_map == "relu", "--feature-map: GSA takes swish or relu, got \"",
                  feature_map, "\"");
    config.update({{"model_type", "gsa"}, {"architectures", {"GSAForCausalLM"}}, {"num_kv_heads", source.kv_heads},
                   {"num_slots", options.num_slots}, {"gate_logit_normalizer", options.gate_logit_normalizer},
                   {"feature_map", feature_map}});
  } else {
    LINTIME_CHECK(options.to == "gla", "--to: must be gsa or gla, got \"", options.to, "\"");
    const std::string feature_map = options.feature_map.empty() ? "relu" : options.feature_map;
    LINTIME_CHECK(feature_map == "relu" || feature_map == "swish" || feature_map == "none",
                  "--feature-map: GLA takes relu, swish or none, got \"", feature_map, "\"");
    config.update({{"model_type", "gla"}, {"architectures", {"GLAForCausalLM"}}, {"num_kv_heads", nullptr},
                   {"feature_map", feature_map == "none" ? nlohmann::json(nullptr) : nlohmann::json(feature_map)},
                   {"use_output_gate", options.gla_output_gate}, {"use_gk", true},
                   {"use_gv", false}, {"attn_mode", "chunk"}});
  }
  if (!options.softmax_layers.empty()) config["attn"] = softmax_layers_spec(source, options.softmax_layers);
  return config;
}

// The source tensor a target parameter is copied from (nullopt: a new parameter), and how many
// times each key/value head's rows repeat (GLA from grouped heads).
struct Mapping {
  std::string source;
  int64_t repeat_heads = 1;
};

std::optional<Mapping> source_of(const std::string& name, const Source& source, const ConvertOptions& options) {
  static const std::map<std::string, std::string> kTop = {{"model.embeddings.weight", "model.embed_tokens.weight"},
                                                          {"model.norm.weight", "model.norm.weight"},
                                                          {"lm_head.weight", "lm_head.weight"}};
  if (auto top = kTop.find(name); top != kTop.end()) return Mapping{top->second};
  static const std::regex kLayer(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch match;
  if (!std::regex_match(name, match, kLayer)) return std::nullopt;
  const std::string prefix = "model.layers." + match[1].str() + ".", rest = match[2].str();
  static const std::map<std::string, std::string> kBlock = {
      {"attn_norm.weight", "input_layernorm.weight"},    {"mlp_norm.weight", "post_attention_layernorm.weight"},
      {"mlp.gate_proj.weight", "mlp.gate_proj.weight"},  {"mlp.up_proj.weight", "mlp.up_proj.weight"},
      {"mlp.down_proj.weight", "mlp.down_proj.weight"},  {"attn.q_proj.weight", "self_attn.q_proj.weight"},
      {"attn.k_proj.weight", "self_attn.k_proj.weight"}, {"attn.v_proj.weight", "self_attn.v_proj.weight"},
      {"attn.o_proj.weight", "self_attn.o_proj.weight"}};
  const auto found = kBlock.find(rest);
  if (found == kBlock.end()) return std::nullopt;
  Mapping mapping{prefix + found->second};
  const int64_t layer = std::stoll(match[1].str());
  const bool softmax = std::find(options.softmax_layers.begin(), options.softmax_layers.end(), layer) !=
                       options.softmax_layers.end();
  if (options.to == "gla" && !softmax && (rest == "attn.k_proj.weight" || rest == "attn.v_proj.weight")) {
    mapping.repeat_heads = source.heads / source.kv_heads;
  }
  return mapping;
}

// `stored` [kv_heads·head_dim, hidden] -> [kv_heads·repeat·head_dim, hidden], each head's rows
// repeated `repeat` times in a row (Hugging Face's repeat_kv: query head h reads kv head h / repeat).
at::Tensor repeated_heads(const at::Tensor& stored, int64_t head_dim, int64_t repeat) {
  if (repeat == 1) return stored;
  const int64_t kv_heads = stored.size(0) / head_dim;
  return stored.reshape({kv_heads, head_dim, stored.size(1)}).repeat_interleave(repeat, 0).reshape({-1, stored.size(1)});
}

}  // namespace

ConvertReport convert_transformer(const std::string& source_dir, const std::string& out_dir, const ConvertOptions& options) {
  const fs::path source_path(source_dir), out_path(out_dir);
  LINTIME_CHECK(is_directory(source_dir), "convert: '", source_dir, "' is not a directory (expected a Llama or Mistral folder)");
  LINTIME_CHECK(!out_dir.empty() && out_path.filename() != "." && out_path.filename() != "..",
                "convert: OUT_DIR must name a new folder, got '", out_dir, "'");
  {
    // Replacing OUT_DIR (--force) must never delete the source: OUT_DIR may not be it or hold it.
    const auto real = [](const fs::path& path) {
      fs::path result = fs::weakly_canonical(path);
      return result.has_filename() ? result : result.parent_path();  // "dir/" is "dir"
    };
    const fs::path source_real = real(source_path), out_real = real(out_path);
    const auto [out_end, source_at] = std::mismatch(out_real.begin(), out_real.end(), source_real.begin(), source_real.end());
    LINTIME_CHECK(out_end != out_real.end(), "convert: OUT_DIR '", out_dir, "' is SRC_DIR '", source_dir,
                  "' or a folder holding it; give a new folder");
  }
  if (fs::exists(out_path)) {
    const bool complete = fs::exists(out_path / "config.json") &&
                          (fs::exists(out_path / "model.safetensors") || fs::exists(out_path / "model.safetensors.index.json"));
    LINTIME_CHECK(options.force, "convert: '", out_dir, "' exists", complete ? "" : " and holds no complete model folder",
                  "; pass --force to replace it");
  }
  const Source source = read_source(source_path);
  LINTIME_CHECK(source.heads % source.kv_heads == 0, "convert: the source's ", source.kv_heads,
                " key/value heads do not divide its ", source.heads, " query heads");
  nlohmann::json config = target_config(source, options);

  const io::ModelWeights weights(source_dir);
  LINTIME_CHECK(weights.contains("model.embed_tokens.weight"), "convert: '", source_dir,
                "' has no tensor model.embed_tokens.weight (expected a Llama/Mistral checkpoint)");
  const at::ScalarType dtype = weights.info("model.embed_tokens.weight").dtype;
  config["torch_dtype"] = dtype_name(dtype);

  auto model = build_causal_lm(config, options.seed, out_dir + " (the converted config)");
  ConvertReport report;
  report.dtype = config["torch_dtype"];
  std::set<std::string> used;
  {
    at::NoGradGuard no_grad;
    for (auto& [name, parameter] : model->module().named_parameters()) {
      report.parameters += parameter.numel();
      const auto mapping = source_of(name, source, options);
      if (!mapping) {
        ++report.new_tensors;
        continue;
      }
      LINTIME_CHECK(weights.contains(mapping->source), "convert: the source has no tensor '", mapping->source,
                    "' (for the target's '", name, "')");
      const at::Tensor stored = repeated_heads(weights.get(mapping->source), source.head_dim, mapping->repeat_heads);
      LINTIME_CHECK(stored.sizes() == parameter.sizes(), "convert: tensor '", mapping->source, "' has shape ",
                    stored.sizes(), ", the target's '", name, "' needs ", parameter.sizes());
      parameter.copy_(stored);  // into fp32: exact from every float dtype
      used.insert(mapping->source);
      ++report.copied_tensors;
    }
  }
  for (const std::string& name : weights.names()) {
    LINTIME_CHECK(used.count(name) || ends_with(name, "rotary_emb.inv_freq"), "convert: the source's tensor '", name,
                  "' has no place in the ", options.to, " model (an architecture variant convert does not know)");
  }
  model->module().to(c10::Device(c10::kCPU), dtype);  // copied tensors round-trip exactly
  model->set_config_json(config);

  const fs::path temporary = out_path.string() + ".tmp";
  fs::remove_all(temporary);  // left by an interrupted convert
  if (out_path.has_parent_path()) fs::create_directories(out_path.parent_path());
  try {
    save_causal_lm(*model, temporary.string());
    for (const char* file : kTokenizerFiles) {
      if (!fs::exists(source_path / file)) continue;
      fs::copy_file(source_path / file, temporary / file, fs::copy_options::overwrite_existing);
      report.tokenizer_files.emplace_back(file);
    }
    if (fs::exists(out_path)) fs::remove_all(out_path);  // --force (checked above)
    fs::rename(temporary, out_path);
  } catch (const std::exception& error) {
    std::error_code ignored;
    fs::remove_all(temporary, ignored);  // no half-written folder stays behind
    fail("convert: writing '", out_dir, "' failed: ", error.what());
  }
  return report;
}

}  // namespace lintime::models
