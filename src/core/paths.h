// Small path and name checks shared by the file readers (stat-based: libtorch exports its own
// copies of std::filesystem's free functions, see train/checkpoint.cpp).
#pragma once

#include <sys/stat.h>

#include <climits>
#include <algorithm>
#include <cstdlib>
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

// Why `path` cannot be opened as a model folder ("" when it is a folder): missing, a file, or a
// link that resolves to nothing.
inline std::string model_folder_problem(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0) {
    return S_ISDIR(info.st_mode) ? "" : "model folder '" + path + "' is a file, not a folder";
  }
  struct stat link {};
  if (::lstat(path.c_str(), &link) == 0) return "model folder '" + path + "' is a link that resolves to nothing";
  return "model folder '" + path + "' does not exist";
}

inline bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The absolute path with every symbolic link resolved, or "" when it does not exist.
inline std::string resolved_path(const std::string& path) {
  char buffer[PATH_MAX];
  return ::realpath(path.c_str(), buffer) ? std::string(buffer) : std::string();
}

// Whether the resolved path `path` lies inside the resolved folder `folder`.
inline bool lies_inside(const std::string& path, const std::string& folder) {
  return !folder.empty() && path.size() > folder.size() && path.compare(0, folder.size(), folder) == 0 &&
         (folder.back() == '/' || path[folder.size()] == '/');
}

// Whether a file name a folder lists (an index's shard) stays in the folder: relative, and no
// ".." among its components.
inline bool names_a_file_inside(const std::string& name) {
  if (name.empty() || name.front() == '/') return false;
  size_t start = 0;
  while (start <= name.size()) {
    const size_t end = std::min(name.find('/', start), name.size());
    if (name.compare(start, end - start, "..") == 0 && end - start == 2) return false;
    start = end + 1;
  }
  return true;
}

}  // namespace lintime
