// Implementation of the shared test helpers.
#include "support/test_support.h"

#include "core/error.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdlib.h>
#include <filesystem>

namespace lintime::testing {

std::map<std::string, at::Tensor> leaf_gradients(const std::map<std::string, at::Tensor>& leaves,
                                                 const std::vector<at::Tensor>& roots,
                                                 const std::vector<at::Tensor>& root_grads) {
  std::vector<std::string> names;
  std::vector<at::Tensor> inputs;
  for (const auto& [name, tensor] : leaves) {
    if (!tensor.defined()) continue;
    names.push_back(name);
    inputs.push_back(tensor);
  }
  auto grads = torch::autograd::grad(roots, inputs, root_grads, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
  std::map<std::string, at::Tensor> by_name;
  for (size_t i = 0; i < names.size(); ++i) by_name[names[i]] = grads[i];
  return by_name;
}

void poison_nan(at::Tensor& tensor) { tensor.fill_(std::numeric_limits<double>::quiet_NaN()); }

double relative_max_error(const at::Tensor& actual, const at::Tensor& expected) {
  auto a = actual.detach().to(at::kCPU, at::kDouble);
  auto b = expected.detach().to(at::kCPU, at::kDouble);
  if (b.numel() == 0) return 0.0;
  double denominator = std::max(b.abs().max().item<double>(), 1e-300);
  return (a - b).abs().max().item<double>() / denominator;
}

double relative_rms_error(const at::Tensor& actual, const at::Tensor& expected) {
  auto a = actual.detach().to(at::kCPU, at::kDouble);
  auto b = expected.detach().to(at::kCPU, at::kDouble);
  if (b.numel() == 0) return 0.0;
  double denominator = std::max(b.norm().item<double>(), 1e-300);
  return (a - b).norm().item<double>() / denominator;
}

double unit_roundoff(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return std::ldexp(1.0, -8);
    case at::kHalf: return std::ldexp(1.0, -11);
    case at::kFloat: return std::ldexp(1.0, -24);
    default: return std::ldexp(1.0, -53);
  }
}

void expect_gradients_match(const std::string& case_name, const std::vector<std::string>& names,
                            const std::vector<at::Tensor>& actual, const std::vector<at::Tensor>& reference,
                            const std::vector<at::Tensor>& in_dtype, const at::Tensor& grad_output, double floor) {
  const double output_norm = grad_output.detach().to(at::kCPU, at::kDouble).norm().item<double>();
  std::printf("%-32s", case_name.c_str());
  for (size_t i = 0; i < names.size(); ++i) {
    const at::Tensor a = actual[i].detach().to(at::kCPU, at::kDouble);
    const at::Tensor b = reference[i].detach().to(at::kCPU, at::kDouble);
    if (b.norm().item<double>() < 1e-4 * output_norm) {
      const double size = (a - b).norm().item<double>() / output_norm;
      std::printf("  %s error %.2e of |do| (the gradient is below the dtype's resolution)", names[i].c_str(), size);
      EXPECT_LE(size, floor) << case_name << " " << names[i];
      continue;
    }
    const double error = relative_rms_error(a, b);
    const double reference_error = relative_rms_error(in_dtype[i], b);
    std::printf("  %s %.2e (in dtype %.2e)", names[i].c_str(), error, reference_error);
    EXPECT_LE(error, std::max(2 * reference_error, floor)) << case_name << " " << names[i];
  }
  std::printf("\n");
}

void expect_close(const std::string& case_name, const std::string& tensor_name,
                  const at::Tensor& actual, const at::Tensor& expected, double tolerance) {
  ASSERT_TRUE(actual.defined()) << case_name << ": " << tensor_name << " is undefined";
  ASSERT_TRUE(expected.defined()) << case_name << ": reference " << tensor_name << " is undefined";
  ASSERT_EQ(actual.sizes(), expected.sizes()) << case_name << ": " << tensor_name << " shape";
  auto a = actual.detach().to(at::kCPU, at::kDouble);
  auto b = expected.detach().to(at::kCPU, at::kDouble);
  ASSERT_TRUE(a.isfinite().all().item<bool>())
      << case_name << ": " << tensor_name << " has NaN or Inf entries";
  double relative = relative_max_error(a, b);
  auto diff = (a - b).abs();
  double max_abs = diff.numel() ? diff.max().item<double>() : 0.0;
  double mean_abs = diff.numel() ? diff.mean().item<double>() : 0.0;
  EXPECT_LE(relative, tolerance) << case_name << ": " << tensor_name << " relative max error "
                                 << relative << " (max abs " << max_abs << ", mean abs " << mean_abs
                                 << ", tolerance " << tolerance << ")";
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const lintime::Error& error) {
    return error.what();
  } catch (const c10::Error& error) {
    return error.what_without_backtrace();
  }
  return "";
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "lintime_test_XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::vector<std::string> TempDir::entries() const {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(path_)) {
    const std::string name = entry.path().filename().string();
    if (name[0] != '.') names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

at::Generator make_generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

std::string source_dir() {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  return source ? std::string(source) : std::filesystem::current_path().string();
}

std::string shared_data_dir() {
  namespace fs = std::filesystem;
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  fs::path base = source ? fs::path(source) : fs::current_path();
  fs::path data = base / ".." / "shared" / "data";
  return fs::exists(data) ? fs::canonical(data).string() : std::string();
}

bool shared_data_holds(const std::string& data, const std::string& file) {
  return !data.empty() && std::filesystem::exists(std::filesystem::path(data) / file);
}

bool running_under_ci() {
  const char* value = std::getenv("CI");
  if (!value) return false;
  const std::string text(value);
  return !text.empty() && text != "0" && text != "false";
}

}  // namespace lintime::testing
