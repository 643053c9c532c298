// The chunked linear cross-entropy against the plain one (full logits, at::cross_entropy): value
// and every gradient in float64 to 1e-12 on awkward shapes, float32 and bf16 within bounds taken
// from their precision, all-ignored labels, gradients only where asked, and the error messages.
#include "train/linear_cross_entropy.h"

#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>

namespace {

using lintime::testing::error_of;
using lintime::testing::expect_close;
using lintime::testing::leaf_gradients;
using lintime::testing::make_generator;
using lintime::testing::relative_rms_error;
using lintime::train::linear_cross_entropy;
using lintime::train::linear_cross_entropy_reference;
using lintime::train::LinearCrossEntropyOptions;

struct Case {
  std::string name;
  int64_t tokens, dim, vocabulary;
  bool bias, ignored;
  LinearCrossEntropyOptions options;
};

struct Inputs {
  at::Tensor hidden, weight, bias, labels;  // [N, D], [V, D], [V] or undefined, [N]
};

// Random inputs, made in float64 and rounded to `dtype`; a third of the labels ignored when asked.
Inputs make_inputs(const Case& c, at::ScalarType dtype, uint64_t seed) {
  at::Generator generator = make_generator(seed);
  Inputs inputs;
  inputs.hidden = at::randn({c.tokens, c.dim}, generator, at::kDouble).to(dtype);
  inputs.weight = (at::randn({c.vocabulary, c.dim}, generator, at::kDouble) / std::sqrt(double(c.dim))).to(dtype);
  if (c.bias) inputs.bias = (0.5 * at::randn({c.vocabulary}, generator, at::kDouble)).to(dtype);
  inputs.labels = at::randint(0, c.vocabulary, {c.tokens}, generator, at::TensorOptions().dtype(at::kLong));
  if (c.ignored) {
    const at::Tensor drop = at::rand({c.tokens}, generator, at::kDouble).lt(1.0 / 3);
    inputs.labels.masked_fill_(drop, c.options.ignore_index);
  }
  return inputs;
}

struct Evaluation {
  at::Tensor loss;
  std::map<std::string, at::Tensor> gradients;  // by "hidden", "weight", "bias"
};

using LossFunction = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const LinearCrossEntropyOptions&);

// The loss and the gradients of grad_output · loss with respect to fresh leaf copies of the inputs.
Evaluation evaluate(LossFunction loss_function, const Inputs& inputs, const LinearCrossEntropyOptions& options,
                    double grad_output = 0.75) {
  std::map<std::string, at::Tensor> leaves = {{"hidden", inputs.hidden.clone().set_requires_grad(true)},
                                              {"weight", inputs.weight.clone().set_requires_grad(true)}};
  if (inputs.bias.defined()) leaves["bias"] = inputs.bias.clone().set_requires_grad(true);
  Evaluation result;
  result.loss = loss_function(leaves["hidden"], leaves["weight"], inputs.bias.defined() ? leaves["bias"] : at::Tensor(),
                              inputs.labels, options);
  result.gradients = leaf_gradients(leaves, {result.loss}, {at::full({}, grad_output, result.loss.options())});
  result.loss = result.loss.detach();
  return result;
}

at::Tensor to_double(const at::Tensor& tensor) { return tensor.detach().to(at::kDouble); }

std::vector<Case> float64_cases() {
  std::vector<Case> cases;
  for (int64_t tokens : {1, 63, 100, 1025}) {
    for (int64_t chunk : {16, 64, 4096}) {
      for (int64_t vocabulary : {37, 300}) {
        for (bool bias : {false, true}) {
          Case c{"", tokens, 24, vocabulary, bias, (tokens + chunk + vocabulary) % 2 == 1, {}};
          c.options.chunk_tokens = chunk;
          if (bias && vocabulary == 37) c.options.normalizer = 7.5;  // an explicit normalizer
          c.name = "N" + std::to_string(tokens) + "_chunk" + std::to_string(chunk) + "_V" + std::to_string(vocabulary) +
                   (bias ? "_bias" : "") + (c.ignored ? "_ignored" : "") +
                   (c.options.normalizer > 0 ? "_normalizer" : "");
          cases.push_back(c);
        }
      }
    }
  }
  return cases;
}

TEST(LinearCrossEntropy, Float64EqualsTheReferenceInValueAndEveryGradient) {
  uint64_t seed = 1;
  for (const Case& c : float64_cases()) {
    const Inputs inputs = make_inputs(c, at::kDouble, seed++);
    const Evaluation chunked = evaluate(linear_cross_entropy, inputs, c.options);
    const Evaluation reference = evaluate(linear_cross_entropy_reference, inputs, c.options);
    EXPECT_EQ(chunked.loss.scalar_type(), at::kDouble) << c.name;
    expect_close(c.name, "loss", chunked.loss, reference.loss, 1e-12);
    for (const auto& [name, gradient] : reference.gradients) {
      ASSERT_TRUE(chunked.gradients.at(name).defined()) << c.name << ": no gradient for " << name;
      EXPECT_EQ(chunked.gradients.at(name).scalar_type(), at::kDouble) << c.name << " " << name;
      expect_close(c.name, "d_" + name, chunked.gradients.at(name), gradient, 1e-12);
    }
  }
}

// float32: the chunked form performs the same products as the reference and differs only in the
// order of its sums (the loss and d_weight/d_bias summed chunk by chunk, the logsumexp and the
// softmax over the same V entries). The longest sum in any output runs over K = max(N, V, D)
// terms; rounding errors of a sum of K terms grow like sqrt(K) · eps (eps = 2^-24 ≈ 6e-8 for
// round-to-nearest float32), both forms carry such errors, and the largest entries that define
// the relative error are sums without heavy cancellation. So both are held to 8 sqrt(K) eps of
// the float64 result, and the chunked one also to that distance from the float32 reference
// (K = 1025: 1.5e-5).
TEST(LinearCrossEntropy, Float32WithinItsRoundingOfTheReference) {
  uint64_t seed = 100;
  for (const Case& base : float64_cases()) {
    if (base.tokens < 63) continue;
    Case c = base;
    c.name = "f32_" + c.name;
    const Inputs inputs = make_inputs(c, at::kFloat, seed++);
    const Inputs exact{to_double(inputs.hidden), to_double(inputs.weight),
                       inputs.bias.defined() ? to_double(inputs.bias) : at::Tensor(), inputs.labels};
    const double tolerance =
        8 * std::sqrt(double(std::max({c.tokens, c.vocabulary, c.dim}))) * std::ldexp(1.0, -24);
    const Evaluation chunked = evaluate(linear_cross_entropy, inputs, c.options);
    const Evaluation reference = evaluate(linear_cross_entropy_reference, inputs, c.options);
    const Evaluation truth = evaluate(linear_cross_entropy_reference, exact, c.options);
    EXPECT_EQ(chunked.loss.scalar_type(), at::kFloat) << c.name;
    expect_close(c.name, "loss vs float64", chunked.loss, truth.loss, tolerance);
    expect_close(c.name, "loss vs float32 reference", chunked.loss, reference.loss, tolerance);
    for (const auto& [name, gradient] : truth.gradients) {
      EXPECT_EQ(chunked.gradients.at(name).scalar_type(), at::kFloat) << c.name << " " << name;
      expect_close(c.name, "d_" + name + " vs float64", chunked.gradients.at(name), gradient, tolerance);
      expect_close(c.name, "d_" + name + " vs float32 reference", chunked.gradients.at(name),
                   reference.gradients.at(name), tolerance);
    }
  }
}

// bf16 inputs with fp32 logits (the training setting): the loss and every gradient are at most
// twice as far (relative RMS) from the float64 result as the plain form computed wholly in bf16.
TEST(LinearCrossEntropy, BFloat16WithinTwiceTheErrorOfTheReferenceInBFloat16) {
  uint64_t seed = 200;
  for (const Case& base : float64_cases()) {
    if (base.tokens < 63 || base.options.chunk_tokens == 4096) continue;
    Case c = base;
    c.name = "bf16_" + c.name;
    const Inputs inputs = make_inputs(c, at::kBFloat16, seed++);
    const Inputs exact{to_double(inputs.hidden), to_double(inputs.weight),
                       inputs.bias.defined() ? to_double(inputs.bias) : at::Tensor(), inputs.labels};
    LinearCrossEntropyOptions in_bf16 = c.options;
    in_bf16.logits_in_fp32 = false;
    const Evaluation chunked = evaluate(linear_cross_entropy, inputs, c.options);
    const Evaluation reference_bf16 = evaluate(linear_cross_entropy_reference, inputs, in_bf16);
    const Evaluation truth = evaluate(linear_cross_entropy_reference, exact, c.options);
    EXPECT_EQ(chunked.loss.scalar_type(), at::kFloat) << c.name;
    const double loss_error = std::fabs(chunked.loss.item<double>() - truth.loss.item<double>());
    const double loss_reference_error = std::fabs(reference_bf16.loss.item<double>() - truth.loss.item<double>());
    EXPECT_LE(loss_error, 2 * loss_reference_error + 1e-6 * std::fabs(truth.loss.item<double>()))
        << c.name << ": loss error " << loss_error << ", bf16 reference's " << loss_reference_error;
    for (const auto& [name, gradient] : truth.gradients) {
      const at::Tensor& actual = chunked.gradients.at(name);
      EXPECT_EQ(actual.scalar_type(), at::kBFloat16) << c.name << " " << name;
      ASSERT_TRUE(actual.isfinite().all().item<bool>()) << c.name << ": d_" << name << " has NaN or Inf";
      const double error = relative_rms_error(actual, gradient);
      const double reference_error = relative_rms_error(reference_bf16.gradients.at(name), gradient);
      EXPECT_LE(error, 2 * reference_error)
          << c.name << ": d_" << name << " relative RMS error " << error << ", bf16 reference's " << reference_error;
    }
  }
}

TEST(LinearCrossEntropy, AllIgnoredLabelsGiveZeroLossAndZeroGradients) {
  for (at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16}) {
    Case c{"all_ignored", 70, 8, 37, true, false, {}};
    c.options.chunk_tokens = 16;
    Inputs inputs = make_inputs(c, dtype, 7);
    inputs.labels.fill_(c.options.ignore_index);
    for (bool chunked : {true, false}) {
      const Evaluation result =
          evaluate(chunked ? linear_cross_entropy : linear_cross_entropy_reference, inputs, c.options);
      const std::string name = std::string(chunked ? "chunked " : "reference ") + c10::toString(dtype);
      EXPECT_EQ(result.loss.item<double>(), 0.0) << name;
      for (const auto& [tensor_name, gradient] : result.gradients) {
        ASSERT_TRUE(gradient.defined()) << name << " " << tensor_name;
        EXPECT_TRUE(gradient.isfinite().all().item<bool>()) << name << " " << tensor_name;
        EXPECT_EQ(gradient.abs().max().item<double>(), 0.0) << name << " " << tensor_name;
      }
    }
  }
}

TEST(LinearCrossEntropy, FormsOnlyTheGradientsAsked) {
  Case c{"some_grads", 40, 8, 37, true, true, {}};
  c.options.chunk_tokens = 16;
  const Inputs inputs = make_inputs(c, at::kDouble, 9);
  const at::Tensor hidden = inputs.hidden.clone().set_requires_grad(true);
  at::Tensor loss = linear_cross_entropy(hidden, inputs.weight, inputs.bias, inputs.labels, c.options);
  loss.backward();
  ASSERT_TRUE(hidden.grad().defined());
  const at::Tensor expected_hidden = hidden.grad().clone();
  hidden.mutable_grad() = at::Tensor();
  linear_cross_entropy_reference(hidden, inputs.weight, inputs.bias, inputs.labels, c.options).backward();
  expect_close(c.name, "d_hidden", expected_hidden, hidden.grad(), 1e-12);

  // Without grad mode nothing is recorded and the value is unchanged.
  const at::Tensor weight = inputs.weight.clone().set_requires_grad(true);
  at::Tensor no_grad_loss;
  {
    const at::NoGradGuard no_grad;
    no_grad_loss = linear_cross_entropy(hidden, weight, inputs.bias, inputs.labels, c.options);
  }
  EXPECT_FALSE(no_grad_loss.requires_grad());
  EXPECT_EQ(no_grad_loss.item<double>(), loss.item<double>());
}

// The head weight tied to the embedding: its gradient from the loss adds to the one from the
// embedding lookup.
TEST(LinearCrossEntropy, TiedWeightAccumulatesBothGradients) {
  Case c{"tied", 50, 8, 37, false, false, {}};
  c.options.chunk_tokens = 16;
  const Inputs inputs = make_inputs(c, at::kDouble, 11);
  at::Tensor grads[2];
  for (int chunked = 0; chunked < 2; ++chunked) {
    const at::Tensor weight = inputs.weight.clone().set_requires_grad(true);
    const at::Tensor hidden = at::embedding(weight, inputs.labels.roll(1)) * 0.5 + inputs.hidden;  // [N, D]
    const LossFunction loss = chunked ? linear_cross_entropy : linear_cross_entropy_reference;
    loss(hidden, weight, at::Tensor(), inputs.labels, c.options).backward();
    grads[chunked] = weight.grad();
  }
  expect_close(c.name, "d_weight", grads[1], grads[0], 1e-12);
}

TEST(LinearCrossEntropy, ErrorsNameWhatIsWrong) {
  Case c{"errors", 10, 8, 37, true, false, {}};
  const Inputs in = make_inputs(c, at::kFloat, 13);
  at::Tensor labels = in.labels.clone();
  labels[4] = 37;
  std::string message = error_of([&] { linear_cross_entropy(in.hidden, in.weight, in.bias, labels); });
  EXPECT_NE(message.find("label 37 at token 4 is outside the vocabulary [0, 37)"), std::string::npos) << message;
  labels[4] = -3;
  message = error_of([&] { linear_cross_entropy_reference(in.hidden, in.weight, in.bias, labels); });
  EXPECT_NE(message.find("label -3 at token 4"), std::string::npos) << message;

  message = error_of([&] { linear_cross_entropy(in.hidden, in.weight.narrow(1, 0, 7), in.bias, in.labels); });
  EXPECT_NE(message.find("weight must be [V, D] with D = 8"), std::string::npos) << message;
  message = error_of([&] { linear_cross_entropy(in.hidden, in.weight, in.bias.narrow(0, 0, 30), in.labels); });
  EXPECT_NE(message.find("bias must be [V] with V = 37"), std::string::npos) << message;
  message = error_of([&] { linear_cross_entropy(in.hidden, in.weight, in.bias, in.labels.narrow(0, 0, 9)); });
  EXPECT_NE(message.find("labels must be [N] with N = 10"), std::string::npos) << message;
  message = error_of([&] { linear_cross_entropy(in.hidden, in.weight, in.bias, in.labels.to(at::kInt)); });
  EXPECT_NE(message.find("labels must be int64"), std::string::npos) << message;
  message = error_of([&] { linear_cross_entropy(in.hidden.unsqueeze(0), in.weight, in.bias, in.labels); });
  EXPECT_NE(message.find("hidden must be [N, D]"), std::string::npos) << message;
  LinearCrossEntropyOptions options;
  options.chunk_tokens = 0;
  message = error_of([&] { linear_cross_entropy(in.hidden, in.weight, in.bias, in.labels, options); });
  EXPECT_NE(message.find("chunk_tokens must be >= 1"), std::string::npos) << message;
  options = {};
  options.normalizer = -1;
  message = error_of([&] { linear_cross_entropy(in.hidden, in.weight, in.bias, in.labels, options); });
  EXPECT_NE(message.find("normalizer must be a finite number >= 0"), std::string::npos) << message;
}

}  // namespace
