#include "text/byte_level_bpe.h"

#include "core/config_reader.h"
#include "core/error.h"
#include "text/unicode.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>

namespace lintime::text {
namespace {

using json = nlohmann::json;

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  LINTIME_CHECK(in, "cannot open ", what, " '", path, "'");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

json parse_json(const std::string& path, const char* what) {
  try {
    return json::parse(read_file(path, what));
  } catch (const json::exception& error) {
    fail(what, " '", path, "' is not valid JSON: ", error.what());
  }
}

// The contraction suffixes GPT-2's pattern matches after an apostrophe, longest first.
constexpr const char* kContractions[] = {"re", "ve", "ll", "s", "t", "m", "d"};

bool is_other(char32_t c) { return !is_white_space(c) && !is_letter(c) && !is_number(c); }

}  // namespace

std::vector<std::string> ByteLevelBpeTokenizer::pre_tokenize(std::string_view text) {
  const std::vector<char32_t> cps = decode_utf8(text);
  const size_t n = cps.size();
  std::vector<std::string> pieces;
  auto emit = [&](size_t begin, size_t end) {
    std::string piece;
    for (size_t k = begin; k < end; ++k) append_utf8(piece, cps[k]);
    pieces.push_back(std::move(piece));
  };
  auto run_end = [&](size_t from, bool (*accept)(char32_t)) {
    while (from < n && accept(cps[from])) ++from;
    return from;
  };
  size_t i = 0;
  while (i < n) {
    // 's|'t|'re|'ve|'m|'ll|'d
    if (cps[i] == U'\'') {
      bool matched = false;
      for (const char* suffix : kContractions) {
        const size_t length = std::char_traits<char>::length(suffix);
        bool equal = i + length < n;
        for (size_t k = 0; equal && k < length; ++k) equal = cps[i + 1 + k] == char32_t(suffix[k]);
        if (equal) {
          emit(i, i + 1 + length);
          i += 1 + length;
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
    const size_t body = cps[i] == U' ' ? i + 1 : i;
    if (body < n) {
      bool (*classes[])(char32_t) = {is_letter, is_number, is_other};
      bool matched = false;
      for (auto accept : classes) {
        if (accept(cps[body])) {
          const size_t end = run_end(body, accept);
          emit(i, end);
          i = end;
          matched = true;
          break;
        }
      }
      if (matched) continue;
    }
    // `\s+(?!\S)|\s+`: a whitespace run; before a non-space, its last character is left for
    // the next piece (unless the run is that one character).
    const size_t end = run_end(i, is_white_space);
    if (end == i) {  // cannot happen: every code point is in one of the classes above
      emit(i, i + 1);
      ++i;
      continue;
    }
    const size_t stop = (end < n && end - i >= 2) ? end - 1 : end;
    emit(i, stop);
    i = stop;
  }
  return pieces;
}

void ByteLevelBpeTokenizer::finish(const std::string& source) {
  // bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others for U+0100 onwards.
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t symbol = printable ? char32_t(b) : char32_t(256 + next++);
    byte_symbol_[b].clear();
    append_utf8(byte_symbol_[b], symbol);
    symbol_byte_[symbol] = static_cast<unsigned char>(b);
  }
  int64_t size = 0;
  for (const auto& [token, id] : vocab_) size = std::max(size, id + 1);
  for (const auto& [content, id] : added_tokens_) {
    LINTIME_CHECK(id >= 0, source, ": added token \"", excerpt(content), "\" has id ", id, ", expected a non-negative integer");
    size = std::max(size, id + 1);
  }
  // Ids index a table: one far beyond any vocabulary would ask for exabytes.
  LINTIME_CHECK(size <= config::size_limits::kVocabulary, source, ": token ids reach ", size - 1,
                ", beyond the largest vocabulary lintime takes (", config::size_limits::kVocabulary, " tokens)");
  id_to_token_.assign(size, std::string());
  is_added_.assign(size, false);
  for (const auto& [token, id] : vocab_) id_to_token_[id] = token;
  for (const auto& [content, id] : added_tokens_) {
    id_to_token_[id] = content;
    is_added_[id] = true;
  }
  std::sort(added_tokens_.begin(), added_tokens_.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  for (int b = 0; b < 256; ++b) {
    LINTIME_CHECK(vocab_.count(byte_symbol_[b]), source, ": the vocabulary lacks the symbol of byte ", b,
                  " (expected a byte-level BPE vocabulary with all 256 byte symbols)");
  }
  auto eot = vocab_.find("<|endoftext|>");
  if (eot != vocab_.end()) end_of_text_ = eot->second;
  for (const auto& [content, id] : added_tokens_) {
    if (content == "<|endoftext|>") end_of_text_ = id;
  }
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_vocab_and_merges(const std::string& vocab_path,
                                                                                   const std::string& merges_path) {
  try {
    return read_vocab_and_merges(vocab_path, merges_path);
  } catch (const json::exception& error) {  // a value of another JSON type than the field's
    fail("vocabulary '", vocab_path, "': ", error.what());
  }
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::read_vocab_and_merges(const std::string& vocab_path,
                                                                                   const std::string& merges_path) {
  std::unique_ptr<ByteLevelBpeTokenizer> tokenizer(new ByteLevelBpeTokenizer());
  const json vocab = parse_json(vocab_path, "vocabulary");
  LINTIME_CHECK(vocab.is_object() && !vocab.empty(), "vocabulary '", vocab_path,
                "' must be a JSON object {token: id}");
  for (const auto& [token, id] : vocab.items()) {
    LINTIME_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0, "vocabulary '", vocab_path, "': token \"", token,
                  "\" has id ", id.dump(), ", expected a non-negative integer");
    tokenizer->vocab_[token] = id.get<int64_t>();
  }
  std::istringstream merges(read_file(merges_path, "merges file"));
  std::string line;
  int rank = 0, line_number = 0;
  while (std::getline(merges, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    LINTIME_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                      line.find(' ', space + 1) == std::string::npos,
                  "merges file '", merges_path, "' line ", line_number, ": expected two symbols separated by one space, got \"",
                  excerpt(line), "\"");
    tokenizer->merge_rank_.emplace(line, rank++);
  }
  // GPT-2's vocab.json + merges.txt carry no added-token list; <|endoftext|> is its one special token.
  auto eot = tokenizer->vocab_.find("<|endoftext|>");
  if (eot != tokenizer->vocab_.end()) tokenizer->added_tokens_.emplace_back(eot->first, eot->second);
  tokenizer->finish("vocabulary '" + vocab_path + "'");
  return tokenizer;
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_tokenizer_json(const std::string& path) {
  try {
    return read_tokenizer_json(path);
  } catch (const json::exception& error) {  // a value of another JSON type than the field's
    fail("'", path, "': ", error.what());
  }
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::read_tokenizer_json(const std::string& path) {
  const json document = parse_json(path, "tokenizer.json");
  const char* expected = "expected a byte-level BPE tokenizer (model.type \"BPE\", a ByteLevel pre_tokenizer)";
  LINTIME_CHECK(document.is_object() && document.contains("model") && document["model"].is_object(), "'", path,
                "': no \"model\" object; ", expected);
  const json& model = document["model"];
  LINTIME_CHECK(model.value("type", std::string()) == "BPE", "'", path, "': model.type is ",
                model.contains("type") ? model["type"].dump() : std::string("missing"), "; ", expected);
  // The pre-tokenizer: ByteLevel, alone or inside a Sequence.
  const json pre = document.value("pre_tokenizer", json());
  const json* byte_level = nullptr;
  if (pre.is_object() && pre.value("type", std::string()) == "ByteLevel") byte_level = &pre;
  if (pre.is_object() && pre.value("type", std::string()) == "Sequence" && pre.contains("pretokenizers")) {
    for (const json& item : pre["pretokenizers"]) {
      if (item.is_object() && item.value("type", std::string()) == "ByteLevel" && pre["pretokenizers"].size() == 1)
        byte_level = &item;
    }
  }
  LINTIME_CHECK(byte_level != nullptr, "'", path, "': pre_tokenizer is ", pre.dump().substr(0, 80), "; ", expected);
  LINTIME_CHECK(byte_level->value("use_regex", true), "'", path,
                "': a ByteLevel pre_tokenizer without GPT-2's pattern (use_regex false) is not supported");
  const json normalizer = document.value("normalizer", json());
  LINTIME_CHECK(normalizer.is_null(), "'", path, "': normalizer ", normalizer.dump().substr(0, 80),
                " is not supported (expected null, as GPT-2's)");
  std::unique_ptr<ByteLevelBpeTokenizer> tokenizer(new ByteLevelBpeTokenizer());
  tokenizer->add_prefix_space_ = byte_level->value("add_prefix_space", false);
  LINTIME_CHECK(model.contains("vocab") && model["vocab"].is_object(), "'", path, "': model.vocab must be an object");
  for (const auto& [token, id] : model["vocab"].items()) {
    LINTIME_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0, "'", path, "': model.vocab[\"", token, "\"] is ",
                  id.dump(), ", expected a non-negative integer");
    tokenizer->vocab_[token] = id.get<int64_t>();
  }
  int rank = 0;
  for (const json& merge : model.value("merges", json::array())) {
    std::string key;
    if (merge.is_string()) {
      key = merge.get<std::string>();
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      key = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
    }
    LINTIME_CHECK(!key.empty() && key.find(' ') != std::string::npos, "'", path, "': model.merges[", rank, "] is ",
                  merge.dump(), ", expected \"a b\" or [\"a\", \"b\"]");
    tokenizer->merge_rank_.emplace(key, rank++);
  }
  for (const json& added : document.value("added_tokens", json::array())) {
    LINTIME_CHECK(added.is_object() && added.contains("id") && added["id"].is_number_integer() &&
                      added.contains("content") && added["content"].is_string(),
                  "'", path, "': added_tokens entry ", added.dump().substr(0, 80), " needs an integer id and a content string");
    tokenizer->added_tokens_.emplace_back(added["content"].get<std::string>(), added["id"].get<int64_t>());
  }
  tokenizer->finish("'" + path + "'");
  return tokenizer;
}

void ByteLevelBpeTokenizer::encode_piece(const std::string& piece, std::vector<int64_t>& out) const {
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto cached = cache_.find(piece);
    if (cached != cache_.end()) {
      out.insert(out.end(), cached->second.begin(), cached->second.end());
      return;
    }
  }
  std::vector<std::string> word;
  for (unsigned char byte : piece) word.push_back(byte_symbol_[byte]);
  while (word.size() > 1) {
    int best = INT_MAX;
    size_t best_at = 0;
    for (size_t k = 0; k + 1 < word.size(); ++k) {
      auto rank = merge_rank_.find(word[k] + " " + word[k + 1]);
      if (rank != merge_rank_.end() && rank->second < best) best = rank->second, best_at = k;
    }
    if (best == INT_MAX) break;
    const std::string left = word[best_at], right = word[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (size_t k = 0; k < word.size();) {
      if (k + 1 < word.size() && word[k] == left && word[k + 1] == right) {
        merged.push_back(left + right);
        k += 2;
      } else {
        merged.push_back(word[k++]);
      }
    }
    word = std::move(merged);
  }
  std::vector<int64_t> ids;
  for (const std::string& symbol : word) {
    auto id = vocab_.find(symbol);
    LINTIME_CHECK(id != vocab_.end(), "byte-level BPE: the merged symbol \"", symbol,
                  "\" is not in the vocabulary (the merges and the vocabulary do not belong together)");
    ids.push_back(id->second);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() < 100000) cache_.emplace(piece, std::move(ids));
}

std::vector<int64_t> ByteLevelBpeTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  std::string prefixed;
  if (add_prefix_space_ && !text.empty() && text.front() != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  size_t start = 0;
  auto encode_plain = [&](size_t end) {
    if (end <= start) return;
    for (const std::string& piece : pre_tokenize(text.substr(start, end - start))) encode_piece(piece, ids);
  };
  size_t i = 0;
  while (i < text.size()) {
    bool matched = false;
    for (const auto& [content, id] : added_tokens_) {
      if (!content.empty() && text.compare(i, content.size(), content) == 0) {
        encode_plain(i);
        ids.push_back(id);
        i += content.size();
        start = i;
        matched = true;
        break;
      }
    }
    if (!matched) ++i;
  }
  encode_plain(text.size());
  return ids;
}

std::string ByteLevelBpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    LINTIME_CHECK(id >= 0 && id < vocab_size() && (is_added_[id] || !id_to_token_[id].empty()),
                  "byte-level BPE: token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
    if (is_added_[id]) {
      out += id_to_token_[id];
      continue;
    }
    for (char32_t symbol : decode_utf8(id_to_token_[id])) {
      auto byte = symbol_byte_.find(symbol);
      LINTIME_CHECK(byte != symbol_byte_.end(), "byte-level BPE: token ", id, " holds a character that stands for no byte");
      out += static_cast<char>(byte->second);
    }
  }
  return out;
}

}  // namespace lintime::text
