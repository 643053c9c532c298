// Progress reporter: plain lines at the step interval (and the last step) off a terminal; an
// in-place redrawn line on one; duration and number formatting.
#include "core/progress.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace {

std::string captured(std::FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string text;
  for (int c; (c = std::fgetc(file)) != EOF;) text += static_cast<char>(c);
  return text;
}

int count_of(const std::string& text, const std::string& part) {
  int count = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++count;
  return count;
}

TEST(Progress, PlainLinesEveryNSteps) {
  std::FILE* file = std::tmpfile();
  {
    lintime::ProgressReporter progress({.label = "train", .total = 25, .log_every_steps = 10,
                                        .log_every_seconds = 0, .terminal = false, .stream = file});
    for (int64_t step = 1; step <= 25; ++step) progress.update(step, {{"loss", 2.0 / step}, {"tok/s", 123456}});
    progress.message("evaluating");
    progress.finish();
  }
  const std::string text = captured(file);
  std::fclose(file);
  EXPECT_EQ(count_of(text, "\n"), 4) << text;  // steps 10, 20, 25 and the message
  EXPECT_NE(text.find("train  40% 10/25 loss 0.2 tok/s 123.5k"), std::string::npos) << text;
  EXPECT_NE(text.find("train 100% 25/25"), std::string::npos) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
}

TEST(Progress, TerminalRedrawsInPlace) {
  std::FILE* file = std::tmpfile();
  {
    lintime::ProgressReporter progress({.label = "eval", .total = 1000, .redraw_seconds = 3600,
                                        .terminal = true, .stream = file});
    for (int64_t step = 1; step <= 1000; ++step) progress.update(step);
  }
  const std::string text = captured(file);
  std::fclose(file);
  EXPECT_EQ(count_of(text, "\r\033[K"), 2) << text;  // first draw and the last step (rate-limited)
  EXPECT_NE(text.find("eval 100% [========================] 1000/1000"), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
}

TEST(Progress, Formatting) {
  EXPECT_EQ(lintime::format_duration(42.4), "42s");
  EXPECT_EQ(lintime::format_duration(187), "3:07");
  EXPECT_EQ(lintime::format_duration(3723), "1:02:03");
  EXPECT_EQ(lintime::format_value(0.91234), "0.9123");
  EXPECT_EQ(lintime::format_value(12345), "12.35k");
  EXPECT_EQ(lintime::format_value(2.5e9), "2.5G");
}

}  // namespace
