// JSON-lines metrics writer.
#include "train/metrics_log.h"

#include "core/error.h"

#include <cerrno>
#include <cstring>

namespace lintime::train {

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  LINTIME_CHECK(file_, "metrics log '", path, "': cannot open for writing: ", std::strerror(errno));
}

MetricsLog::~MetricsLog() { close(); }

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
