// Tests of the GSA ops (gsa.md §1–2) through the dispatcher entry points of ops.h: the chunked
// op with its analytic backward against autograd through the token-by-token reference (fp64
// and fp32 inputs), finite differences, ABC, the paper's per-slot equations on a hand-sized
// example, decoding steps, varlen against per-sequence runs, and error messages.
#include "ops/gsa_test_cases.h"
#include "ops/register/ops.h"
#include "support/cpu_allocation_counter.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <vector>

namespace lintime::ops {
namespace {

using lintime::testing::error_of;
using lintime::testing::expect_close;
using lintime::testing::make_generator;
using lintime::testing::poison_nan;
using namespace gsa_testing;

// The ops under test run on small tensors: one intra-op thread avoids OpenMP spin-waits on a
// shared 2-core machine (measured: about 6 s for this file instead of 30-90 s with 2 threads
// under load).
class SingleThreadEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};
[[maybe_unused]] const auto* const single_thread_environment =
    ::testing::AddGlobalTestEnvironment(new SingleThreadEnvironment);

// Relative max error of fp64 against the fp64 reference: round-off only.
constexpr double kFloat64Tolerance = 1e-10;
// fp32 inputs against the fp64 reference, strong gates (normaliser 0.1) included: measured
// ≤ 5.9e-6 (grad_q of the strong-gate T64 case; 4.4e-5 before the decays were formed in
// float64, src/ops/gla/gla_chunk.cpp).
constexpr double kFloat32Tolerance = 1e-5;


TEST(GsaChunk, MatchesReferenceOutputsStatesAndAllGradientsInFloat64) {
  for (const auto& c : chunk_cases()) {
    SCOPED_TRACE(c.name);
    auto inputs = make_inputs(c, seed_of(c.name));
    auto chunk = run_gsa(Implementation::chunk, inputs, at::kDouble, c.final_state);
    expect_runs_close(c.name + " (float64)", chunk, reference_of(c), kFloat64Tolerance);
  }
}

TEST(GsaChunk, Float32InputsMatchFloat64ReferenceOnEveryCase) {
  for (const auto& c : chunk_cases()) {
    SCOPED_TRACE(c.name);
    auto inputs = make_inputs(c, seed_of(c.name));
    auto chunk = run_gsa(Implementation::chunk, inputs, at::kFloat, c.final_state);
    EXPECT_EQ(chunk.o.scalar_type(), at::kFloat) << c.name;
    if (c.final_state) EXPECT_EQ(chunk.final_state_k.scalar_type(), at::kFloat) << c.name;
    expect_runs_close(c.name + " (float32)", chunk, reference_of(c), kFloat32Tolerance);
  }
}

// bf16 inputs (p cast to bf16 before pass 2, as fla does) against the fp64 reference run on the
// same bf16-rounded inputs, so that only the op's own roundings count: ok, p, o and the
// gradients are each rounded to bf16 (unit roundoff u = 2^-8) once or twice on the way.
TEST(GsaChunk, BFloat16InputsStayWithinBFloat16Precision) {
  const GsaCase c{"bf16_T70_B2_HQ4_H2_K64_V64_M32_norm8_layer_s_init", 2, 70, 4, 2, 64, 64, 32,
                  8.0, true, true};
  auto inputs = make_inputs(c, seed_of(c.name));
  for (auto* x : {&inputs.q, &inputs.k, &inputs.v, &inputs.s, &inputs.g, &inputs.initial_state_k,
                  &inputs.initial_state_v}) {
    *x = x->to(at::kBFloat16).to(at::kDouble);
  }
  auto reference = run_gsa(Implementation::reference, inputs, at::kDouble);
  auto chunk = run_gsa(Implementation::chunk, inputs, at::kBFloat16);
  EXPECT_EQ(chunk.o.scalar_type(), at::kBFloat16);
  EXPECT_EQ(chunk.final_state_k.scalar_type(), at::kFloat);
  EXPECT_EQ(chunk.grads.at("q").scalar_type(), at::kBFloat16);
  // Measured: o and every gradient ≤ 1.5 u, the fp32 states ≤ 1e-6.
  constexpr double unit_roundoff = 1.0 / 256;
  expect_close(c.name, "final_state_k", chunk.final_state_k, reference.final_state_k, 1e-5);
  expect_close(c.name, "final_state_v", chunk.final_state_v, reference.final_state_v, 1e-5);
  expect_close(c.name, "o", chunk.o, reference.o, 4 * unit_roundoff);
  for (const auto& [name, grad] : reference.grads) {
    expect_close(c.name, "grad_" + name, chunk.grads.at(name), grad, 4 * unit_roundoff);
  }
}

// Central differences of the scalar loss against the analytic backward of gsa_chunk.
// Tiny case: every element; a varlen case crossing a chunk boundary: random directions.
TEST(GsaChunk, GradientsMatchFiniteDifferencesInFloat64) {
  const std::vector<std::pair<GsaCase, int64_t>> cases = {
      {{"tiny_T5_B2_HQ2_H1_K3_V2_M3_init_all_elements", 2, 5, 2, 1, 3, 2, 3, 1.0, false, true},
       0},
      {{"varlen_70_3_HQ2_H1_K4_V3_M2_init_directions", 1, 0, 2, 1, 4, 3, 2, 1.0, true, true,
        {70, 3}},
       4},
  };
  for (const auto& [c, directions] : cases) {
    SCOPED_TRACE(c.name);
    const auto in = make_inputs(c, seed_of(c.name));
    const auto analytic = run_gsa(Implementation::chunk, in, at::kDouble);
    std::map<std::string, at::Tensor> values = {
        {"q", in.q}, {"k", in.k}, {"v", in.v}, {"s", in.s}, {"g", in.g},
        {"initial_state_k", in.initial_state_k}, {"initial_state_v", in.initial_state_v}};
    auto loss = [&](const std::map<std::string, at::Tensor>& x) {
      at::NoGradGuard no_grad;
      auto r = gsa_chunk(x.at("q"), x.at("k"), x.at("v"), x.at("s"), x.at("g"), in.scale,
                         x.at("initial_state_k"), x.at("initial_state_v"), true,
                         optional(in.cu_seqlens));
      return ((r.o * in.grad_o).sum() + (r.final_state_k * in.grad_state_k).sum() +
              (r.final_state_v * in.grad_state_v).sum())
          .item<double>();
    };
    constexpr double step = 1e-6;
    auto generator = make_generator(7);
    for (const auto& [name, value] : values) {
      const auto& grad = analytic.grads.at(name);
      std::vector<at::Tensor> probes;
      if (directions == 0) {
        for (int64_t i = 0; i < value.numel(); ++i) {
          probes.push_back(at::zeros_like(value).view(-1).index_fill_(0, at::tensor({i}), 1.0)
                               .view(value.sizes()));
        }
      } else {
        for (int64_t i = 0; i < directions; ++i) {
          probes.push_back(at::randn(value.sizes(), generator, value.options()));
        }
      }
      std::vector<double> numeric, exact;
      for (const auto& probe : probes) {
        auto plus = values, minus = values;
        plus[name] = value + step * probe;
        minus[name] = value - step * probe;
        numeric.push_back((loss(plus) - loss(minus)) / (2 * step));
        exact.push_back((grad * probe).sum().item<double>());
      }
      auto numeric_tensor = at::tensor(numeric, at::kDouble);
      auto exact_tensor = at::tensor(exact, at::kDouble);
      expect_close(c.name, "grad_" + name + " vs finite differences", exact_tensor,
                   numeric_tensor, 1e-6);
    }
  }
}

// g = nullopt: s holds raw slot logits, gates from abc_gates in the chunked op and the running
// logaddexp inside the reference.
TEST(GsaChunk, AbcWithoutGateMatchesReferenceIncludingSlotLogitGradients) {
  const std::vector<GsaCase> cases = {
      {"abc_T100_B2_HQ4_H2_K32_V60_M16_init", 2, 100, 4, 2, 32, 60, 16, 1.0, false, true},
      {"abc_T1_K64_V32_M32_init", 1, 1, 1, 1, 64, 32, 32, 1.0, false, true},
      {"abc_varlen_1_64_70_HQ2_H1_K60_V32_M64_init", 1, 0, 2, 1, 60, 32, 64, 1.0, false, true,
       {1, 64, 70}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto inputs = make_inputs(c, seed_of(c.name), /*abc=*/true);
    auto chunk = run_gsa(Implementation::chunk, inputs, at::kDouble);
    auto reference = run_gsa(Implementation::reference, inputs, at::kDouble);
    EXPECT_FALSE(chunk.grads.count("g")) << c.name;
    expect_runs_close(c.name, chunk, reference, kFloat64Tolerance);
  }
}

// The paper's per-slot form with s = 1 - α and scale 1: K̃_t = Diag(α_t) K̃_{t-1} + (1 − α_t) ⊗ k_t,
// Ṽ_t likewise, o_t = Ṽ_tᵀ softmax(K̃_t q_t); written with plain loops over doubles.
TEST(GsaChunk, HandSizedExampleMatchesPaperPerSlotEquations) {
  constexpr int T = 3, K = 2, V = 2, M = 2;
  const double q[T][K] = {{0.5, -1.0}, {1.5, 0.25}, {-0.75, 2.0}};
  const double k[T][K] = {{1.0, 0.5}, {-0.5, 1.25}, {2.0, -1.0}};
  const double v[T][V] = {{0.3, -0.7}, {1.1, 0.4}, {-0.2, 0.9}};
  const double alpha[T][M] = {{0.9, 0.2}, {0.6, 0.95}, {0.3, 0.7}};
  double key_slots[M][K] = {}, value_slots[M][V] = {}, expected_o[T][V];
  for (int t = 0; t < T; ++t) {
    double scores[M], normaliser = 0.0;
    for (int m = 0; m < M; ++m) {
      for (int i = 0; i < K; ++i) {
        key_slots[m][i] = alpha[t][m] * key_slots[m][i] + (1 - alpha[t][m]) * k[t][i];
      }
      for (int j = 0; j < V; ++j) {
        value_slots[m][j] = alpha[t][m] * value_slots[m][j] + (1 - alpha[t][m]) * v[t][j];
      }
      scores[m] = 0.0;
      for (int i = 0; i < K; ++i) scores[m] += key_slots[m][i] * q[t][i];
    }
    for (int m = 0; m < M; ++m) normaliser += std::exp(scores[m]);
    for (int j = 0; j < V; ++j) {
      expected_o[t][j] = 0.0;
      for (int m = 0; m < M; ++m) {
        expected_o[t][j] += std::exp(scores[m]) / normaliser * value_slots[m][j];
      }
    }
  }
  auto tensor = [](const double* data, at::IntArrayRef shape) {
    return at::from_blob(const_cast<double*>(data), shape, at::kDouble).clone();
  };
  const auto q_t = tensor(&q[0][0], {1, T, 1, K}), k_t = tensor(&k[0][0], {1, T, 1, K});
  const auto v_t = tensor(&v[0][0], {1, T, 1, V});
  const auto g_t = tensor(&alpha[0][0], {1, T, 1, M}).log();
  const auto s_t = 1 - g_t.exp();
  const auto o_expected = tensor(&expected_o[0][0], {1, T, 1, V});
  const auto state_k_expected = tensor(&key_slots[0][0], {1, 1, M, K}).transpose(2, 3);  // H^k = K̃ᵀ
  const auto state_v_expected = tensor(&value_slots[0][0], {1, 1, M, V});
  for (auto call : {&gsa_chunk, &gsa_reference}) {
    const std::string name = call == &gsa_chunk ? "hand_example chunk" : "hand_example reference";
    auto r = call(q_t, k_t, v_t, s_t, g_t, 1.0, std::nullopt, std::nullopt, true, std::nullopt);
    expect_close(name, "o", r.o, o_expected, 1e-13);
    expect_close(name, "final_state_k", r.final_state_k, state_k_expected, 1e-13);
    expect_close(name, "final_state_v", r.final_state_v, state_v_expected, 1e-13);
  }
}

// Token-by-token decoding, functional and in place, against the reference's outputs and final
// states; the functional form must leave its input states untouched.
TEST(GsaStep, FunctionalAndInPlaceStepsMatchReferenceTokenByToken) {
  const GsaCase c{"step_T20_B2_HQ4_H2_K60_V32_M16_init", 2, 20, 4, 2, 60, 32, 16, 1.0, true, true};
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const std::string name = c.name + (dtype == at::kDouble ? " (float64)" : " (float32)");
    const double tolerance = dtype == at::kDouble ? 1e-12 : kFloat32Tolerance;
    const auto in = make_inputs(c, seed_of(c.name));
    at::NoGradGuard no_grad;
    auto reference = gsa_reference(in.q, in.k, in.v, in.s, in.g, in.scale, in.initial_state_k,
                                   in.initial_state_v, true);
    auto state_k = in.initial_state_k.to(dtype).clone(), state_v = in.initial_state_v.to(dtype).clone();
    auto inplace_k = state_k.clone(), inplace_v = state_v.clone();
    std::vector<at::Tensor> functional_o, inplace_o;
    for (int64_t t = 0; t < c.time; ++t) {
      auto token = [&](const at::Tensor& x) { return x.select(1, t).to(dtype); };
      const auto before_k = state_k.clone(), before_v = state_v.clone();
      auto [o, new_k, new_v] = gsa_step(token(in.q), token(in.k), token(in.v), token(in.s),
                                        token(in.g), in.scale, state_k, state_v);
      ASSERT_TRUE(at::equal(state_k, before_k) && at::equal(state_v, before_v))
          << name << ": functional gsa_step modified its input states at t = " << t;
      // The new states must not alias the old ones: poisoned old states may not leak through.
      poison_nan(state_k);
      poison_nan(state_v);
      EXPECT_EQ(o.scalar_type(), dtype) << name;
      functional_o.push_back(o);
      state_k = new_k;
      state_v = new_v;
      inplace_o.push_back(gsa_step_(token(in.q), token(in.k), token(in.v), token(in.s),
                                    token(in.g), in.scale, inplace_k, inplace_v));
    }
    expect_close(name + " functional", "o", at::stack(functional_o, 1), reference.o, tolerance);
    expect_close(name + " functional", "state_k", state_k, reference.final_state_k, tolerance);
    expect_close(name + " functional", "state_v", state_v, reference.final_state_v, tolerance);
    expect_close(name + " in place", "o", at::stack(inplace_o, 1), reference.o, tolerance);
    expect_close(name + " in place", "state_k", inplace_k, reference.final_state_k, tolerance);
    expect_close(name + " in place", "state_v", inplace_v, reference.final_state_v, tolerance);
  }
}

// Steps over rows of larger state tensors (a server's slots): rows 3 and 0 of five continue as
// two sequences of their own would (the token-by-token reference from those rows' states, in
// float64), and the other rows keep every bit.
TEST(GsaStep, RowsStepContinuesItsRowsWhereTheyLieAndLeavesTheOthers) {
  const GsaCase c{"rows_T6_B2_HQ4_H2_K20_V12_M8", 2, 6, 4, 2, 20, 12, 8, 1.0, true, true};
  const auto in = make_inputs(c, seed_of(c.name));
  at::NoGradGuard no_grad;
  auto generator = make_generator(11);
  at::Tensor slots_k = at::randn({5, 2, 20, 8}, generator, at::kDouble);
  at::Tensor slots_v = at::randn({5, 2, 8, 12}, generator, at::kDouble);
  const at::Tensor rows = at::tensor(std::vector<int64_t>{3, 0}, at::kLong);
  const at::Tensor others = at::tensor(std::vector<int64_t>{1, 2, 4}, at::kLong);
  const at::Tensor untouched_k = slots_k.index_select(0, others), untouched_v = slots_v.index_select(0, others);
  auto reference = gsa_reference(in.q, in.k, in.v, in.s, in.g, in.scale, slots_k.index_select(0, rows),
                                 slots_v.index_select(0, rows), true);
  std::vector<at::Tensor> outputs;
  for (int64_t t = 0; t < c.time; ++t) {
    auto token = [&](const at::Tensor& x) { return x.select(1, t); };
    outputs.push_back(gsa_step_rows_(token(in.q), token(in.k), token(in.v), token(in.s), token(in.g), in.scale,
                                     slots_k, slots_v, rows));
  }
  expect_close(c.name, "o", at::stack(outputs, 1), reference.o, 1e-12);
  expect_close(c.name, "state_k of the rows", slots_k.index_select(0, rows), reference.final_state_k, 1e-12);
  expect_close(c.name, "state_v of the rows", slots_v.index_select(0, rows), reference.final_state_v, 1e-12);
  EXPECT_TRUE(at::equal(slots_k.index_select(0, others), untouched_k)) << "state_k of another row changed";
  EXPECT_TRUE(at::equal(slots_v.index_select(0, others), untouched_v)) << "state_v of another row changed";

  // States stored in bf16: each call equals the fp32 step on the widened states, rounded once.
  at::Tensor narrow_k = slots_k.to(at::kBFloat16), narrow_v = slots_v.to(at::kBFloat16);
  for (int64_t t = 0; t < c.time; ++t) {
    auto token = [&](const at::Tensor& x) { return x.select(1, t).to(at::kFloat); };
    at::Tensor wide_k = narrow_k.to(at::kFloat), wide_v = narrow_v.to(at::kFloat);
    const at::Tensor expected = gsa_step_rows_(token(in.q), token(in.k), token(in.v), token(in.s), token(in.g), in.scale,
                                               wide_k, wide_v, rows);
    const at::Tensor got = gsa_step_rows_(token(in.q), token(in.k), token(in.v), token(in.s), token(in.g), in.scale,
                                          narrow_k, narrow_v, rows);
    EXPECT_TRUE(at::equal(got, expected)) << "bf16 states: o at token " << t;
    EXPECT_TRUE(at::equal(narrow_k, wide_k.to(at::kBFloat16))) << "bf16 states: state_k at token " << t;
    EXPECT_TRUE(at::equal(narrow_v, wide_v.to(at::kBFloat16))) << "bf16 states: state_v at token " << t;
  }
}

TEST(GsaChecks, RowsStepNamesBadRows) {
  const auto options = at::TensorOptions().dtype(at::kFloat);
  const auto q = at::zeros({2, 4, 16}, options), k = at::zeros({2, 2, 16}, options);
  const auto v = at::zeros({2, 2, 12}, options), s = at::zeros({2, 2, 4}, options);
  auto state_k = at::zeros({3, 2, 16, 4}, options), state_v = at::zeros({3, 2, 4, 12}, options);
  const auto run = [&](std::vector<int64_t> rows, at::Tensor& hk, at::Tensor& hv) {
    return error_of([&] { gsa_step_rows_(q, k, v, s, s, 1.0, hk, hv, at::tensor(rows, at::kLong)); });
  };
  EXPECT_EQ(run({1, 1}, state_k, state_v),
            "lintime::gsa_step_rows_: rows must be distinct rows of the states in [0, 3), got 1");
  EXPECT_EQ(run({0, 3}, state_k, state_v),
            "lintime::gsa_step_rows_: rows must be distinct rows of the states in [0, 3), got 3");
  EXPECT_EQ(run({0}, state_k, state_v), "lintime::gsa_step_rows_: rows must have shape [B] = [2], got [1]");
  auto narrow_v = at::zeros({3, 2, 4, 11}, options);
  EXPECT_EQ(run({0, 1}, state_k, narrow_v),
            "lintime::gsa_step_rows_: state_v must have shape [S, H, M, V] = [3, 2, 4, 12], got [3, 2, 4, 11]");
  const std::string message = error_of([&] {
    gsa_step_rows_(q, k, v, s, s, 1.0, state_k, state_v, at::tensor(std::vector<int32_t>{0, 1}, at::kInt));
  });
  EXPECT_EQ(message, "lintime::gsa_step_rows_: rows must be int64, got Int");
}

// Prefill with the chunked op, then decode in place: equals one chunked pass over everything.
TEST(GsaStep, ChunkPrefillThenInPlaceDecodeEqualsFullChunkForward) {
  const GsaCase c{"prefill_70_decode_5_B2_HQ2_H1_K32_V60_M32", 2, 75, 2, 1, 32, 60, 32, 8.0, true,
                  false};
  const auto in = make_inputs(c, seed_of(c.name));
  at::NoGradGuard no_grad;
  auto full = gsa_chunk(in.q, in.k, in.v, in.s, in.g, in.scale);
  auto prefix = [](const at::Tensor& x) { return x.narrow(1, 0, 70); };
  auto prefill = gsa_chunk(prefix(in.q), prefix(in.k), prefix(in.v), prefix(in.s), prefix(in.g),
                           in.scale, std::nullopt, std::nullopt, true);
  auto state_k = prefill.final_state_k, state_v = prefill.final_state_v;
  std::vector<at::Tensor> outputs{prefill.o};
  for (int64_t t = 70; t < 75; ++t) {
    auto token = [&](const at::Tensor& x) { return x.select(1, t); };
    outputs.push_back(gsa_step_(token(in.q), token(in.k), token(in.v), token(in.s), token(in.g),
                                in.scale, state_k, state_v)
                          .unsqueeze(1));
  }
  expect_close(c.name, "o", at::cat(outputs, 1), full.o, kFloat64Tolerance);
}

// Packed sequences equal separate runs of each sequence from its own initial state, for the
// outputs, final states and every gradient.
TEST(GsaChunk, VarlenEqualsPerSequenceRuns) {
  const GsaCase c{"varlen_1_63_100_65_HQ2_H2_K32_V60_M16_init", 1, 0, 2, 2, 32, 60, 16, 1.0, false,
                  true, {1, 63, 100, 65}};
  const auto packed_in = make_inputs(c, seed_of(c.name));
  const auto packed = run_gsa(Implementation::chunk, packed_in, at::kDouble);
  GsaRun joined;
  std::vector<at::Tensor> outputs, states_k, states_v;
  std::map<std::string, std::vector<at::Tensor>> grads;
  int64_t start = 0;
  for (size_t n = 0; n < c.sequence_lengths.size(); ++n) {
    const int64_t length = c.sequence_lengths[n];
    auto in = packed_in;
    for (auto* x : {&in.q, &in.k, &in.v, &in.s, &in.g, &in.grad_o}) *x = x->narrow(1, start, length);
    for (auto* x : {&in.initial_state_k, &in.initial_state_v, &in.grad_state_k, &in.grad_state_v}) {
      *x = x->narrow(0, static_cast<int64_t>(n), 1);
    }
    in.cu_seqlens = at::Tensor();
    auto run = run_gsa(Implementation::chunk, in, at::kDouble);
    outputs.push_back(run.o);
    states_k.push_back(run.final_state_k);
    states_v.push_back(run.final_state_v);
    for (const auto& [name, grad] : run.grads) {
      grads[name].push_back(grad);
    }
    start += length;
  }
  joined.o = at::cat(outputs, 1);
  joined.final_state_k = at::cat(states_k, 0);
  joined.final_state_v = at::cat(states_v, 0);
  for (const auto& [name, parts] : grads) {
    joined.grads[name] = at::cat(parts, name.rfind("initial_state", 0) == 0 ? 0 : 1);
  }
  expect_runs_close(c.name, packed, joined, kFloat64Tolerance);
}

// gsa_chunk_of_swish (training's path): the output and the gradients of q, k, v, s, g equal
// at::silu then gsa_chunk bit for bit, in float64 and float32, plain and packed; and its graph
// keeps q, k, v once (silu then gsa_chunk keeps them and their swish).
TEST(GsaChunkOfSwish, EqualsSiluThenChunkBitForBitAndKeepsLess) {
  using lintime::testing::CpuAllocationCounter;
  for (const auto dtype : {at::kDouble, at::kFloat}) {
    for (const bool varlen : {false, true}) {
      GsaCase c{"swish", 2, 70, 4, 2, 32, 24, 16, 8.0, true, false};
      if (varlen) c = GsaCase{"swish_varlen", 1, 0, 4, 2, 32, 24, 16, 8.0, true, false, {5, 64, 71}};
      const auto in = make_inputs(c, seed_of(c.name));
      const std::string name = c.name + "_" + c10::toString(dtype);
      const auto leaf = [&](const at::Tensor& x) { return (x * 2).to(dtype).detach().requires_grad_(true); };
      const auto q = leaf(in.q), k = leaf(in.k), v = leaf(in.v), s = leaf(in.s), g = leaf(in.g);
      const std::optional<at::Tensor> cu = varlen ? std::optional<at::Tensor>(in.cu_seqlens) : std::nullopt;
      const auto grad_o = in.grad_o.to(dtype);
      int64_t held_plain = 0, held_fused = 0;
      at::Tensor o_plain, o_fused;
      {
        CpuAllocationCounter counter;
        o_plain = gsa_chunk(at::silu(q), at::silu(k), at::silu(v), s, g, in.scale, std::nullopt, std::nullopt, false, cu).o;
        held_plain = counter.live_bytes() - static_cast<int64_t>(o_plain.nbytes());
      }
      {
        CpuAllocationCounter counter;
        o_fused = gsa_chunk_of_swish(q, k, v, s, g, in.scale, cu);
        held_fused = counter.live_bytes() - static_cast<int64_t>(o_fused.nbytes());
      }
      EXPECT_TRUE(at::equal(o_plain, o_fused)) << name;
      // The plain graph keeps swish(q), swish(k), swish(v) besides; the fused one nothing (the
      // general path keeps no internals).
      EXPECT_EQ(held_plain - held_fused, static_cast<int64_t>(q.nbytes() + k.nbytes() + v.nbytes())) << name;
      EXPECT_EQ(held_fused, 0) << name;
      const auto plain = torch::autograd::grad({o_plain}, {q, k, v, s, g}, {grad_o});
      const auto fused = torch::autograd::grad({o_fused}, {q, k, v, s, g}, {grad_o});
      const char* names[] = {"q", "k", "v", "s", "g"};
      for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(at::equal(plain[i], fused[i])) << name << " d" << names[i];
    }
  }
}

// ABC gates: per packed sequence, the same as running abc_gates on each sequence alone, and
// exp(g) s-normalised: s_t + exp(g_t)·(Σ_{j<t} exp(s̃_j)) / Σ_{j≤t} exp(s̃_j) = 1.
TEST(AbcGates, RestartForEverySequenceAndNormalise) {
  auto generator = make_generator(11);
  const auto logits = at::randn({1, 9, 2, 3}, generator, at::TensorOptions().dtype(at::kDouble));
  const auto cu_seqlens = at::tensor(std::vector<int64_t>{0, 4, 9}, at::kLong);
  static auto abc = c10::Dispatcher::singleton()
                        .findSchemaOrThrow("lintime::abc_gates", "")
                        .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                                  const std::optional<at::Tensor>&)>();
  auto [s, g] = abc.call(logits, cu_seqlens);
  auto [s_first, g_first] = abc.call(logits.narrow(1, 0, 4), std::nullopt);
  auto [s_second, g_second] = abc.call(logits.narrow(1, 4, 5), std::nullopt);
  expect_close("abc_gates varlen", "s", s, at::cat({s_first, s_second}, 1), 1e-15);
  expect_close("abc_gates varlen", "g", g, at::cat({g_first, g_second}, 1), 1e-15);
  expect_close("abc_gates", "g at the first token", g_first.select(1, 0),
               at::zeros_like(g_first.select(1, 0)), 0.0);
  // Σ_{j≤t} exp(s̃_j) / Σ_{j≤t} = 1 = s_t + exp(g_t), since exp(g_t) = Σ_{j<t} / Σ_{j≤t}.
  auto total = s_first.narrow(1, 1, 3) + g_first.narrow(1, 1, 3).exp();
  expect_close("abc_gates", "s + exp(g)", total, at::ones_like(total), 1e-14);
}


TEST(GsaChecks, ErrorMessagesNameTensorAndExpectedShape) {
  const auto options = at::TensorOptions().dtype(at::kFloat);
  const auto q = at::zeros({2, 8, 4, 16}, options), k = at::zeros({2, 8, 2, 16}, options);
  const auto v = at::zeros({2, 8, 2, 12}, options), s = at::zeros({2, 8, 2, 4}, options);
  auto message = error_of([&] { gsa_chunk(q, k, at::zeros({2, 8, 3, 12}, options), s, s, 1.0); });
  EXPECT_NE(message.find("lintime::gsa_chunk: v must have shape [B, T, H, V] = [2, 8, 2, V], "
                         "got [2, 8, 3, 12]"),
            std::string::npos)
      << message;
  message = error_of([&] {
    gsa_chunk(q, k, v, s, s, 1.0, at::zeros({2, 2, 16, 5}, options), std::nullopt, true);
  });
  EXPECT_NE(message.find("initial_state_k must have shape [N, H, K, M] = [2, 2, 16, 4], got "
                         "[2, 2, 16, 5]"),
            std::string::npos)
      << message;
  message = error_of([&] {
    gsa_reference(q, k, v, s, s, 1.0, std::nullopt, at::zeros({2, 2, 4, 11}, options), true);
  });
  EXPECT_NE(message.find("lintime::gsa_reference: initial_state_v must have shape [N, H, M, V] = "
                         "[2, 2, 4, 12]"),
            std::string::npos)
      << message;
  message = error_of([&] {
    auto state_k = at::zeros({2, 2, 16, 4}, options), state_v = at::zeros({2, 2, 4, 13}, options);
    gsa_step_(q.select(1, 0), k.select(1, 0), v.select(1, 0), s.select(1, 0), s.select(1, 0), 1.0,
              state_k, state_v);
  });
  EXPECT_NE(message.find("lintime::gsa_step_: state_v must have shape [B, H, M, V] = [2, 2, 4, 12]"),
            std::string::npos)
      << message;
  message = error_of([&] {
    gsa_chunk(q, k, v, s, s, 1.0, std::nullopt, std::nullopt, false,
              at::tensor(std::vector<int64_t>{0, 8}, at::kLong));
  });
  EXPECT_NE(message.find("batch size must be 1"), std::string::npos) << message;
}

TEST(GsaChecks, QueryHeadsMustBeMultipleOfKeyValueHeads) {
  const auto options = at::TensorOptions().dtype(at::kFloat);
  const auto q = at::zeros({1, 4, 3, 8}, options), k = at::zeros({1, 4, 2, 8}, options);
  const auto v = at::zeros({1, 4, 2, 8}, options), s = at::zeros({1, 4, 2, 4}, options);
  for (auto call : {&gsa_chunk, &gsa_reference}) {
    auto message = error_of([&] { call(q, k, v, s, s, 1.0, std::nullopt, std::nullopt, false,
                                       std::nullopt); });
    EXPECT_NE(message.find("the query heads HQ = 3 (q [B, T, HQ, K]) must be a multiple of the "
                           "key/value heads H = 2"),
              std::string::npos)
        << message;
  }
}

}  // namespace
}  // namespace lintime::ops
