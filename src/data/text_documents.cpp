// Streaming reader of text and JSON-lines inputs through zlib's gz* functions, which read gzip
// files and plain files alike (a plain file passes through unchanged).
#include "data/text_documents.h"

#include "core/error.h"
#include "core/paths.h"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <sys/stat.h>

namespace lintime::data {

namespace {

constexpr size_t kReadChunk = size_t{1} << 20;

bool is_blank(const std::string& line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\f' && c != '\v') return false;
  return true;
}

}  // namespace

bool is_json_lines_path(const std::string& path) {
  std::string name = path;
  if (ends_with(name, ".gz")) name.resize(name.size() - 3);
  return ends_with(name, ".jsonl") || ends_with(name, ".ndjson") || ends_with(name, ".json");
}

// One open input: a gzFile with a line buffer.
class TextDocumentReader::File {
 public:
  explicit File(const std::string& path) : path_(path), json_lines_(is_json_lines_path(path)) {
    file_ = ::gzopen(path.c_str(), "rb");
    LINTIME_CHECK(file_, "cannot open input '", path, "': ", errno ? std::strerror(errno) : "out of memory");
    ::gzbuffer(file_, 1 << 17);
    // zlib reads a file without gzip's header as plain text: a name ending in .gz promises one.
    if (ends_with(path, ".gz")) {
      const int first = gzgetc(file_);
      const bool plain = first >= 0 && ::gzdirect(file_) == 1;
      LINTIME_CHECK(!plain, "cannot read input '", path, "': its name ends in .gz but it is not gzip-compressed");
      if (first >= 0) ::gzungetc(first, file_);
    }
  }
  ~File() {
    if (file_) ::gzclose(file_);
  }

  const std::string& path() const { return path_; }
  bool json_lines() const { return json_lines_; }
  int64_t line_number() const { return line_number_; }
  uint64_t offset() const { return static_cast<uint64_t>(std::max<z_off_t>(::gzoffset(file_), 0)); }

  // Reads the next line (without "\n") into `line`; false at the end of the file.
  bool next_line(std::string& line) {
    while (true) {
      const size_t newline = buffer_.find('\n', position_);
      if (newline != std::string::npos) {
        line.assign(buffer_, position_, newline - position_);
        position_ = newline + 1;
        ++line_number_;
        return true;
      }
      if (at_end_) {
        if (position_ >= buffer_.size()) return false;
        line.assign(buffer_, position_, std::string::npos);
        position_ = buffer_.size();
        ++line_number_;
        return true;
      }
      buffer_.erase(0, position_);
      position_ = 0;
      fill();
    }
  }

  bool whole_file_taken = false;  // one-document-per-file mode: the document was returned

  // The rest of the file.
  std::string rest() {
    while (!at_end_) fill();
    std::string text = buffer_.substr(position_);
    position_ = buffer_.size();
    return text;
  }

 private:
  void fill() {
    const size_t old_size = buffer_.size();
    buffer_.resize(old_size + kReadChunk);
    const int n = ::gzread(file_, buffer_.data() + old_size, static_cast<unsigned>(kReadChunk));
    buffer_.resize(old_size + std::max(n, 0));
    if (n <= 0) {
      int code = Z_OK;
      const char* message = ::gzerror(file_, &code);
      LINTIME_CHECK(code == Z_OK, "cannot read input '", path_, "': ",
                    code == Z_ERRNO ? std::strerror(errno) : message,
                    code == Z_BUF_ERROR || code == Z_DATA_ERROR ? " (expected a complete gzip file)" : "");
      at_end_ = true;
    }
  }

  std::string path_;
  bool json_lines_;
  gzFile file_ = nullptr;
  std::string buffer_;
  size_t position_ = 0;
  bool at_end_ = false;
  int64_t line_number_ = 0;
};

TextDocumentReader::TextDocumentReader(std::vector<std::string> paths, TextDocumentOptions options)
    : paths_(std::move(paths)), options_(options) {
  for (const auto& path : paths_) {
    struct stat info {};
    LINTIME_CHECK(::stat(path.c_str(), &info) == 0, "cannot read input '", path, "': ", std::strerror(errno));
    LINTIME_CHECK(S_ISREG(info.st_mode), "input '", path, "' is not a regular file");
    total_bytes_ += static_cast<uint64_t>(info.st_size);
  }
}

TextDocumentReader::~TextDocumentReader() = default;

uint64_t TextDocumentReader::bytes_consumed() const { return finished_bytes_ + (file_ ? file_->offset() : 0); }

bool TextDocumentReader::open_next_file() {
  if (file_) {
    struct stat info {};
    if (::stat(file_->path().c_str(), &info) == 0) finished_bytes_ += static_cast<uint64_t>(info.st_size);
    file_.reset();
  }
  if (next_path_ >= paths_.size()) return false;
  file_ = std::make_unique<File>(paths_[next_path_++]);
  return true;
}

bool TextDocumentReader::next(TextDocument& document) {
  std::string line;
  while (true) {
    if (!file_ && !open_next_file()) return false;
    File& file = *file_;
    if (file.json_lines()) {
      while (file.next_line(line)) {
        if (is_blank(line)) continue;
        const std::string origin = file.path() + ":" + std::to_string(file.line_number());
        nlohmann::json record;
        try {
          record = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& error) {
          fail(origin, ": not valid JSON (", error.what(), ")");
        }
        LINTIME_CHECK(record.is_object(), origin, ": expected a JSON object with a string field \"text\", got ",
                      record.type_name());
        auto text = record.find("text");
        LINTIME_CHECK(text != record.end(), origin, ": no \"text\" field (expected a JSON object with a string field \"text\")");
        LINTIME_CHECK(text->is_string(), origin, ": field \"text\" is ", text->type_name(), ", expected a string");
        document.text = text->get<std::string>();
        document.origin = origin;
        return true;
      }
    } else if (options_.split_blank_lines) {
      document.text.clear();
      int64_t first_line = 0;
      while (file.next_line(line)) {
        if (is_blank(line)) {
          if (first_line > 0) break;
          continue;
        }
        if (first_line == 0) {
          first_line = file.line_number();
        } else {
          document.text += '\n';
        }
        document.text += line;
      }
      if (first_line > 0) {
        document.origin = file.path() + ":" + std::to_string(first_line);
        return true;
      }
    } else if (!file.whole_file_taken) {
      document.text = file.rest();
      document.origin = file.path();
      file.whole_file_taken = true;
      return true;
    }
    if (!open_next_file()) return false;
  }
}

std::vector<TextDocument> read_text_documents(const std::string& path, TextDocumentOptions options) {
  TextDocumentReader reader({path}, options);
  std::vector<TextDocument> documents;
  TextDocument document;
  while (reader.next(document)) documents.push_back(std::move(document));
  return documents;
}

}  // namespace lintime::data
