// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then the raw
// little-endian, C-ordered tensor bytes. Files are memory-mapped and validated as the reference
// Rust library does (header size, JSON, dtype, shape x dtype = byte count, offsets contiguous
// and covering the data exactly); every error is one line naming the file and the tensor.
// Writing follows the Python library's layout (tensors sorted by descending dtype alignment,
// then name; header padded with spaces to 8 bytes) and is atomic: "<path>.tmp", then rename.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lintime::io {

// How a tensor leaves the file. Default: a CPU copy in the stored dtype.
struct TensorLoadOptions {
  std::optional<at::ScalarType> dtype;  // convert to this dtype
  std::optional<at::Device> device;     // move to this device
  // false: return a CPU tensor that views the mapping (no copy) when the dtype and device
  // are unchanged and the data is aligned; the mapping stays alive as long as the tensor.
  // Writes to such a tensor stay private to the process (copy-on-write mapping).
  bool copy = true;
};

struct TensorInfo {
  at::ScalarType dtype;
  std::string dtype_name;  // as stored: "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
};

// Supported safetensors dtype names <-> ATen dtypes. Throws lintime::Error for others.
std::string safetensors_dtype_name(at::ScalarType dtype);
at::ScalarType scalar_type_from_safetensors(const std::string& dtype_name);

// One opened, validated safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(std::string path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;

  const std::string& path() const { return path_; }
  // Tensor names in file (offset) order.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const;
  // Throws lintime::Error naming the file when `name` is absent.
  const TensorInfo& info(const std::string& name) const;
  at::Tensor get(const std::string& name, const TensorLoadOptions& options = {}) const;
  // Every tensor, by name.
  std::map<std::string, at::Tensor> get_all(const TensorLoadOptions& options = {}) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// Loads every tensor of a file (copies by default).
std::map<std::string, at::Tensor> load_safetensors(const std::string& path,
                                                   const TensorLoadOptions& options = {});

// Writes named tensors (any device; non-contiguous is fine) and string metadata to `path`
// atomically. Names must be unique, non-empty and not "__metadata__". Throws lintime::Error;
// on failure neither `path` nor "<path>.tmp" is left behind (an existing `path` is untouched).
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The bytes save_safetensors writes (header included), for tests and in-memory use.
std::string serialize_safetensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// The index of a sharded checkpoint (model.safetensors.index.json, pytorch_model.bin.index.json):
//   {"metadata": {...}, "weight_map": {"tensor name": "shard file"}}.
struct ShardIndex {
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor name -> shard file, as listed
  std::string directory;                                         // the index's folder (shards are beside it)
  std::string metadata;                                          // the "metadata" object as JSON text ("{}")
};
// `what` names the index in errors ("safetensors index 'path'"); throws lintime::Error.
ShardIndex read_shard_index(const std::string& index_path, const std::string& what);

// A checkpoint split over shards by model.safetensors.index.json:
//   {"metadata": {...}, "weight_map": {"tensor name": "model-00001-of-00002.safetensors"}}.
// Shards are opened (and validated) once each; every weight_map entry must exist in its shard.
class ShardedSafetensors {
 public:
  explicit ShardedSafetensors(const std::string& index_path);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  // Throws lintime::Error naming the index when `name` is absent.
  const TensorInfo& info(const std::string& name) const;
  at::Tensor get(const std::string& name, const TensorLoadOptions& options = {}) const;
  std::map<std::string, at::Tensor> get_all(const TensorLoadOptions& options = {}) const;
  // The index file's "metadata" object as JSON text ("{}" when absent).
  const std::string& index_metadata() const { return index_metadata_; }

 private:
  std::string index_path_;
  std::map<std::string, size_t> shard_of_;  // tensor name -> index into shards_
  std::vector<SafetensorsFile> shards_;
  std::string index_metadata_;
};

class TorchCheckpoint;

// A model's weight files: model.safetensors, or the shards of model.safetensors.index.json,
// opened without reading the tensors; else torch.save's pytorch_model.bin or the shards of
// pytorch_model.bin.index.json (io/torch_checkpoint.h), read whole. In a model folder, or such a
// file given directly.
class ModelWeights {
 public:
  // Throws lintime::Error naming `path` and what was looked for.
  explicit ModelWeights(const std::string& path);
  ~ModelWeights();
  ModelWeights(ModelWeights&&) noexcept;
  const std::string& source() const { return source_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  at::Tensor get(const std::string& name, const TensorLoadOptions& options = {}) const;

 private:
  std::string source_;
  std::optional<SafetensorsFile> single_;
  std::optional<ShardedSafetensors> sharded_;
  std::unique_ptr<TorchCheckpoint> pickled_;
};

// Loads a model's weights from `path`: a .safetensors file, a .index.json, or a directory
// holding model.safetensors or model.safetensors.index.json.
std::map<std::string, at::Tensor> load_safetensors_weights(const std::string& path,
                                                           const TensorLoadOptions& options = {});

}  // namespace lintime::io
