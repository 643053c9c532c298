// Progress reporter: in-place bar on terminals, rate-limited plain lines elsewhere.
#include "core/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace lintime {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  const int64_t hours = total / 3600, minutes = (total / 60) % 60, secs = total % 60;
  char buffer[48];
  if (hours > 0)
    std::snprintf(buffer, sizeof(buffer), "%lld:%02lld:%02lld", static_cast<long long>(hours),
                  static_cast<long long>(minutes), static_cast<long long>(secs));
  else if (minutes > 0)
    std::snprintf(buffer, sizeof(buffer), "%lld:%02lld", static_cast<long long>(minutes),
                  static_cast<long long>(secs));
  else
    std::snprintf(buffer, sizeof(buffer), "%llds", static_cast<long long>(secs));
  return buffer;
}

std::string format_value(double value) {
  char buffer[48];
  const double magnitude = std::fabs(value);
  if (std::isfinite(value) && magnitude >= 1e4) {
    const char* suffixes[] = {"k", "M", "G", "T"};
    int index = 0;
    double scaled = value / 1e3;
    while (std::fabs(scaled) >= 1e3 && index < 3) {
      scaled /= 1e3;
      ++index;
    }
    std::snprintf(buffer, sizeof(buffer), "%.4g%s", scaled, suffixes[index]);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.4g", value);
  }
  return buffer;
}

ProgressReporter::ProgressReporter(ProgressOptions options)
    : options_(std::move(options)), start_(std::chrono::steady_clock::now()) {
  if (!options_.stream) options_.stream = stderr;
  terminal_ = options_.terminal.value_or(::isatty(::fileno(options_.stream)) == 1);
}

ProgressReporter::~ProgressReporter() {
  if (!finished_ && bar_visible_) {
    std::fputc('\n', options_.stream);
    std::fflush(options_.stream);
  }
}

double ProgressReporter::seconds_since_start() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string ProgressReporter::status_line(int64_t step, const ProgressValues& values,
                                          double elapsed) const {
  std::string line = options_.label;
  char buffer[64];
  const int64_t total = options_.total;
  if (total > 0) {
    const double fraction = std::clamp(static_cast<double>(step) / static_cast<double>(total), 0.0, 1.0);
    std::snprintf(buffer, sizeof(buffer), " %3d%%", static_cast<int>(fraction * 100.0));
    line += buffer;
    if (terminal_ && options_.bar_width > 0) {
      const int filled = static_cast<int>(fraction * options_.bar_width);
      line += " [";
      for (int i = 0; i < options_.bar_width; ++i)
        line += i < filled ? '=' : (i == filled ? '>' : ' ');
      line += "]";
    }
    std::snprintf(buffer, sizeof(buffer), " %lld/%lld", static_cast<long long>(step),
                  static_cast<long long>(total));
    line += buffer;
  } else {
    std::snprintf(buffer, sizeof(buffer), " step %lld", static_cast<long long>(step));
    line += buffer;
  }
  for (const auto& [key, value] : values) {
    line += ' ';
    line += key;
    line += ' ';
    line += format_value(value);
  }
  if (elapsed > 0 && step > 0) {
    const double rate = static_cast<double>(step) / elapsed;
    line += " | ";
    line += format_value(rate);
    line += " it/s";
  }
  line += " | ";
  line += format_duration(elapsed);
  if (total > 0 && step > 0 && step < total && elapsed > 0) {
    const double remaining = elapsed / static_cast<double>(step) * static_cast<double>(total - step);
    line += " eta ";
    line += format_duration(remaining);
  }
  return line;
}

void ProgressReporter::draw(const std::string& line, bool in_place) {
  if (options_.quiet) return;
  if (in_place) {
    std::string shown = line;
    winsize size{};
    if (::ioctl(::fileno(options_.stream), TIOCGWINSZ, &size) == 0 && size.ws_col > 1 &&
        shown.size() >= size.ws_col)
      shown.resize(size.ws_col - 1);
    std::fprintf(options_.stream, "\r\033[K%s", shown.c_str());
    bar_visible_ = true;
  } else {
    std::fprintf(options_.stream, "%s\n", line.c_str());
  }
  std::fflush(options_.stream);
}

void ProgressReporter::update(int64_t step, const ProgressValues& values) {
  if (finished_) return;
  last_step_ = step;
  last_values_ = values;
  const double now = seconds_since_start();
  const bool last = options_.total > 0 && step >= options_.total;
  bool due = last;
  if (terminal_) {
    due |= !bar_visible_ || now - last_output_seconds_ >= options_.redraw_seconds;
  } else {
    due |= options_.log_every_steps > 0 && step - last_output_step_ >= options_.log_every_steps;
    due |= options_.log_every_seconds > 0 && now - last_output_seconds_ >= options_.log_every_seconds;
  }
  if (!due) return;
  last_output_seconds_ = now;
  last_output_step_ = step;
  last_line_ = status_line(step, values, now);
  draw(last_line_, terminal_);
}

void ProgressReporter::message(const std::string& line) {
  if (terminal_ && bar_visible_) {
    std::fprintf(options_.stream, "\r\033[K%s\n", line.c_str());
    bar_visible_ = false;
    if (!finished_ && !last_line_.empty()) draw(last_line_, true);
    else std::fflush(options_.stream);
  } else {
    draw(line, false);
  }
}

void ProgressReporter::finish(const ProgressValues& values) {
  if (finished_) return;
  const ProgressValues& shown = values.empty() ? last_values_ : values;
  last_line_ = status_line(last_step_, shown, seconds_since_start());
  if (terminal_) {
    draw(last_line_, true);
    std::fputc('\n', options_.stream);
    std::fflush(options_.stream);
  } else if (last_output_step_ != last_step_ || !values.empty()) {
    draw(last_line_, false);
  }
  bar_visible_ = false;
  finished_ = true;
}

}  // namespace lintime
