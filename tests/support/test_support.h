// Helpers shared by lintime's tests: NaN poisoning, error measures and comparisons that print
// the case name with max and mean error so a failing case can be rerun alone.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

// Skips a CUDA test on a machine without a GPU, saying so (CI compiles the kernels but cannot
// run them; `ctest -L cuda` runs them on a GPU machine).
#define LINTIME_SKIP_WITHOUT_CUDA()                                                         \
  if (!at::hasCUDA()) {                                                                     \
    GTEST_SKIP() << "no CUDA device here: the CUDA kernels were compiled but are not run " \
                    "(run `ctest -L cuda` on a GPU machine)";                               \
  }

// Binds `data` to the shared data folder (../shared/data) when it holds `file`. Without it the
// test skips on a developer's machine but fails under CI (CI set), where shared/ is always laid
// beside the clone: a missing folder there must not pass as a row of skipped tests.
#define LINTIME_REQUIRE_SHARED_DATA(data, file)                                                   \
  const std::string data = lintime::testing::shared_data_dir();                                 \
  if (!lintime::testing::shared_data_holds(data, file)) {                                      \
    if (lintime::testing::running_under_ci()) {                                                 \
      FAIL() << "../shared/data/" << (file) << " is absent, and CI always lays out ../shared";  \
    }                                                                                           \
    GTEST_SKIP() << "../shared/data/" << (file) << " is absent";                               \
  }

namespace lintime::testing {

// Fills a tensor with NaN (outputs that an op must overwrite completely).
void poison_nan(at::Tensor& tensor);

// max |a - b| / max(max |b|, tiny), computed in float64.
double relative_max_error(const at::Tensor& actual, const at::Tensor& expected);
// ||a - b||_2 / ||b||_2 (relative RMS), computed in float64.
double relative_rms_error(const at::Tensor& actual, const at::Tensor& expected);

// Checks shapes equal, no NaN/Inf in `actual`, and relative_max_error <= tolerance; on failure
// reports the case, the tensor name, max and mean absolute error.
void expect_close(const std::string& case_name, const std::string& tensor_name,
                  const at::Tensor& actual, const at::Tensor& expected, double tolerance);

// The unit roundoff of `dtype`: half the gap between 1 and the next number (2^-8 for bf16,
// 2^-11 for fp16, 2^-24 for fp32, 2^-53 for fp64): the relative error of one rounding.
double unit_roundoff(at::ScalarType dtype);

// Gradients of a fast low-precision path against float64 ones, each held to twice the error of
// the reference evaluated in the dtype (`in_dtype`) or to `floor` (the dtype's rounding, where
// the reference keeps intermediates the fast path rounds: unit_roundoff), the larger. A gradient below 1e-4 |grad_output| in float64 is zero to the dtype's resolution
// (relative errors would be noise over noise): its absolute error must be within
// floor · |grad_output|. Prints one line for the case.
void expect_gradients_match(const std::string& case_name, const std::vector<std::string>& names,
                            const std::vector<at::Tensor>& actual, const std::vector<at::Tensor>& reference,
                            const std::vector<at::Tensor>& in_dtype, const at::Tensor& grad_output, double floor);

// The one-line message of the lintime::Error or c10::Error that fn throws; "" when it throws none.
std::string error_of(const std::function<void()>& fn);

// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }
  // Names directly inside the directory (no dot files), sorted.
  std::vector<std::string> entries() const;

 private:
  std::string path_;
};

// Gradients of Σ roots · root_grads with respect to every defined leaf, by the leaf's name
// (undefined where a leaf does not reach the roots).
std::map<std::string, at::Tensor> leaf_gradients(const std::map<std::string, at::Tensor>& leaves,
                                                 const std::vector<at::Tensor>& roots,
                                                 const std::vector<at::Tensor>& root_grads);

// A deterministic CPU generator for test inputs.
at::Generator make_generator(uint64_t seed);

// Path of the shared data folder (../shared/data from the source tree), or "" when absent.
std::string shared_data_dir();

// The repository (LINTIME_SOURCE_DIR, which CTest sets; else the working directory).
std::string source_dir();
// True when `data` (a shared_data_dir() result) is non-empty and holds `file`.
bool shared_data_holds(const std::string& data, const std::string& file);
// True when the environment variable CI is set to anything but "", "0" or "false".
bool running_under_ci();

}  // namespace lintime::testing
