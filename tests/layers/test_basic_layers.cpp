// Linear, Embedding, RMSNorm, SwiGLU MLP and ShortConvolution against hand-written float64
// loops; short convolution decode history and varlen against the full / separate forward; what
// the SwiGLU MLP's training graph keeps (counted by a wrapper of ATen's CPU allocator).
#include "layers/layer_norm.h"
#include "layers/linear.h"
#include "layers/rms_norm.h"
#include "layers/short_convolution.h"
#include "layers/swiglu_mlp.h"
#include "core/error.h"
#include "ops/fused/inference_epilogues.h"
#include "support/cpu_allocation_counter.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace {

using lintime::testing::expect_close;
using lintime::testing::make_generator;

// fp32 results against fp64 loops: a few ulps per reduction over <= 64 terms.
constexpr double kFloat32Tolerance = 1e-5;

double silu(double x) { return x / (1.0 + std::exp(-x)); }

TEST(Linear, ShapeNamesAndInit) {
  auto generator = make_generator(1);
  lintime::layers::Linear linear(64, 48, 0.02, generator);
  auto names = linear.named_parameters();
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0].first, "weight");
  EXPECT_EQ(linear.weight.sizes(), (std::vector<int64_t>{48, 64}));
  EXPECT_NEAR(linear.weight.std().item<double>(), 0.02, 0.002);
  auto x = at::randn({2, 3, 64}, at::kFloat);
  expect_close("Linear", "y", linear.forward(x), at::matmul(x, linear.weight.t()), kFloat32Tolerance);

  auto generator_again = make_generator(1);
  lintime::layers::Linear same(64, 48, 0.02, generator_again);
  EXPECT_TRUE(at::equal(linear.weight, same.weight));
  lintime::layers::Linear with_bias(4, 3, 0.02, generator, /*bias=*/true);
  EXPECT_EQ(with_bias.named_parameters().size(), 2u);
}

// A module owning three maps that place_adjacent keeps back to back (as the attention layers do).
struct ThreeMaps : lintime::layers::Module {
  explicit ThreeMaps(at::Generator& generator)
      : a(8, 5, 0.5, generator), b(8, 3, 0.5, generator), c(8, 4, 0.5, generator) {
    register_module("a", a);
    register_module("b", b);
    register_module("c", c);
    lintime::layers::place_adjacent({&a, &b, &c});
  }
  void parameters_moved() override { lintime::layers::place_adjacent({&a, &b, &c}); }
  lintime::layers::Linear a, b, c;
};

TEST(Linear, AdjacentMapsAreOneProductWhenInferringAndUnderAutograd) {
  using lintime::layers::adjacent_weights;
  using lintime::layers::linear_maps;
  auto generator = make_generator(3);
  auto drawn_generator = make_generator(3);
  lintime::layers::Linear drawn_a(8, 5, 0.5, drawn_generator);  // place_adjacent keeps the drawn values
  ThreeMaps maps(generator);
  EXPECT_TRUE(at::equal(maps.a.weight, drawn_a.weight));
  const std::vector<const lintime::layers::Linear*> all = {&maps.a, &maps.b, &maps.c};
  ASSERT_TRUE(adjacent_weights(all).defined());
  EXPECT_EQ(adjacent_weights(all).sizes(), (std::vector<int64_t>{12, 8}));
  EXPECT_FALSE(adjacent_weights({&maps.a, &maps.c}).defined()) << "a and c are not back to back";

  const auto x = at::randn({2, 3, 8}, at::kDouble);
  maps.to(c10::Device(c10::kCPU), at::kDouble);  // replaces every weight; the module re-places them
  ASSERT_TRUE(adjacent_weights(all).defined());
  {
    c10::NoGradGuard no_grad;
    const auto joined = linear_maps(x, all);
    ASSERT_EQ(joined.size(), 3u);
    expect_close("linear_maps", "a", joined[0], at::matmul(x, maps.a.weight.t()), 1e-12);
    expect_close("linear_maps", "b", joined[1], at::matmul(x, maps.b.weight.t()), 1e-12);
    expect_close("linear_maps", "c", joined[2], at::matmul(x, maps.c.weight.t()), 1e-12);
    maps.b.weight.add_(1.0);  // an optimiser's in-place step reaches the joined product
    expect_close("linear_maps", "b after update", linear_maps(x, all)[1], at::matmul(x, maps.b.weight.t()), 1e-12);
  }
  // Under autograd the joined product's function gives each weight its own gradient and x the
  // sum over the maps (accumulated in its GEMMs): those of the separate products, to 1e-12.
  maps.set_requires_grad(true);
  const auto x_leaf = x.clone().requires_grad_(true);
  const auto outputs = linear_maps(x_leaf, all);
  ASSERT_TRUE(outputs[0].grad_fn() != nullptr && outputs[0].grad_fn() == outputs[2].grad_fn())
      << "one function for the three products";
  const auto g0 = at::randn({2, 3, 5}, at::kDouble), g1 = at::randn({2, 3, 3}, at::kDouble),
             g2 = at::randn({2, 3, 4}, at::kDouble);
  ((outputs[0] * g0).sum() + (outputs[1] * g1).sum() + (outputs[2] * g2).sum()).backward();
  const auto x_rows = x.reshape({6, 8});
  expect_close("linear_maps", "grad a", maps.a.weight.grad(), at::mm(g0.reshape({6, 5}).t(), x_rows), 1e-12);
  expect_close("linear_maps", "grad b", maps.b.weight.grad(), at::mm(g1.reshape({6, 3}).t(), x_rows), 1e-12);
  expect_close("linear_maps", "grad c", maps.c.weight.grad(), at::mm(g2.reshape({6, 4}).t(), x_rows), 1e-12);
  expect_close("linear_maps", "grad x", x_leaf.grad(),
               at::matmul(g0, maps.a.weight.detach()) + at::matmul(g1, maps.b.weight.detach()) +
                   at::matmul(g2, maps.c.weight.detach()),
               1e-12);
  // A map with a bias is never joined.
  lintime::layers::Linear with_bias(8, 2, 0.5, generator, /*bias=*/true);
  lintime::layers::place_adjacent({&with_bias, &maps.a});
  EXPECT_FALSE(adjacent_weights({&with_bias, &maps.a}).defined());
}

TEST(Embedding, LooksUpRows) {
  auto generator = make_generator(2);
  lintime::layers::Embedding embedding(10, 6, 0.02, generator);
  auto ids = at::tensor({3, 0, 9}, at::kLong).view({1, 3});
  auto y = embedding.forward(ids);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 3, 6}));
  EXPECT_TRUE(at::equal(y[0][2], embedding.weight[9]));
}

// silu_forward in training keeps its input alone: the gradients of x and the weight equal those
// of forward(at::silu(x)) bit for bit (fp32, bf16; with and without a weight), and the graph
// holds nothing beyond the output where the unfused form keeps silu's output too.
TEST(RMSNorm, SiluForwardKeepsItsInputAloneWithTheSameGradients) {
  using lintime::testing::CpuAllocationCounter;
  auto generator = make_generator(4);
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool affine : {true, false}) {
      const std::string name = std::string(c10::toString(dtype)) + (affine ? " weight" : " no weight");
      lintime::layers::RMSNorm norm(96, 1e-5, affine);
      if (affine) {
        norm.weight.detach().normal_(1.0, 0.5, generator);
        norm.weight = norm.weight.detach().to(dtype).requires_grad_(true);
      }
      const auto x = at::empty({3, 50, 96}, at::kFloat).normal_(0.0, 2.0, generator).to(dtype).requires_grad_(true);
      const auto dy = at::empty({3, 50, 96}, at::kFloat).normal_(0.0, 1.0, generator).to(dtype);
      int64_t held_plain = 0, held = 0;
      at::Tensor y_plain, y;
      {
        CpuAllocationCounter counter;
        y_plain = norm.forward(at::silu(x));
        held_plain = counter.live_bytes() - static_cast<int64_t>(y_plain.nbytes());
      }
      {
        CpuAllocationCounter counter;
        y = norm.silu_forward(x);
        held = counter.live_bytes() - static_cast<int64_t>(y.nbytes());
      }
      EXPECT_TRUE(at::equal(y, y_plain)) << name;
      EXPECT_EQ(held, 0) << name;
      EXPECT_GE(held_plain, static_cast<int64_t>(x.nbytes())) << name;
      std::vector<at::Tensor> inputs = {x};
      if (affine) inputs.push_back(norm.weight);
      const auto grads_plain = torch::autograd::grad({y_plain}, inputs, {dy});
      const auto grads = torch::autograd::grad({y}, inputs, {dy});
      for (size_t i = 0; i < grads.size(); ++i) EXPECT_TRUE(at::equal(grads[i], grads_plain[i])) << name << " input " << i;
    }
  }
}

TEST(RMSNorm, MatchesFloat64Formula) {
  auto generator = make_generator(3);
  const int64_t rows = 7, dim = 24;
  const double eps = 1e-6;
  lintime::layers::RMSNorm norm(dim, eps);
  norm.weight.normal_(1.0, 0.5, generator);
  auto x = at::empty({rows, dim}, at::kFloat).normal_(0.0, 3.0, generator);
  // y = x / sqrt(mean(x²) + eps) · w, in float64 loops over the values of `input` as given.
  auto formula = [&](const at::Tensor& input) {
    auto xd = input.to(at::kDouble).contiguous();
    auto expected = at::empty({rows, dim}, at::kDouble);
    auto xa = xd.accessor<double, 2>();
    auto wa = norm.weight.accessor<float, 1>();
    auto ea = expected.accessor<double, 2>();
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t i = 0; i < dim; ++i) sum += xa[r][i] * xa[r][i];
      const double inverse = 1.0 / std::sqrt(sum / dim + eps);
      for (int64_t i = 0; i < dim; ++i) ea[r][i] = xa[r][i] * inverse * wa[i];
    }
    return expected;
  };
  const auto expected = formula(x);
  auto y = norm.forward(x);
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  expect_close("RMSNorm fp32", "y", y, expected, kFloat32Tolerance);
  // float64 differs from the loop only in summation order.
  expect_close("RMSNorm fp64", "y", norm.forward(x.to(at::kDouble)), expected, 1e-14);

  lintime::layers::RMSNorm plain(dim, eps, /*elementwise_affine=*/false);
  EXPECT_TRUE(plain.named_parameters().empty());
  expect_close("RMSNorm no weight", "y", plain.forward(x) * norm.weight, expected, kFloat32Tolerance);
  // bf16: computed in float32 and rounded once to bf16 (half a unit, 2^-9 relative, per element);
  // the bound is one unit, 2^-8, of the largest output.
  const auto x_bf16 = x.to(at::kBFloat16);
  auto y_bf16 = norm.forward(x_bf16);
  EXPECT_EQ(y_bf16.scalar_type(), at::kBFloat16);
  expect_close("RMSNorm bf16", "y", y_bf16, formula(x_bf16), std::ldexp(1.0, -8));
}

// LayerNorm's output and all three gradients against the float64 formulas, written out per row:
//   x̂ = (x − μ)·r, r = 1/sqrt(var + eps);  y = x̂·w + b;  for L = Σ y·u:
//   dL/db = Σ_rows u,  dL/dw = Σ_rows u·x̂,  dL/dx = r·(u·w − mean(u·w) − x̂·mean(u·w·x̂)).
TEST(LayerNorm, OutputAndGradientsMatchFloat64Formulas) {
  auto generator = make_generator(5);
  const int64_t rows = 6, dim = 20;
  const double eps = 1e-5;
  lintime::layers::LayerNorm norm(dim, eps);
  norm.weight.normal_(1.0, 0.5, generator);
  norm.bias.normal_(0.0, 0.5, generator);
  const auto x = at::empty({2, rows / 2, dim}, at::kDouble).normal_(0.5, 2.0, generator);
  const auto u = at::empty({2, rows / 2, dim}, at::kDouble).normal_(0.0, 1.0, generator);
  auto expected_y = at::empty({rows, dim}, at::kDouble), expected_dx = at::empty({rows, dim}, at::kDouble);
  auto expected_dw = at::zeros({dim}, at::kDouble), expected_db = at::zeros({dim}, at::kDouble);
  {
    const at::Tensor x2 = x.reshape({rows, dim}), u2 = u.reshape({rows, dim});
    const auto xa = x2.accessor<double, 2>(), ua = u2.accessor<double, 2>();
    const auto w = norm.weight.to(at::kDouble), b = norm.bias.to(at::kDouble);
    const auto wa = w.accessor<double, 1>(), ba = b.accessor<double, 1>();
    auto ya = expected_y.accessor<double, 2>(), dxa = expected_dx.accessor<double, 2>();
    auto dwa = expected_dw.accessor<double, 1>(), dba = expected_db.accessor<double, 1>();
    for (int64_t i = 0; i < rows; ++i) {
      double mean = 0, variance = 0;
      for (int64_t j = 0; j < dim; ++j) mean += xa[i][j] / dim;
      for (int64_t j = 0; j < dim; ++j) variance += (xa[i][j] - mean) * (xa[i][j] - mean) / dim;
      const double r = 1.0 / std::sqrt(variance + eps);
      double mean_uw = 0, mean_uwx = 0;
      for (int64_t j = 0; j < dim; ++j) {
        const double normalized = (xa[i][j] - mean) * r;
        ya[i][j] = normalized * wa[j] + ba[j];
        dwa[j] += ua[i][j] * normalized;
        dba[j] += ua[i][j];
        mean_uw += ua[i][j] * wa[j] / dim;
        mean_uwx += ua[i][j] * wa[j] * normalized / dim;
      }
      for (int64_t j = 0; j < dim; ++j)
        dxa[i][j] = r * (ua[i][j] * wa[j] - mean_uw - (xa[i][j] - mean) * r * mean_uwx);
    }
  }
  for (const auto& [dtype, tolerance] : {std::pair{at::kDouble, 1e-12}, std::pair{at::kFloat, kFloat32Tolerance}}) {
    lintime::layers::LayerNorm layer(dim, eps);
    layer.to(at::kCPU, dtype);
    {
      c10::NoGradGuard no_grad;
      layer.weight.copy_(norm.weight);
      layer.bias.copy_(norm.bias);
    }
    layer.set_requires_grad(true);
    const auto input = x.to(dtype).detach().requires_grad_(true);
    const auto y = layer.forward(input);
    EXPECT_EQ(y.scalar_type(), dtype);
    (y * u.to(dtype)).sum().backward();
    const std::string name = std::string("LayerNorm ") + c10::toString(dtype);
    expect_close(name, "y", y.reshape({rows, dim}), expected_y, tolerance);
    expect_close(name, "dx", input.grad().reshape({rows, dim}), expected_dx, tolerance);
    expect_close(name, "dw", layer.weight.grad(), expected_dw, tolerance);
    expect_close(name, "db", layer.bias.grad(), expected_db, tolerance);
  }
}

TEST(SwiGluMlp, MatchesFloat64FormulaAndSizeRule) {
  EXPECT_EQ(lintime::layers::SwiGluMlp::intermediate_size_for(2048, 4.0), 5632);
  EXPECT_EQ(lintime::layers::SwiGluMlp::intermediate_size_for(1024, 4.0), 2816);
  EXPECT_EQ(lintime::layers::SwiGluMlp::intermediate_size_for(4096, 4.0, 14336), 14336);

  auto generator = make_generator(4);
  const int64_t d = 8, hidden = 12, rows = 5;
  lintime::layers::SwiGluMlp mlp(d, hidden, 0.3, generator);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : mlp.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"gate_proj.weight", "up_proj.weight", "down_proj.weight"}));

  auto x = at::empty({rows, d}, at::kDouble).normal_(0.0, 1.0, generator);
  auto gate = mlp.gate_proj.weight.to(at::kDouble);
  auto up = mlp.up_proj.weight.to(at::kDouble);
  auto down = mlp.down_proj.weight.to(at::kDouble);
  auto xa = x.accessor<double, 2>();
  auto ga = gate.accessor<double, 2>(), ua = up.accessor<double, 2>(), da = down.accessor<double, 2>();
  auto expected = at::zeros({rows, d}, at::kDouble);
  auto ea = expected.accessor<double, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> inner(hidden);
    for (int64_t j = 0; j < hidden; ++j) {
      double a = 0, b = 0;
      for (int64_t i = 0; i < d; ++i) {
        a += ga[j][i] * xa[r][i];
        b += ua[j][i] * xa[r][i];
      }
      inner[j] = silu(a) * b;
    }
    for (int64_t o = 0; o < d; ++o) {
      for (int64_t j = 0; j < hidden; ++j) ea[r][o] += da[o][j] * inner[j];
    }
  }
  expect_close("SwiGLU fp32", "y", mlp.forward(x.to(at::kFloat)), expected, kFloat32Tolerance);
  mlp.to(at::kCPU, at::kDouble);
  expect_close("SwiGLU fp64", "y", mlp.forward(x), expected, 1e-12);
}

// The MLP with the product through ops::swiglu_product_reference's ATen graph (how training
// ran before the product had its own backward), for comparison.
at::Tensor swiglu_mlp_through_reference(const lintime::layers::SwiGluMlp& mlp, const at::Tensor& x) {
  return mlp.down_proj.forward(
      lintime::ops::swiglu_product_reference(mlp.gate_proj.forward(x), mlp.up_proj.forward(x)));
}

// In training the graph keeps gate and up (one joined product) in the layer's dtype, not their
// product (down_proj's input, formed again in the backward): 2 × 2 bytes per [rows, I] entry in
// bf16 where the reference's graph kept silu's input and output and up in fp32 beside the
// product (3 × 4 + 2). Outputs are the same bits, gradients the same to bf16's rounding (and to
// 1e-12 in fp64).
TEST(SwiGluMlp, TrainingGraphKeepsGateAndUpInTheLayerDtype) {
  using lintime::testing::CpuAllocationCounter;
  using lintime::testing::leaf_gradients;
  auto generator = make_generator(6);
  const int64_t d = 32, hidden = 96, rows = 50;
  lintime::layers::SwiGluMlp mlp(d, hidden, 0.2, generator);
  mlp.set_requires_grad(true);
  for (const auto dtype : {at::kDouble, at::kBFloat16}) {
    const std::string name = c10::toString(dtype);
    mlp.to(at::kCPU, dtype);
    const auto x = at::empty({rows, d}, at::kDouble).normal_(0.0, 1.0, generator).to(dtype).requires_grad_(true);
    const auto dout = at::empty({rows, d}, at::kDouble).normal_(0.0, 1.0, generator).to(dtype);
    std::map<std::string, at::Tensor> leaves = {{"x", x}};
    for (const auto& [parameter, tensor] : mlp.named_parameters()) leaves[parameter] = tensor;

    at::Tensor out_reference;
    int64_t reference_held = 0;
    {
      CpuAllocationCounter counter;
      out_reference = swiglu_mlp_through_reference(mlp, x);
      reference_held = counter.live_bytes() - static_cast<int64_t>(out_reference.nbytes());
    }
    const auto grads_reference = leaf_gradients(leaves, {out_reference}, {dout});
    at::Tensor out;
    int64_t held = 0;
    {
      CpuAllocationCounter counter;
      out = mlp.forward(x);
      held = counter.live_bytes() - static_cast<int64_t>(out.nbytes());
    }
    std::printf("SwiGluMlp %-8s rows %ld, I %ld: the graph holds %ld bytes (through the reference: %ld)\n",
                name.c_str(), static_cast<long>(rows), static_cast<long>(hidden), static_cast<long>(held),
                static_cast<long>(reference_held));
    const int64_t entries = rows * hidden, element = static_cast<int64_t>(c10::elementSize(dtype));
    EXPECT_EQ(held, 2 * entries * element) << name;
    if (dtype == at::kBFloat16) EXPECT_EQ(reference_held, 3 * entries * 4 + entries * 2) << name;
    EXPECT_TRUE(at::equal(out, out_reference)) << name;
    const auto grads = leaf_gradients(leaves, {out}, {dout});
    for (const auto& [leaf, grad] : grads) {
      expect_close("SwiGluMlp " + name, "d " + leaf, grad, grads_reference.at(leaf),
                   dtype == at::kDouble ? 1e-12 : 2 * std::ldexp(1.0, -8));
    }
  }
}

// y[b, t, c] = silu(Σ_j w[c, j] x[b, t - (W-1) + j, c]) with zeros before the start.
at::Tensor conv_reference(const at::Tensor& x, const at::Tensor& weight, bool activation) {
  auto xd = x.to(at::kDouble);
  auto wd = weight.to(at::kDouble).squeeze(1);
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2), width = wd.size(1);
  auto y = at::zeros({batch, length, channels}, at::kDouble);
  auto xa = xd.accessor<double, 3>();
  auto wa = wd.accessor<double, 2>();
  auto ya = y.accessor<double, 3>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < length; ++t) {
      for (int64_t c = 0; c < channels; ++c) {
        double sum = 0;
        for (int64_t j = 0; j < width; ++j) {
          const int64_t source = t - (width - 1) + j;
          if (source >= 0) sum += wa[c][j] * xa[b][source][c];
        }
        ya[b][t][c] = activation ? silu(sum) : sum;
      }
    }
  }
  return y;
}

TEST(ShortConvolution, MatchesLoopAndWeightLayout) {
  auto generator = make_generator(5);
  lintime::layers::ShortConvolution conv(6, 4, 0.5, generator);
  EXPECT_EQ(conv.weight.sizes(), (std::vector<int64_t>{6, 1, 4}));
  auto x = at::empty({2, 9, 6}, at::kFloat).normal_(0.0, 1.0, generator);
  expect_close("conv silu", "y", conv.forward(x), conv_reference(x, conv.weight, true), kFloat32Tolerance);
  lintime::layers::ShortConvolution linear_conv(6, 3, 0.5, generator, false, "");
  expect_close("conv no activation", "y", linear_conv.forward(x), conv_reference(x, linear_conv.weight, false),
               kFloat32Tolerance);
  EXPECT_THROW(lintime::layers::ShortConvolution(6, 4, 0.5, generator, false, "gelu"), lintime::Error);
}

TEST(ShortConvolution, DecodeHistoryEqualsFullForward) {
  auto generator = make_generator(6);
  lintime::layers::ShortConvolution conv(5, 4, 0.5, generator);
  auto x = at::empty({3, 11, 5}, at::kDouble).normal_(0.0, 1.0, generator);
  conv.to(at::kCPU, at::kDouble);
  auto full = conv.forward(x);
  auto history = at::zeros({3, 3, 5}, at::kDouble);
  std::vector<at::Tensor> pieces;
  int64_t start = 0;
  for (int64_t length : {2, 1, 1, 4, 1, 2}) {  // pieces shorter and longer than W - 1
    pieces.push_back(conv.forward(x.narrow(1, start, length), &history));
    start += length;
  }
  expect_close("conv pieces", "y", at::cat(pieces, 1), full, 1e-13);
  expect_close("conv pieces", "history", history, x.narrow(1, 8, 3), 0.0);
}

TEST(ShortConvolution, VarlenEqualsSeparateSequences) {
  auto generator = make_generator(7);
  lintime::layers::ShortConvolution conv(4, 4, 0.5, generator);
  auto x = at::empty({1, 10, 4}, at::kFloat).normal_(0.0, 1.0, generator);
  auto cu_seqlens = at::tensor({0, 2, 7, 10}, at::kLong);
  auto packed = conv.forward(x, nullptr, cu_seqlens);
  std::vector<at::Tensor> separate;
  for (auto [begin, end] : {std::pair{0, 2}, std::pair{2, 7}, std::pair{7, 10}}) {
    separate.push_back(conv.forward(x.narrow(1, begin, end - begin)));
  }
  expect_close("conv varlen", "y", packed, at::cat(separate, 1), kFloat32Tolerance);
}

}  // namespace

namespace {

TEST(WeightsToBeLoaded, AllocatesInPlaceWithoutDrawing) {
  at::Generator generator = make_generator(5);
  {
    lintime::layers::WeightsToBeLoaded scope(at::TensorOptions().dtype(at::kBFloat16));
    lintime::layers::SwiGluMlp mlp(8, 12, 0.02, generator, /*bias=*/true);
    lintime::layers::RMSNorm norm(8);
    lintime::layers::ShortConvolution conv(8, 4, 0.02, generator, /*bias=*/true, "silu");
    for (const auto* module : std::vector<const lintime::layers::Module*>{&mlp, &norm, &conv}) {
      for (const auto& [name, parameter] : module->named_parameters()) {
        EXPECT_EQ(parameter.scalar_type(), at::kBFloat16) << name;
      }
    }
    EXPECT_EQ(mlp.gate_proj.weight.sizes(), (std::vector<int64_t>{12, 8}));
  }
  // Nothing was drawn: the generator is where a fresh one starts, and outside the scope layers
  // draw fp32 on the CPU again.
  at::Generator fresh = make_generator(5);
  lintime::layers::Linear after(3, 4, 1.0, generator);
  lintime::layers::Linear expected(3, 4, 1.0, fresh);
  EXPECT_EQ(after.weight.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(after.weight, expected.weight));
}

}  // namespace
