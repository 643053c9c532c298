// The decoder stack: block wiring, decoding entry points, sizes.
#include "models/decoder.h"

#include "core/error.h"
#include "core/tensor_checks.h"
#include "layers/gated_mlp.h"
#include "layers/layer_norm.h"
#include "layers/rms_norm.h"
#include "layers/swiglu_mlp.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <string>
#include <utility>

namespace lintime::models {
namespace {

const DecoderConfig& validated(const DecoderConfig& config) {
  config.validate();
  return config;
}

template <class Layer>
class FeedForwardOf final : public FeedForward {
 public:
  template <class... Args>
  explicit FeedForwardOf(Args&&... args) : layer_(std::forward<Args>(args)...) {}
  at::Tensor forward(const at::Tensor& x) const override { return layer_.forward(x); }
  layers::Module& module() override { return layer_; }

 private:
  Layer layer_;
};

// zoology's identity "state mixer": its input (the block's second norm) is what it adds.
class IdentityMlp : public layers::Module {
 public:
  at::Tensor forward(const at::Tensor& x) const { return x; }
};

std::unique_ptr<FeedForward> make_feed_forward(const DecoderConfig& c, at::Generator& generator) {
  if (c.mlp == "identity") return std::make_unique<FeedForwardOf<IdentityMlp>>();
  if (c.mlp == "gated") {
    return std::make_unique<FeedForwardOf<layers::GatedMlp>>(
        c.hidden_size, c.intermediate_size, c.initializer_range, c.mlp_out_std < 0 ? c.initializer_range : c.mlp_out_std,
        generator, c.mlp_fc1_bias, c.mlp_fc2_bias);
  }
  return std::make_unique<FeedForwardOf<layers::SwiGluMlp>>(c.hidden_size, c.intermediate_size, c.initializer_range,
                                                            generator, c.mlp_bias);
}

std::unique_ptr<layers::Norm> make_norm(const DecoderConfig& c) {
  if (c.norm == "layer") return std::make_unique<layers::LayerNorm>(c.hidden_size, c.norm_eps);
  return std::make_unique<layers::RMSNorm>(c.hidden_size, c.norm_eps);
}

int64_t norm_parameters(const DecoderConfig& c) { return c.norm == "layer" ? 2 * c.hidden_size : c.hidden_size; }

int64_t feed_forward_parameters(const DecoderConfig& c) {
  if (c.mlp == "identity") return 0;
  const int64_t d = c.hidden_size, inner = c.intermediate_size;
  if (c.mlp == "gated") return 3 * d * inner + (c.mlp_fc1_bias ? 2 * inner : 0) + (c.mlp_fc2_bias ? d : 0);
  return 3 * d * inner + (c.mlp_bias ? 2 * inner + d : 0);
}

// The residual stream's dtype with residual_in_fp32 (fp64 models keep fp64).
at::Tensor as_residual(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? x : x.to(at::kFloat); }

// A block whose activations are not kept: its forward runs without recording, its backward runs
// it again from the saved input with recording on and back-propagates through that (the
// reentrant form of torch.utils.checkpoint; the block holds no randomness to replay). The
// block's parameter gradients accumulate inside that nested backward.
struct CheckpointedBlock : public torch::autograd::Function<CheckpointedBlock> {
  static at::Tensor forward(torch::autograd::AutogradContext* context, const at::Tensor& x, DecoderBlock* block,
                            const PackedSequences* packed) {
    context->saved_data["block"] = reinterpret_cast<int64_t>(block);
    if (packed != nullptr) {  // kept by value: the caller's boundaries are gone by the backward
      context->saved_data["cu_seqlens"] = packed->cu_seqlens;
      context->saved_data["offsets"] = packed->offsets;
    }
    context->save_for_backward({x});
    return block->forward(x, nullptr, packed);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* context,
                                                 torch::autograd::variable_list grad_outputs) {
    auto* block = reinterpret_cast<DecoderBlock*>(context->saved_data["block"].toInt());
    std::optional<PackedSequences> packed;
    if (context->saved_data.count("cu_seqlens")) {
      packed = PackedSequences{context->saved_data["cu_seqlens"].toTensor(),
                               context->saved_data["offsets"].toIntVector()};
    }
    const at::Tensor x = context->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      at::AutoGradMode recording(true);
      y = block->forward(x, nullptr, packed ? &*packed : nullptr);
    }
    // Accumulates into the block's parameters and into x, a leaf of this nested graph.
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

PackedSequences PackedSequences::from(const at::Tensor& cu_seqlens, int64_t tokens, const c10::Device& device) {
  LINTIME_CHECK(cu_seqlens.dim() == 1 && cu_seqlens.size(0) >= 2, "decoder: cu_seqlens must have shape [N + 1] ",
                "with N >= 1, got ", shape_string(cu_seqlens.sizes()));
  LINTIME_CHECK(cu_seqlens.scalar_type() == at::kInt || cu_seqlens.scalar_type() == at::kLong,
                "decoder: cu_seqlens must hold int32 or int64 offsets, got ", cu_seqlens.scalar_type());
  PackedSequences packed;
  const at::Tensor host = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  const int64_t* values = host.data_ptr<int64_t>();
  packed.offsets.assign(values, values + host.numel());
  LINTIME_CHECK(packed.offsets.front() == 0 && packed.offsets.back() == tokens, "decoder: cu_seqlens must run from 0 ",
                "to the packed row's ", tokens, " tokens, got ", packed.offsets.front(), " to ", packed.offsets.back());
  for (size_t i = 1; i < packed.offsets.size(); ++i) {
    LINTIME_CHECK(packed.offsets[i] > packed.offsets[i - 1], "decoder: cu_seqlens must rise strictly (no empty ",
                  "sequence), got ", packed.offsets[i - 1], " then ", packed.offsets[i], " at index ", i);
  }
  packed.cu_seqlens = cu_seqlens.to(device, at::kInt);
  return packed;
}

void DecoderConfig::validate() const {
  LINTIME_CHECK(vocab_size > 0, "decoder: vocab_size must be positive, got ", vocab_size);
  LINTIME_CHECK(hidden_size > 0, "decoder: hidden_size must be positive, got ", hidden_size);
  LINTIME_CHECK(!layers.empty(), "decoder: at least one layer is needed");
  LINTIME_CHECK(mlp == "identity" || intermediate_size > 0, "decoder: intermediate_size must be positive, got ",
                intermediate_size);
  LINTIME_CHECK(mlp == "swiglu" || mlp == "gated" || mlp == "identity",
                "decoder: mlp must be \"swiglu\", \"gated\" or \"identity\", got \"", mlp, "\"");
  LINTIME_CHECK(norm == "rms" || norm == "layer", "decoder: norm must be \"rms\" or \"layer\", got \"", norm, "\"");
  LINTIME_CHECK(embed_dropout >= 0.0 && embed_dropout < 1.0, "decoder: embed_dropout must lie in [0, 1), got ",
                embed_dropout);
  for (const MixerSpec& spec : layers) mixer_parameter_count(spec.name, hidden_size, spec.options);
}

DecoderBlock::DecoderBlock(const DecoderConfig& config, const MixerSpec& mixer_spec, at::Generator& generator)
    : mixer_norm(make_norm(config)),
      mixer(make_mixer(mixer_spec.name, config.hidden_size, mixer_spec.options, generator, config.initializer_range)),
      mlp_norm(make_norm(config)),
      mlp(make_feed_forward(config, generator)),
      mixer_name_(mixer_spec.name),
      residual_in_fp32_(config.residual_in_fp32) {
  register_module(config.names.mixer_norm, *mixer_norm);
  register_module(config.names.mixer, mixer->module());
  register_module(config.names.mlp_norm, *mlp_norm);
  register_module(config.names.mlp, mlp->module());
}

at::Tensor DecoderBlock::forward(const at::Tensor& x, state::LayerState* layer_state, const PackedSequences* packed) {
  if (residual_in_fp32_) {  // x is the fp32 residual stream; the norms read it in the weights' dtype
    const at::ScalarType dtype = mixer_norm->weight.scalar_type();
    const at::Tensor h = as_residual(x + mix(mixer_norm->forward(x.to(dtype)), layer_state, packed));
    return as_residual(h + mlp->forward(mlp_norm->forward(h.to(dtype))));
  }
  // h = x + mixer; mlp_norm(h) from the same pass (one kernel in inference on a GPU).
  auto [h, normed] = mlp_norm->add_forward(x, mix(mixer_norm->forward(x), layer_state, packed));
  return h + mlp->forward(normed);
}

at::Tensor DecoderBlock::mix(const at::Tensor& x, state::LayerState* layer_state, const PackedSequences* packed) {
  if (packed == nullptr) return mixer->forward(x, layer_state);
  LINTIME_CHECK(x.size(0) == 1, "decoder: packed sequences come as one row [1, T], got ", x.size(0), " rows");
  if (mixer->packs_sequences()) return mixer->forward(x, layer_state, packed->cu_seqlens);
  LINTIME_CHECK(layer_state == nullptr, "mixer \"", mixer_name_, "\": packed sequences with a decoding state are ",
                "not supported (decode them as separate rows)");
  // One sequence at a time: the same result as the mixer's own varlen form, one launch each.
  std::vector<at::Tensor> pieces;
  pieces.reserve(packed->offsets.size() - 1);
  for (size_t i = 0; i + 1 < packed->offsets.size(); ++i) {
    const int64_t start = packed->offsets[i], length = packed->offsets[i + 1] - start;
    pieces.push_back(mixer->forward(x.narrow(1, start, length)));
  }
  return at::cat(pieces, 1);
}

void DecoderBackbone::set_activation_checkpointing(int64_t every) {
  LINTIME_CHECK(every >= 0, "decoder: activation checkpointing takes every k-th block with k >= 0 (0: none), got ", every);
  checkpoint_every_ = every;
}

void DecoderBlock::throw_wrong_mixer() const {
  fail("decoder block: its mixer \"", mixer_name_, "\" is not the layer asked for");
}

DecoderBackbone::DecoderBackbone(const DecoderConfig& config, at::Generator& generator)
    : embeddings(config.vocab_size, config.hidden_size, config.initializer_range, generator),
      norm(make_norm(config)),
      residual_in_fp32_(config.residual_in_fp32),
      embed_dropout_(config.embed_dropout) {
  register_module(config.names.embeddings, embeddings);
  layers.reserve(config.layers.size());
  for (size_t i = 0; i < config.layers.size(); ++i) {
    layers.push_back(std::make_unique<DecoderBlock>(config, config.layers[i], generator));
    register_module("layers." + std::to_string(i), *layers.back());
  }
  register_module(config.names.final_norm, *norm);
}

at::Tensor DecoderBackbone::forward(const at::Tensor& input_ids, state::Cache* cache,
                                    const std::optional<at::Tensor>& cu_seqlens) {
  LINTIME_CHECK(input_ids.dim() == 2, "decoder: input_ids must have shape [B, T], got ",
                shape_string(input_ids.sizes()));
  if (cache != nullptr) {
    LINTIME_CHECK(cache->num_layers() == static_cast<int64_t>(layers.size()), "decoder: the cache has ",
                  cache->num_layers(), " layers, the model ", layers.size());
    LINTIME_CHECK(cu_seqlens.has_value() || input_ids.size(0) == cache->batch_size(), "decoder: input_ids has ", input_ids.size(0),
                  " rows, the cache ", cache->batch_size(), " slots (a running batch uses forward_slots)");
    bool positions_shared = false;
    for (int64_t i = 0; i < cache->num_layers(); ++i) positions_shared |= cache->layer(i).rows_share_a_position();
    LINTIME_CHECK(!positions_shared || cache->slots_aligned(), "decoder: the cache's slots hold sequences of ",
                  "different lengths, which this model's layers cannot continue together (use forward_slots)");
  }
  if (input_ids.device().is_cpu() && input_ids.numel() > 0) {  // on a GPU this would wait for the device
    const int64_t low = input_ids.min().item<int64_t>(), high = input_ids.max().item<int64_t>();
    LINTIME_CHECK(low >= 0 && high < embeddings.weight.size(0), "decoder: input_ids must be token ids in [0, ",
                  embeddings.weight.size(0), "), got values in [", low, ", ", high, "]");
  }
  std::optional<PackedSequences> packed;
  if (cu_seqlens.has_value()) {
    LINTIME_CHECK(input_ids.size(0) == 1, "decoder: packed sequences (cu_seqlens) come as one row [1, T], got ",
                  "input_ids of shape ", shape_string(input_ids.sizes()));
    packed = PackedSequences::from(*cu_seqlens, input_ids.size(1), input_ids.device());
  }
  const PackedSequences* packed_or_null = packed ? &*packed : nullptr;
  at::Tensor x = embeddings.forward(input_ids);  // [B, T, d]
  if (training_ && embed_dropout_ > 0) x = at::dropout(x, embed_dropout_, /*train=*/true);
  if (residual_in_fp32_) x = as_residual(x);
  const bool checkpointing = checkpoint_every_ > 0 && cache == nullptr && at::GradMode::is_enabled();
  for (size_t i = 0; i < layers.size(); ++i) {
    if (checkpointing && i % static_cast<size_t>(checkpoint_every_) == 0 && x.requires_grad()) {
      x = CheckpointedBlock::apply(x, layers[i].get(), packed_or_null);
    } else {
      state::LayerState* layer_state = cache ? &cache->layer(static_cast<int64_t>(i)) : nullptr;
      if (layer_state) layer_state->widen();  // states kept in a narrower dtype: computed in the wide one
      x = layers[i]->forward(x, layer_state, packed_or_null);
      if (layer_state) layer_state->narrow();
    }
  }
  if (cache != nullptr) cache->advance(input_ids.size(1));
  return norm->forward(x.to(norm->weight.scalar_type()));
}

std::string DecoderBackbone::first_non_finite(const at::Tensor& input_ids) {
  at::NoGradGuard no_grad;
  auto finite = [](const at::Tensor& t) { return at::isfinite(t).all().item<bool>(); };
  at::Tensor x = embeddings.forward(input_ids);
  if (!finite(x)) return "the embeddings";
  if (residual_in_fp32_) x = as_residual(x);
  for (size_t i = 0; i < layers.size(); ++i) {
    x = layers[i]->forward(x);
    if (!finite(x)) return "layer " + std::to_string(i) + " (" + layers[i]->mixer_name() + ")";
  }
  if (!finite(norm->forward(x.to(norm->weight.scalar_type())))) return "the final norm";
  return "";
}

std::string Decoder::first_non_finite(const at::Tensor& input_ids) {
  std::string where = model.first_non_finite(input_ids);
  if (!where.empty()) return where;
  return at::isfinite(forward(input_ids)).all().item<bool>() ? "" : "the LM head";
}

Decoder::Decoder(const DecoderConfig& config, at::Generator& generator)
    : decoder_config_(validated(config)), model(decoder_config_, generator) {
  register_module(decoder_config_.names.backbone, model);
  if (!decoder_config_.tie_word_embeddings) {
    lm_head = std::make_unique<layers::Linear>(decoder_config_.hidden_size, decoder_config_.vocab_size,
                                               decoder_config_.initializer_range, generator);
    register_module("lm_head", *lm_head);
  }
}

at::Tensor Decoder::hidden_states(const at::Tensor& input_ids, state::Cache* cache,
                                  const std::optional<at::Tensor>& cu_seqlens) {
  return model.forward(input_ids, cache, cu_seqlens);
}

at::Tensor Decoder::logits(const at::Tensor& hidden) const {
  if (decoder_config_.logits_in_fp32) {
    const auto dtype = compute_dtype(hidden.scalar_type());
    const at::Tensor& head = lm_head ? lm_head->weight : model.embeddings.weight;
    return at::matmul(hidden.to(dtype), head.to(dtype).t());
  }
  at::Tensor result = lm_head ? lm_head->forward(hidden) : at::linear(hidden, model.embeddings.weight);
  return result.to(compute_dtype(result.scalar_type()));
}

at::Tensor Decoder::forward(const at::Tensor& input_ids, state::Cache* cache,
                            const std::optional<at::Tensor>& cu_seqlens) {
  return logits(hidden_states(input_ids, cache, cu_seqlens));
}

state::Cache Decoder::make_cache(int64_t batch, int64_t expected_tokens) const {
  LINTIME_CHECK(batch > 0, "decoder: a cache needs a positive batch, got ", batch);
  LINTIME_CHECK(expected_tokens >= 0, "decoder: expected_tokens must be >= 0, got ", expected_tokens);
  const at::Tensor& reference = model.embeddings.weight;
  std::vector<std::unique_ptr<state::LayerState>> states;
  states.reserve(model.layers.size());
  for (const auto& block : model.layers) {
    states.push_back(block->mixer->make_state(batch, reference.device(), reference.scalar_type()));
    states.back()->expect_tokens(expected_tokens);
    states.back()->compute_dtype = compute_dtype(reference.scalar_type());
    states.back()->recurrent_dtype = recurrent_state_dtype_;
    states.back()->narrow();  // states the mixer allocated up front
  }
  return state::Cache(std::move(states), batch);
}

at::Tensor Decoder::prefill(const at::Tensor& input_ids, state::Cache& cache) {
  LINTIME_CHECK(input_ids.dim() == 2 && input_ids.size(0) == cache.batch_size(),
                "decoder prefill: input_ids must have shape [B, T] with B = the cache's batch ", cache.batch_size(),
                ", got ", shape_string(input_ids.sizes()));
  cache.reset();
  return forward(input_ids, &cache);
}

at::Tensor Decoder::step(const at::Tensor& token, state::Cache& cache) {
  LINTIME_CHECK(token.dim() == 1 && token.size(0) == cache.batch_size(),
                "decoder step: token must have shape [B] with B = the cache's batch ", cache.batch_size(), ", got ",
                shape_string(token.sizes()));
  return forward(token.unsqueeze(1), &cache).squeeze(1);
}

namespace {

// int64 values on `device`; from pinned memory without waiting for the device on a GPU.
at::Tensor on_device(const std::vector<int64_t>& values, const c10::Device& device) {
  at::Tensor host = at::tensor(values, at::kLong);
  if (device.is_cpu()) return host;
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

std::shared_ptr<const state::SlotRows> slot_rows(const state::Cache& cache, const std::vector<int64_t>& slots,
                                                 const c10::Device& device) {
  auto rows = std::make_shared<state::SlotRows>();
  rows->slots = slots;
  for (int64_t slot : slots) rows->tokens.push_back(cache.slot_tokens(slot));
  rows->rows = on_device(rows->slots, device);
  rows->positions = on_device(rows->tokens, device);
  return rows;
}

}  // namespace

at::Tensor Decoder::forward_slots(const at::Tensor& input_ids, state::Cache& cache, const std::vector<int64_t>& slots,
                                  bool last_position_only) {
  LINTIME_CHECK(input_ids.dim() == 2 && input_ids.size(0) == static_cast<int64_t>(slots.size()),
                "decoder forward_slots: input_ids must be [B, T] with B = the number of slots (", slots.size(),
                "), got ", shape_string(input_ids.sizes()));
  LINTIME_CHECK(!last_position_only || input_ids.size(1) >= 1,
                "decoder forward_slots: the last position's logits need at least one token per row");
  LINTIME_CHECK(cache.num_layers() == static_cast<int64_t>(model.layers.size()), "decoder forward_slots: the cache has ",
                cache.num_layers(), " layers, the model ", model.layers.size());
  std::vector<bool> seen(static_cast<size_t>(cache.batch_size()), false);
  // Layers whose rows share one position (a KV cache) continue slots of different lengths
  // together when they can do so in place (KvRows); otherwise equally long slots run together.
  bool positions_shared = false;
  for (int64_t i = 0; i < cache.num_layers(); ++i) {
    positions_shared |= cache.layer(i).rows_share_a_position() && !cache.layer(i).continues_rows_in_place();
  }
  // Rows that run together: all of them, or those whose slots hold equally long sequences.
  std::vector<std::pair<int64_t, std::vector<int64_t>>> groups;  // (tokens, rows of input_ids)
  for (size_t row = 0; row < slots.size(); ++row) {
    const int64_t slot = slots[row];
    LINTIME_CHECK(slot >= 0 && slot < cache.batch_size() && !seen[static_cast<size_t>(slot)],
                  "decoder forward_slots: slots must be distinct and in [0, ", cache.batch_size(), "), got ", slot);
    seen[static_cast<size_t>(slot)] = true;
    const int64_t tokens = positions_shared ? cache.slot_tokens(slot) : 0;
    auto group = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == tokens; });
    if (group == groups.end()) group = groups.insert(groups.end(), {tokens, {}});
    group->second.push_back(static_cast<int64_t>(row));
  }
  std::vector<at::Tensor> outputs(slots.size());
  for (const auto& [tokens, rows] : groups) {
    std::vector<int64_t> group_slots;
    for (int64_t row : rows) group_slots.push_back(slots[static_cast<size_t>(row)]);
    const at::Tensor slot_index = at::tensor(group_slots, at::kLong);
    std::shared_ptr<const state::SlotRows> in_place;  // made for the first layer that continues rows in place
    std::vector<std::unique_ptr<state::LayerState>> parts;
    for (int64_t i = 0; i < cache.num_layers(); ++i) {
      state::LayerState& layer_state = cache.layer(i);
      if (!layer_state.continues_rows_in_place()) {
        parts.push_back(layer_state.gather(slot_index, tokens));
        continue;
      }
      if (!in_place) in_place = slot_rows(cache, group_slots, input_ids.device());
      parts.push_back(layer_state.rows_view(in_place));
    }
    state::Cache part(std::move(parts), static_cast<int64_t>(rows.size()));
    const at::Tensor row_index = at::tensor(rows, at::kLong).to(input_ids.device());
    at::Tensor hidden = hidden_states(input_ids.index_select(0, row_index), &part);
    if (last_position_only) hidden = hidden.narrow(1, hidden.size(1) - 1, 1);
    const at::Tensor logits = this->logits(hidden);
    for (int64_t i = 0; i < cache.num_layers(); ++i) {
      if (!cache.layer(i).continues_rows_in_place()) cache.layer(i).scatter(part.layer(i), slot_index);
    }
    for (size_t j = 0; j < rows.size(); ++j) outputs[static_cast<size_t>(rows[j])] = logits.select(0, static_cast<int64_t>(j));
  }
  for (int64_t slot : slots) cache.advance_slot(slot, input_ids.size(1));
  return at::stack(outputs, 0);
}

int64_t Decoder::state_bytes_after(int64_t tokens) const {
  const at::ScalarType dtype = model.embeddings.weight.scalar_type();
  int64_t total = 0;
  for (const auto& block : model.layers) total += block->mixer->state_bytes_after(tokens, dtype);
  return total;
}

void Decoder::set_recurrent_state_dtype(std::optional<at::ScalarType> dtype) {
  LINTIME_CHECK(!dtype || *dtype == at::kFloat || *dtype == at::kBFloat16 || *dtype == at::kHalf,
                "decoder: recurrent states can be kept in float32, bfloat16 or float16, got ", *dtype);
  recurrent_state_dtype_ = dtype == at::kFloat ? std::nullopt : dtype;
}

bool Decoder::steps_are_replayable() const {
  // Narrow states are re-allocated by every step (widened, then rounded): nothing to replay.
  if (recurrent_state_dtype_) return false;
  for (const auto& block : model.layers) {
    if (!block->mixer->step_is_replayable()) return false;
  }
  return true;
}

bool Decoder::slot_steps_are_replayable() const {
  for (const auto& block : model.layers) {
    if (!block->mixer->rows_step_is_replayable()) return false;
    if (recurrent_state_dtype_ && !block->mixer->rows_step_keeps_narrow_states(*recurrent_state_dtype_)) return false;
  }
  return true;
}

bool Decoder::prefills_continue() const {
  for (const auto& block : model.layers) {
    if (!block->mixer->continues_prefill()) return false;
  }
  return true;
}

int64_t Decoder::parameter_count_for(const DecoderConfig& config) {
  validated(config);
  const int64_t d = config.hidden_size;
  const int64_t mlp = feed_forward_parameters(config);
  const int64_t norm = norm_parameters(config);
  int64_t count = config.vocab_size * d * (config.tie_word_embeddings ? 1 : 2) + norm;  // embeddings (+ head), norm
  for (const MixerSpec& spec : config.layers) {
    count += mixer_parameter_count(spec.name, d, spec.options) + mlp + 2 * norm;
  }
  return count;
}

int64_t Decoder::state_bytes_per_sequence_for(const DecoderConfig& config) {
  validated(config);
  int64_t total = 0;
  for (const MixerSpec& spec : config.layers) {
    total += mixer_state_bytes_per_sequence(spec.name, config.hidden_size, spec.options);
  }
  return total;
}

}  // namespace lintime::models
