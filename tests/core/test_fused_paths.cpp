// LINTIME_UNFUSED, the one switch that sends fused CUDA paths to their ATen forms: unset or empty
// keeps every path fused, a list turns off what it names, "all" everything, and an unknown name
// is an error that names it.
#include "core/fused_paths.h"

#include "support/test_support.h"

#include <gtest/gtest.h>

namespace {

using lintime::FusedPath;
using lintime::fused_path_enabled_under;

TEST(FusedPaths, TheSwitchListsWhatRunsUnfused) {
  for (FusedPath path : {FusedPath::taylor, FusedPath::window, FusedPath::conv, FusedPath::epilogues}) {
    EXPECT_TRUE(fused_path_enabled_under(nullptr, path));
    EXPECT_TRUE(fused_path_enabled_under("", path));
    EXPECT_FALSE(fused_path_enabled_under("all", path));
  }
  EXPECT_FALSE(fused_path_enabled_under("taylor,conv", FusedPath::taylor));
  EXPECT_FALSE(fused_path_enabled_under("taylor,conv", FusedPath::conv));
  EXPECT_TRUE(fused_path_enabled_under("taylor,conv", FusedPath::window));
  EXPECT_TRUE(fused_path_enabled_under("taylor,conv", FusedPath::epilogues));
  EXPECT_FALSE(fused_path_enabled_under(",epilogues,", FusedPath::epilogues));
  EXPECT_EQ(lintime::testing::error_of([] { fused_path_enabled_under("taylor,gsa", FusedPath::taylor); }),
            "LINTIME_UNFUSED: unknown path 'gsa' (expected a comma-separated list of taylor, window, conv, "
            "epilogues, or all)");
}

}  // namespace
