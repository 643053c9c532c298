// Tests of the GLA op: chunked forward/backward against the autograd-differentiated reference
// (float64 to 1e-10, float32 to 1e-5), step against the reference, varlen against separate
// sequences, finite differences, NaN-poisoned buffers around the inputs and error messages.
#include "ops/gla/gla.h"
#include "ops/register/ops.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

namespace lintime::ops {
namespace {

using lintime::testing::expect_close;
using lintime::testing::make_generator;
using lintime::testing::poison_nan;

// The tensors here are small: one intra-op thread avoids the thread wake-up and spinning that
// dominate on the shared 2-core CI machine (the T = 1025 case took 12 s wall with two threads
// under load, for 0.3 s of CPU time).
class SingleIntraOpThread : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};
[[maybe_unused]] ::testing::Environment* const single_intra_op_thread =
    ::testing::AddGlobalTestEnvironment(new SingleIntraOpThread);

enum class Gate { Mild, Moderate, Steep, Strong, Mixed };

struct GlaCase {
  std::string name;
  int64_t batch, length, heads, groups, key_dim, value_dim;
  bool gate_on_value;
  Gate gate;
  bool with_initial_state;
  std::vector<int64_t> sequence_lengths;  // non-empty: varlen (batch 1, length = their sum)
  uint64_t seed;
};

struct GlaInputs {
  at::Tensor q, k, v, g, initial_state, cu_seqlens;
  double scale;
};

// Log gates <= 0: mild logsigmoid(x)/8, moderate logsigmoid(x)/2, strong about -10 per step,
// mixed picks mild or strong per channel (long memory next to overflow-prone decay). Steep,
// about -1.8 per step, puts every 16-token sub-chunk just under the chunk kernel's limit for
// factored diagonal blocks (total decay 30): mild, moderate and steep gates exercise the
// factored form, strong and mixed gates the pairwise one.
at::Tensor make_gate(Gate gate, at::IntArrayRef shape, at::Generator& gen) {
  auto options = at::TensorOptions().dtype(at::kDouble);
  at::Tensor mild = at::log_sigmoid(at::randn(shape, gen, options)) / 8;
  at::Tensor strong = (-10 + 0.5 * at::randn(shape, gen, options)).clamp_max(0);
  switch (gate) {
    case Gate::Mild: return mild;
    case Gate::Moderate: return at::log_sigmoid(at::randn(shape, gen, options)) / 2;
    case Gate::Steep: return (-1.8 + 0.02 * at::randn(shape, gen, options)).clamp_max(0);
    case Gate::Strong: return strong;
    case Gate::Mixed: {
      at::Tensor channel = at::rand({shape.back()}, gen, options) < 0.5;
      return at::where(channel, strong, mild);
    }
  }
  return mild;
}

GlaInputs make_inputs(const GlaCase& c, at::ScalarType dtype) {
  at::Generator gen = make_generator(c.seed);
  auto options = at::TensorOptions().dtype(at::kDouble);
  const int64_t query_heads = c.heads * c.groups;
  const int64_t gate_dim = c.gate_on_value ? c.value_dim : c.key_dim;
  GlaInputs in;
  in.q = at::randn({c.batch, c.length, query_heads, c.key_dim}, gen, options).to(dtype);
  in.k = at::randn({c.batch, c.length, c.heads, c.key_dim}, gen, options).to(dtype);
  in.v = at::randn({c.batch, c.length, c.heads, c.value_dim}, gen, options).to(dtype);
  in.g = make_gate(c.gate, {c.batch, c.length, c.heads, gate_dim}, gen).to(dtype);
  int64_t sequences = c.batch;
  if (!c.sequence_lengths.empty()) {
    std::vector<int64_t> offsets{0};
    for (int64_t length : c.sequence_lengths) offsets.push_back(offsets.back() + length);
    in.cu_seqlens = at::tensor(offsets, at::TensorOptions().dtype(at::kInt));
    sequences = static_cast<int64_t>(c.sequence_lengths.size());
  }
  if (c.with_initial_state) {
    in.initial_state =
        at::randn({sequences, c.heads, c.key_dim, c.value_dim}, gen, options).to(dtype);
  }
  in.scale = 1.0 / std::sqrt(static_cast<double>(c.key_dim));
  return in;
}

std::optional<at::Tensor> optional(const at::Tensor& tensor) {
  return tensor.defined() ? std::optional<at::Tensor>(tensor) : std::nullopt;
}

// Output, final state and the gradients of sum(o * grad_o) + sum(final * grad_final) with
// respect to q, k, v, g and the initial state (undefined when there is none).
struct GlaRun {
  at::Tensor o, final_state, grad_q, grad_k, grad_v, grad_g, grad_initial_state;
};

enum class Path { Reference, Chunk };

GlaRun run_with_grads(Path path, const GlaInputs& in, bool gate_on_value,
                      const at::Tensor& grad_o, const at::Tensor& grad_final_state) {
  at::Tensor q = in.q.detach().requires_grad_(), k = in.k.detach().requires_grad_();
  at::Tensor v = in.v.detach().requires_grad_(), g = in.g.detach().requires_grad_();
  at::Tensor initial;
  if (in.initial_state.defined()) initial = in.initial_state.detach().requires_grad_();
  GlaResult result =
      path == Path::Chunk
          ? gla_chunk(q, k, v, g, gate_on_value, in.scale, optional(initial), true,
                      optional(in.cu_seqlens))
          : gla_reference(q, k, v, g, gate_on_value, in.scale, optional(initial), true,
                          optional(in.cu_seqlens));
  at::Tensor loss = (result.o.to(at::kDouble) * grad_o).sum() +
                    (result.final_state.to(at::kDouble) * grad_final_state).sum();
  loss.backward();
  GlaRun run{result.o.detach(), result.final_state.detach(), q.grad(), k.grad(), v.grad(),
             g.grad(), initial.defined() ? initial.grad() : at::Tensor()};
  return run;
}

void expect_runs_close(const std::string& name, const GlaRun& actual, const GlaRun& expected,
                       double tolerance) {
  expect_close(name, "o", actual.o, expected.o, tolerance);
  expect_close(name, "final_state", actual.final_state, expected.final_state, tolerance);
  expect_close(name, "grad_q", actual.grad_q, expected.grad_q, tolerance);
  expect_close(name, "grad_k", actual.grad_k, expected.grad_k, tolerance);
  expect_close(name, "grad_v", actual.grad_v, expected.grad_v, tolerance);
  expect_close(name, "grad_g", actual.grad_g, expected.grad_g, tolerance);
  ASSERT_EQ(actual.grad_initial_state.defined(), expected.grad_initial_state.defined()) << name;
  if (expected.grad_initial_state.defined()) {
    expect_close(name, "grad_initial_state", actual.grad_initial_state,
                 expected.grad_initial_state, tolerance);
  }
}

std::pair<at::Tensor, at::Tensor> random_output_grads(const GlaCase& c, const GlaInputs& in) {
  at::Generator gen = make_generator(c.seed + 1000);
  auto options = at::TensorOptions().dtype(at::kDouble);
  const int64_t sequences = in.cu_seqlens.defined() ? in.cu_seqlens.numel() - 1 : c.batch;
  return {at::randn({c.batch, c.length, c.heads * c.groups, c.value_dim}, gen, options),
          at::randn({sequences, c.heads, c.key_dim, c.value_dim}, gen, options)};
}

GlaCase dense(std::string name, int64_t batch, int64_t length, int64_t heads, int64_t groups,
              int64_t key_dim, int64_t value_dim, bool gate_on_value, Gate gate,
              bool with_initial_state, uint64_t seed) {
  return {std::move(name), batch, length, heads, groups, key_dim, value_dim, gate_on_value,
          gate, with_initial_state, {}, seed};
}

GlaCase varlen(std::string name, std::vector<int64_t> lengths, int64_t heads, int64_t groups,
               int64_t key_dim, int64_t value_dim, bool gate_on_value, Gate gate,
               uint64_t seed) {
  int64_t total = 0;
  for (int64_t length : lengths) total += length;
  return {std::move(name), 1, total, heads, groups, key_dim, value_dim, gate_on_value, gate,
          true, std::move(lengths), seed};
}

std::vector<GlaCase> float64_cases() {
  return {
      dense("T1_B2_K32_V64_GateOnKey_Mild", 2, 1, 2, 1, 32, 64, false, Gate::Mild, true, 1),
      dense("T63_B1_K60_V32_GateOnValue_Strong_G2", 1, 63, 2, 2, 60, 32, true, Gate::Strong,
            true, 2),
      dense("T64_B2_K64_V64_GateOnKey_Strong_G4", 2, 64, 1, 4, 64, 64, false, Gate::Strong,
            true, 3),
      dense("T65_B1_K128_V60_GateOnValue_Mild", 1, 65, 1, 1, 128, 60, true, Gate::Mild, true, 4),
      dense("T100_B3_K32_V128_GateOnKey_Mixed_G2", 3, 100, 1, 2, 32, 128, false, Gate::Mixed,
            true, 5),
      dense("T100_B2_K60_V60_GateOnValue_Mixed_G4", 2, 100, 1, 4, 60, 60, true, Gate::Mixed,
            true, 6),
      dense("T100_B2_K32_V32_GateOnKey_Mild_NoInitialState", 2, 100, 2, 1, 32, 32, false,
            Gate::Mild, false, 7),
      dense("T1025_B1_K32_V32_GateOnKey_Mixed_G2", 1, 1025, 1, 2, 32, 32, false, Gate::Mixed,
            true, 8),
      dense("T1025_B1_K32_V32_GateOnValue_Mixed", 1, 1025, 1, 1, 32, 32, true, Gate::Mixed,
            true, 9),
      dense("T130_B1_K64_V32_GateOnKey_Steep_G2", 1, 130, 2, 2, 64, 32, false, Gate::Steep,
            true, 12),
      dense("T130_B1_K32_V64_GateOnValue_Steep", 1, 130, 2, 1, 32, 64, true, Gate::Steep, true,
            13),
      varlen("Varlen_1_63_64_65_130_7_GateOnKey_Strong_G2", {1, 63, 64, 65, 130, 7}, 1, 2, 32,
             60, false, Gate::Strong, 10),
      varlen("Varlen_100_0_64_200_GateOnValue_Mixed_G2", {100, 0, 64, 200}, 2, 2, 64, 32, true,
             Gate::Mixed, 11),
  };
}

class GlaChunkMatchesReference : public ::testing::TestWithParam<GlaCase> {};

TEST_P(GlaChunkMatchesReference, OutputFinalStateAndAllGradientsInFloat64) {
  const GlaCase& c = GetParam();
  GlaInputs in = make_inputs(c, at::kDouble);
  auto [grad_o, grad_final] = random_output_grads(c, in);
  GlaRun expected = run_with_grads(Path::Reference, in, c.gate_on_value, grad_o, grad_final);
  GlaRun actual = run_with_grads(Path::Chunk, in, c.gate_on_value, grad_o, grad_final);
  expect_runs_close(c.name, actual, expected, 1e-10);
}

INSTANTIATE_TEST_SUITE_P(Cases, GlaChunkMatchesReference, ::testing::ValuesIn(float64_cases()),
                         [](const ::testing::TestParamInfo<GlaCase>& info) {
                           return info.param.name;
                         });

TEST(GlaChunk, Float32InputsMatchFloat64ReferenceWithin1e5) {
  const std::vector<GlaCase> cases = {
      dense("float32_T200_B2_GateOnKey_Moderate_G2", 2, 200, 1, 2, 64, 32, false,
            Gate::Moderate, true, 21),
      varlen("float32_Varlen_70_130_GateOnValue_Moderate", {70, 130}, 2, 1, 32, 64, true,
             Gate::Moderate, 22),
      dense("float32_T150_GateOnValue_Steep_G2", 1, 150, 1, 2, 32, 32, true, Gate::Steep, true,
            31),
      dense("float32_T150_GateOnKey_Mixed", 1, 150, 1, 1, 64, 64, false, Gate::Mixed, true,
            33),
  };
  for (const GlaCase& c : cases) {
    GlaInputs in32 = make_inputs(c, at::kFloat);
    GlaInputs in64 = in32;
    in64.q = in32.q.to(at::kDouble);
    in64.k = in32.k.to(at::kDouble);
    in64.v = in32.v.to(at::kDouble);
    in64.g = in32.g.to(at::kDouble);
    in64.initial_state = in32.initial_state.to(at::kDouble);
    auto [grad_o, grad_final] = random_output_grads(c, in64);
    GlaRun expected = run_with_grads(Path::Reference, in64, c.gate_on_value, grad_o, grad_final);
    GlaRun actual = run_with_grads(Path::Chunk, in32, c.gate_on_value, grad_o, grad_final);
    EXPECT_EQ(actual.o.scalar_type(), at::kFloat) << c.name;
    EXPECT_EQ(actual.grad_g.scalar_type(), at::kFloat) << c.name;
    expect_runs_close(c.name, actual, expected, 1e-5);
  }
}

// With strong gates the gate gradient is tiny next to the terms q*dq - k*dk (or o*do - v*dv)
// whose reverse sums give it, so its float32 error is measured against those terms; every
// other tensor still meets 1e-5 relative.
TEST(GlaChunk, Float32StrongGatesMatchReferenceWithGateGradientRelativeToItsTerms) {
  for (bool gate_on_value : {false, true}) {
    GlaCase c = dense(gate_on_value ? "float32_T150_GateOnValue_Strong"
                                    : "float32_T150_GateOnKey_Strong_G2",
                      1, 150, 2, gate_on_value ? 1 : 2, 32, 48, gate_on_value, Gate::Strong,
                      true, 32);
    GlaInputs in32 = make_inputs(c, at::kFloat);
    GlaInputs in64{in32.q.to(at::kDouble), in32.k.to(at::kDouble), in32.v.to(at::kDouble),
                   in32.g.to(at::kDouble), in32.initial_state.to(at::kDouble), at::Tensor(),
                   in32.scale};
    auto [grad_o, grad_final] = random_output_grads(c, in64);
    GlaRun expected = run_with_grads(Path::Reference, in64, gate_on_value, grad_o, grad_final);
    GlaRun actual = run_with_grads(Path::Chunk, in32, gate_on_value, grad_o, grad_final);
    expect_close(c.name, "o", actual.o, expected.o, 1e-5);
    expect_close(c.name, "final_state", actual.final_state, expected.final_state, 1e-5);
    expect_close(c.name, "grad_q", actual.grad_q, expected.grad_q, 1e-5);
    expect_close(c.name, "grad_k", actual.grad_k, expected.grad_k, 1e-5);
    expect_close(c.name, "grad_v", actual.grad_v, expected.grad_v, 1e-5);
    expect_close(c.name, "grad_initial_state", actual.grad_initial_state,
                 expected.grad_initial_state, 1e-5);
    at::Tensor terms = gate_on_value ? in64.v * expected.grad_v : in64.k * expected.grad_k;
    const double term_scale = terms.abs().max().item<double>();
    const double error = (actual.grad_g.to(at::kDouble) - expected.grad_g).abs().max().item<double>();
    EXPECT_TRUE(actual.grad_g.isfinite().all().item<bool>()) << c.name;
    EXPECT_LE(error, 1e-5 * term_scale)
        << c.name << ": grad_g max abs error " << error << ", term scale " << term_scale;
  }
}

// bfloat16 inputs: outputs and gradients in bfloat16, the final state in float32, each as close
// to the float64 reference (on the same, bf16-rounded, inputs) as the reference recurrence run
// in bfloat16 is, within a factor 2 (FlashAttention's criterion, style.md).
TEST(GlaChunk, Bfloat16InputsMatchFloat64ReferenceAsCloselyAsTheReferenceInBfloat16) {
  GlaCase c = dense("bfloat16_T70", 1, 70, 1, 2, 32, 32, false, Gate::Moderate, true, 23);
  GlaInputs in = make_inputs(c, at::kBFloat16);
  GlaInputs in64 = in;
  for (at::Tensor* tensor : {&in64.q, &in64.k, &in64.v, &in64.g, &in64.initial_state}) *tensor = tensor->to(at::kDouble);
  auto [grad_o, grad_final] = random_output_grads(c, in);
  GlaRun run = run_with_grads(Path::Chunk, in, c.gate_on_value, grad_o, grad_final);
  GlaRun in_dtype = run_with_grads(Path::Reference, in, c.gate_on_value, grad_o, grad_final);
  GlaRun expected = run_with_grads(Path::Reference, in64, c.gate_on_value, grad_o, grad_final);
  EXPECT_EQ(run.o.scalar_type(), at::kBFloat16);
  EXPECT_EQ(run.final_state.scalar_type(), at::kFloat);
  const std::vector<std::string> names = {"o", "final_state", "grad_q", "grad_k", "grad_v", "grad_g",
                                          "grad_initial_state"};
  const std::vector<at::Tensor> actual = {run.o, run.final_state, run.grad_q, run.grad_k, run.grad_v, run.grad_g,
                                          run.grad_initial_state};
  const std::vector<at::Tensor> reference = {in_dtype.o, in_dtype.final_state, in_dtype.grad_q, in_dtype.grad_k,
                                             in_dtype.grad_v, in_dtype.grad_g, in_dtype.grad_initial_state};
  const std::vector<at::Tensor> exact = {expected.o, expected.final_state, expected.grad_q, expected.grad_k,
                                         expected.grad_v, expected.grad_g, expected.grad_initial_state};
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] != "final_state") EXPECT_EQ(actual[i].scalar_type(), at::kBFloat16) << names[i];
    ASSERT_TRUE(actual[i].isfinite().all().item<bool>()) << names[i];
    const double error = lintime::testing::relative_rms_error(actual[i], exact[i]);
    const double reference_error = lintime::testing::relative_rms_error(reference[i], exact[i]);
    std::printf("%s: chunk %.3g, reference in bf16 %.3g\n", names[i].c_str(), error, reference_error);
    EXPECT_LE(error, 2 * reference_error) << names[i] << ": chunk " << error << ", reference in bf16 " << reference_error;
  }
}

TEST(GlaChunk, FinalStateIsUndefinedUnlessRequestedAndGradientsStillFlow) {
  GlaCase c = dense("no_final_state", 1, 70, 1, 2, 8, 8, false, Gate::Mild, true, 24);
  GlaInputs in = make_inputs(c, at::kDouble);
  at::Tensor initial_chunk = in.initial_state.clone().requires_grad_();
  at::Tensor initial_reference = in.initial_state.clone().requires_grad_();
  GlaResult chunk = gla_chunk(in.q, in.k, in.v, in.g, false, in.scale, initial_chunk, false);
  GlaResult reference =
      gla_reference(in.q, in.k, in.v, in.g, false, in.scale, initial_reference, false);
  EXPECT_FALSE(chunk.final_state.defined());
  EXPECT_FALSE(reference.final_state.defined());
  expect_close(c.name, "o", chunk.o, reference.o, 1e-12);
  chunk.o.pow(2).sum().backward();
  reference.o.pow(2).sum().backward();
  expect_close(c.name, "grad_initial_state", initial_chunk.grad(), initial_reference.grad(), 1e-10);
}

// Gradients are right when only one of the outputs reaches the loss (the other's incoming
// gradient is undefined and must count as zero).
TEST(GlaChunk, GradientsWhenOnlyOutputOrOnlyFinalStateIsUsed) {
  for (bool gate_on_value : {false, true}) {
    GlaCase c = dense(gate_on_value ? "one_output_GateOnValue" : "one_output_GateOnKey", 1, 90,
                      1, 2, 16, 24, gate_on_value, Gate::Mixed, true, 25);
    GlaInputs in = make_inputs(c, at::kDouble);
    for (bool use_output : {true, false}) {
      std::vector<at::Tensor> grads_by_path[2];
      for (Path path : {Path::Reference, Path::Chunk}) {
        at::Tensor q = in.q.clone().requires_grad_(), k = in.k.clone().requires_grad_();
        at::Tensor v = in.v.clone().requires_grad_(), g = in.g.clone().requires_grad_();
        at::Tensor initial = in.initial_state.clone().requires_grad_();
        GlaResult r = path == Path::Chunk
                          ? gla_chunk(q, k, v, g, gate_on_value, in.scale, initial, true)
                          : gla_reference(q, k, v, g, gate_on_value, in.scale, initial, true);
        at::Tensor loss = use_output ? r.o.pow(2).sum() : r.final_state.pow(2).sum();
        loss.backward();
        grads_by_path[path == Path::Chunk] = {q.grad(), k.grad(), v.grad(), g.grad(),
                                              initial.grad()};
      }
      const char* names[] = {"grad_q", "grad_k", "grad_v", "grad_g", "grad_initial_state"};
      for (int i = 0; i < 5; ++i) {
        const std::string name = c.name + (use_output ? "_output_only" : "_final_state_only");
        if (!use_output && i == 0) {
          expect_close(name, names[i], grads_by_path[1][i],
                       at::zeros_like(grads_by_path[1][i]), 0.0);
          continue;
        }
        expect_close(name, names[i], grads_by_path[1][i], grads_by_path[0][i], 1e-10);
      }
    }
  }
}

// The analytic backward against central differences of the chunked forward itself.
TEST(GlaChunk, GradientsMatchFiniteDifferencesOnTinyFloat64Shape) {
  for (bool gate_on_value : {false, true}) {
    GlaCase c = dense(gate_on_value ? "finite_differences_GateOnValue"
                                    : "finite_differences_GateOnKey",
                      1, 66, 1, 2, 2, 2, gate_on_value, Gate::Mixed, true, 26);
    GlaInputs in = make_inputs(c, at::kDouble);
    auto [grad_o, grad_final] = random_output_grads(c, in);
    GlaRun analytic = run_with_grads(Path::Chunk, in, gate_on_value, grad_o, grad_final);
    auto loss = [&](const GlaInputs& x) {
      GlaResult r = gla_chunk(x.q, x.k, x.v, x.g, gate_on_value, x.scale, x.initial_state, true);
      return ((r.o * grad_o).sum() + (r.final_state * grad_final).sum()).item<double>();
    };
    const double step = 1e-6;
    std::vector<std::pair<const char*, at::Tensor GlaInputs::*>> inputs = {
        {"grad_q", &GlaInputs::q}, {"grad_k", &GlaInputs::k}, {"grad_v", &GlaInputs::v},
        {"grad_g", &GlaInputs::g}, {"grad_initial_state", &GlaInputs::initial_state}};
    const at::Tensor analytic_grads[] = {analytic.grad_q, analytic.grad_k, analytic.grad_v,
                                         analytic.grad_g, analytic.grad_initial_state};
    for (size_t i = 0; i < inputs.size(); ++i) {
      GlaInputs perturbed = in;
      at::Tensor& tensor = perturbed.*(inputs[i].second);
      tensor = tensor.clone();
      at::Tensor flat = tensor.view(-1);
      at::Tensor numeric = at::empty_like(flat);
      for (int64_t j = 0; j < flat.numel(); ++j) {
        const double original = flat[j].item<double>();
        flat[j] = original + step;
        const double plus = loss(perturbed);
        flat[j] = original - step;
        const double minus = loss(perturbed);
        flat[j] = original;
        numeric[j] = (plus - minus) / (2 * step);
      }
      expect_close(c.name, inputs[i].first, analytic_grads[i], numeric.view_as(tensor), 1e-6);
    }
  }
}

TEST(GlaChunk, VarlenEqualsRunningEachSequenceSeparately) {
  for (bool gate_on_value : {false, true}) {
    GlaCase c = varlen(gate_on_value ? "varlen_vs_separate_GateOnValue"
                                     : "varlen_vs_separate_GateOnKey",
                       {33, 64, 1, 150}, 2, 2, 16, 24, gate_on_value, Gate::Mixed, 27);
    GlaInputs in = make_inputs(c, at::kDouble);
    auto [grad_o, grad_final] = random_output_grads(c, in);
    GlaRun packed = run_with_grads(Path::Chunk, in, gate_on_value, grad_o, grad_final);
    std::vector<GlaRun> pieces;
    int64_t start = 0;
    for (size_t i = 0; i < c.sequence_lengths.size(); ++i) {
      const int64_t end = start + c.sequence_lengths[i];
      const int64_t n = static_cast<int64_t>(i);
      GlaInputs one{in.q.slice(1, start, end), in.k.slice(1, start, end),
                    in.v.slice(1, start, end), in.g.slice(1, start, end),
                    in.initial_state.slice(0, n, n + 1), at::Tensor(), in.scale};
      pieces.push_back(run_with_grads(Path::Chunk, one, gate_on_value,
                                      grad_o.slice(1, start, end), grad_final.slice(0, n, n + 1)));
      start = end;
    }
    auto cat = [&](at::Tensor GlaRun::*field, int64_t dim) {
      std::vector<at::Tensor> parts;
      for (const GlaRun& piece : pieces) parts.push_back(piece.*field);
      return at::cat(parts, dim);
    };
    GlaRun separate{cat(&GlaRun::o, 1),      cat(&GlaRun::final_state, 0),
                    cat(&GlaRun::grad_q, 1), cat(&GlaRun::grad_k, 1),
                    cat(&GlaRun::grad_v, 1), cat(&GlaRun::grad_g, 1),
                    cat(&GlaRun::grad_initial_state, 0)};
    expect_runs_close(c.name, packed, separate, 1e-12);
  }
}

// Inputs are strided views into NaN-filled buffers: any read outside the views shows up as NaN.
TEST(GlaChunk, NonContiguousInputsInsideNanBuffersGiveSameResults) {
  for (bool gate_on_value : {false, true}) {
    GlaCase c = dense(gate_on_value ? "strided_GateOnValue" : "strided_GateOnKey", 2, 70, 2, 2,
                      16, 24, gate_on_value, Gate::Mixed, true, 28);
    GlaInputs in = make_inputs(c, at::kDouble);
    auto embed = [](const at::Tensor& x) {
      std::vector<int64_t> padded(x.sizes().begin(), x.sizes().end());
      padded.back() += 5;
      at::Tensor buffer = at::empty(padded, x.options());
      poison_nan(buffer);
      at::Tensor view = buffer.narrow(-1, 2, x.size(-1));
      view.copy_(x);
      return view;
    };
    GlaInputs strided{embed(in.q), embed(in.k), embed(in.v), embed(in.g),
                      embed(in.initial_state), at::Tensor(), in.scale};
    auto [grad_o, grad_final] = random_output_grads(c, in);
    GlaRun expected = run_with_grads(Path::Chunk, in, gate_on_value, grad_o, grad_final);
    GlaRun actual = run_with_grads(Path::Chunk, strided, gate_on_value, grad_o, grad_final);
    expect_runs_close(c.name, actual, expected, 1e-14);
  }
}

using StepSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                         const at::Tensor&, const at::Tensor&,
                                                         bool, double, const at::Tensor&);

TEST(GlaStep, TokenByTokenMatchesReferenceOutputAndFinalState) {
  static auto functional_step = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("lintime::gla_step", "")
                                    .typed<StepSignature>();
  for (bool gate_on_value : {false, true}) {
    GlaCase c = dense(gate_on_value ? "step_GateOnValue" : "step_GateOnKey", 2, 40, 2, 2, 16, 24,
                      gate_on_value, Gate::Mixed, true, 29);
    GlaInputs in = make_inputs(c, at::kDouble);
    GlaResult reference =
        gla_reference(in.q, in.k, in.v, in.g, gate_on_value, in.scale, in.initial_state, true);
    // The in-place state lives inside a NaN-poisoned buffer: the step must touch only the view.
    at::Tensor buffer = at::empty({2, c.batch, c.heads, c.key_dim, c.value_dim}, in.q.options());
    poison_nan(buffer);
    at::Tensor state = buffer.select(0, 1);
    state.copy_(in.initial_state);
    at::Tensor functional_state = in.initial_state.clone();
    std::vector<at::Tensor> outputs;
    for (int64_t t = 0; t < c.length; ++t) {
      auto token = [&](const at::Tensor& x) { return x.select(1, t); };
      at::Tensor o = gla_step_(token(in.q), token(in.k), token(in.v), token(in.g), gate_on_value,
                               in.scale, state);
      auto [o_functional, next_state] =
          functional_step.call(token(in.q), token(in.k), token(in.v), token(in.g),
                               gate_on_value, in.scale, functional_state);
      functional_state = next_state;
      EXPECT_TRUE(at::equal(o, o_functional)) << c.name << ": in-place and functional o, t = " << t;
      EXPECT_TRUE(at::equal(state, functional_state))
          << c.name << ": in-place and functional state, t = " << t;
      outputs.push_back(o);
    }
    EXPECT_TRUE(buffer.select(0, 0).isnan().all().item<bool>()) << c.name;
    expect_close(c.name, "o", at::stack(outputs, 1), reference.o, 1e-12);
    expect_close(c.name, "final_state", state, reference.final_state, 1e-12);
  }
}

TEST(GlaStep, PrefillWithChunkThenDecodeWithStepEqualsFullChunk) {
  GlaCase c = dense("prefill_decode", 1, 80, 2, 2, 16, 16, true, Gate::Mixed, true, 30);
  GlaInputs in = make_inputs(c, at::kDouble);
  GlaResult full = gla_chunk(in.q, in.k, in.v, in.g, true, in.scale, in.initial_state, true);
  const int64_t prompt = 67;
  auto head = [&](const at::Tensor& x) { return x.slice(1, 0, prompt); };
  GlaResult prefill =
      gla_chunk(head(in.q), head(in.k), head(in.v), head(in.g), true, in.scale, in.initial_state, true);
  at::Tensor state = prefill.final_state;
  std::vector<at::Tensor> outputs{prefill.o};
  for (int64_t t = prompt; t < c.length; ++t) {
    auto token = [&](const at::Tensor& x) { return x.select(1, t); };
    outputs.push_back(gla_step_(token(in.q), token(in.k), token(in.v), token(in.g), true,
                                in.scale, state).unsqueeze(1));
  }
  expect_close(c.name, "o", at::cat(outputs, 1), full.o, 1e-12);
  expect_close(c.name, "final_state", state, full.final_state, 1e-12);
}

template <typename Call>
void expect_error_containing(Call call, const std::string& expected) {
  try {
    call();
    ADD_FAILURE() << "expected an error containing: " << expected;
  } catch (const c10::Error& error) {
    EXPECT_NE(std::string(error.what()).find(expected), std::string::npos)
        << "message: " << error.what() << "\nexpected to contain: " << expected;
  }
}

TEST(GlaChecks, BadShapeNamesTensorAndExpectedShape) {
  at::Tensor q = at::randn({2, 10, 4, 8}), k = at::randn({2, 10, 2, 8});
  at::Tensor v = at::randn({2, 9, 2, 6}), g = -at::rand({2, 10, 2, 8});
  expect_error_containing([&] { gla_chunk(q, k, v, g, false, 1.0); },
                          "lintime::gla_chunk: v must have shape [B, T, H, V] = [2, 10, 2, V], "
                          "got [2, 9, 2, 6]");
  v = at::randn({2, 10, 2, 6});
  expect_error_containing([&] { gla_chunk(q, k, v, g, true, 1.0); },
                          "lintime::gla_chunk: g must have shape [B, T, H, V] = [2, 10, 2, 6], "
                          "got [2, 10, 2, 8]");
  expect_error_containing([&] { gla_reference(q, k, v, g, false, 1.0, at::zeros({3, 2, 8, 6})); },
                          "lintime::gla_reference: initial_state must have shape [N, H, K, V] = "
                          "[2, 2, 8, 6], got [3, 2, 8, 6]");
  expect_error_containing([&] { gla_chunk(at::randn({2, 10, 3, 8}), k, v, g, false, 1.0); },
                          "HQ must be a multiple of the key/value heads H, got HQ = 3, H = 2");
  at::Tensor state = at::zeros({2, 2, 8, 5});
  expect_error_containing(
      [&] { gla_step_(q.select(1, 0), k.select(1, 0), v.select(1, 0), g.select(1, 0), false, 1.0, state); },
      "lintime::gla_step_: state must have shape [B, H, K, V] = [2, 2, 8, 6], got [2, 2, 8, 5]");
}

TEST(GlaChecks, CuSeqlensWithBatchAboveOneIsRejected) {
  at::Tensor q = at::randn({2, 10, 2, 8}), k = at::randn({2, 10, 2, 8});
  at::Tensor v = at::randn({2, 10, 2, 6}), g = -at::rand({2, 10, 2, 8});
  at::Tensor cu_seqlens = at::tensor(std::vector<int64_t>{0, 4, 10});
  expect_error_containing(
      [&] { gla_chunk(q, k, v, g, false, 1.0, std::nullopt, false, cu_seqlens); },
      "lintime::gla_chunk: with cu_seqlens the batch size must be 1");
}

}  // namespace
}  // namespace lintime::ops
