// Fuzz targets: each feeds one input of untrusted bytes to a reader lintime exposes to files or
// requests people hand it (checkpoints, configs, tokenizers, token shards, server requests).
// The contract they check: bad input ends in lintime::Error (one line) or is accepted; any other
// exception escaping, a crash or (under sanitizers) a memory error is a bug.
//
// Two drivers run them: libFuzzer (`make fuzz`: clang, coverage-guided, ASan + UBSan;
// tests/fuzz/libfuzzer_main.cpp) and a deterministic replay in `make test`
// (tests/fuzz/test_fuzz_replay.cpp: each target's seed corpus and mutations of it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lintime::fuzz {

struct FuzzTarget {
  const char* name;
  const char* what;                        // the reader it exercises
  void (*run)(std::string_view input);     // may throw lintime::Error; nothing else
};

const std::vector<FuzzTarget>& fuzz_targets();
const FuzzTarget* find_fuzz_target(std::string_view name);

// Runs `target` on `input`. Returns "" when it accepted the input or refused it with
// lintime::Error (a one-line message), else what escaped (another exception's type and text,
// or a refusal spread over several lines).
std::string run_fuzz_input(const FuzzTarget& target, std::string_view input);

// Inputs that stand for several files: parts separated by this line (e.g. a manifest and a shard).
inline constexpr std::string_view kPartSeparator = "\n--8<--\n";
std::vector<std::string_view> split_parts(std::string_view input, size_t max_parts);

}  // namespace lintime::fuzz
