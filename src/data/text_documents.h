// Input documents for tokenizing: plain text files (one document per file, or documents split
// on blank lines) and JSON-lines files with a string field "text", each possibly gzip-compressed
// (".gz", read through zlib). The format comes from the name: "*.jsonl", "*.ndjson" and "*.json"
// (before an optional ".gz") are JSON lines, anything else is text. Documents are streamed one at
// a time, so an input never has to fit in memory beyond its largest document.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lintime::data {

struct TextDocumentOptions {
  // Text files: a document is each maximal run of non-blank lines (a blank line holds only
  // whitespace), its lines joined by "\n" without a trailing newline. Otherwise a document is
  // the whole file, byte for byte.
  bool split_blank_lines = false;
};

struct TextDocument {
  std::string text;
  std::string origin;  // "FILE" or "FILE:LINE" (its first line), for messages
};

// True for names ending in .jsonl, .ndjson or .json, with or without a trailing .gz.
bool is_json_lines_path(const std::string& path);

// Streams the documents of several inputs in order. Every error is one line naming the file (and
// line): unreadable or corrupt (gzip) files, invalid JSON, a line that is no object with a string
// "text" field.
class TextDocumentReader {
 public:
  TextDocumentReader(std::vector<std::string> paths, TextDocumentOptions options = {});
  ~TextDocumentReader();
  TextDocumentReader(const TextDocumentReader&) = delete;
  TextDocumentReader& operator=(const TextDocumentReader&) = delete;

  // The next document; false after the last one. Empty documents are returned too.
  bool next(TextDocument& document);
  // Bytes of the input files consumed so far (compressed bytes for .gz) and their total size:
  // progress for a bar.
  uint64_t bytes_consumed() const;
  uint64_t total_bytes() const { return total_bytes_; }

 private:
  class File;
  bool open_next_file();
  std::vector<std::string> paths_;
  TextDocumentOptions options_;
  size_t next_path_ = 0;
  std::unique_ptr<File> file_;
  uint64_t total_bytes_ = 0, finished_bytes_ = 0;
};

// Every document of one input.
std::vector<TextDocument> read_text_documents(const std::string& path, TextDocumentOptions options = {});

}  // namespace lintime::data
