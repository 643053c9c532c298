// Decoding state of one GSA layer: the two recurrent states of every key/value head and, with
// short convolutions, the last conv_size − 1 inputs of q, k and v. Plain data, header-only.
#pragma once

#include "state/layer_state.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace lintime::state {

struct GsaRows;

struct GsaLayerState : LayerState {
  at::Tensor state_k;  // [B, H, K, M] fp32 (fp64 for fp64 models)
  at::Tensor state_v;  // [B, H, M, V] fp32 (fp64 for fp64 models)
  at::Tensor conv_q;   // [B, W-1, HQ*K] input dtype, undefined without short conv
  at::Tensor conv_k;   // [B, W-1, H*K]
  at::Tensor conv_v;   // [B, W-1, H*V]

  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<GsaLayerState>(); }
  std::vector<at::Tensor*> tensors() override { return {&state_k, &state_v, &conv_q, &conv_k, &conv_v}; }
  std::vector<at::Tensor*> recurrent_tensors() override { return {&state_k, &state_v}; }
  int64_t batch_size() const { return state_k.defined() ? state_k.size(0) : 0; }
  int64_t bytes() const { return allocated_bytes(); }
  // A server's slots continue in place (GsaRows): the decoding kernel reads and writes the rows
  // where they lie, in fp32 or bf16 (ops::gsa_step_rows_). States kept in fp16 are widened per
  // call: those gather.
  std::unique_ptr<LayerState> rows_view(std::shared_ptr<const SlotRows> rows) override;
  bool continues_rows_in_place() const override {
    return (!recurrent_dtype.has_value() || *recurrent_dtype == at::kBFloat16) && state_k.defined();
  }
};

// Rows of a GsaLayerState continued in place (rows_view): a step updates each row's states in
// the slot tensors (ops::gsa_step_rows_); a prefill gathers them, runs, and writes them back.
struct GsaRows : RowsView {
  GsaLayerState* cache = nullptr;  // the slots' states (not owned; outlives the forward)
};

inline std::unique_ptr<LayerState> GsaLayerState::rows_view(std::shared_ptr<const SlotRows> rows) {
  auto view = std::make_unique<GsaRows>();
  view->cache = this;
  view->slots = std::move(rows);
  return view;
}

}  // namespace lintime::state
