// PyTorch checkpoints (torch.save's zip format): a state dict and its two-shard form written by
// torch (tests/fixtures/torch_checkpoint, scripts/make_torch_checkpoint_fixtures.py) read back
// equal to the same tensors stored as safetensors — fp32, bf16, fp16, int64, tied storage, a
// non-contiguous view, a 0-dim tensor; ModelWeights finds pytorch_model.bin in a folder; a
// checkpoint that is not a flat state dict, not a zip, or whose pickle would run code
// (os.system), is refused with one line naming it.
#include "core/error.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;
using lintime::testing::error_of;

fs::path fixture(const std::string& name) {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  const fs::path path = fs::path(source ? source : ".") / "tests" / "fixtures" / "torch_checkpoint" / name;
  if (!fs::exists(path)) throw std::runtime_error("fixture " + path.string() + " not found (set LINTIME_SOURCE_DIR)");
  return path;
}

void expect_same_tensors(const lintime::io::ModelWeights& weights) {
  const auto expected = lintime::io::load_safetensors(fixture("expected.safetensors").string());
  std::vector<std::string> names;
  for (const auto& [name, tensor] : expected) names.push_back(name);
  EXPECT_EQ(weights.names(), names);
  for (const auto& [name, tensor] : expected) {
    const at::Tensor actual = weights.get(name);
    EXPECT_EQ(actual.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_EQ(weights.info(name).shape, tensor.sizes().vec()) << name;
    EXPECT_TRUE(actual.is_contiguous()) << name;
    EXPECT_TRUE(at::equal(actual, tensor)) << name;
  }
  const at::Tensor as_float = weights.get("layers.0.proj.weight", {.dtype = at::kFloat});
  EXPECT_EQ(as_float.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(as_float, expected.at("layers.0.proj.weight").to(at::kFloat)));
}

TEST(TorchCheckpoint, StateDictReadsAsSaved) {
  expect_same_tensors(lintime::io::ModelWeights(fixture("pytorch_model.bin").string()));
  expect_same_tensors(lintime::io::ModelWeights(fixture("").string()));  // the folder
}

TEST(TorchCheckpoint, ShardsReadAsOneStateDict) {
  expect_same_tensors(lintime::io::ModelWeights(fixture("sharded").string()));
}

TEST(TorchCheckpoint, RefusesWhatIsNotAFlatStateDict) {
  const std::string nested = error_of([] { lintime::io::TorchCheckpoint(fixture("nested.bin").string()); });
  EXPECT_NE(nested.find("entry 'model'"), std::string::npos) << nested;
  EXPECT_NE(nested.find("expected a tensor"), std::string::npos) << nested;
  const std::string code = error_of([] { lintime::io::TorchCheckpoint(fixture("runs_code.bin").string()); });
  EXPECT_NE(code.find("calls posix.system"), std::string::npos) << code;
  EXPECT_NE(code.find("refused"), std::string::npos) << code;
  lintime::testing::TempDir dir;
  std::ofstream(dir.file("pytorch_model.bin")) << "not a zip file";
  const std::string garbage = error_of([&] { lintime::io::ModelWeights weights(dir.path()); });
  EXPECT_NE(garbage.find("not a zip archive"), std::string::npos) << garbage;
  std::ofstream(dir.file("broken.bin")) << "PK\x03\x04 truncated";
  const std::string broken = error_of([&] { lintime::io::TorchCheckpoint(dir.file("broken.bin")); });
  EXPECT_NE(broken.find("broken.bin"), std::string::npos) << broken;
  for (const std::string& message : {nested, code, garbage, broken}) EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  const std::string missing = error_of([&] { lintime::io::ModelWeights(dir.path() + "/nothing_here"); });
  EXPECT_FALSE(missing.empty());
}

}  // namespace
