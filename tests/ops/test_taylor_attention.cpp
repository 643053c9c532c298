// Tests of the Taylor linear attention op (BASED, ops/based/taylor_attention.h): φ's inner
// product, the chunked form against the float64 token-by-token reference (outputs, final states
// and every gradient, both read-outs, initial states, varlen, awkward shapes), fp32 against that
// reference, steps and prefill + decode against the full forward, and the input checks.
#include "ops/based/taylor_attention.h"
#include "ops/register/ops.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

namespace lintime::ops {
namespace {

using lintime::testing::error_of;
using lintime::testing::expect_close;
using lintime::testing::leaf_gradients;
using lintime::testing::make_generator;
using lintime::testing::relative_rms_error;

struct TaylorCase {
  std::string name;
  int64_t batch, time, heads, feature_dim, value_dim;
  bool normalize, initial_state;
  std::vector<int64_t> sequence_lengths = {};  // varlen (batch 1, time = their sum) when set
};

struct TaylorInputs {
  at::Tensor q, k, v, initial_state, initial_normalizer, cu_seqlens;
  at::Tensor grad_o, grad_state, grad_normalizer;  // weights of the scalar loss
};

int64_t total_time(const TaylorCase& c) {
  return c.sequence_lengths.empty()
             ? c.time
             : std::accumulate(c.sequence_lengths.begin(), c.sequence_lengths.end(), int64_t{0});
}

// q and k at the scale a projection gives (|s| up to a few), initial states that are the states
// of a random 20-token prefix (so that normalised read-outs keep a positive denominator).
TaylorInputs make_inputs(const TaylorCase& c, uint64_t seed) {
  auto generator = make_generator(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto randn = [&](at::IntArrayRef shape) { return at::randn(shape, generator, f64); };
  const int64_t T = total_time(c), B = c.batch, H = c.heads, D = c.feature_dim, V = c.value_dim;
  const int64_t sequences = c.sequence_lengths.empty() ? B : static_cast<int64_t>(c.sequence_lengths.size());
  const int64_t E = taylor_feature_count(D);
  TaylorInputs in;
  in.q = randn({B, T, H, D});
  in.k = randn({B, T, H, D});
  in.v = randn({B, T, H, V});
  if (c.initial_state) {
    auto prefix = taylor_attention_reference_fwd(randn({sequences, 20, H, D}), randn({sequences, 20, H, D}),
                                                 randn({sequences, 20, H, V}), true, 0.0, at::Tensor(),
                                                 at::Tensor(), true, at::Tensor());
    in.initial_state = std::get<1>(prefix);
    in.initial_normalizer = std::get<2>(prefix);
  }
  if (!c.sequence_lengths.empty()) {
    std::vector<int64_t> offsets{0};
    for (int64_t length : c.sequence_lengths) offsets.push_back(offsets.back() + length);
    in.cu_seqlens = at::tensor(offsets, at::kLong).to(at::kInt);
  }
  in.grad_o = randn({B, T, H, V});
  in.grad_state = randn({sequences, H, E, V});
  in.grad_normalizer = randn({sequences, H, E});
  return in;
}

std::optional<at::Tensor> optional(const at::Tensor& x) {
  return x.defined() ? std::optional<at::Tensor>(x) : std::nullopt;
}

struct TaylorRun {
  at::Tensor o, final_state, final_normalizer;
  std::map<std::string, at::Tensor> grads;
};

constexpr double kEps = 1e-12;  // the paper's code

// One call of the chunked or reference form in `dtype`, then the gradients of
// Σ grad_o·o + Σ grad_state·S + Σ grad_normalizer·z.
TaylorRun run(bool chunk, const TaylorCase& c, const TaylorInputs& in, at::ScalarType dtype) {
  const at::ScalarType state_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  auto leaf = [](const at::Tensor& x, at::ScalarType type) {
    return x.defined() ? x.to(type).detach().requires_grad_(true) : at::Tensor();
  };
  std::map<std::string, at::Tensor> leaves = {{"q", leaf(in.q, dtype)}, {"k", leaf(in.k, dtype)},
                                              {"v", leaf(in.v, dtype)},
                                              {"initial_state", leaf(in.initial_state, state_dtype)},
                                              {"initial_normalizer", leaf(in.initial_normalizer, state_dtype)}};
  auto call = chunk ? &taylor_attention_chunk : &taylor_attention_reference;
  const auto result = call(leaves["q"], leaves["k"], leaves["v"], c.normalize, kEps, optional(leaves["initial_state"]),
                           optional(leaves["initial_normalizer"]), true, optional(in.cu_seqlens));
  const auto grads = leaf_gradients(leaves, {result.o, result.final_state, result.final_normalizer},
                                     {in.grad_o.to(result.o.scalar_type()), in.grad_state.to(state_dtype),
                                      in.grad_normalizer.to(state_dtype)});
  return {result.o.detach(), result.final_state.detach(), result.final_normalizer.detach(), grads};
}

// A gradient that vanishes but for eps (dq at T = 1 with the normalised read-out: o_1 = v_1 when
// eps = 0, so dq = O(eps) = O(1e-12) against unit-scale gradients elsewhere) is compared in
// absolute terms: relative to such a value, any rounding of the unit-scale terms is huge.
bool at_roundoff(const at::Tensor& expected) { return expected.abs().max().item<double>() < 1e-9; }

void expect_runs_close(const std::string& name, const TaylorRun& actual, const TaylorRun& expected, double tolerance) {
  expect_close(name, "o", actual.o.to(at::kDouble), expected.o, tolerance);
  expect_close(name, "final_state", actual.final_state.to(at::kDouble), expected.final_state, tolerance);
  expect_close(name, "final_normalizer", actual.final_normalizer.to(at::kDouble), expected.final_normalizer, tolerance);
  ASSERT_EQ(actual.grads.size(), expected.grads.size()) << name;
  for (const auto& [input, grad] : expected.grads) {
    if (at_roundoff(grad)) {
      EXPECT_LE((actual.grads.at(input).to(at::kDouble) - grad).abs().max().item<double>(), 1e-12)
          << name << ": grad_" << input;
      continue;
    }
    expect_close(name, "grad_" + input, actual.grads.at(input).to(at::kDouble), grad, tolerance);
  }
}

uint64_t seed_of(const std::string& name) { return std::hash<std::string>{}(name) % 100000; }

std::vector<TaylorCase> cases() {
  return {
      {"T1_B2_H2_D16_V8_normalized", 2, 1, 2, 16, 8, true, false},
      {"T63_B2_H1_D16_V7_normalized_init", 2, 63, 1, 16, 7, true, true},
      {"T64_B1_H3_D8_V33_norm_free", 1, 64, 3, 8, 33, false, false},
      {"T65_B2_H2_D8_V16_norm_free_init", 2, 65, 2, 8, 16, false, true},
      {"T130_B1_H2_D16_V12_normalized", 1, 130, 2, 16, 12, true, false},
      {"varlen_1_70_0_64_H2_D8_V5_normalized_init", 1, 0, 2, 8, 5, true, true, {1, 70, 0, 64}},
  };
}

// φ(q)·φ(k) is the second-order Taylor expansion of exp(q·k/√D).
TEST(TaylorAttention, FeatureMapInnerProductIsTheTaylorExpansion) {
  auto generator = make_generator(3);
  for (int64_t D : {8, 16, 24}) {
    const auto q = at::randn({5, D}, generator, at::kDouble), k = at::randn({5, D}, generator, at::kDouble);
    const auto s = (q * k).sum(-1) / std::sqrt(static_cast<double>(D));
    const auto inner = (taylor_feature_map(q) * taylor_feature_map(k)).sum(-1);
    EXPECT_EQ(taylor_feature_map(q).size(-1), taylor_feature_count(D));
    expect_close("D" + std::to_string(D), "phi(q).phi(k)", inner, 1 + s + s * s / 2, 1e-13);
  }
}

TEST(TaylorAttention, ChunkMatchesFloat64ReferenceWithGradients) {
  for (const auto& c : cases()) {
    const auto in = make_inputs(c, seed_of(c.name));
    expect_runs_close(c.name + " fp64", run(true, c, in, at::kDouble), run(false, c, in, at::kDouble), 1e-10);
  }
}

// fp32 inputs against the float64 reference: relative RMS within a few hundred fp32 roundings
// (the sums run over up to 130 tokens and E = 273 features).
TEST(TaylorAttention, Float32MatchesFloat64Reference) {
  for (const auto& c : cases()) {
    const auto in = make_inputs(c, seed_of(c.name));
    const auto reference = run(false, c, in, at::kDouble);
    const auto actual = run(true, c, in, at::kFloat);
    EXPECT_EQ(actual.o.scalar_type(), at::kFloat);
    EXPECT_LE(relative_rms_error(actual.o, reference.o), 1e-5) << c.name;
    for (const auto& [input, grad] : reference.grads) {
      if (at_roundoff(grad)) {  // fp32 roundoff relative to the unit-scale inputs
        EXPECT_LE((actual.grads.at(input).to(at::kDouble) - grad).abs().max().item<double>(), 1e-5)
            << c.name << " grad_" << input;
        continue;
      }
      EXPECT_LE(relative_rms_error(actual.grads.at(input), grad), 1e-5) << c.name << " grad_" << input;
    }
  }
}

// Packed sequences give what each sequence gives alone.
TEST(TaylorAttention, VarlenEqualsSequencesAlone) {
  const TaylorCase c{"varlen_3_64_129_H2_D8_V6", 1, 0, 2, 8, 6, true, true, {3, 64, 129}};
  const auto in = make_inputs(c, seed_of(c.name));
  const auto packed = taylor_attention_chunk(in.q, in.k, in.v, true, kEps, in.initial_state, in.initial_normalizer,
                                             true, in.cu_seqlens);
  int64_t start = 0;
  for (size_t n = 0; n < c.sequence_lengths.size(); ++n) {
    const int64_t length = c.sequence_lengths[n];
    auto part = [&](const at::Tensor& x) { return x.narrow(1, start, length); };
    auto row = [&](const at::Tensor& x) { return x.narrow(0, static_cast<int64_t>(n), 1); };
    const auto alone = taylor_attention_chunk(part(in.q), part(in.k), part(in.v), true, kEps, row(in.initial_state),
                                              row(in.initial_normalizer), true);
    const std::string name = c.name + " sequence " + std::to_string(n);
    expect_close(name, "o", part(packed.o), alone.o, 1e-12);
    expect_close(name, "final_state", row(packed.final_state), alone.final_state, 1e-12);
    expect_close(name, "final_normalizer", row(packed.final_normalizer), alone.final_normalizer, 1e-12);
    start += length;
  }
}

// Prefill with the chunked form, then decode token by token (in place and functional): equals
// one chunked forward over the whole sequence; both read-outs.
TEST(TaylorAttention, PrefillThenStepsEqualFullForward) {
  for (bool normalize : {true, false}) {
    const TaylorCase c{"prefill_T90_B2_H2_D16_V9", 2, 90, 2, 16, 9, normalize, true};
    const auto in = make_inputs(c, seed_of(c.name));
    const auto full = taylor_attention_chunk(in.q, in.k, in.v, normalize, kEps, in.initial_state,
                                             in.initial_normalizer, true);
    const int64_t prefill = 70;
    auto head = [&](const at::Tensor& x) { return x.narrow(1, 0, prefill); };
    const auto first = taylor_attention_chunk(head(in.q), head(in.k), head(in.v), normalize, kEps,
                                              in.initial_state, in.initial_normalizer, true);
    at::Tensor state = first.final_state.clone(), normalizer = first.final_normalizer.clone();
    at::Tensor functional_state = state.clone(), functional_normalizer = normalizer.clone();
    std::vector<at::Tensor> outputs{first.o}, functional_outputs{first.o};
    for (int64_t t = prefill; t < c.time; ++t) {
      const auto q = in.q.select(1, t), k = in.k.select(1, t), v = in.v.select(1, t);
      outputs.push_back(taylor_attention_step_(q, k, v, normalize, kEps, state, normalizer).unsqueeze(1));
      auto [o, next_state, next_normalizer] =
          taylor_attention_step(q, k, v, normalize, kEps, functional_state, functional_normalizer);
      functional_outputs.push_back(o.unsqueeze(1));
      functional_state = next_state;
      functional_normalizer = next_normalizer;
    }
    const std::string name = c.name + (normalize ? " normalized" : " norm-free");
    expect_close(name, "o (in place)", at::cat(outputs, 1), full.o, 1e-12);
    expect_close(name, "o (functional)", at::cat(functional_outputs, 1), full.o, 1e-12);
    expect_close(name, "state", state, full.final_state, 1e-12);
    expect_close(name, "normalizer", normalizer, full.final_normalizer, 1e-12);
    expect_close(name, "functional state", functional_state, full.final_state, 1e-12);
  }
}

TEST(TaylorAttention, BadInputsAreNamed) {
  const auto q = at::randn({2, 5, 2, 8}), k = at::randn({2, 5, 2, 8}), v = at::randn({2, 5, 2, 4});
  EXPECT_EQ(error_of([&] { taylor_attention_chunk(q, at::randn({2, 5, 2, 6}), v, true, kEps); }),
            "lintime::taylor_attention_chunk: q must have shape [B, T, H, D] = [2, 5, 2, 6], got [2, 5, 2, 8]");
  EXPECT_EQ(error_of([&] { taylor_attention_chunk(q, k, at::randn({2, 4, 2, 4}), true, kEps); }),
            "lintime::taylor_attention_chunk: v must have shape [B, T, H, V] = [2, 5, 2, V], got [2, 4, 2, 4]");
  EXPECT_EQ(error_of([&] { taylor_attention_chunk(q, k, v, true, -1.0); }),
            "lintime::taylor_attention_chunk: eps must be finite and >= 0, got -1");
  EXPECT_EQ(error_of([&] { taylor_attention_chunk(q, k, v, true, kEps, at::zeros({2, 2, 73, 4})); }),
            "lintime::taylor_attention_chunk: give both initial_state [N, H, E, V] and initial_normalizer [N, H, E] "
            "or neither");
  EXPECT_EQ(error_of([&] {
              taylor_attention_chunk(q, k, v, true, kEps, at::zeros({2, 2, 72, 4}), at::zeros({2, 2, 72}));
            }),
            "lintime::taylor_attention_chunk: initial_state must have shape [N, H, E, V] = [2, 2, 73, 4], got "
            "[2, 2, 72, 4]");
  at::Tensor state = at::zeros({2, 2, 73, 4}), normalizer = at::zeros({2, 2, 70});
  EXPECT_EQ(error_of([&] {
              taylor_attention_step_(q.select(1, 0), k.select(1, 0), v.select(1, 0), true, kEps, state, normalizer);
            }),
            "lintime::taylor_attention_step: normalizer must have shape [B, H, E] = [2, 2, 73], got [2, 2, 70]");
}

}  // namespace
}  // namespace lintime::ops
