// Training metrics as JSON lines: one object per line, flushed after every record so that a
// crash loses nothing already logged and `tail -f` shows progress.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

namespace lintime::train {

class MetricsLog {
 public:
  // Opens `path` for appending (append = false truncates it). Throws lintime::Error.
  explicit MetricsLog(const std::string& path, bool append = true);
  // Resuming from the checkpoint of `step`: drops the records of later steps (written before a
  // kill, and about to be written again), so that the log equals an uninterrupted run's.
  static void truncate_after_step(const std::string& path, int64_t step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Writes `record` (must be a JSON object) as one line and flushes. NaN/Inf become null.
  void write(const nlohmann::json& record);
  void close();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace lintime::train
