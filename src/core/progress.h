// Progress reporting for long loops (training, evaluation, data generation). On a terminal
// (isatty of the stream) it draws one status line redrawn in place, at most every
// redraw_seconds:  "train  42% [=======>      ] 420/1000 loss 2.31 acc 0.912 | 3.1 it/s | eta 3:07".
// Elsewhere (log files, CI) it prints plain lines every log_every_steps steps or
// log_every_seconds seconds, whichever comes first, and always at the last step.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lintime {

struct ProgressOptions {
  std::string label = "progress";
  int64_t total = 0;                // 0: unknown (no percentage, bar or ETA)
  int64_t log_every_steps = 100;    // plain mode; 0 disables the step trigger
  double log_every_seconds = 30.0;  // plain mode; 0 disables the time trigger
  double redraw_seconds = 0.1;      // terminal mode
  std::optional<bool> terminal;     // default: isatty(fileno(stream))
  std::FILE* stream = stderr;
  int bar_width = 24;
  bool quiet = false;  // prints nothing (the ranks other than 0 of a distributed run)
};

using ProgressValues = std::vector<std::pair<std::string, double>>;

class ProgressReporter {
 public:
  explicit ProgressReporter(ProgressOptions options);
  ~ProgressReporter();
  ProgressReporter(const ProgressReporter&) = delete;
  ProgressReporter& operator=(const ProgressReporter&) = delete;

  // `step` = steps completed so far; `values` are shown in the given order.
  void update(int64_t step, const ProgressValues& values = {});
  // Prints a line without breaking the bar (the bar is redrawn below it).
  void message(const std::string& line);
  // Draws the final state and ends the line. Called by the destructor if needed.
  void finish(const ProgressValues& values = {});
  bool is_terminal() const { return terminal_; }

 private:
  std::string status_line(int64_t step, const ProgressValues& values, double elapsed) const;
  void draw(const std::string& line, bool in_place);
  double seconds_since_start() const;

  ProgressOptions options_;
  bool terminal_ = false;
  bool finished_ = false;
  bool bar_visible_ = false;
  std::chrono::steady_clock::time_point start_;
  double last_output_seconds_ = 0;
  int64_t last_output_step_ = 0;
  int64_t last_step_ = 0;
  ProgressValues last_values_;
  std::string last_line_;
};

// "42s", "3:07", "1:02:03".
std::string format_duration(double seconds);
// Compact number: 4 significant digits, k/M/G suffixes from 10^4 up ("12.35k").
std::string format_value(double value);

}  // namespace lintime
