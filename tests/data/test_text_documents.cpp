// Input documents: a text file as one document or split on blank lines, JSON lines with a "text"
// field, gzip-compressed inputs (written here with zlib), several inputs in order, and one-line
// errors naming the file (and line) for unreadable files, bad JSON, missing fields and truncated gzip.
#include "core/error.h"
#include "data/text_documents.h"
#include "support/test_support.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>

namespace {

using lintime::data::read_text_documents;
using lintime::data::TextDocument;
using lintime::data::TextDocumentOptions;
using lintime::data::TextDocumentReader;
using lintime::testing::error_of;
using lintime::testing::TempDir;

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

std::vector<std::string> texts(const std::vector<TextDocument>& documents) {
  std::vector<std::string> out;
  for (const auto& document : documents) out.push_back(document.text);
  return out;
}

std::vector<std::string> origins(const std::vector<TextDocument>& documents) {
  std::vector<std::string> out;
  for (const auto& document : documents) out.push_back(document.origin);
  return out;
}

void expect_contains(const std::string& text, const std::string& fragment) {
  EXPECT_NE(text.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << text;
}

const std::string kPlay = "\n\nFirst Citizen:\nBefore we proceed.\n\n  \nAll:\nSpeak, speak.\r\n\t\nEnd.";

TEST(TextDocuments, TextFileIsOneDocumentByteForByte) {
  TempDir dir;
  write_file(dir.file("play.txt"), kPlay);
  const auto documents = read_text_documents(dir.file("play.txt"));
  ASSERT_EQ(documents.size(), 1u);
  EXPECT_EQ(documents[0].text, kPlay);
  EXPECT_EQ(documents[0].origin, dir.file("play.txt"));
  write_file(dir.file("empty.txt"), "");
  EXPECT_EQ(texts(read_text_documents(dir.file("empty.txt"))), std::vector<std::string>{""});
}

TEST(TextDocuments, BlankLinesSplitDocuments) {
  TempDir dir;
  write_file(dir.file("play.txt"), kPlay);
  const auto documents = read_text_documents(dir.file("play.txt"), {.split_blank_lines = true});
  EXPECT_EQ(texts(documents),
            (std::vector<std::string>{"First Citizen:\nBefore we proceed.", "All:\nSpeak, speak.\r", "End."}));
  EXPECT_EQ(origins(documents), (std::vector<std::string>{dir.file("play.txt") + ":3", dir.file("play.txt") + ":7",
                                                          dir.file("play.txt") + ":10"}));
}

TEST(TextDocuments, JsonLinesTakeTheTextField) {
  TempDir dir;
  write_file(dir.file("docs.jsonl"),
             "{\"text\": \"one\", \"id\": 1}\n\n{\"id\": 2, \"text\": \"two\\nlines \\u00e9\"}\r\n{\"text\": \"\"}\n"
             "{\"text\": \"last\"}");
  const auto documents = read_text_documents(dir.file("docs.jsonl"), {.split_blank_lines = true});
  EXPECT_EQ(texts(documents), (std::vector<std::string>{"one", "two\nlines \xc3\xa9", "", "last"}));
  EXPECT_EQ(documents[1].origin, dir.file("docs.jsonl") + ":3");
  EXPECT_TRUE(lintime::data::is_json_lines_path("a/b.ndjson.gz"));
  EXPECT_TRUE(lintime::data::is_json_lines_path("b.json"));
  EXPECT_FALSE(lintime::data::is_json_lines_path("b.jsonl.txt"));
}

TEST(TextDocuments, GzipInputsReadLikePlainOnes) {
  TempDir dir;
  std::string big;
  for (int i = 0; i < 200000; ++i) big += "line " + std::to_string(i) + (i % 1000 == 999 ? "\n\n" : "\n");
  write_gzip(dir.file("play.txt.gz"), big);
  write_file(dir.file("play.txt"), big);
  EXPECT_EQ(texts(read_text_documents(dir.file("play.txt.gz"))), std::vector<std::string>{big});
  const auto split = read_text_documents(dir.file("play.txt.gz"), {.split_blank_lines = true});
  EXPECT_EQ(split.size(), 200u);
  EXPECT_EQ(texts(split), texts(read_text_documents(dir.file("play.txt"), {.split_blank_lines = true})));
  write_gzip(dir.file("docs.jsonl.gz"), "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
  EXPECT_EQ(texts(read_text_documents(dir.file("docs.jsonl.gz"))), (std::vector<std::string>{"a", "b"}));
}

TEST(TextDocuments, SeveralInputsStreamInOrderWithProgress) {
  TempDir dir;
  write_file(dir.file("a.txt"), "alpha");
  write_file(dir.file("b.jsonl"), "{\"text\": \"beta\"}\n{\"text\": \"gamma\"}\n");
  write_gzip(dir.file("c.txt.gz"), "delta\n\nepsilon\n");
  TextDocumentReader reader({dir.file("a.txt"), dir.file("b.jsonl"), dir.file("c.txt.gz")}, {.split_blank_lines = true});
  std::vector<std::string> seen;
  TextDocument document;
  while (reader.next(document)) seen.push_back(document.text);
  EXPECT_EQ(seen, (std::vector<std::string>{"alpha", "beta", "gamma", "delta", "epsilon"}));
  EXPECT_EQ(reader.bytes_consumed(), reader.total_bytes());
  EXPECT_FALSE(reader.next(document));
}

TEST(TextDocuments, ErrorsNameTheFileAndLine) {
  TempDir dir;
  expect_contains(error_of([&] { read_text_documents(dir.file("absent.txt")); }),
                  "cannot read input '" + dir.file("absent.txt") + "': No such file or directory");
  write_file(dir.file("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  std::string error = error_of([&] { read_text_documents(dir.file("bad.jsonl")); });
  expect_contains(error, dir.file("bad.jsonl") + ":2: not valid JSON");
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  write_file(dir.file("field.jsonl"), "{\"text\": \"ok\"}\n\n{\"content\": \"x\"}\n");
  expect_contains(error_of([&] { read_text_documents(dir.file("field.jsonl")); }),
                  dir.file("field.jsonl") + ":3: no \"text\" field");
  write_file(dir.file("type.jsonl"), "{\"text\": 3}\n");
  expect_contains(error_of([&] { read_text_documents(dir.file("type.jsonl")); }),
                  dir.file("type.jsonl") + ":1: field \"text\" is number, expected a string");
  write_file(dir.file("array.jsonl"), "[1, 2]\n");
  expect_contains(error_of([&] { read_text_documents(dir.file("array.jsonl")); }),
                  dir.file("array.jsonl") + ":1: expected a JSON object with a string field \"text\", got array");

  // A gzip file cut in the middle of its stream.
  std::string big;
  for (int i = 0; i < 20000; ++i) big += std::to_string(i * 7919 % 10007) + " ";
  write_gzip(dir.file("cut.txt.gz"), big);
  std::ifstream in(dir.file("cut.txt.gz"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  write_file(dir.file("cut.txt.gz"), bytes.substr(0, bytes.size() / 2));
  error = error_of([&] { read_text_documents(dir.file("cut.txt.gz")); });
  expect_contains(error, "cannot read input '" + dir.file("cut.txt.gz") + "'");
  expect_contains(error, "expected a complete gzip file");
}

}  // namespace
