// The GSA test cases shared by the CPU suite (test_gsa.cpp) and the CUDA suite
// (test_gsa_cuda.cpp): shapes, random inputs, and a runner that returns outputs, final states
// and every gradient of a fixed scalar loss.
#pragma once

#include "ops/register/ops.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

namespace lintime::ops::gsa_testing {

using lintime::testing::expect_close;
using lintime::testing::make_generator;

struct GsaCase {
  std::string name;
  int64_t batch, time, query_heads, heads, key_dim, value_dim, slots;
  double gate_normaliser;         // g = logsigmoid(x) / gate_normaliser
  bool layer_slot_write;          // s = 1 - exp(g) as in the layer; else independent random s
  bool initial_state;
  std::vector<int64_t> sequence_lengths = {};  // varlen (batch 1, time = their sum) when set
  bool final_state = true;
};

struct GsaInputs {
  at::Tensor q, k, v, s, g, initial_state_k, initial_state_v, cu_seqlens;
  at::Tensor grad_o, grad_state_k, grad_state_v;  // weights of the scalar loss
  double scale;
};

inline GsaInputs make_inputs(const GsaCase& c, uint64_t seed, bool abc = false) {
  auto generator = make_generator(seed);
  const auto options = at::TensorOptions().dtype(at::kDouble);
  auto randn = [&](at::IntArrayRef shape) { return at::randn(shape, generator, options); };
  const bool varlen = !c.sequence_lengths.empty();
  const int64_t time = varlen ? std::accumulate(c.sequence_lengths.begin(),
                                                c.sequence_lengths.end(), int64_t{0})
                              : c.time;
  const int64_t sequences = varlen ? static_cast<int64_t>(c.sequence_lengths.size()) : c.batch;
  const int64_t B = c.batch, T = time, HQ = c.query_heads, H = c.heads, K = c.key_dim,
                V = c.value_dim, M = c.slots;
  GsaInputs in;
  in.q = randn({B, T, HQ, K});
  in.k = randn({B, T, H, K});
  in.v = randn({B, T, H, V});
  in.g = at::log_sigmoid(randn({B, T, H, M})) / c.gate_normaliser;
  in.s = abc ? randn({B, T, H, M}) : c.layer_slot_write ? 1 - in.g.exp() : randn({B, T, H, M});
  if (abc) in.g = at::Tensor();
  if (c.initial_state) {
    in.initial_state_k = 0.5 * randn({sequences, H, K, M});
    in.initial_state_v = 0.5 * randn({sequences, H, M, V});
  }
  if (varlen) {
    std::vector<int64_t> offsets{0};
    for (int64_t length : c.sequence_lengths) offsets.push_back(offsets.back() + length);
    in.cu_seqlens = at::tensor(offsets, at::kLong).to(at::kInt);
  }
  in.grad_o = randn({B, T, HQ, V});
  in.grad_state_k = randn({sequences, H, K, M});
  in.grad_state_v = randn({sequences, H, M, V});
  in.scale = 1.0 / std::sqrt(static_cast<double>(K));
  return in;
}

inline std::optional<at::Tensor> optional(const at::Tensor& tensor) {
  return tensor.defined() ? std::optional<at::Tensor>(tensor) : std::nullopt;
}

enum class Implementation { chunk, reference };

// Outputs and the gradients of sum(o·grad_o) + sum(H^k·grad_state_k) + sum(H^v·grad_state_v)
// for q, k, v, s, g and both initial states (undefined where the input is absent).
struct GsaRun {
  at::Tensor o, final_state_k, final_state_v;
  std::map<std::string, at::Tensor> grads;
};

using lintime::testing::leaf_gradients;

inline GsaRun run_gsa(Implementation implementation, const GsaInputs& in, at::ScalarType dtype,
                      bool final_state = true, const at::Device& device = at::kCPU) {
  // States stay fp32 for fp16/bf16 inputs (the op's contract keeps states in fp32).
  const at::ScalarType state_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  auto leaf = [&](const at::Tensor& x, at::ScalarType type) {
    return x.defined() ? x.to(device, type).detach().requires_grad_(true) : at::Tensor();
  };
  std::map<std::string, at::Tensor> leaves = {
      {"q", leaf(in.q, dtype)}, {"k", leaf(in.k, dtype)}, {"v", leaf(in.v, dtype)},
      {"s", leaf(in.s, dtype)}, {"g", leaf(in.g, dtype)},
      {"initial_state_k", leaf(in.initial_state_k, state_dtype)},
      {"initial_state_v", leaf(in.initial_state_v, state_dtype)}};
  const at::Tensor cu_seqlens = in.cu_seqlens.defined() ? in.cu_seqlens.to(device) : at::Tensor();
  auto call = implementation == Implementation::chunk ? &gsa_chunk : &gsa_reference;
  auto result = call(leaves["q"], leaves["k"], leaves["v"], leaves["s"], optional(leaves["g"]),
                     in.scale, optional(leaves["initial_state_k"]),
                     optional(leaves["initial_state_v"]), final_state, optional(cu_seqlens));
  std::vector<at::Tensor> outputs{result.o}, grad_outputs{in.grad_o.to(device, result.o.scalar_type())};
  if (final_state) {
    outputs.insert(outputs.end(), {result.final_state_k, result.final_state_v});
    grad_outputs.insert(grad_outputs.end(),
                        {in.grad_state_k.to(device, result.final_state_k.scalar_type()),
                         in.grad_state_v.to(device, result.final_state_v.scalar_type())});
  } else {
    EXPECT_FALSE(result.final_state_k.defined());
    EXPECT_FALSE(result.final_state_v.defined());
  }
  const auto grads = leaf_gradients(leaves, outputs, grad_outputs);
  // Results come back to the host for the comparisons.
  auto host = [](const at::Tensor& x) { return x.defined() ? x.detach().cpu() : at::Tensor(); };
  GsaRun run{host(result.o), final_state ? host(result.final_state_k) : at::Tensor(),
             final_state ? host(result.final_state_v) : at::Tensor(), {}};
  for (const auto& [name, grad] : grads) run.grads[name] = host(grad);
  return run;
}

// expect_close, except that an exactly zero reference (e.g. grad_g at T = 1 without initial
// state, where g multiplies a zero state) is compared in absolute terms.
inline void expect_close_or_zero(const std::string& case_name, const std::string& tensor_name,
                          const at::Tensor& actual, const at::Tensor& expected, double tolerance) {
  if (expected.numel() > 0 && expected.abs().max().item<double>() == 0.0) {
    const double largest = actual.abs().max().item<double>();
    EXPECT_LE(largest, tolerance) << case_name << ": " << tensor_name
                                  << " should be zero, max abs " << largest;
    return;
  }
  expect_close(case_name, tensor_name, actual, expected, tolerance);
}

inline void expect_runs_close(const std::string& case_name, const GsaRun& actual,
                       const GsaRun& expected, double tolerance) {
  expect_close(case_name, "o", actual.o, expected.o, tolerance);
  if (expected.final_state_k.defined()) {
    expect_close(case_name, "final_state_k", actual.final_state_k, expected.final_state_k,
                 tolerance);
    expect_close(case_name, "final_state_v", actual.final_state_v, expected.final_state_v,
                 tolerance);
  }
  ASSERT_EQ(actual.grads.size(), expected.grads.size()) << case_name;
  for (const auto& [name, grad] : expected.grads) {
    ASSERT_TRUE(actual.grads.count(name)) << case_name << ": no gradient for " << name;
    expect_close_or_zero(case_name, "grad_" + name, actual.grads.at(name), grad, tolerance);
  }
}

// Not a cartesian product: each case covers a different corner (T around the 64-token chunk,
// odd head dims, strong gates, grouped queries, batch > 1, varlen, initial states); most
// 1025-token cases keep K, V, M small to bound the reference's run time.
inline const std::vector<GsaCase>& chunk_cases() {
  static const std::vector<GsaCase> cases = {
      {"T1_K32_V32_M16_B2_norm8_layer_s", 2, 1, 1, 1, 32, 32, 16, 8.0, true, false, {}, true},
      {"T63_K60_V64_M32_B2_HQ4_H2_norm1_random_s_init", 2, 63, 4, 2, 60, 64, 32, 1.0, false, true,
       {}, true},
      {"T64_K64_V60_M64_HQ2_H1_norm0.1_layer_s_init", 1, 64, 2, 1, 64, 60, 64, 0.1, true, true},
      {"T65_K128_V32_M16_B2_H2_norm8_random_s", 2, 65, 2, 2, 128, 32, 16, 8.0, false, false, {},
       true},
      {"T100_K32_V128_M32_B2_HQ4_H1_norm1_layer_s_init", 2, 100, 4, 1, 32, 128, 32, 1.0, true,
       true, {}, true},
      {"T100_K60_V60_M16_norm8_no_final_state_init", 1, 100, 2, 2, 60, 60, 16, 8.0, true, true, {},
       false},
      {"T1025_K32_V32_M16_HQ2_H1_norm8_layer_s_init", 1, 1025, 2, 1, 32, 32, 16, 8.0, true, true,
       {}, true},
      {"T1025_K32_V32_M16_norm0.1_random_s", 1, 1025, 1, 1, 32, 32, 16, 0.1, false, false},
      {"T1025_K128_V64_M64_B2_HQ2_H1_norm1_random_s_init", 2, 1025, 2, 1, 128, 64, 64, 1.0, false,
       true, {}, true},
      {"varlen_1_63_100_65_K64_V60_M32_HQ4_H2_norm1_layer_s_init", 1, 0, 4, 2, 64, 60, 32, 1.0,
       true, true, {1, 63, 100, 65}, true},
      {"varlen_300_1_724_K32_V32_M16_norm8_random_s_init", 1, 0, 1, 1, 32, 32, 16, 8.0, false, true,
       {300, 1, 724}, true},
      {"varlen_64_64_129_K128_V64_M64_HQ2_H1_norm0.1_layer_s", 1, 0, 2, 1, 128, 64, 64, 0.1, true,
       false, {64, 64, 129}},
      // Long enough for the CUDA kernels' segmented sweeps, with a one-chunk sequence between.
      {"varlen_520_3_1000_K32_V32_M16_H2_norm1_random_s_init", 1, 0, 2, 2, 32, 32, 16, 1.0, false,
       true, {520, 3, 1000}, true},
  };
  return cases;
}

inline uint64_t seed_of(const std::string& name) { return std::hash<std::string>{}(name) % 100003; }

// The fp64 reference of each case, computed once for the fp64 and fp32 comparisons.
inline const GsaRun& reference_of(const GsaCase& c) {
  static std::map<std::string, GsaRun> cache;
  auto found = cache.find(c.name);
  if (found != cache.end()) return found->second;
  auto inputs = make_inputs(c, seed_of(c.name));
  return cache[c.name] = run_gsa(Implementation::reference, inputs, at::kDouble, c.final_state);
}

}  // namespace lintime::ops::gsa_testing
