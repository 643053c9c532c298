// The fuzz targets (fuzz_targets.h) in `make test`: each target's seed corpus (tests/fuzz/corpus,
// valid inputs: every one must be accepted) and crash regressions (tests/fuzz/regressions, kept
// from libFuzzer runs), then deterministic mutations of the seeds (bit flips, interesting bytes,
// insertions, deletions, truncations, repeats, splices). Every input must end accepted or refused
// with one lintime::Error line. LINTIME_FUZZ_MUTATIONS sets the mutations per target (default
// 400); `make fuzz` runs libFuzzer for longer.
#include "fuzz/fuzz_targets.h"
#include "support/test_support.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using lintime::fuzz::FuzzTarget;

std::vector<std::pair<std::string, std::string>> files_in(const fs::path& dir) {
  std::vector<std::pair<std::string, std::string>> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    files.emplace_back(entry.path().filename().string(), bytes.str());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string shown(const std::string& input) {
  std::string out;
  for (unsigned char c : input.substr(0, 160)) {
    if (c >= 32 && c < 127 && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  return out + (input.size() > 160 ? "..." : "");
}

// One mutation of `input` (another seed for splices).
std::string mutate(std::string input, const std::string& other, std::mt19937_64& random) {
  const auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(random() % n); };
  static const char kInteresting[] = {'\0', '\xff', '\x7f', '\x80', '"', '{', '}', '[', ']', ',', ':', '9', '-', '\n', '='};
  const int rounds = 1 + static_cast<int>(random() % 4);
  for (int round = 0; round < rounds; ++round) {
    switch (random() % 7) {
      case 0:
        if (!input.empty()) input[pick(input.size())] ^= static_cast<char>(1 << (random() % 8));
        break;
      case 1:
        if (!input.empty()) input[pick(input.size())] = kInteresting[pick(sizeof kInteresting)];
        break;
      case 2:
        input.insert(pick(input.size() + 1), std::string(1 + pick(8), kInteresting[pick(sizeof kInteresting)]));
        break;
      case 3: {
        const size_t at = pick(input.size() + 1);
        input.erase(at, 1 + pick(16));
        break;
      }
      case 4:
        input.resize(pick(input.size() + 1));
        break;
      case 5: {
        const size_t at = pick(input.size() + 1), length = std::min<size_t>(1 + pick(32), input.size() - std::min(at, input.size()));
        input.insert(pick(input.size() + 1), input.substr(std::min(at, input.size()), length));
        break;
      }
      default: {
        const size_t cut = pick(input.size() + 1), from = pick(other.size() + 1);
        input = input.substr(0, cut) + other.substr(from);
        break;
      }
    }
  }
  return input;
}

int mutations_per_target() {
  const char* setting = std::getenv("LINTIME_FUZZ_MUTATIONS");
  return setting != nullptr ? std::atoi(setting) : 400;
}

class FuzzReplay : public ::testing::TestWithParam<std::string> {};

TEST_P(FuzzReplay, EveryInputIsAcceptedOrRefusedWithOneLine) {
  const FuzzTarget* target = lintime::fuzz::find_fuzz_target(GetParam());
  ASSERT_NE(target, nullptr);
  const fs::path fuzz_dir = fs::path(lintime::testing::source_dir()) / "tests" / "fuzz";
  const auto seeds = files_in(fuzz_dir / "corpus" / target->name);
  ASSERT_FALSE(seeds.empty()) << "no seeds in tests/fuzz/corpus/" << target->name << " (scripts/make_fuzz_corpus.py)";
  int problems = 0;
  const auto check = [&](const std::string& label, const std::string& input) {
    const std::string problem = lintime::fuzz::run_fuzz_input(*target, input);
    if (!problem.empty() && ++problems <= 5) {
      ADD_FAILURE() << target->name << " " << label << ": " << problem << "\n  input (" << input.size()
                    << " bytes): " << shown(input);
    }
  };
  for (const auto& [name, bytes] : seeds) check("seed " + name, bytes);
  for (const auto& [name, bytes] : files_in(fuzz_dir / "regressions" / target->name)) check("regression " + name, bytes);
  std::mt19937_64 random(std::hash<std::string>{}(target->name));
  const int mutations = mutations_per_target();
  for (int i = 0; i < mutations; ++i) {
    const auto& seed = seeds[static_cast<size_t>(random() % seeds.size())].second;
    const auto& other = seeds[static_cast<size_t>(random() % seeds.size())].second;
    check("mutation " + std::to_string(i), mutate(seed, other, random));
  }
  EXPECT_EQ(problems, 0) << target->name << ": " << problems << " inputs escaped the contract";
}

std::vector<std::string> target_names() {
  std::vector<std::string> names;
  for (const auto& target : lintime::fuzz::fuzz_targets()) names.push_back(target.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay, ::testing::ValuesIn(target_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// The seeds are valid inputs: each is accepted (a refusal would mean the seed no longer
// exercises the reader past its first check).
TEST(FuzzSeeds, EverySeedIsAccepted) {
  const fs::path corpus = fs::path(lintime::testing::source_dir()) / "tests" / "fuzz" / "corpus";
  for (const auto& target : lintime::fuzz::fuzz_targets()) {
    for (const auto& [name, bytes] : files_in(corpus / target.name)) {
      try {
        target.run(bytes);
      } catch (const std::exception& error) {
        ADD_FAILURE() << target.name << " seed " << name << " is refused: " << error.what();
      }
    }
  }
}

}  // namespace
