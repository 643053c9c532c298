// lintime's error type and check macro for everything that is not an op (configs, data,
// checkpoints, CLI). Messages are one line naming what is wrong and what was expected.
// Ops use TORCH_CHECK so that Python callers get the usual RuntimeError.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lintime {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(detail::concat(parts...));
}

}  // namespace lintime

#define LINTIME_CHECK(condition, ...)                   \
  do {                                                  \
    if (!(condition)) ::lintime::fail(__VA_ARGS__);     \
  } while (false)
