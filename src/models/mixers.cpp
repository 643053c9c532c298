// The mixer registry and the adapters that give each layer the Mixer interface (see mixer.h).
#include "models/mixer.h"

#include "core/config_reader.h"
#include "core/error.h"
#include "layers/base_conv.h"
#include "layers/based_linear_attention.h"
#include "layers/gated_conv.h"
#include "layers/gated_linear_attention.h"
#include "layers/gated_slot_attention.h"
#include "layers/grouped_query_attention.h"
#include "layers/hgrn2_attention.h"
#include "layers/mamba.h"
#include "layers/multiscale_retention.h"
#include "layers/rotary.h"
#include "layers/softmax_attention.h"
#include "state/based_cache.h"
#include "state/gla_state.h"
#include "state/gsa_state.h"
#include "state/kv_cache.h"
#include "state/mamba_state.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

namespace lintime::models {
namespace {

using nlohmann::json;

// The state a mixer made, as its own type (a state of another mixer is a programming error
// that would otherwise read the wrong tensors).
template <class State>
State& state_as(state::LayerState& layer_state, const char* mixer) {
  auto* typed = dynamic_cast<State*>(&layer_state);
  LINTIME_CHECK(typed != nullptr, "mixer \"", mixer, "\": the decoding state given was made by another mixer");
  return *typed;
}

// "based_conv": the BASED language model's gated short convolution (layers/gated_conv.h).
struct BasedConvOptions {
  int64_t kernel_size;
  bool bias;
  double out_std;
};
BasedConvOptions based_conv_options(const json& options, double init_std) {
  config::StrictObject reader(options, "model.based_conv", {"kernel_size", "bias", "out_init_std"});
  BasedConvOptions result{reader.get_as<int64_t>("kernel_size", 3), reader.get_as<bool>("bias", true),
                          reader.get_as<double>("out_init_std", -1.0)};
  LINTIME_CHECK(result.kernel_size >= 1, "config key \"model.based_conv.kernel_size\": must be >= 1, got ",
                result.kernel_size);
  if (result.out_std < 0) result.out_std = init_std;
  return result;
}

// A layer with forward(x) only: the MQAR mixers that no language model decodes with yet.
template <typename Layer>
class StatelessMixer final : public Mixer {
 public:
  template <typename... Args>
  explicit StatelessMixer(const char* name, Args&&... args) : name_(name), layer_(std::forward<Args>(args)...) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    LINTIME_CHECK(layer_state == nullptr && !cu_seqlens.has_value(), "mixer \"", name_,
                  "\" has no decoding state and no packed sequences yet");
    return layer_.forward(x);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t, const c10::Device&, at::ScalarType) const override {
    fail("mixer \"", name_, "\" has no decoding state yet");
  }
  int64_t state_bytes_after(int64_t, at::ScalarType) const override { return layer_.state_bytes_per_sequence(); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  bool step_is_replayable() const override { return false; }
  layers::Module& module() override { return layer_; }

 private:
  const char* name_;
  Layer layer_;
};

class GsaMixer final : public Mixer {
 public:
  GsaMixer(const layers::GatedSlotAttentionOptions& options, at::Generator& generator) : layer_(options, generator) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    if (auto* rows = dynamic_cast<state::GsaRows*>(layer_state)) {
      LINTIME_CHECK(!cu_seqlens.has_value(), "mixer \"gsa\": slot rows continued in place take no packed sequences (cu_seqlens)");
      return layer_.forward_rows(x, *rows);
    }
    return layer_.forward(x, layer_state ? &state_as<state::GsaLayerState>(*layer_state, "gsa") : nullptr, cu_seqlens);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t batch, const c10::Device& device,
                                                at::ScalarType dtype) const override {
    return std::make_unique<state::GsaLayerState>(layer_.make_state(batch, device, dtype));
  }
  int64_t state_bytes_after(int64_t, at::ScalarType) const override { return layer_.state_bytes_per_sequence(); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  bool step_is_replayable() const override { return true; }  // ops::gsa_step_ and copy_ in place
  // ops::gsa_step_rows_ reads and writes bf16 states as they are stored.
  bool rows_step_keeps_narrow_states(at::ScalarType dtype) const override { return dtype == at::kBFloat16; }
  // The fused kernels take up to 128 slots; beyond, the ATen form's host checks would run.
  bool training_is_replayable() const override { return layer_.num_slots() <= 128; }
  bool packs_sequences() const override { return true; }
  layers::Module& module() override { return layer_; }

 private:
  layers::GatedSlotAttention layer_;
};

// Layers whose whole decoding state is one GLA-form recurrent state [B, H, K, V] ("gla",
// "hgrn2"): forward(x, at::Tensor* state) and make_state() -> that tensor.
template <class Layer, const char* kName>
class GlaStateMixer final : public Mixer {
 public:
  template <class Options>
  GlaStateMixer(const Options& options, at::Generator& generator) : layer_(options, generator) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    LINTIME_CHECK(!cu_seqlens.has_value(), "mixer \"", kName, "\": packed sequences (cu_seqlens) are not supported yet");
    return layer_.forward(x, layer_state ? &state_as<state::GlaLayerState>(*layer_state, kName).state : nullptr);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t batch, const c10::Device& device,
                                                at::ScalarType dtype) const override {
    auto result = std::make_unique<state::GlaLayerState>();
    result->state = layer_.make_state(batch, device, dtype);
    return result;
  }
  int64_t state_bytes_after(int64_t, at::ScalarType) const override { return layer_.state_bytes_per_sequence(); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  // A step updates the state in place; a prefill replaces it, after which graphs are re-recorded.
  bool step_is_replayable() const override { return true; }
  layers::Module& module() override { return layer_; }

 private:
  Layer layer_;
};
constexpr char kGla[] = "gla";
constexpr char kHgrn2[] = "hgrn2";
using GlaMixer = GlaStateMixer<layers::GatedLinearAttention, kGla>;
using Hgrn2Mixer = GlaStateMixer<layers::Hgrn2Attention, kHgrn2>;

// "retnet": multi-scale retention; its state keeps each sequence's position for the rotary angles.
class RetentionMixer final : public Mixer {
 public:
  RetentionMixer(const layers::MultiScaleRetentionOptions& options, at::Generator& generator)
      : layer_(options, generator) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    LINTIME_CHECK(!cu_seqlens.has_value(), "mixer \"retnet\": packed sequences (cu_seqlens) are not supported yet");
    return layer_.forward(x, layer_state ? &state_as<state::RetentionLayerState>(*layer_state, "retnet") : nullptr);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t batch, const c10::Device& device,
                                                at::ScalarType dtype) const override {
    return std::make_unique<state::RetentionLayerState>(layer_.make_state(batch, device, dtype));
  }
  int64_t state_bytes_after(int64_t, at::ScalarType) const override { return layer_.state_bytes_per_sequence(); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  bool step_is_replayable() const override { return false; }  // the rotary frequencies are copied from the host
  layers::Module& module() override { return layer_; }

 private:
  layers::MultiScaleRetention layer_;
};

class BasedConvMixer final : public Mixer {
 public:
  BasedConvMixer(int64_t d_model, const BasedConvOptions& o, double init_std, at::Generator& generator)
      : d_model_(d_model), layer_(d_model, o.kernel_size, init_std, o.out_std, generator, o.bias) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    LINTIME_CHECK(!cu_seqlens.has_value(), "mixer \"based_conv\": packed sequences (cu_seqlens) are not supported yet");
    return layer_.forward(x, layer_state ? &state_as<state::ConvLayerState>(*layer_state, "based_conv").conv : nullptr);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t batch, const c10::Device& device,
                                                at::ScalarType dtype) const override {
    auto result = std::make_unique<state::ConvLayerState>();
    result->conv = at::zeros({batch, layer_.kernel_size() - 1, 2 * d_model_}, at::TensorOptions().device(device).dtype(dtype));
    return result;
  }
  int64_t state_bytes_after(int64_t, at::ScalarType) const override { return layer_.state_bytes_per_sequence(); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  bool step_is_replayable() const override { return false; }
  layers::Module& module() override { return layer_; }

 private:
  int64_t d_model_;
  layers::GatedConv layer_;
};

// BASED's Taylor linear attention ("based"; "linear_attention" with the Taylor map decodes too).
class TaylorMixer final : public Mixer {
 public:
  TaylorMixer(const layers::BasedLinearAttentionOptions& options, at::Generator& generator)
      : layer_(options, generator) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    LINTIME_CHECK(!cu_seqlens.has_value(), "mixer \"based\": packed sequences (cu_seqlens) are not supported yet");
    if (layer_state == nullptr) return layer_.forward(x);
    auto& s = state_as<state::TaylorLayerState>(*layer_state, "based");
    return layer_.forward_cached(x, s.state, s.normalizer);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t, const c10::Device&, at::ScalarType) const override {
    return std::make_unique<state::TaylorLayerState>();  // the prefill allocates it
  }
  int64_t state_bytes_after(int64_t, at::ScalarType) const override { return layer_.state_bytes_per_sequence(); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  bool step_is_replayable() const override { return false; }
  layers::Module& module() override { return layer_; }

 private:
  layers::BasedLinearAttention layer_;
};

// Sliding-window softmax attention with ring buffers ("sliding_window"); full attention
// ("attention") has no decoding state.
class WindowMixer final : public Mixer {
 public:
  WindowMixer(const layers::SoftmaxAttentionOptions& options, at::Generator& generator) : layer_(options, generator) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    LINTIME_CHECK(!cu_seqlens.has_value(), "mixer \"sliding_window\": packed sequences (cu_seqlens) are not supported yet");
    if (layer_state == nullptr) return layer_.forward(x);
    auto& s = state_as<state::WindowLayerState>(*layer_state, "sliding_window");
    return layer_.forward_cached(x, s.key_cache, s.value_cache, s.positions);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t, const c10::Device&, at::ScalarType) const override {
    return std::make_unique<state::WindowLayerState>();  // the prefill allocates it
  }
  int64_t state_bytes_after(int64_t, at::ScalarType) const override { return layer_.state_bytes_per_sequence(); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  bool step_is_replayable() const override { return false; }  // the position is read on the host
  bool continues_prefill() const override { return false; }
  layers::Module& module() override { return layer_; }

 private:
  layers::SoftmaxAttention layer_;
};

// The cos/sin table of these RoPE settings and head dim, one for all the layers (and models)
// that use them: a long context's table then exists once, not once per layer.
std::shared_ptr<const layers::RotaryTable> shared_rotary_table(const layers::RopeSettings& rope, int64_t head_dim) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<const layers::RotaryTable>> tables;
  std::ostringstream key;
  key.precision(17);
  key << head_dim << ' ' << rope.rope_theta << ' ' << rope.rope_type << ' ' << rope.factor << ' '
      << rope.low_freq_factor << ' ' << rope.high_freq_factor << ' ' << rope.original_max_position_embeddings;
  const std::lock_guard<std::mutex> lock(mutex);
  std::shared_ptr<const layers::RotaryTable> table = tables[key.str()].lock();
  if (!table) {
    table = std::make_shared<const layers::RotaryTable>(layers::rotary_inverse_frequencies(rope, head_dim));
    tables[key.str()] = table;
  }
  return table;
}

class GqaMixer final : public Mixer {
 public:
  GqaMixer(const layers::GroupedQueryAttentionOptions& options, const layers::RopeSettings& rope,
           at::Generator& generator)
      : layer_(options, shared_rotary_table(rope, options.head_dim), generator) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    LINTIME_CHECK(!cu_seqlens.has_value(), "mixer \"gqa\": packed sequences (cu_seqlens) are not supported yet");
    if (auto* rows = dynamic_cast<state::KvRows*>(layer_state)) return layer_.forward_rows(x, *rows);
    return layer_.forward(x, layer_state ? &state_as<state::KvLayerCache>(*layer_state, "gqa") : nullptr);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t, const c10::Device&, at::ScalarType) const override {
    return std::make_unique<state::KvLayerCache>();  // allocated at the first append
  }
  int64_t state_bytes_after(int64_t tokens, at::ScalarType dtype) const override {
    const auto& options = layer_.options();
    const int64_t kept = options.sliding_window ? std::min(tokens, *options.sliding_window) : tokens;
    return kept * 2 * options.num_kv_heads * options.head_dim * static_cast<int64_t>(c10::elementSize(dtype));
  }
  int64_t state_bytes_per_sequence() const override { return state_bytes_after(1024, at::kFloat); }
  bool step_is_replayable() const override { return false; }  // the KV length lives on the host
  // Over slot rows the lengths are on the device; on a GPU the varlen flash kernel must take the
  // attention (the other path loops over rows on the host). Nothing is recorded on a CPU.
  bool rows_step_keeps_narrow_states(at::ScalarType) const override { return true; }  // no recurrent state
  bool rows_step_is_replayable() const override {
    const at::Tensor& weight = layer_.q_proj.weight;
    return !weight.is_cuda() || layers::GroupedQueryAttention::flash_attends(weight.scalar_type(), layer_.options().head_dim);
  }
  layers::Module& module() override { return layer_; }

 private:
  layers::GroupedQueryAttention layer_;
};

// "gsa": fla's GatedSlotAttention with the GSA paper's MQAR settings.
layers::GatedSlotAttentionOptions gsa_options(int64_t d_model, const json& options, double init_std) {
  config::StrictObject reader(options, "model.gsa",
                      {"num_heads", "num_kv_heads", "num_slots", "expand_k", "expand_v", "gate_logit_normalizer",
                       "scale", "feature_map", "use_short_conv", "conv_size", "elementwise_affine", "norm_eps"});
  layers::GatedSlotAttentionOptions result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 4);
  if (reader.has("num_kv_heads")) result.num_kv_heads = reader.get_as<int64_t>("num_kv_heads", 0);
  result.num_slots = reader.get_as<int64_t>("num_slots", d_model / 4);
  result.expand_k = reader.get_as<double>("expand_k", 1.0);
  result.expand_v = reader.get_as<double>("expand_v", 1.0);
  result.gate_logit_normalizer = reader.get_as<double>("gate_logit_normalizer", 16.0);
  result.feature_map = reader.get_as<std::string>("feature_map", "swish");
  result.use_short_conv = reader.get_as<bool>("use_short_conv", false);
  result.conv_size = reader.get_as<int64_t>("conv_size", 4);
  result.elementwise_affine = reader.get_as<bool>("elementwise_affine", true);
  result.norm_eps = reader.get_as<double>("norm_eps", 1e-5);
  result.initializer_range = init_std;
  const auto key_dim = static_cast<int64_t>(static_cast<double>(d_model) * result.expand_k);
  if (reader.has("scale")) {
    result.scale = reader.get_as<double>("scale", 1.0);
  } else if (result.num_heads > 0 && key_dim >= result.num_heads) {
    result.scale = 1.0 / std::sqrt(static_cast<double>(key_dim / result.num_heads));  // head_k_dim^-0.5
  }
  return result;
}

// "gla": GatedLinearAttention, 2 heads by default (the GSA paper's baseline).
layers::GatedLinearAttentionOptions gla_options(int64_t d_model, const json& options, double init_std) {
  config::StrictObject reader(options, "model.gla",
                      {"num_heads", "expand_k", "expand_v", "gate_low_rank_dim", "gate_logit_normalizer",
                       "use_output_gate", "norm_eps", "scale", "norm_name", "feature_map"});
  layers::GatedLinearAttentionOptions result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 2);
  result.expand_k = reader.get_as<double>("expand_k", 0.5);
  result.expand_v = reader.get_as<double>("expand_v", 1.0);
  result.gate_low_rank_dim = reader.get_as<int64_t>("gate_low_rank_dim", 16);
  result.gate_logit_normalizer = reader.get_as<double>("gate_logit_normalizer", 16.0);
  result.use_output_gate = reader.get_as<bool>("use_output_gate", true);
  result.norm_eps = reader.get_as<double>("norm_eps", 1e-5);
  if (reader.has("scale")) result.scale = reader.get_as<double>("scale", 1.0);
  result.norm_name = reader.get_as<std::string>("norm_name", "g_norm");
  if (!reader.get_raw("feature_map").is_null()) result.feature_map = reader.get_as<std::string>("feature_map", "");
  result.initializer_range = init_std;
  return result;
}

// "retnet": MultiScaleRetention, 2 heads by default (the GSA paper's baseline; fla's default is 8).
layers::MultiScaleRetentionOptions retnet_options(int64_t d_model, const json& options, double init_std) {
  config::StrictObject reader(options, "model.retnet",
                              {"num_heads", "expand_k", "expand_v", "use_output_gate", "norm_eps", "rotary_base", "scale"});
  layers::MultiScaleRetentionOptions result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 2);
  result.expand_k = reader.get_as<double>("expand_k", 1.0);
  result.expand_v = reader.get_as<double>("expand_v", 2.0);
  result.use_output_gate = reader.get_as<bool>("use_output_gate", true);
  result.norm_eps = reader.get_as<double>("norm_eps", 1e-5);
  result.rotary_base = reader.get_as<double>("rotary_base", 10000.0);
  if (reader.has("scale")) result.scale = reader.get_as<double>("scale", 1.0);
  result.initializer_range = init_std;
  return result;
}

// "hgrn2": Hgrn2Attention, 2 heads by default; expand_ratio (fla's head forget dim) instead of
// num_heads gives num_heads = d_model / expand_ratio.
layers::Hgrn2Options hgrn2_options(int64_t d_model, const json& options, double init_std) {
  config::StrictObject reader(options, "model.hgrn2", {"num_heads", "expand_ratio", "norm_eps"});
  LINTIME_CHECK(!(reader.has("num_heads") && reader.has("expand_ratio")), "config key \"model.hgrn2\": give num_heads "
                "or expand_ratio (num_heads = d_model / expand_ratio), not both");
  layers::Hgrn2Options result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 2);
  if (reader.has("expand_ratio")) result.expand_ratio = reader.get_as<int64_t>("expand_ratio", 0);
  result.norm_eps = reader.get_as<double>("norm_eps", 1e-5);
  result.initializer_range = init_std;
  return result;
}

// "base_conv": zoology's BaseConv.
int64_t base_conv_kernel_size(const json& options) {
  config::StrictObject reader(options, "model.base_conv", {"kernel_size"});
  const auto kernel_size = reader.get_as<int64_t>("kernel_size", 3);
  LINTIME_CHECK(kernel_size >= 1, "config key \"model.base_conv.kernel_size\": must be >= 1, got ", kernel_size);
  return kernel_size;
}

// "based" (BASED's Taylor linear attention, zoology's Based mixer) and "linear_attention" (the
// same layer with a chosen feature map: zoology's baselines).
layers::BasedLinearAttentionOptions linear_attention_layer_options(const char* mixer, bool feature_map_option,
                                                                   int64_t d_model, const json& options,
                                                                   double init_std) {
  std::vector<std::string> known = {"feature_dim", "num_heads", "normalize", "eps", "out_init_std"};
  if (feature_map_option) known.insert(known.begin(), "feature_map");
  config::StrictObject reader(options, "model." + std::string(mixer), known);
  layers::BasedLinearAttentionOptions result;
  result.hidden_size = d_model;
  if (feature_map_option) result.feature_map = reader.get_as<std::string>("feature_map", "taylor");
  result.feature_dim = reader.get_as<int64_t>("feature_dim", 16);
  result.num_heads = reader.get_as<int64_t>("num_heads", 1);
  result.normalize = reader.get_as<bool>("normalize", true);
  result.eps = reader.get_as<double>("eps", 1e-12);
  result.initializer_range = init_std;
  result.out_initializer_range = reader.get_as<double>("out_init_std", -1.0);
  return result;
}
layers::BasedLinearAttentionOptions based_options(int64_t d_model, const json& options, double init_std) {
  return linear_attention_layer_options("based", false, d_model, options, init_std);
}
layers::BasedLinearAttentionOptions linear_attention_options(int64_t d_model, const json& options, double init_std) {
  return linear_attention_layer_options("linear_attention", true, d_model, options, init_std);
}

// "attention" and "sliding_window": causal softmax attention, full or over the last `window` keys.
layers::SoftmaxAttentionOptions attention_options(const char* mixer, int64_t d_model, const json& options,
                                                  double init_std) {
  const bool sliding = std::string(mixer) == "sliding_window";
  config::StrictObject reader(options, "model." + std::string(mixer),
                      sliding ? std::vector<std::string>{"window", "num_heads", "bias", "rotary_base", "out_init_std"}
                              : std::vector<std::string>{"num_heads", "counted_length"});
  layers::SoftmaxAttentionOptions result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 1);
  if (sliding) {
    result.window = reader.get_as<int64_t>("window", 64);
    LINTIME_CHECK(result.window >= 1, "config key \"model.sliding_window.window\": must be >= 1 (keys seen per query, itself "
                  "included), got ", result.window);
    result.bias = reader.get_as<bool>("bias", true);
    result.rotary_base = reader.get_as<double>("rotary_base", 0.0);
    result.out_initializer_range = reader.get_as<double>("out_init_std", -1.0);
  } else {
    result.counted_length = reader.get_as<int64_t>("counted_length", 1024);
  }
  result.initializer_range = init_std;
  return result;
}


// "gqa": grouped-query softmax attention with RoPE (Llama, Mistral, fla's hybrid Attention).
layers::GroupedQueryAttentionOptions gqa_options(int64_t d_model, const json& options, double init_std) {
  config::StrictObject reader(options, "model.gqa",
                              {"num_heads", "num_kv_heads", "head_dim", "bias", "output_bias", "sliding_window",
                               "rope_theta", "rope_type", "rope_factor", "low_freq_factor", "high_freq_factor",
                               "original_max_position_embeddings"});
  layers::GroupedQueryAttentionOptions result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 1);
  LINTIME_CHECK(result.num_heads >= 1, "config key \"", reader.key_path("num_heads"), "\": must be >= 1, got ",
                result.num_heads);
  result.num_kv_heads = reader.get_as<int64_t>("num_kv_heads", result.num_heads);
  result.head_dim = reader.get_as<int64_t>("head_dim", d_model / result.num_heads);
  result.bias = reader.get_as<bool>("bias", false);
  if (reader.has("output_bias")) result.output_bias = reader.get_as<bool>("output_bias", result.bias);
  const json window = reader.get_raw("sliding_window");
  if (!window.is_null()) result.sliding_window = config::read_integer(reader.key_path("sliding_window"), window);
  result.initializer_range = init_std;
  return result;
}

layers::RopeSettings gqa_rope(const json& options) {
  config::StrictObject reader(options, "model.gqa");
  layers::RopeSettings rope;
  rope.rope_theta = reader.get_as<double>("rope_theta", rope.rope_theta);
  rope.rope_type = reader.get_as<std::string>("rope_type", rope.rope_type);
  rope.factor = reader.get_as<double>("rope_factor", rope.factor);
  rope.low_freq_factor = reader.get_as<double>("low_freq_factor", rope.low_freq_factor);
  rope.high_freq_factor = reader.get_as<double>("high_freq_factor", rope.high_freq_factor);
  rope.original_max_position_embeddings =
      reader.get_as<int64_t>("original_max_position_embeddings", rope.original_max_position_embeddings);
  LINTIME_CHECK(rope.rope_type == "default" || rope.rope_type == "linear" || rope.rope_type == "llama3",
                "config key \"model.gqa.rope_type\": expected \"default\", \"linear\" or \"llama3\", got \"",
                rope.rope_type, "\"");
  return rope;
}

// "mamba": mamba_ssm's Mamba block as fla's Mamba layer (the GSA paper's MQAR baseline).
layers::MambaOptions mamba_options(int64_t d_model, const json& options, double init_std) {
  config::StrictObject reader(options, "model.mamba", {"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias"});
  layers::MambaOptions result;
  result.hidden_size = d_model;
  result.d_state = reader.get_as<int64_t>("d_state", 16);
  result.d_conv = reader.get_as<int64_t>("d_conv", 4);
  result.expand = reader.get_as<int64_t>("expand", 2);
  // fla's "auto" (ceil(d_model / 16)) is 0 here.
  const json dt_rank = reader.get_raw("dt_rank");
  if (dt_rank.is_string()) {
    LINTIME_CHECK(dt_rank == "auto", "config key \"", reader.key_path("dt_rank"),
                  "\": expected an integer or \"auto\", got \"", dt_rank.get<std::string>(), "\"");
  } else {
    result.dt_rank = reader.get_as<int64_t>("dt_rank", 0);
  }
  result.conv_bias = reader.get_as<bool>("conv_bias", true);
  result.bias = reader.get_as<bool>("bias", false);
  result.initializer_range = init_std;
  return result;
}

class MambaMixer final : public Mixer {
 public:
  MambaMixer(const layers::MambaOptions& options, at::Generator& generator) : layer_(options, generator) {}
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state,
                     const std::optional<at::Tensor>& cu_seqlens) override {
    LINTIME_CHECK(!cu_seqlens.has_value(), "mixer \"mamba\": packed sequences (cu_seqlens) are not supported yet");
    return layer_.forward(x, layer_state ? &state_as<state::MambaLayerState>(*layer_state, "mamba") : nullptr);
  }
  std::unique_ptr<state::LayerState> make_state(int64_t batch, const c10::Device& device,
                                                at::ScalarType dtype) const override {
    return std::make_unique<state::MambaLayerState>(layer_.make_state(batch, device, dtype));
  }
  int64_t state_bytes_after(int64_t, at::ScalarType) const override { return layer_.state_bytes_per_sequence(); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  // A step writes the conv history and the scan state in place (copy_), reading nothing on the host.
  bool step_is_replayable() const override { return true; }
  layers::Module& module() override { return layer_; }

 private:
  layers::Mamba layer_;
};

struct MixerEntry {
  const char* name;
  std::unique_ptr<Mixer> (*make)(int64_t d_model, const json& options, at::Generator& generator, double init_std);
  int64_t (*parameter_count)(int64_t d_model, const json& options);
  int64_t (*state_bytes)(int64_t d_model, const json& options);
};

// The entry of a layer built from (options, generator) that counts its parameters and state
// from the options alone; kOptions(d_model, options, init_std) parses the options.
template <class Adapter, class Layer, auto kOptions>
MixerEntry layer_entry(const char* name) {
  return {name,
          [](int64_t d, const json& o, at::Generator& g, double std) -> std::unique_ptr<Mixer> {
            return std::make_unique<Adapter>(kOptions(d, o, std), g);
          },
          [](int64_t d, const json& o) { return Layer::parameter_count_for(kOptions(d, o, 0.02)); },
          [](int64_t d, const json& o) { return Layer::state_bytes_per_sequence(kOptions(d, o, 0.02)); }};
}
layers::SoftmaxAttentionOptions sliding_window_options(int64_t d_model, const json& options, double init_std) {
  return attention_options("sliding_window", d_model, options, init_std);
}
layers::SoftmaxAttentionOptions full_attention_options(int64_t d_model, const json& options, double init_std) {
  return attention_options("attention", d_model, options, init_std);
}

int64_t gqa_parameter_count(int64_t d_model, const json& options) {
  const layers::GroupedQueryAttentionOptions o = gqa_options(d_model, options, 0.02);
  const int64_t q = o.num_heads * o.head_dim, kv = o.num_kv_heads * o.head_dim;
  return d_model * (q + 2 * kv) + q * d_model + (o.bias ? q + 2 * kv : 0) + (o.output_bias.value_or(o.bias) ? d_model : 0);
}

// Zoology's MQAR mixers without a decoding state: adapters that know their registry name.
template <class Layer, auto kOptions, const char* kName>
std::unique_ptr<Mixer> make_stateless(int64_t d, const json& o, at::Generator& g, double std) {
  return std::make_unique<StatelessMixer<Layer>>(kName, kOptions(d, o, std), g);
}
constexpr char kAttention[] = "attention";

template <class Layer, auto kOptions, const char* kName>
MixerEntry stateless_entry() {
  return {kName, make_stateless<Layer, kOptions, kName>,
          [](int64_t d, const json& o) { return Layer::parameter_count_for(kOptions(d, o, 0.02)); },
          [](int64_t d, const json& o) { return Layer::state_bytes_per_sequence(kOptions(d, o, 0.02)); }};
}

// The registry: one entry per mixer. A new mixer adds its options parser above and one entry.
const std::vector<MixerEntry>& registry() {
  static const std::vector<MixerEntry> entries = {
      layer_entry<GsaMixer, layers::GatedSlotAttention, gsa_options>("gsa"),
      layer_entry<GlaMixer, layers::GatedLinearAttention, gla_options>("gla"),
      layer_entry<RetentionMixer, layers::MultiScaleRetention, retnet_options>("retnet"),
      layer_entry<Hgrn2Mixer, layers::Hgrn2Attention, hgrn2_options>("hgrn2"),
      {"base_conv",
       [](int64_t d, const json& o, at::Generator& g, double std) -> std::unique_ptr<Mixer> {
         return std::make_unique<StatelessMixer<layers::BaseConv>>("base_conv", d, base_conv_kernel_size(o), std, g);
       },
       [](int64_t d, const json& o) { return layers::BaseConv::parameter_count_for(d, base_conv_kernel_size(o)); },
       [](int64_t d, const json& o) { return layers::BaseConv::state_bytes_per_sequence(d, base_conv_kernel_size(o)); }},
      layer_entry<TaylorMixer, layers::BasedLinearAttention, based_options>("based"),
      layer_entry<TaylorMixer, layers::BasedLinearAttention, linear_attention_options>("linear_attention"),
      layer_entry<WindowMixer, layers::SoftmaxAttention, sliding_window_options>("sliding_window"),
      stateless_entry<layers::SoftmaxAttention, full_attention_options, kAttention>(),
      {"gqa",
       [](int64_t d, const json& o, at::Generator& g, double std) -> std::unique_ptr<Mixer> {
         return std::make_unique<GqaMixer>(gqa_options(d, o, std), gqa_rope(o), g);
       },
       gqa_parameter_count,
       [](int64_t d, const json& o) {
         const layers::GroupedQueryAttentionOptions options = gqa_options(d, o, 0.02);
         return 1024 * 2 * options.num_kv_heads * options.head_dim * int64_t{4};  // fp32 keys and values of 1024 tokens
       }},
      {"based_conv",
       [](int64_t d, const json& o, at::Generator& g, double std) -> std::unique_ptr<Mixer> {
         return std::make_unique<BasedConvMixer>(d, based_conv_options(o, std), std, g);
       },
       [](int64_t d, const json& o) {  // in_proj d → 4d, the depthwise conv over 2d, out_proj 2d → d
         const BasedConvOptions c = based_conv_options(o, 0.02);
         return 4 * d * d + 2 * d * c.kernel_size + 2 * d * d + (c.bias ? 4 * d + d : 0);
       },
       [](int64_t d, const json& o) { return (based_conv_options(o, 0.02).kernel_size - 1) * 2 * d * int64_t{4}; }},
      layer_entry<MambaMixer, layers::Mamba, mamba_options>("mamba"),
  };
  return entries;
}

const MixerEntry& find_mixer(const std::string& name) {
  for (const MixerEntry& entry : registry()) {
    if (name == entry.name) return entry;
  }
  fail("unknown sequence mixer \"", name, "\"; known mixers: ", config::join(mixer_names()));
}

void check_d_model(int64_t d_model) { LINTIME_CHECK(d_model >= 1, "d_model must be >= 1, got ", d_model); }

}  // namespace

std::vector<std::string> mixer_names() {
  std::vector<std::string> names;
  for (const MixerEntry& entry : registry()) names.emplace_back(entry.name);
  return names;
}

std::unique_ptr<Mixer> make_mixer(const std::string& name, int64_t d_model, const json& options,
                                  at::Generator& generator, double init_std) {
  const MixerEntry& entry = find_mixer(name);
  check_d_model(d_model);
  return entry.make(d_model, options, generator, init_std);
}

int64_t mixer_parameter_count(const std::string& name, int64_t d_model, const json& options) {
  const MixerEntry& entry = find_mixer(name);
  check_d_model(d_model);
  return entry.parameter_count(d_model, options);
}

int64_t mixer_state_bytes_per_sequence(const std::string& name, int64_t d_model, const json& options) {
  const MixerEntry& entry = find_mixer(name);
  check_d_model(d_model);
  return entry.state_bytes(d_model, options);
}

}  // namespace lintime::models
