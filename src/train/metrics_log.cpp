// JSON-lines metrics writer.
#include "train/metrics_log.h"

#include "core/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace lintime::train {

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  LINTIME_CHECK(file_, "metrics log '", path, "': cannot open for writing: ", std::strerror(errno));
}

MetricsLog::~MetricsLog() { close(); }

void MetricsLog::truncate_after_step(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;  // no log yet
  std::string kept, line;
  while (std::getline(in, line)) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    // A line cut short by the kill, or a record of a step after the checkpoint, goes.
    if (record.is_discarded() || !record.is_object()) continue;
    if (record.contains("step") && record["step"].is_number() && record["step"].get<int64_t>() > step) continue;
    kept += line + "\n";
  }
  in.close();
  const std::string temporary = path + ".tmp";
  std::FILE* file = std::fopen(temporary.c_str(), "w");
  LINTIME_CHECK(file, "metrics log '", temporary, "': cannot open for writing: ", std::strerror(errno));
  const bool written = std::fwrite(kept.data(), 1, kept.size(), file) == kept.size();
  const bool closed = std::fclose(file) == 0;
  LINTIME_CHECK(written && closed && std::rename(temporary.c_str(), path.c_str()) == 0, "metrics log '", path,
                "': cannot rewrite: ", std::strerror(errno));
}

void MetricsLog::write(const nlohmann::json& record) {
  LINTIME_CHECK(file_, "metrics log '", path_, "': already closed");
  LINTIME_CHECK(record.is_object(), "metrics log '", path_, "': a record must be a JSON object, got ",
                record.type_name());
  const std::string line =
      record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  const bool written = std::fwrite(line.data(), 1, line.size(), file_) == line.size();
  LINTIME_CHECK(written && std::fflush(file_) == 0, "metrics log '", path_,
                "': write failed: ", std::strerror(errno));
}

void MetricsLog::close() {
  if (file_) std::fclose(file_);
  file_ = nullptr;
}

}  // namespace lintime::train
