// Small path and name checks shared by the file readers (stat-based: libtorch exports its own
// copies of std::filesystem's free functions, see train/checkpoint.cpp).
#pragma once

#include <sys/stat.h>

#include <string>

namespace lintime {

inline bool is_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

inline bool is_directory(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

inline bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace lintime
