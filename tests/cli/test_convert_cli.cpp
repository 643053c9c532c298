// `lintime convert` from the command line: a Llama fixture becomes a GSA folder that `lintime
// forward` reads; a source convert cannot take is one line and a non-zero exit, writing nothing.
#include "support/run_lintime.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace {

namespace fs = std::filesystem;
using lintime::testing::run_lintime;

fs::path fixtures() {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  return fs::path(source ? source : ".") / "tests" / "fixtures";
}

TEST(ConvertCli, ConvertsAFolderThatForwardReads) {
  const fs::path out = fs::temp_directory_path() / ("lintime-convert-cli-" + std::to_string(::getpid()));
  fs::remove_all(out);
  const auto result = run_lintime("convert " + (fixtures() / "hf_parity" / "mistral").string() + " " + out.string() +
                                  " --to gsa --num-slots 16");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("20 tensors copied, 4 new"), std::string::npos) << result.out;
  const auto forward = run_lintime("info " + out.string());
  EXPECT_EQ(forward.exit_code, 0) << forward.out;
  EXPECT_NE(forward.out.find("16 slots"), std::string::npos) << forward.out;

  const auto again = run_lintime("convert " + (fixtures() / "hf_parity" / "mistral").string() + " " + out.string() + " --to gsa");
  EXPECT_NE(again.exit_code, 0);
  EXPECT_EQ(again.out, "lintime: error: convert: '" + out.string() + "' exists; pass --force to replace it\n");
  fs::remove_all(out);
}

TEST(ConvertCli, AnUnsupportedSourceIsOneLine) {
  const fs::path out = fs::temp_directory_path() / ("lintime-convert-cli-bad-" + std::to_string(::getpid()));
  const fs::path source = fixtures() / "fla_parity" / "gsa";
  const auto result = run_lintime("convert " + source.string() + " " + out.string() + " --to gla");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_EQ(result.out, "lintime: error: convert: '" + source.string() + "' holds a model_type \"gsa\" model; convert "
                        "reads Llama and Mistral folders (model_type \"llama\" or \"mistral\")\n");
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
