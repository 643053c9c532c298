// Mamba: the selective scan's chunked form and step against its float64 reference (outputs,
// final states, every gradient, chunk sizes that do and do not divide T, initial states),
// bf16 inputs, the layer against fla's slow forward written out here, prefill + decode equal
// to the full forward, the "mamba" mixer's counts at the GSA paper's MQAR width, and one-line
// errors. (Here rather than in tests/layers: the mixer registry lives in lintime_models.)
#include "core/error.h"
#include "layers/mamba.h"
#include "models/mixer.h"
#include "ops/ssm/selective_scan.h"
#include "state/mamba_state.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace {

using lintime::testing::error_of;
using lintime::testing::expect_close;
using lintime::testing::make_generator;
using nlohmann::json;

struct ScanCase {
  std::string name;
  int64_t batch, length, channels, state_dim, chunk;
  bool initial_state, skip;  // an initial state; the D·x term
  double dt_scale;           // dt = softplus(N(0, 1) − 1) · dt_scale: 1 moderate, 20 strong decays
  uint64_t seed;
};

// gtest prints a failing case by its name.
void PrintTo(const ScanCase& c, std::ostream* out) { *out << c.name; }

struct ScanInputs {
  at::Tensor x, dt, A, B, C, D, initial_state;
  std::map<std::string, at::Tensor> named() const {
    return {{"x", x}, {"dt", dt}, {"A", A}, {"B", B}, {"C", C}, {"D", D}, {"initial_state", initial_state}};
  }
};

// A as Mamba initialises it (−1 … −N per channel) with a random spread, so that the channels
// and states decay at different rates.
ScanInputs make_inputs(const ScanCase& c, at::ScalarType dtype) {
  at::Generator generator = make_generator(c.seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  ScanInputs in;
  in.x = at::randn({c.batch, c.length, c.channels}, generator, f64);
  in.dt = at::softplus(at::randn({c.batch, c.length, c.channels}, generator, f64) - 1) * c.dt_scale;
  in.A = -at::arange(1, c.state_dim + 1, f64).expand({c.channels, c.state_dim}) *
         at::exp(0.3 * at::randn({c.channels, c.state_dim}, generator, f64));
  in.B = at::randn({c.batch, c.length, c.state_dim}, generator, f64);
  in.C = at::randn({c.batch, c.length, c.state_dim}, generator, f64);
  if (c.skip) in.D = at::randn({c.channels}, generator, f64);
  if (c.initial_state) in.initial_state = at::randn({c.batch, c.channels, c.state_dim}, generator, f64);
  for (at::Tensor* t : {&in.x, &in.dt, &in.A, &in.B, &in.C, &in.D, &in.initial_state}) {
    if (t->defined()) *t = t->to(dtype);
  }
  return in;
}

struct ScanRun {
  at::Tensor y, final_state;
  std::map<std::string, at::Tensor> grads;
};

// chunk 0: the reference; otherwise the chunked form with that chunk size. Gradients of
// Σ y·grad_y + Σ final·grad_final with respect to every input.
ScanRun run_scan(const ScanInputs& inputs, int64_t chunk, const at::Tensor& grad_y, const at::Tensor& grad_final) {
  ScanInputs in;
  std::map<std::string, at::Tensor> leaves;
  for (const auto& [name, tensor] : inputs.named()) {
    leaves[name] = tensor.defined() ? tensor.detach().clone().set_requires_grad(true) : at::Tensor();
  }
  in.x = leaves["x"], in.dt = leaves["dt"], in.A = leaves["A"], in.B = leaves["B"], in.C = leaves["C"];
  in.D = leaves["D"], in.initial_state = leaves["initial_state"];
  auto [y, final_state] =
      chunk == 0 ? lintime::ops::selective_scan_reference_fwd(in.x, in.dt, in.A, in.B, in.C, in.D, in.initial_state, true)
                 : lintime::ops::selective_scan_chunk_fwd(in.x, in.dt, in.A, in.B, in.C, in.D, in.initial_state, true,
                                                          chunk);
  ScanRun run{y.detach(), final_state.detach(), {}};
  run.grads = lintime::testing::leaf_gradients(leaves, {y, final_state}, {grad_y.to(y.scalar_type()), grad_final});
  return run;
}

std::pair<at::Tensor, at::Tensor> random_output_grads(const ScanCase& c) {
  at::Generator generator = make_generator(c.seed + 1000);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  return {at::randn({c.batch, c.length, c.channels}, generator, f64),
          at::randn({c.batch, c.channels, c.state_dim}, generator, f64)};
}

class SelectiveScanChunkMatchesReference : public ::testing::TestWithParam<ScanCase> {};

TEST_P(SelectiveScanChunkMatchesReference, OutputFinalStateAndAllGradientsInFloat64) {
  const ScanCase& c = GetParam();
  const ScanInputs in = make_inputs(c, at::kDouble);
  const auto [grad_y, grad_final] = random_output_grads(c);
  const ScanRun expected = run_scan(in, 0, grad_y, grad_final);
  const ScanRun actual = run_scan(in, c.chunk, grad_y, grad_final);
  expect_close(c.name, "y", actual.y, expected.y, 1e-12);
  expect_close(c.name, "final_state", actual.final_state, expected.final_state, 1e-12);
  for (const auto& [name, grad] : expected.grads) {
    expect_close(c.name, "grad_" + name, actual.grads.at(name), grad, 1e-11);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SelectiveScanChunkMatchesReference,
    ::testing::Values(ScanCase{"T64_chunk16_divides", 2, 64, 5, 4, 16, false, true, 1.0, 1},
                      ScanCase{"T63_chunk16_initial_state", 2, 63, 3, 5, 16, true, true, 1.0, 2},
                      ScanCase{"T37_chunk5_no_skip", 1, 37, 4, 3, 5, true, false, 1.0, 3},
                      ScanCase{"T1_chunk16", 3, 1, 2, 4, 16, true, true, 1.0, 4},
                      ScanCase{"T20_chunk1", 1, 20, 3, 2, 1, true, true, 1.0, 5},
                      ScanCase{"T11_chunk64_longer_than_T", 2, 11, 3, 3, 64, true, true, 1.0, 6},
                      ScanCase{"T40_chunk8_strong_decays", 1, 40, 4, 16, 8, true, true, 20.0, 7}),
    [](const ::testing::TestParamInfo<ScanCase>& info) { return info.param.name; });

// dt·A down to −300 per token: cumulative sums far past exp's range; every exponent the chunked
// form takes is <= 0, so float32 stays finite and as close as the float32 reference.
TEST(SelectiveScanChunk, StrongDecaysInFloat32StayFiniteAndMatchFloat64) {
  const ScanCase c{"strong_decays_float32", 2, 50, 6, 16, 16, true, true, 20.0, 8};
  const ScanInputs in = make_inputs(c, at::kFloat);
  ScanInputs in64 = in;
  for (at::Tensor* t : {&in64.x, &in64.dt, &in64.A, &in64.B, &in64.C, &in64.D, &in64.initial_state}) *t = t->to(at::kDouble);
  const auto [grad_y, grad_final] = random_output_grads(c);
  const ScanRun actual = run_scan(in, c.chunk, grad_y, grad_final.to(at::kFloat));
  const ScanRun expected = run_scan(in64, 0, grad_y, grad_final);
  expect_close(c.name, "y", actual.y, expected.y, 1e-5);
  expect_close(c.name, "final_state", actual.final_state, expected.final_state, 1e-5);
  for (const auto& [name, grad] : expected.grads) {
    expect_close(c.name, "grad_" + name, actual.grads.at(name), grad, 1e-4);
  }
}

// bf16 inputs compute in float32 and round y (and each gradient) to bf16 once, so each is
// within bf16's unit roundoff 2^-8 (relative RMS) of the float64 result on the same inputs,
// and within twice the error of the reference given the same bf16 inputs.
TEST(SelectiveScanChunk, Bfloat16InputsMatchFloat64ReferenceWithinBfloat16Rounding) {
  const ScanCase c{"bfloat16_T45_chunk16", 2, 45, 8, 16, 16, true, true, 1.0, 9};
  const ScanInputs in = make_inputs(c, at::kBFloat16);
  ScanInputs in64 = in;
  for (at::Tensor* t : {&in64.x, &in64.dt, &in64.A, &in64.B, &in64.C, &in64.D, &in64.initial_state}) *t = t->to(at::kDouble);
  const auto [grad_y, grad_final] = random_output_grads(c);
  const at::Tensor grad_y_bf16 = grad_y.to(at::kBFloat16), grad_final_f32 = grad_final.to(at::kFloat);
  const ScanRun actual = run_scan(in, c.chunk, grad_y_bf16, grad_final_f32);
  const ScanRun in_dtype = run_scan(in, 0, grad_y_bf16, grad_final_f32);
  const ScanRun expected = run_scan(in64, 0, grad_y_bf16.to(at::kDouble), grad_final_f32.to(at::kDouble));
  EXPECT_EQ(actual.y.scalar_type(), at::kBFloat16);
  EXPECT_EQ(actual.final_state.scalar_type(), at::kFloat);
  std::vector<std::string> names = {"y", "final_state"};
  std::vector<at::Tensor> a = {actual.y, actual.final_state}, r = {expected.y, expected.final_state},
                          d = {in_dtype.y, in_dtype.final_state};
  for (const auto& [name, grad] : expected.grads) {
    EXPECT_EQ(actual.grads.at(name).scalar_type(), at::kBFloat16) << name;
    names.push_back("grad_" + name);
    a.push_back(actual.grads.at(name));
    r.push_back(grad);
    d.push_back(in_dtype.grads.at(name));
  }
  const double roundoff = lintime::testing::unit_roundoff(at::kBFloat16);
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(a[i].isfinite().all().item<bool>()) << names[i];
    const double error = lintime::testing::relative_rms_error(a[i], r[i]);
    const double reference_error = lintime::testing::relative_rms_error(d[i], r[i]);
    EXPECT_LE(error, roundoff) << c.name << " " << names[i];
    EXPECT_LE(error, std::max(2 * reference_error, 1e-6)) << c.name << " " << names[i] << ": chunk " << error
                                                          << ", reference in bf16 " << reference_error;
  }
}

TEST(SelectiveScanChunk, EmptySequenceKeepsTheInitialStateAndFinalStateOnlyWhenAsked) {
  const ScanCase c{"T0", 2, 0, 3, 4, 16, true, true, 1.0, 10};
  const ScanInputs in = make_inputs(c, at::kDouble);
  auto [y, final_state] = lintime::ops::selective_scan_chunk_fwd(in.x, in.dt, in.A, in.B, in.C, in.D, in.initial_state, true);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 0, 3}));
  expect_close(c.name, "final_state", final_state, in.initial_state, 0.0);
  auto [y2, no_state] = lintime::ops::selective_scan_chunk_fwd(in.x, in.dt, in.A, in.B, in.C, in.D, in.initial_state, false);
  EXPECT_FALSE(no_state.defined());
}

// Views into NaN-filled buffers (non-contiguous, NaN beside every element read): the chunked
// form reads only what it is given.
TEST(SelectiveScanChunk, NonContiguousInputsInsideNanBuffersGiveSameResults) {
  const ScanCase c{"non_contiguous", 2, 19, 3, 4, 8, true, true, 1.0, 11};
  const ScanInputs in = make_inputs(c, at::kDouble);
  auto inside_nan = [](const at::Tensor& t) {
    std::vector<int64_t> sizes = t.sizes().vec();
    sizes.back() *= 2;
    at::Tensor buffer = at::empty(sizes, t.options());
    lintime::testing::poison_nan(buffer);
    at::Tensor view = buffer.slice(-1, 0, sizes.back(), 2);  // every other element
    view.copy_(t);
    return view;
  };
  auto [expected_y, expected_state] =
      lintime::ops::selective_scan_chunk_fwd(in.x, in.dt, in.A, in.B, in.C, in.D, in.initial_state, true, 8);
  auto [y, state] = lintime::ops::selective_scan_chunk_fwd(inside_nan(in.x), inside_nan(in.dt), inside_nan(in.A),
                                                           inside_nan(in.B), inside_nan(in.C), inside_nan(in.D),
                                                           inside_nan(in.initial_state), true, 8);
  expect_close(c.name, "y", y, expected_y, 0.0);
  expect_close(c.name, "final_state", state, expected_state, 0.0);
}

// The step, functional and in place, one token at a time from the initial state, equals the
// reference; the in-place form writes into the state it was given.
TEST(SelectiveScanStep, TokenByTokenMatchesReferenceOutputAndFinalState) {
  const ScanCase c{"step_T13", 2, 13, 5, 4, 0, true, true, 1.0, 12};
  const ScanInputs in = make_inputs(c, at::kDouble);
  auto [expected_y, expected_state] =
      lintime::ops::selective_scan_reference_fwd(in.x, in.dt, in.A, in.B, in.C, in.D, in.initial_state, true);
  at::Tensor functional_state = in.initial_state.clone(), state = in.initial_state.clone();
  const void* storage = state.data_ptr();
  std::vector<at::Tensor> functional_outputs, outputs;
  for (int64_t t = 0; t < c.length; ++t) {
    auto [y_t, next] = lintime::ops::selective_scan_step(in.x.select(1, t), in.dt.select(1, t), in.A, in.B.select(1, t),
                                                         in.C.select(1, t), in.D, functional_state);
    functional_outputs.push_back(y_t);
    functional_state = next;
    outputs.push_back(lintime::ops::selective_scan_step_inplace(in.x.select(1, t), in.dt.select(1, t), in.A,
                                                                in.B.select(1, t), in.C.select(1, t), in.D, state));
  }
  EXPECT_EQ(state.data_ptr(), storage);
  expect_close(c.name, "y (functional)", at::stack(functional_outputs, 1), expected_y, 1e-12);
  expect_close(c.name, "final_state (functional)", functional_state, expected_state, 1e-12);
  expect_close(c.name, "y (in place)", at::stack(outputs, 1), expected_y, 1e-12);
  expect_close(c.name, "final_state (in place)", state, expected_state, 1e-12);
}

TEST(SelectiveScanChecks, BadShapesAndOptionsNameTheTensorAndTheExpectation) {
  const ScanCase c{"checks", 2, 8, 3, 4, 16, true, true, 1.0, 13};
  const ScanInputs in = make_inputs(c, at::kDouble);
  using lintime::ops::selective_scan_chunk_fwd;
  EXPECT_EQ(error_of([&] { selective_scan_chunk_fwd(in.x, in.dt, in.A, in.B, in.C.narrow(2, 0, 3), in.D, {}, false); }),
            "lintime::selective_scan_chunk: C must have shape [batch, T, N] = [2, 8, 4], got [2, 8, 3]");
  EXPECT_EQ(error_of([&] { selective_scan_chunk_fwd(in.x, in.dt.narrow(1, 0, 7), in.A, in.B, in.C, in.D, {}, false); }),
            "lintime::selective_scan_chunk: dt must have shape [batch, T, D] = [2, 8, 3], got [2, 7, 3]");
  EXPECT_EQ(error_of([&] { selective_scan_chunk_fwd(in.x, in.dt, in.A.t(), in.B, in.C, in.D, {}, false); }),
            "lintime::selective_scan_chunk: A must have shape [D, N] = [3, 4], got [4, 3]");
  EXPECT_EQ(error_of([&] { selective_scan_chunk_fwd(in.x, in.dt, in.A, in.B, in.C, in.D, in.initial_state[0], false); }),
            "lintime::selective_scan_chunk: initial_state must have shape [batch, D, N] = [2, 3, 4], got [3, 4]");
  EXPECT_EQ(error_of([&] { selective_scan_chunk_fwd(in.x, in.dt, in.A, in.B, in.C, in.D, {}, false, 0); }),
            "lintime::selective_scan_chunk: chunk_size must be >= 1, got 0");
  EXPECT_EQ(error_of([&] { lintime::ops::selective_scan_reference_fwd(in.x.to(at::kLong), in.dt, in.A, in.B, in.C, in.D,
                                                                      {}, false); }),
            "lintime::selective_scan_reference: x must be floating point (float16, bfloat16, float32 or float64), got "
            "Long");
  at::Tensor state = in.initial_state.narrow(2, 0, 2).clone();
  EXPECT_EQ(error_of([&] { lintime::ops::selective_scan_step_inplace(in.x[0][0].expand({2, 3}), in.dt.select(1, 0), in.A,
                                                                     in.B.select(1, 0), in.C.select(1, 0), in.D, state); }),
            "lintime::selective_scan_step_: state must have shape [batch, D, N] = [2, 3, 4], got [2, 3, 2]");
}

// ---------------------------------------------------------------------------------------------
// The layer.

lintime::layers::MambaOptions small_options() {
  lintime::layers::MambaOptions options;
  options.hidden_size = 16;
  options.d_state = 4;
  options.d_conv = 4;
  options.expand = 2;
  options.initializer_range = 0.3;  // activations well away from zero, so the comparisons mean something
  return options;
}

// fla's Mamba.slow_forward in float64 from the weights alone: conv1d padded by d_conv − 1 and
// cut to T, the scan token by token.
at::Tensor reference_forward(lintime::layers::Mamba& layer, const at::Tensor& u) {
  std::map<std::string, at::Tensor> w;
  for (const auto& [name, tensor] : layer.named_parameters()) w[name] = tensor;
  const int64_t T = u.size(1), inner = layer.d_inner(), rank = layer.dt_rank(), N = layer.options().d_state;
  const at::Tensor projected = at::linear(u, w["in_proj.weight"]).transpose(1, 2);  // [B, 2·inner, T]
  const at::Tensor x = projected.narrow(1, 0, inner), z = projected.narrow(1, inner, inner);
  const at::Tensor conv = at::conv1d(x, w["conv1d.weight"], w["conv1d.bias"], 1, layer.options().d_conv - 1, 1, inner);
  const at::Tensor hidden = at::silu(conv.narrow(2, 0, T)).transpose(1, 2);  // [B, T, inner]
  const at::Tensor parameters = at::linear(hidden, w["x_proj.weight"]);
  const at::Tensor dt = at::softplus(at::linear(parameters.narrow(2, 0, rank), w["dt_proj.weight"], w["dt_proj.bias"]));
  const at::Tensor B = parameters.narrow(2, rank, N), C = parameters.narrow(2, rank + N, N);
  const at::Tensor A = -at::exp(w["A_log"]);
  at::Tensor h = at::zeros({u.size(0), inner, N}, u.options());
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < T; ++t) {
    const at::Tensor dt_t = dt.select(1, t).unsqueeze(2);
    h = at::exp(dt_t * A) * h + dt_t * B.select(1, t).unsqueeze(1) * hidden.select(1, t).unsqueeze(2);
    ys.push_back((h * C.select(1, t).unsqueeze(1)).sum(2));
  }
  const at::Tensor y = at::stack(ys, 1) + hidden * w["D"];
  return at::linear(y * at::silu(z.transpose(1, 2)), w["out_proj.weight"]);
}

TEST(MambaLayer, ParameterNamesShapesAndInitialisationFollowFla) {
  at::Generator generator = make_generator(20);
  lintime::layers::MambaOptions options;
  options.hidden_size = 40;  // dt_rank auto = ceil(40 / 16) = 3, d_inner 80
  lintime::layers::Mamba layer(options, generator);
  std::vector<std::string> names;
  std::map<std::string, at::Tensor> w;
  for (const auto& [name, tensor] : layer.named_parameters()) {
    names.push_back(name);
    w[name] = tensor;
  }
  // torch's order for fla's layer: its own parameters, then its children as created.
  EXPECT_EQ(names, (std::vector<std::string>{"A_log", "D", "conv1d.weight", "conv1d.bias", "in_proj.weight",
                                             "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "out_proj.weight"}));
  EXPECT_EQ(w["in_proj.weight"].sizes(), (std::vector<int64_t>{160, 40}));
  EXPECT_EQ(w["conv1d.weight"].sizes(), (std::vector<int64_t>{80, 1, 4}));
  EXPECT_EQ(w["x_proj.weight"].sizes(), (std::vector<int64_t>{3 + 32, 80}));
  EXPECT_EQ(w["dt_proj.weight"].sizes(), (std::vector<int64_t>{80, 3}));
  EXPECT_EQ(w["A_log"].sizes(), (std::vector<int64_t>{80, 16}));
  EXPECT_EQ(layer.parameter_count(), lintime::layers::Mamba::parameter_count_for(options));
  expect_close("init", "A_log", w["A_log"], at::log(at::arange(1, 17, at::kFloat)).expand({80, 16}), 0.0);
  expect_close("init", "D", w["D"], at::ones({80}), 0.0);
  const at::Tensor dt = at::softplus(w["dt_proj.bias"].to(at::kDouble));
  EXPECT_GE(dt.min().item<double>(), options.dt_min * (1 - 1e-5));
  EXPECT_LE(dt.max().item<double>(), options.dt_max * (1 + 1e-5));
  EXPECT_LE(w["dt_proj.weight"].abs().max().item<double>(), 1 / std::sqrt(3.0));
  EXPECT_LE(w["conv1d.weight"].abs().max().item<double>(), 0.5);
  EXPECT_GT(w["conv1d.weight"].abs().max().item<double>(), 0.3);  // U(±1/√4), not N(0, 0.02)
  EXPECT_NEAR(w["in_proj.weight"].std().item<double>(), 0.02, 0.002);
}

TEST(MambaLayer, ForwardMatchesFlaSlowForwardInFloat64) {
  at::Generator generator = make_generator(21);
  lintime::layers::Mamba layer(small_options(), generator);
  layer.to(at::kCPU, at::kDouble);
  const at::Tensor u = at::randn({2, 37, 16}, generator, at::TensorOptions().dtype(at::kDouble));
  at::NoGradGuard no_grad;
  expect_close("layer_T37", "out", layer.forward(u), reference_forward(layer, u), 1e-12);
}

// Prefills of several lengths (shorter than the conv window, too), then single-token steps,
// through one state: the same outputs as one forward over the whole sequence.
TEST(MambaLayer, PrefillPiecesAndStepsEqualTheFullForwardInFloat64) {
  at::Generator generator = make_generator(22);
  lintime::layers::Mamba layer(small_options(), generator);
  layer.to(at::kCPU, at::kDouble);
  const at::Tensor u = at::randn({3, 30, 16}, generator, at::TensorOptions().dtype(at::kDouble));
  at::NoGradGuard no_grad;
  const at::Tensor full = layer.forward(u);
  for (const std::vector<int64_t>& pieces : {std::vector<int64_t>{9, 1, 1, 1, 18}, std::vector<int64_t>{2, 1, 20, 1, 6},
                                             std::vector<int64_t>{1, 1, 1, 1, 1, 25}}) {
    lintime::state::MambaLayerState state = layer.make_state(3, at::kCPU, at::kDouble);
    EXPECT_EQ(state.ssm.scalar_type(), at::kDouble);
    std::vector<at::Tensor> outputs;
    int64_t start = 0;
    for (int64_t piece : pieces) {
      outputs.push_back(layer.forward(u.narrow(1, start, piece), &state));
      start += piece;
    }
    expect_close("pieces_" + std::to_string(pieces[0]) + "_" + std::to_string(pieces[1]), "out", at::cat(outputs, 1),
                 full, 1e-12);
    expect_close("conv_window", "state.conv", state.conv, at::linear(u, layer.in_proj.weight).narrow(2, 0, 32).narrow(1, 27, 3),
                 1e-12);
  }
}

// The "mamba" mixer at the GSA paper's MQAR setting (d 128, d_state 16, expand 2, d_conv 4,
// dt_rank ceil(128 / 16) = 8, d_inner 256), counted by hand.
TEST(MambaMixer, ParameterCountAndStateBytesAtTheMqarWidth) {
  const int64_t d = 128, inner = 256, rank = 8, N = 16, W = 4;
  const int64_t parameters = d * 2 * inner             // in_proj
                             + inner * W + inner        // conv1d weight and bias
                             + inner * (rank + 2 * N)   // x_proj
                             + rank * inner + inner     // dt_proj
                             + inner * N + inner        // A_log, D
                             + inner * d;               // out_proj
  EXPECT_EQ(parameters, 116480);
  const int64_t state_bytes = (inner * N + inner * (W - 1)) * 4;
  EXPECT_EQ(state_bytes, 19456);
  at::Generator generator = make_generator(23);
  auto mixer = lintime::models::make_mixer("mamba", d, json::object(), generator);
  EXPECT_EQ(mixer->module().parameter_count(), parameters);
  EXPECT_EQ(lintime::models::mixer_parameter_count("mamba", d, json::object()), parameters);
  EXPECT_EQ(lintime::models::mixer_parameter_count("mamba", d, {{"d_state", 16}, {"dt_rank", "auto"}, {"expand", 2}}),
            parameters);
  EXPECT_EQ(mixer->state_bytes_per_sequence(), state_bytes);
  EXPECT_EQ(mixer->state_bytes_after(100000, at::kBFloat16), state_bytes);
  EXPECT_EQ(lintime::models::mixer_state_bytes_per_sequence("mamba", d, json::object()), state_bytes);
  EXPECT_TRUE(mixer->step_is_replayable());
  EXPECT_FALSE(mixer->packs_sequences());
  // No biases on in_proj and out_proj, one on the conv: the options move the counts accordingly.
  EXPECT_EQ(lintime::models::mixer_parameter_count("mamba", d, {{"bias", true}, {"conv_bias", false}}),
            parameters + 2 * inner + d - inner);
}

TEST(MambaMixer, DecodesThroughTheMixerInterfaceAsTheFullForward) {
  at::Generator generator = make_generator(24);
  auto mixer = lintime::models::make_mixer("mamba", 16, {{"d_state", 4}, {"dt_rank", 2}}, generator, 0.3);
  mixer->module().to(at::kCPU, at::kDouble);
  const at::Tensor u = at::randn({2, 12, 16}, generator, at::TensorOptions().dtype(at::kDouble));
  at::NoGradGuard no_grad;
  const at::Tensor full = mixer->forward(u);
  auto state = mixer->make_state(2, at::kCPU, at::kDouble);
  std::vector<at::Tensor> outputs = {mixer->forward(u.narrow(1, 0, 7), state.get())};
  for (int64_t t = 7; t < 12; ++t) outputs.push_back(mixer->forward(u.narrow(1, t, 1), state.get()));
  expect_close("mixer_decode", "out", at::cat(outputs, 1), full, 1e-12);
  EXPECT_EQ(state->allocated_bytes(), 2 * (32 * 4 + 32 * 3) * 8);  // fp64 here
}

TEST(MambaMixer, BadOptionsAndInputsGiveOneLineErrors) {
  at::Generator generator = make_generator(25);
  auto make = [&](const json& options) { lintime::models::make_mixer("mamba", 16, options, generator); };
  EXPECT_EQ(error_of([&] { make({{"d_state", 0}}); }), "Mamba: d_state must lie in [1, 4096], got 0");
  EXPECT_EQ(error_of([&] { make({{"expand", 0}}); }), "Mamba: expand must lie in [1, 64], got 0");
  EXPECT_EQ(error_of([&] { make({{"d_conv", 0}}); }), "Mamba: d_conv must lie in [1, 1024], got 0");
  EXPECT_EQ(error_of([&] { make({{"dt_rank", -1}}); }),
            "Mamba: dt_rank must be 0 (auto: ceil(hidden_size / 16)) or positive, got -1");
  EXPECT_EQ(error_of([&] { make({{"dt_rank", "full"}}); }),
            "config key \"model.mamba.dt_rank\": expected an integer or \"auto\", got \"full\"");
  EXPECT_NE(error_of([&] { make({{"state_size", 16}}); }).find("config key \"model.mamba.state_size\": unknown"),
            std::string::npos);
  auto mixer = lintime::models::make_mixer("mamba", 16, json::object(), generator);
  EXPECT_EQ(error_of([&] { mixer->forward(at::zeros({2, 5, 12})); }),
            "Mamba: x must have shape [B, T, hidden_size] = [B, T, 16], got [2, 5, 12]");
  EXPECT_EQ(error_of([&] { mixer->forward(at::zeros({1, 5, 16}), nullptr, at::tensor({0, 2, 5})); }),
            "mixer \"mamba\": packed sequences (cu_seqlens) are not supported yet");
  auto state = mixer->make_state(3, at::kCPU, at::kFloat);
  EXPECT_EQ(error_of([&] { mixer->forward(at::zeros({2, 1, 16}), state.get()); }),
            "Mamba: state.conv must have shape [B, d_conv-1, d_inner] = [2, 3, 32], got [3, 3, 32]");
  lintime::layers::MambaOptions options = small_options();
  options.dt_min = 0.2;
  EXPECT_EQ(error_of([&] { lintime::layers::Mamba(options, generator); }),
            "Mamba: dt_min and dt_max must satisfy 0 < dt_min <= dt_max, got 0.2 and 0.1");
  for (const std::string& message : {error_of([&] { make({{"d_state", 0}}); })}) {
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
}

}  // namespace

