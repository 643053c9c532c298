// Guards the link order of cmake/LintimeTorch.cmake: std::filesystem calls must bind to
// libstdc++, not to the unversioned copies exported by libtorch_cpu.so (which crashed).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

TEST(FilesystemBinding, RemoveAllWorksNextToTorch) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("lintime_fs_binding_" + std::to_string(::getpid()));
  fs::create_directories(root / "a" / "b");
  EXPECT_TRUE(fs::exists(root / "a" / "b"));
  EXPECT_GT(fs::remove_all(root), 0u);
  EXPECT_FALSE(fs::exists(root));
  EXPECT_EQ(at::ones({3}).sum().item<double>(), 3.0);
}
