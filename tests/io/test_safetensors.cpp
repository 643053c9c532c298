// safetensors: round trips of every dtype, byte-exact agreement with the format the Python
// library writes (files built by hand here), clear one-line errors for malformed files, and
// atomic writes that leave nothing behind when they fail.
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include "support/test_support.h"
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

using lintime::io::SafetensorsFile;

namespace {

// POSIX file helpers: libtorch.so exports its own std::filesystem free functions, which the
// dynamic linker may bind in place of libstdc++'s (remove_all crashes), so tests avoid them.
bool exists(const std::string& path) {
  struct stat file_stat {};
  return ::stat(path.c_str(), &file_stat) == 0;
}

bool is_directory(const std::string& path) {
  struct stat file_stat {};
  return ::stat(path.c_str(), &file_stat) == 0 && S_ISDIR(file_stat.st_mode);
}

int entry_count(const std::string& directory) {
  int count = 0;
  DIR* handle = ::opendir(directory.c_str());
  while (dirent* entry = handle ? ::readdir(handle) : nullptr)
    if (std::string(entry->d_name) != "." && std::string(entry->d_name) != "..") ++count;
  if (handle) ::closedir(handle);
  return count;
}

using lintime::testing::TempDir;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string length_prefix(uint64_t length) {
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return prefix;
}

// A file as the format defines it: length, header JSON (padded to 8 with spaces), data.
std::string make_file(std::string header, const std::string& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  return length_prefix(header.size()) + header + data;
}

std::string float_bytes(std::initializer_list<float> values) {
  std::string bytes;
  for (float value : values) bytes.append(reinterpret_cast<const char*>(&value), sizeof(float));
  return bytes;
}

using lintime::testing::error_of;

void expect_error(const std::string& message, std::initializer_list<const char*> parts) {
  for (const char* part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "error must be one line: " << message;
}

TEST(Safetensors, RoundTripAllDtypes) {
  TempDir dir;
  auto generator = lintime::testing::make_generator(7);
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f64", at::randn({3, 5}, generator, at::kDouble)},
      {"f32", at::randn({2, 3, 4}, generator, at::kFloat)},
      {"f16", at::randn({7}, generator, at::kFloat).to(at::kHalf)},
      {"bf16", at::randn({1, 9}, generator, at::kFloat).to(at::kBFloat16)},
      {"i64", at::randint(-1000000, 1000000, {4, 2}, generator, at::kLong)},
      {"i32", at::randint(-1000, 1000, {5}, generator, at::kInt)},
      {"i16", at::randint(-1000, 1000, {3}, generator, at::kShort)},
      {"i8", at::randint(-128, 127, {6}, generator, at::kChar)},
      {"u8", at::randint(0, 255, {2, 2}, generator, at::kByte)},
      {"bool", at::randint(0, 2, {11}, generator, at::kLong).to(at::kBool)},
      {"scalar", at::scalar_tensor(3.5, at::kFloat)},
      {"empty", at::empty({0, 4}, at::kFloat)},
      {"strided", at::arange(12, at::kFloat).view({3, 4}).t()},
  };
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "quote \" and é"}};
  const std::string path = dir.file("all.safetensors");
  lintime::io::save_safetensors(path, tensors, metadata);
  EXPECT_FALSE(exists(path + ".tmp"));

  SafetensorsFile file(path);
  EXPECT_EQ(file.metadata(), metadata);
  EXPECT_EQ(file.names().size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    at::Tensor actual = file.get(name);
    EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(actual.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(at::equal(actual, expected)) << name;
    at::Tensor view = file.get(name, {.copy = false});
    EXPECT_TRUE(at::equal(view, expected)) << name;
  }
  at::Tensor converted = file.get("f16", {.dtype = at::kFloat});
  EXPECT_EQ(converted.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(converted, tensors[2].second.to(at::kFloat)));

  // A view keeps the mapping alive after the file object is gone; writes stay private.
  at::Tensor view;
  {
    SafetensorsFile reopened(path);
    view = reopened.get("f32", {.copy = false});
  }
  view.add_(1.0);
  EXPECT_TRUE(at::equal(view, tensors[1].second + 1.0));
  EXPECT_TRUE(at::equal(SafetensorsFile(path).get("f32"), tensors[1].second));
}

TEST(Safetensors, WritesTheBytesThePythonLibraryWrites) {
  // One F32 tensor "attn.0" of shape [1, 2, 3] holding 0..5: a 64-byte header, no padding.
  const std::string header =
      R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);
  const std::string expected = make_file(header, float_bytes({0, 1, 2, 3, 4, 5}));
  const auto values = at::arange(6, at::kFloat).view({1, 2, 3});
  EXPECT_EQ(lintime::io::serialize_safetensors({{"attn.0", values}}), expected);

  // Shorter name: header padded with spaces to a multiple of 8.
  const std::string short_header =
      R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(lintime::io::serialize_safetensors({{"attn0", values.view({1, 1, 2, 3})}}),
            make_file(short_header, float_bytes({0, 1, 2, 3, 4, 5})));
  EXPECT_EQ(short_header.size() % 8, 1u);

  // No tensors: "{}" plus six spaces; metadata comes first in the header.
  EXPECT_EQ(lintime::io::serialize_safetensors({}), make_file("{}", ""));
  EXPECT_EQ(lintime::io::serialize_safetensors({}, {{"framework", "pt"}}),
            make_file(R"({"__metadata__":{"framework":"pt"}})", ""));

  // Order: descending dtype alignment (I64 > F64 > F32 > BF16 > BOOL), then name.
  const std::string mixed = lintime::io::serialize_safetensors({
      {"z_bool", at::ones({1}, at::kBool)},
      {"b_f32", at::zeros({1}, at::kFloat)},
      {"a_f32", at::zeros({1}, at::kFloat)},
      {"w_bf16", at::zeros({1}, at::kBFloat16)},
      {"y_f64", at::zeros({1}, at::kDouble)},
      {"x_i64", at::zeros({1}, at::kLong)},
  });
  const std::string mixed_header =
      R"({"x_i64":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("y_f64":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
      R"("a_f32":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
      R"("b_f32":{"dtype":"F32","shape":[1],"data_offsets":[20,24]},)"
      R"("w_bf16":{"dtype":"BF16","shape":[1],"data_offsets":[24,26]},)"
      R"("z_bool":{"dtype":"BOOL","shape":[1],"data_offsets":[26,27]}})";
  EXPECT_EQ(mixed.substr(8, mixed_header.size()), mixed_header);
}

TEST(Safetensors, ReadsAHandBuiltFile) {
  TempDir dir;
  // Header keys in an order unrelated to the data order, metadata last, extra spaces.
  const std::string header =
      R"({ "b": {"dtype": "I32", "shape": [2], "data_offsets": [12, 20]},)"
      R"( "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},)"
      R"( "c": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [20, 22]},)"
      R"( "__metadata__": {"format": "pt"} })";
  std::string data = float_bytes({1.5f, -2.0f, 4.25f});
  int32_t ints[2] = {7, -9};
  data.append(reinterpret_cast<const char*>(ints), sizeof(ints));
  data += std::string("\x40\x40", 2);  // bfloat16 3.0
  const std::string path = dir.file("hand.safetensors");
  write_bytes(path, make_file(header, data));

  SafetensorsFile file(path);
  EXPECT_EQ(file.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_TRUE(at::equal(file.get("a"), at::tensor({1.5f, -2.0f, 4.25f})));
  EXPECT_TRUE(at::equal(file.get("b"), at::tensor({7, -9}, at::kInt)));
  EXPECT_EQ(file.get("c").scalar_type(), at::kBFloat16);
  EXPECT_EQ(file.get("c", {.dtype = at::kFloat}).item<float>(), 3.0f);
  // Unaligned data (header of odd length): views fall back to copies and stay correct.
  const std::string unpadded = make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                         float_bytes({1, 2}), /*pad=*/false);
  write_bytes(path, unpadded);
  EXPECT_TRUE(at::equal(SafetensorsFile(path).get("a", {.copy = false}), at::tensor({1.0f, 2.0f})));
}

TEST(Safetensors, MalformedFilesGiveClearErrors) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  auto open_error = [&](const std::string& bytes) {
    write_bytes(path, bytes);
    return error_of([&] { SafetensorsFile file(path); });
  };
  const std::string good_header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::string good = make_file(good_header, float_bytes({1, 2, 3, 4}));
  ASSERT_NO_THROW({ write_bytes(path, good); SafetensorsFile file(path); });

  expect_error(open_error("abc"), {"bad.safetensors", "truncated", "at least 8"});
  expect_error(open_error(good.substr(0, good.size() - 4)), {"bad.safetensors", "tensor 'w'", "past the end"});
  expect_error(open_error(good.substr(0, 20)), {"bad.safetensors", "header length", "past the end"});
  expect_error(open_error(length_prefix(uint64_t(1) << 40) + good.substr(8)),
               {"bad.safetensors", "header length", "limit"});
  expect_error(open_error(make_file(R"({"w":{"dtype":"F32",)", "")), {"bad.safetensors", "not valid JSON"});
  expect_error(open_error(make_file("[1, 2]", "")), {"bad.safetensors", "JSON object"});
  expect_error(open_error(make_file(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,24]}})",
                                    float_bytes({1, 2, 3, 4}))),
               {"tensor 'w'", "[0,24]", "past the end"});
  expect_error(open_error(make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})",
                                    float_bytes({1, 2, 3, 4}))),
               {"tensor 'w'", "shape [2, 3] of F32 needs 24 bytes", "hold 16"});
  expect_error(open_error(make_file(R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})",
                                    float_bytes({1}))),
               {"tensor 'w'", "unknown dtype 'F8_E4M3'"});
  expect_error(open_error(make_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                                    float_bytes({1, 2}))),
               {"tensor 'w'", "non-negative"});
  expect_error(open_error(make_file(R"({"u":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                    float_bytes({1, 2, 3}))),
               {"tensor 'v'", "overlap"});
  expect_error(open_error(make_file(R"({"u":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                    float_bytes({1, 2}))),
               {"tensor 'u'", "gap"});
  expect_error(open_error(make_file(good_header, float_bytes({1, 2, 3, 4, 5}))),
               {"bad.safetensors", "cover 16 data bytes", "holds 20"});
  expect_error(error_of([&] { SafetensorsFile file(dir.file("missing.safetensors")); }),
               {"missing.safetensors", "cannot open"});
  ASSERT_EQ(::mkdir(dir.file("folder.safetensors").c_str(), 0755), 0);
  expect_error(error_of([&] { SafetensorsFile file(dir.file("folder.safetensors")); }),
               {"folder.safetensors", "is a directory or another kind of file, expected a regular file"});
  write_bytes(path, good);
  expect_error(error_of([&] { SafetensorsFile(path).get("nope"); }), {"tensor 'nope'", "not found"});
}

TEST(Safetensors, AtomicWriteLeavesNothingBehindOnFailure) {
  TempDir dir;
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {{"w", at::ones({4})}};

  // Directory that does not exist: nothing is created.
  const std::string missing = dir.file("no_such_dir/x.safetensors");
  expect_error(error_of([&] { lintime::io::save_safetensors(missing, tensors); }),
               {"x.safetensors", "cannot create"});
  EXPECT_FALSE(exists(missing));
  EXPECT_FALSE(exists(missing + ".tmp"));

  // The final name is taken by a directory: the rename fails, the temporary is removed.
  const std::string occupied = dir.file("occupied.safetensors");
  ::mkdir(occupied.c_str(), 0755);
  ::mkdir((occupied + "/child").c_str(), 0755);
  expect_error(error_of([&] { lintime::io::save_safetensors(occupied, tensors); }),
               {"occupied.safetensors", "rename failed"});
  EXPECT_TRUE(is_directory(occupied));
  EXPECT_FALSE(exists(occupied + ".tmp"));

  // Invalid input is rejected before anything is written; an existing file stays intact.
  const std::string existing = dir.file("existing.safetensors");
  lintime::io::save_safetensors(existing, tensors);
  const std::string before = read_bytes(existing);
  expect_error(error_of([&] {
                 lintime::io::save_safetensors(existing, {{"a", at::ones({2})}, {"b", at::ones({2}, at::kComplexFloat)}});
               }),
               {"existing.safetensors", "tensor 'b'", "ComplexFloat"});
  expect_error(error_of([&] {
                 lintime::io::save_safetensors(existing, {{"a", at::ones({2})}, {"a", at::ones({2})}});
               }),
               {"tensor 'a'", "twice"});
  EXPECT_EQ(read_bytes(existing), before);
  EXPECT_FALSE(exists(existing + ".tmp"));

  // Overwriting an existing file replaces it whole.
  lintime::io::save_safetensors(existing, {{"v", at::zeros({3}, at::kDouble)}});
  EXPECT_EQ(SafetensorsFile(existing).names(), std::vector<std::string>{"v"});
  EXPECT_EQ(entry_count(dir.path()), 2);
}

TEST(Safetensors, ShardedIndex) {
  TempDir dir;
  lintime::io::save_safetensors(dir.file("model-00001-of-00002.safetensors"),
                                {{"a.weight", at::ones({2, 2})}, {"b.weight", at::zeros({3})}});
  lintime::io::save_safetensors(dir.file("model-00002-of-00002.safetensors"),
                                {{"c.weight", at::full({2}, 5.0)}});
  std::ofstream(dir.file("model.safetensors.index.json"))
      << R"({"metadata": {"total_size": 44}, "weight_map": {)"
      << R"("a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00001-of-00002.safetensors",)"
      << R"("c.weight": "model-00002-of-00002.safetensors"}})";
  auto weights = lintime::io::load_safetensors_weights(dir.path());
  ASSERT_EQ(weights.size(), 3u);
  EXPECT_TRUE(at::equal(weights.at("c.weight"), at::full({2}, 5.0)));
  lintime::io::ShardedSafetensors sharded(dir.file("model.safetensors.index.json"));
  EXPECT_EQ(sharded.names(), (std::vector<std::string>{"a.weight", "b.weight", "c.weight"}));
  EXPECT_EQ(sharded.get("b.weight", {.dtype = at::kDouble}).scalar_type(), at::kDouble);

  std::ofstream(dir.file("broken.index.json"))
      << R"({"weight_map": {"d.weight": "model-00002-of-00002.safetensors"}})";
  expect_error(error_of([&] { lintime::io::ShardedSafetensors broken(dir.file("broken.index.json")); }),
               {"broken.index.json", "tensor 'd.weight'", "does not hold it"});
}

// Every shard an index names must be a file of its folder: relative names with "..", absolute
// names and links that lead outside are refused with one line (before any file is opened), for
// safetensors and PyTorch indexes; shards in a subfolder and Hugging Face's hub-cache layout
// (snapshot files linked into the repository's blobs/) are read.
TEST(Safetensors, AnIndexNamesOnlyFilesOfItsFolder) {
  TempDir dir, elsewhere;
  lintime::io::save_safetensors(elsewhere.file("outside.safetensors"), {{"a.weight", at::ones({2})}});
  ASSERT_EQ(::mkdir(dir.file("model").c_str(), 0755), 0);
  ASSERT_EQ(::symlink(elsewhere.file("outside.safetensors").c_str(), dir.file("model/link.safetensors").c_str()), 0);
  auto index_naming = [&](const std::string& shard, const std::string& index_name) {
    std::ofstream(dir.file("model/" + index_name)) << R"({"weight_map": {"a.weight": ")" << shard << R"("}})";
    return dir.file("model/" + index_name);
  };
  for (const std::string shard : {"../../../../etc/passwd", "/etc/passwd", "sub/../../outside.safetensors", ".."}) {
    const std::string expected = "weight_map entry 'a.weight' names '" + shard + "', outside the index's folder";
    const std::string index = index_naming(shard, "model.safetensors.index.json");
    expect_error(error_of([&] { lintime::io::ShardedSafetensors sharded(index); }), {expected.c_str()});
    const std::string torch_index = index_naming(shard, "pytorch_model.bin.index.json");
    expect_error(error_of([&] { lintime::io::TorchCheckpoint checkpoint(torch_index); }), {expected.c_str()});
  }
  expect_error(error_of([&] { lintime::io::ShardedSafetensors s(index_naming("link.safetensors", "i.index.json")); }),
               {"names 'link.safetensors', a link to '", "outside the index's folder"});
  // A shard in a subfolder is inside.
  ASSERT_EQ(::mkdir(dir.file("model/shards").c_str(), 0755), 0);
  lintime::io::save_safetensors(dir.file("model/shards/one.safetensors"), {{"a.weight", at::full({2}, 3.0)}});
  lintime::io::ShardedSafetensors inside(index_naming("shards/one.safetensors", "model.safetensors.index.json"));
  EXPECT_TRUE(at::equal(inside.get("a.weight", {}), at::full({2}, 3.0)));
  // The hub cache: snapshots/<revision>/shard -> ../../blobs/<hash>.
  for (const char* folder : {"hub", "hub/blobs", "hub/snapshots", "hub/snapshots/abc"}) {
    ASSERT_EQ(::mkdir(dir.file(folder).c_str(), 0755), 0);
  }
  lintime::io::save_safetensors(dir.file("hub/blobs/5f3e"), {{"a.weight", at::full({2}, 4.0)}});
  ASSERT_EQ(::symlink("../../blobs/5f3e", dir.file("hub/snapshots/abc/model-1.safetensors").c_str()), 0);
  std::ofstream(dir.file("hub/snapshots/abc/model.safetensors.index.json"))
      << R"({"weight_map": {"a.weight": "model-1.safetensors"}})";
  lintime::io::ShardedSafetensors cached(dir.file("hub/snapshots/abc/model.safetensors.index.json"));
  EXPECT_TRUE(at::equal(cached.get("a.weight", {}), at::full({2}, 4.0)));
}

}  // namespace
