// AdamW against the closed-form update computed element by element in float64, decay
// exemptions, skipped parameters, and state export/import continuing bit-identically.
#include "train/adamw.h"

#include "core/error.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace {

using lintime::train::AdamW;
using lintime::train::AdamWOptions;

struct Reference {
  std::vector<double> parameter, exp_avg, exp_avg_sq;
  int64_t steps = 0;
};

// One AdamW step in float64, written out from the definition.
void reference_step(Reference& state, const std::vector<double>& gradient, const AdamWOptions& o,
                    bool decays) {
  if (state.exp_avg.empty()) {
    state.exp_avg.assign(state.parameter.size(), 0.0);
    state.exp_avg_sq.assign(state.parameter.size(), 0.0);
  }
  ++state.steps;
  const double correction1 = 1.0 - std::pow(o.beta1, state.steps);
  const double correction2 = 1.0 - std::pow(o.beta2, state.steps);
  for (size_t i = 0; i < state.parameter.size(); ++i) {
    double& p = state.parameter[i];
    if (decays) p -= o.lr * o.weight_decay * p;
    state.exp_avg[i] = o.beta1 * state.exp_avg[i] + (1.0 - o.beta1) * gradient[i];
    state.exp_avg_sq[i] = o.beta2 * state.exp_avg_sq[i] + (1.0 - o.beta2) * gradient[i] * gradient[i];
    const double m_hat = state.exp_avg[i] / correction1;
    const double v_hat = state.exp_avg_sq[i] / correction2;
    p -= o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
  }
}

std::vector<double> values_of(const at::Tensor& tensor) {
  at::Tensor flat = tensor.detach().to(at::kDouble).contiguous().view(-1);
  return std::vector<double>(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
}

double max_relative_error(const std::vector<double>& actual, const std::vector<double>& expected) {
  double error = 0, scale = 1e-300;
  for (size_t i = 0; i < actual.size(); ++i) {
    error = std::max(error, std::fabs(actual[i] - expected[i]));
    scale = std::max(scale, std::fabs(expected[i]));
  }
  return error / scale;
}

at::Tensor make_parameter(at::IntArrayRef shape, at::ScalarType dtype, at::Generator& generator) {
  return at::randn(shape, generator, at::kDouble).to(dtype).set_requires_grad(true);
}

void run_against_reference(at::ScalarType dtype, double tolerance, bool fused = false) {
  auto generator = lintime::testing::make_generator(3);
  AdamWOptions options{.lr = 0.05, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1, .fused = fused};
  std::vector<std::pair<std::string, at::Tensor>> parameters = {
      {"layers.0.proj.weight", make_parameter({4, 3}, dtype, generator)},
      {"layers.0.proj.bias", make_parameter({4}, dtype, generator)},
      {"layers.0.norm.weight", make_parameter({3}, dtype, generator)},
  };
  std::vector<Reference> references;
  for (const auto& [name, parameter] : parameters) references.push_back({values_of(parameter), {}, {}, 0});
  AdamW optimizer(parameters, options);
  const bool decays[] = {true, false, false};
  for (int step = 0; step < 5; ++step) {
    for (size_t i = 0; i < parameters.size(); ++i) {
      at::Tensor gradient = at::randn(parameters[i].second.sizes(), generator, at::kDouble).to(dtype);
      parameters[i].second.mutable_grad() = gradient;
      reference_step(references[i], values_of(gradient), options, decays[i]);
    }
    optimizer.step();
    for (size_t i = 0; i < parameters.size(); ++i) {
      const double error = max_relative_error(values_of(parameters[i].second), references[i].parameter);
      EXPECT_LE(error, tolerance) << c10::toString(dtype) << " step " << step << " " << parameters[i].first;
    }
  }
  EXPECT_EQ(optimizer.step_count(), 5);
}

TEST(AdamW, MatchesClosedFormFloat64) { run_against_reference(at::kDouble, 1e-13); }

// fp32 state: the error of fp32 arithmetic on O(1) values over a few steps.
TEST(AdamW, MatchesClosedFormFloat32) { run_against_reference(at::kFloat, 2e-6); }

// ATen's fused multi-tensor AdamW (what the trainer uses on a GPU), here on the CPU: the same
// update with the same tolerances (its step counts are floats on the device, its bias
// corrections formed in the parameters' dtype).
TEST(AdamW, FusedMatchesClosedFormFloat64) { run_against_reference(at::kDouble, 1e-13, /*fused=*/true); }
TEST(AdamW, FusedMatchesClosedFormFloat32) { run_against_reference(at::kFloat, 2e-6, /*fused=*/true); }

// The learning rate read from a device scalar (what a CUDA-graph-recorded step replays with):
// the same update as set_lr's, and a new value in the tensor is the next step's rate. The host
// counts round-trip, as a recorded step's owner sets them back and advances them.
TEST(AdamW, FusedReadsItsLearningRateFromATensor) {
  for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    auto generator = lintime::testing::make_generator(4);
    // A rate that fp32 holds exactly: the tensor is fp32 whatever the parameters' dtype.
    AdamWOptions options{.lr = 0.0625, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1, .fused = true};
    const at::Tensor start = at::randn({4, 3}, generator, at::kDouble).to(dtype);
    std::vector<std::pair<std::string, at::Tensor>> by_value = {{"w", start.clone().set_requires_grad(true)}};
    std::vector<std::pair<std::string, at::Tensor>> by_tensor = {{"w", start.clone().set_requires_grad(true)}};
    AdamW value_optimizer(by_value, options), tensor_optimizer(by_tensor, options);
    const at::Tensor lr = at::full({}, 0.0625, at::kFloat);
    tensor_optimizer.read_lr_from(lr);
    tensor_optimizer.set_lr(123.0);  // ignored once the tensor is read
    for (int step = 0; step < 3; ++step) {
      const at::Tensor gradient = at::randn({4, 3}, generator, at::kDouble).to(dtype);
      by_value[0].second.mutable_grad() = gradient.clone();
      by_tensor[0].second.mutable_grad() = gradient.clone();
      value_optimizer.step();
      tensor_optimizer.step();
    }
    EXPECT_TRUE(by_tensor[0].second.equal(by_value[0].second)) << c10::toString(dtype);
    lr.fill_(0.0);  // rate 0: neither the decay nor the update moves the weights
    const at::Tensor before = by_tensor[0].second.detach().clone();
    by_tensor[0].second.mutable_grad() = at::ones({4, 3}, dtype);
    tensor_optimizer.step();
    EXPECT_TRUE(by_tensor[0].second.equal(before)) << c10::toString(dtype);

    const AdamW::StepCounts counts = tensor_optimizer.step_counts();
    EXPECT_EQ(counts.calls, 4);
    EXPECT_EQ(counts.per_parameter, std::vector<int64_t>{4});
    tensor_optimizer.set_step_counts({7, {9}});
    EXPECT_EQ(tensor_optimizer.step_count(), 7);
    EXPECT_EQ(tensor_optimizer.state_tensors().back().second.item<int64_t>(), 9);  // "w.step"
  }
  std::vector<std::pair<std::string, at::Tensor>> one = {{"w", at::zeros({2}).set_requires_grad(true)}};
  AdamW unfused(one, AdamWOptions{});
  EXPECT_NE(lintime::testing::error_of([&] { unfused.read_lr_from(at::zeros({})); }).find("needs the fused update"),
            std::string::npos);
  AdamW fused(one, AdamWOptions{.fused = true});
  EXPECT_NE(lintime::testing::error_of([&] { fused.set_step_counts({1, {1, 2}}); }).find("step counts for 2 parameters"),
            std::string::npos);
}

// fp32 moments on bf16 parameters (no master copies): each step is the float64 closed form applied
// to the bf16 weights as they are, rounded once to bf16: within half a bf16 unit of it, or a
// whole one where float32's own rounding lands on the other side of a bf16 midpoint. The moments
// are fp32 and within float32 rounding of the reference's; fused or not, the same update.
TEST(AdamW, Fp32MomentsOnBf16ParametersFollowTheClosedFormRoundedToBf16) {
  for (bool fused : {false, true}) {
    auto generator = lintime::testing::make_generator(6);
    AdamWOptions options{.lr = 0.05, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1, .fused = fused,
                         .moment_dtype = at::kFloat};
    std::vector<std::pair<std::string, at::Tensor>> parameters = {
        {"proj.weight", make_parameter({8, 5}, at::kBFloat16, generator)}};
    Reference reference{values_of(parameters[0].second), {}, {}, 0};
    AdamW optimizer(parameters, options);
    for (int step = 0; step < 6; ++step) {
      const at::Tensor gradient = at::randn({8, 5}, generator, at::kDouble).to(at::kBFloat16);
      parameters[0].second.mutable_grad() = gradient;
      reference.parameter = values_of(parameters[0].second);  // the weights as bf16 holds them
      reference_step(reference, values_of(gradient), options, /*decays=*/true);
      optimizer.step();
      const auto actual = values_of(parameters[0].second);
      for (size_t i = 0; i < actual.size(); ++i) {
        const double unit = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(std::fabs(reference.parameter[i])))) - 7);
        EXPECT_LE(std::fabs(actual[i] - reference.parameter[i]), unit) << "fused " << fused << " step " << step;
      }
    }
    EXPECT_EQ(parameters[0].second.scalar_type(), at::kBFloat16);
    for (const auto& [name, tensor] : optimizer.state_tensors()) {
      if (name.find(".exp_avg") == std::string::npos) continue;
      EXPECT_EQ(tensor.scalar_type(), at::kFloat) << name;
      const auto& expected = name.find("_sq") != std::string::npos ? reference.exp_avg_sq : reference.exp_avg;
      EXPECT_LE(max_relative_error(values_of(tensor), expected), 1e-6) << name;
    }
    // The state round-trips with its fp32 moments.
    std::vector<std::pair<std::string, at::Tensor>> copy = {{"proj.weight", parameters[0].second.detach().clone()}};
    AdamW restored(copy, options);
    std::map<std::string, at::Tensor> state;
    for (const auto& [name, tensor] : optimizer.state_tensors()) state[name] = tensor;
    restored.load_state(state, optimizer.step_count());
    for (const auto& [name, tensor] : restored.state_tensors()) EXPECT_TRUE(tensor.equal(state.at(name))) << name;
    const std::string refusal = lintime::testing::error_of([&] { restored.read_lr_from(at::zeros({})); });
    EXPECT_NE(refusal.find(fused ? "moments in another dtype" : "needs the fused update"), std::string::npos) << refusal;
  }
}

TEST(AdamW, DecayRules) {
  auto make = [] { return at::ones({2, 2}, at::kDouble).set_requires_grad(true); };
  std::vector<std::pair<std::string, at::Tensor>> parameters = {
      {"embeddings.weight", make()},
      {"layers.0.mixer.q_proj.weight", make()},
      {"layers.0.norm.weight", at::ones({2}, at::kDouble).set_requires_grad(true)},
      {"lm_head.bias", at::ones({2}, at::kDouble).set_requires_grad(true)},
  };
  AdamWOptions options{.lr = 0.1, .weight_decay = 0.5};
  AdamW optimizer(parameters, options);
  EXPECT_FALSE(optimizer.decays("embeddings.weight"));
  EXPECT_TRUE(optimizer.decays("layers.0.mixer.q_proj.weight"));
  EXPECT_FALSE(optimizer.decays("layers.0.norm.weight"));
  EXPECT_FALSE(optimizer.decays("lm_head.bias"));
  AdamW with_embeddings(parameters, {.decay_embeddings = true});
  EXPECT_TRUE(with_embeddings.decays("embeddings.weight"));
  EXPECT_FALSE(with_embeddings.decays("lm_head.bias"));
  AdamW everything(parameters, {}, lintime::train::decay_all_rule());
  EXPECT_TRUE(everything.decays("lm_head.bias"));

  // Zero gradients: Adam's part is exactly 0, so only decaying parameters move, by (1 - lr wd).
  for (auto& [name, parameter] : parameters) parameter.mutable_grad() = at::zeros_like(parameter);
  optimizer.step();
  EXPECT_TRUE(at::allclose(parameters[0].second, at::ones({2, 2}, at::kDouble)));
  EXPECT_TRUE(at::allclose(parameters[1].second, at::full({2, 2}, 0.95, at::kDouble)));
  EXPECT_TRUE(at::allclose(parameters[2].second, at::ones({2}, at::kDouble)));
}

TEST(AdamW, SkipsParametersWithoutGradients) {
  std::vector<std::pair<std::string, at::Tensor>> parameters = {
      {"a.weight", at::ones({2, 2}).set_requires_grad(true)},
      {"b.weight", at::ones({2, 2}).set_requires_grad(true)},
  };
  AdamW optimizer(parameters, {.lr = 0.1});
  parameters[0].second.mutable_grad() = at::ones({2, 2});
  optimizer.step();
  EXPECT_TRUE(at::equal(parameters[1].second, at::ones({2, 2})));
  const auto state = optimizer.state_tensors();
  ASSERT_EQ(state.size(), 3u);
  EXPECT_EQ(state[0].first, "a.weight.exp_avg");
  EXPECT_EQ(state[2].second.item<int64_t>(), 1);
  optimizer.zero_grad();
  EXPECT_FALSE(parameters[0].second.grad().defined());
}

TEST(AdamW, StateExportImportContinuesIdentically) {
  auto generator = lintime::testing::make_generator(11);
  auto make_parameters = [&](uint64_t seed) {
    auto local = lintime::testing::make_generator(seed);
    return std::vector<std::pair<std::string, at::Tensor>>{
        {"w", at::randn({5, 3}, local).set_requires_grad(true)},
        {"b", at::randn({5}, local).set_requires_grad(true)},
    };
  };
  auto first = make_parameters(1);
  AdamW original(first, {.lr = 0.01, .weight_decay = 0.1});
  std::vector<std::vector<at::Tensor>> gradients;
  for (int step = 0; step < 6; ++step)
    gradients.push_back({at::randn({5, 3}, generator), at::randn({5}, generator)});
  auto apply = [](std::vector<std::pair<std::string, at::Tensor>>& parameters, AdamW& optimizer,
                  const std::vector<at::Tensor>& step_gradients) {
    for (size_t i = 0; i < parameters.size(); ++i) parameters[i].second.mutable_grad() = step_gradients[i].clone();
    optimizer.step();
  };
  for (int step = 0; step < 3; ++step) apply(first, original, gradients[step]);

  auto second = make_parameters(99);
  for (size_t i = 0; i < second.size(); ++i) second[i].second.detach().copy_(first[i].second.detach());
  AdamW restored(second, {.lr = 0.01, .weight_decay = 0.1});
  std::map<std::string, at::Tensor> state;
  for (const auto& [name, tensor] : original.state_tensors()) state[name] = tensor.clone();
  restored.load_state(state, original.step_count());
  EXPECT_EQ(restored.step_count(), 3);
  for (int step = 3; step < 6; ++step) {
    apply(first, original, gradients[step]);
    apply(second, restored, gradients[step]);
  }
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_TRUE(at::equal(first[i].second, second[i].second)) << first[i].first;

  // Invalid states are rejected whole.
  auto error_of = [&](std::map<std::string, at::Tensor> bad) {
    try {
      restored.load_state(bad, 1);
    } catch (const lintime::Error& error) {
      return std::string(error.what());
    }
    return std::string("<no error>");
  };
  auto bad = state;
  bad["w.exp_avg"] = at::zeros({3, 5});
  EXPECT_NE(error_of(bad).find("'w.exp_avg' has shape [3, 5], expected [5, 3]"), std::string::npos) << error_of(bad);
  bad = state;
  bad.erase("b.step");
  EXPECT_NE(error_of(bad).find("'b' needs all of"), std::string::npos) << error_of(bad);
  bad = state;
  bad["c.exp_avg"] = at::zeros({1});
  EXPECT_NE(error_of(bad).find("unexpected tensor 'c.exp_avg'"), std::string::npos) << error_of(bad);
  EXPECT_EQ(restored.step_count(), 6);
}

}  // namespace
