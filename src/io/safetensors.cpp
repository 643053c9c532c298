// safetensors reader (mmap + validation) and atomic writer. See safetensors.h for the format.
#include "io/safetensors.h"

#include "core/paths.h"
#include "core/tensor_checks.h"
#include "core/error.h"
#include "io/torch_checkpoint.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <fcntl.h>
#include <set>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts would need byte swapping");

namespace lintime::io {

namespace {

// The reference library refuses headers above 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeEntry {
  const char* name;
  at::ScalarType dtype;
  int alignment_rank;  // position in the reference library's Dtype enum (ascending alignment)
};

constexpr DtypeEntry kDtypes[] = {
    {"BOOL", at::kBool, 0},  {"U8", at::kByte, 1},      {"I8", at::kChar, 2},
    {"I16", at::kShort, 5},  {"F16", at::kHalf, 7},     {"BF16", at::kBFloat16, 8},
    {"I32", at::kInt, 9},    {"F32", at::kFloat, 11},   {"F64", at::kDouble, 12},
    {"I64", at::kLong, 13},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& entry : kDtypes)
    if (name == entry.name) return &entry;
  return nullptr;
}

const DtypeEntry* find_dtype(at::ScalarType dtype) {
  for (const auto& entry : kDtypes)
    if (dtype == entry.dtype) return &entry;
  return nullptr;
}

std::string where(const std::string& path) { return "safetensors file '" + path + "'"; }

std::string where(const std::string& path, const std::string& tensor) {
  return where(path) + ": tensor '" + tensor + "'";
}

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

}  // namespace

std::string safetensors_dtype_name(at::ScalarType dtype) {
  const DtypeEntry* entry = find_dtype(dtype);
  LINTIME_CHECK(entry, "safetensors: dtype ", c10::toString(dtype),
                " is not supported (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
  return entry->name;
}

at::ScalarType scalar_type_from_safetensors(const std::string& dtype_name) {
  const DtypeEntry* entry = find_dtype(dtype_name);
  LINTIME_CHECK(entry, "safetensors: unknown dtype '", dtype_name,
                "' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
  return entry->dtype;
}

// ---------------------------------------------------------------------------------------------
// Reader

struct SafetensorsFile::Mapping {
  void* address = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (address) munmap(address, size);
  }
  const uint8_t* bytes() const { return static_cast<const uint8_t*>(address); }
};

SafetensorsFile::~SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::move(path)) {
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  LINTIME_CHECK(fd >= 0, where(path_), ": cannot open: ", std::strerror(errno));
  struct stat file_stat {};
  if (::fstat(fd, &file_stat) != 0) {
    int saved = errno;
    ::close(fd);
    fail(where(path_), ": cannot stat: ", std::strerror(saved));
  }
  if (!S_ISREG(file_stat.st_mode)) {
    ::close(fd);
    fail(where(path_), ": is a directory or another kind of file, expected a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(file_stat.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail(where(path_), ": truncated: ", file_size,
         " bytes, expected at least 8 (the header length)");
  }
  // Private and writable: views handed out with copy = false may be written without ever
  // touching the file (copy-on-write).
  void* address = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int saved = errno;
  ::close(fd);
  LINTIME_CHECK(address != MAP_FAILED, where(path_), ": mmap failed: ", std::strerror(saved));
  mapping_ = std::make_shared<Mapping>();
  mapping_->address = address;
  mapping_->size = file_size;
  const uint8_t* bytes = mapping_->bytes();

  const uint64_t header_bytes = read_u64_le(bytes);
  LINTIME_CHECK(header_bytes <= kMaxHeaderBytes, where(path_), ": header length ", header_bytes,
                " exceeds the 100000000-byte limit (corrupt or not a safetensors file)");
  LINTIME_CHECK(header_bytes <= file_size - 8, where(path_), ": header length ", header_bytes,
                " runs past the end of the file (", file_size, " bytes): truncated or corrupt");
  data_start_ = 8 + header_bytes;
  const uint64_t data_size = file_size - data_start_;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + data_start_);
  } catch (const nlohmann::json::exception& error) {
    fail(where(path_), ": header is not valid JSON (", error.what(), ")");
  }
  LINTIME_CHECK(header.is_object(), where(path_), ": header must be a JSON object, got ",
                header.type_name());

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      LINTIME_CHECK(entry.is_object(), where(path_), ": __metadata__ must be an object of strings");
      for (const auto& [key, value] : entry.items()) {
        LINTIME_CHECK(value.is_string(), where(path_), ": __metadata__ entry '", key,
                      "' must be a string, got ", value.type_name());
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    LINTIME_CHECK(entry.is_object(), where(path_, name), ": entry must be an object");
    LINTIME_CHECK(entry.contains("dtype") && entry["dtype"].is_string(), where(path_, name),
                  ": missing string field 'dtype'");
    LINTIME_CHECK(entry.contains("shape") && entry["shape"].is_array(), where(path_, name),
                  ": missing array field 'shape'");
    LINTIME_CHECK(entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                      entry["data_offsets"].size() == 2,
                  where(path_, name), ": missing field 'data_offsets' = [begin, end]");
    TensorInfo info;
    info.dtype_name = entry["dtype"].get<std::string>();
    const DtypeEntry* dtype = find_dtype(info.dtype_name);
    LINTIME_CHECK(dtype, where(path_, name), ": unknown dtype '", info.dtype_name,
                  "' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
    info.dtype = dtype->dtype;
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& dim : entry["shape"]) {
      LINTIME_CHECK(dim.is_number_unsigned(), where(path_, name),
                    ": shape entries must be non-negative integers, got ", dim.dump());
      const uint64_t size = dim.get<uint64_t>();
      LINTIME_CHECK(size <= static_cast<uint64_t>(INT64_MAX), where(path_, name), ": shape entry ",
                    size, " is too large");
      info.shape.push_back(static_cast<int64_t>(size));
      overflow |= __builtin_mul_overflow(numel, size, &numel);
    }
    const auto& offsets = entry["data_offsets"];
    LINTIME_CHECK(offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(),
                  where(path_, name), ": data_offsets must be non-negative integers, got ",
                  offsets.dump());
    info.begin = offsets[0].get<uint64_t>();
    info.end = offsets[1].get<uint64_t>();
    LINTIME_CHECK(info.begin <= info.end, where(path_, name), ": data_offsets ", offsets.dump(),
                  " has begin > end");
    LINTIME_CHECK(info.end <= data_size, where(path_, name), ": data_offsets ", offsets.dump(),
                  " run past the end of the data (", data_size, " bytes): truncated file?");
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(info.dtype)),
                                       &nbytes);
    LINTIME_CHECK(!overflow, where(path_, name), ": shape ", shape_string(info.shape),
                  " overflows the byte count");
    LINTIME_CHECK(nbytes == info.end - info.begin, where(path_, name), ": shape ",
                  shape_string(info.shape), " of ", info.dtype_name, " needs ", nbytes,
                  " bytes but data_offsets ", offsets.dump(), " hold ", info.end - info.begin);
    infos_.emplace(name, std::move(info));
  }
  for (const auto& [name, info] : infos_) spans.push_back({info.begin, info.end, &name});
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected_begin = 0;
  for (const Span& span : spans) {
    LINTIME_CHECK(span.begin >= expected_begin, where(path_, *span.name), ": data_offsets [",
                  span.begin, ", ", span.end, "] overlap the previous tensor (ending at ",
                  expected_begin, ")");
    LINTIME_CHECK(span.begin == expected_begin, where(path_, *span.name), ": data_offsets [",
                  span.begin, ", ", span.end, "] leave a gap after byte ", expected_begin);
    expected_begin = span.end;
    names_.push_back(*span.name);
  }
  LINTIME_CHECK(expected_begin == data_size, where(path_), ": tensors cover ", expected_begin,
                " data bytes but the file holds ", data_size, " after the header");
}

bool SafetensorsFile::contains(const std::string& name) const { return infos_.count(name) > 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto found = infos_.find(name);
  LINTIME_CHECK(found != infos_.end(), where(path_, name), ": not found in the file");
  return found->second;
}

at::Tensor SafetensorsFile::get(const std::string& name, const TensorLoadOptions& options) const {
  const TensorInfo& tensor_info = info(name);
  const uint8_t* source = mapping_->bytes() + data_start_ + tensor_info.begin;
  const size_t nbytes = tensor_info.end - tensor_info.begin;
  const at::ScalarType target_dtype = options.dtype.value_or(tensor_info.dtype);
  const at::Device target_device = options.device.value_or(at::Device(at::kCPU));
  const bool aligned =
      reinterpret_cast<uintptr_t>(source) % c10::elementSize(tensor_info.dtype) == 0;
  if (!options.copy && target_dtype == tensor_info.dtype && target_device.is_cpu() && aligned) {
    std::shared_ptr<Mapping> keep_alive = mapping_;
    return at::from_blob(const_cast<uint8_t*>(source), tensor_info.shape,
                         [keep_alive](void*) mutable { keep_alive.reset(); },
                         at::TensorOptions().dtype(tensor_info.dtype));
  }
  at::Tensor tensor = at::empty(tensor_info.shape, at::TensorOptions().dtype(tensor_info.dtype));
  if (nbytes > 0) std::memcpy(tensor.data_ptr(), source, nbytes);
  if (target_dtype != tensor_info.dtype || target_device != tensor.device())
    tensor = tensor.to(target_device, target_dtype);
  return tensor;
}

std::map<std::string, at::Tensor> SafetensorsFile::get_all(const TensorLoadOptions& options) const {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& name : names_) tensors.emplace(name, get(name, options));
  return tensors;
}

std::map<std::string, at::Tensor> load_safetensors(const std::string& path,
                                                   const TensorLoadOptions& options) {
  return SafetensorsFile(path).get_all(options);
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

struct PreparedFile {
  std::string header;               // 8-byte length + padded JSON
  std::vector<at::Tensor> tensors;  // CPU, contiguous, in data order
};

PreparedFile prepare(const std::string& what,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                     const std::map<std::string, std::string>& metadata) {
  struct Entry {
    const std::string* name;
    const DtypeEntry* dtype;
    const at::Tensor* tensor;
  };
  std::vector<Entry> entries;
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    LINTIME_CHECK(!name.empty(), what, ": tensor names must be non-empty");
    LINTIME_CHECK(name != "__metadata__", what, ": '__metadata__' is reserved, not a tensor name");
    LINTIME_CHECK(seen.insert(name).second, what, ": tensor '", name, "' appears twice");
    LINTIME_CHECK(tensor.defined(), what, ": tensor '", name, "' is undefined");
    const DtypeEntry* dtype = find_dtype(tensor.scalar_type());
    LINTIME_CHECK(dtype, what, ": tensor '", name, "' has dtype ", c10::toString(tensor.scalar_type()),
                  ", expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
    entries.push_back({&name, dtype, &tensor});
  }
  // The Python library's order: descending dtype alignment, then name. Data stays aligned.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.dtype->alignment_rank != b.dtype->alignment_rank)
      return a.dtype->alignment_rank > b.dtype->alignment_rank;
    return *a.name < *b.name;
  });

  PreparedFile prepared;
  std::string json = "{";
  if (!metadata.empty()) json += "\"__metadata__\":" + nlohmann::json(metadata).dump();
  uint64_t offset = 0;
  for (const Entry& entry : entries) {
    at::Tensor cpu = entry.tensor->detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(cpu.numel()) * cpu.element_size();
    if (json.size() > 1) json += ",";
    json += nlohmann::json(*entry.name).dump();
    json += ":{\"dtype\":\"";
    json += entry.dtype->name;
    json += "\",\"shape\":[";
    for (int64_t d = 0; d < cpu.dim(); ++d) {
      if (d > 0) json += ',';
      json += std::to_string(cpu.size(d));
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," +
            std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
    prepared.tensors.push_back(std::move(cpu));
  }
  json += "}";
  json.append((8 - json.size() % 8) % 8, ' ');
  prepared.header.resize(8);
  uint64_t length = json.size();
  for (int i = 0; i < 8; ++i) prepared.header[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  prepared.header += json;
  return prepared;
}

bool write_all(int fd, const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t written = ::write(fd, bytes, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes += written;
    size -= static_cast<size_t>(written);
  }
  return true;
}

}  // namespace

std::string serialize_safetensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  PreparedFile prepared = prepare("safetensors", tensors, metadata);
  std::string bytes = std::move(prepared.header);
  for (const auto& tensor : prepared.tensors)
    bytes.append(static_cast<const char*>(tensor.data_ptr()), tensor.numel() * tensor.element_size());
  return bytes;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  PreparedFile prepared = prepare(where(path), tensors, metadata);
  const std::string temporary = path + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LINTIME_CHECK(fd >= 0, where(path), ": cannot create '", temporary, "': ", std::strerror(errno));
  auto abandon = [&](const char* action) {
    int saved = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(temporary.c_str());
    fail(where(path), ": ", action, " failed: ", std::strerror(saved));
  };
  if (!write_all(fd, prepared.header.data(), prepared.header.size())) abandon("write");
  for (const auto& tensor : prepared.tensors)
    if (!write_all(fd, tensor.data_ptr(), tensor.numel() * tensor.element_size())) abandon("write");
  if (::fsync(fd) != 0) abandon("fsync");
  int close_result = ::close(fd);
  fd = -1;
  if (close_result != 0) abandon("close");
  if (::rename(temporary.c_str(), path.c_str()) != 0) abandon("rename");
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

ShardIndex read_shard_index(const std::string& index_path, const std::string& what) {
  std::ifstream stream(index_path);
  LINTIME_CHECK(stream.good(), what, ": cannot open");
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(stream);
  } catch (const nlohmann::json::exception& error) {
    fail(what, ": not valid JSON (", error.what(), ")");
  }
  LINTIME_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
                what, ": expected an object with a \"weight_map\" object");
  ShardIndex result;
  result.metadata = index.contains("metadata") ? index["metadata"].dump() : "{}";
  const size_t slash = index_path.find_last_of('/');
  result.directory = slash == std::string::npos ? "." : index_path.substr(0, slash);
  // Every shard must be a file of the index's folder: an entry such as "../../etc/passwd" or a
  // link that leads elsewhere would make the loader read whatever file it names.
  const std::string folder = resolved_path(result.directory);
  // Hugging Face's hub cache keeps a snapshot's files as links into the repository's blobs/.
  const size_t snapshots = folder.rfind("/snapshots/");
  const std::string blobs = snapshots == std::string::npos ? "" : folder.substr(0, snapshots) + "/blobs";
  for (const auto& [name, file] : index["weight_map"].items()) {
    LINTIME_CHECK(file.is_string(), what, ": weight_map entry '", name, "' must be a file name");
    const std::string shard = file.get<std::string>();
    LINTIME_CHECK(names_a_file_inside(shard), what, ": weight_map entry '", name, "' names '", shard,
                  "', outside the index's folder; expected a file name inside it");
    const std::string target = resolved_path(result.directory + "/" + shard);
    LINTIME_CHECK(target.empty() || lies_inside(target, folder) || lies_inside(target, blobs), what,
                  ": weight_map entry '", name, "' names '", shard, "', a link to '", target,
                  "' outside the index's folder; expected a file inside it");
    result.weight_map.emplace_back(name, shard);
  }
  return result;
}

ShardedSafetensors::ShardedSafetensors(const std::string& index_path) : index_path_(index_path) {
  const std::string what = "safetensors index '" + index_path + "'";
  const ShardIndex index = read_shard_index(index_path, what);
  index_metadata_ = index.metadata;
  std::map<std::string, size_t> shard_index;
  for (const auto& [name, shard] : index.weight_map) {
    auto found = shard_index.find(shard);
    if (found == shard_index.end()) {
      shards_.emplace_back(index.directory + "/" + shard);
      found = shard_index.emplace(shard, shards_.size() - 1).first;
    }
    LINTIME_CHECK(shards_[found->second].contains(name), what, ": tensor '", name,
                  "' is mapped to '", shard, "' but that shard does not hold it");
    shard_of_[name] = found->second;
  }
}

std::vector<std::string> ShardedSafetensors::names() const {
  std::vector<std::string> result;
  for (const auto& [name, shard] : shard_of_) result.push_back(name);
  return result;
}

bool ShardedSafetensors::contains(const std::string& name) const { return shard_of_.count(name) > 0; }

at::Tensor ShardedSafetensors::get(const std::string& name, const TensorLoadOptions& options) const {
  auto found = shard_of_.find(name);
  LINTIME_CHECK(found != shard_of_.end(), "safetensors index '", index_path_, "': tensor '", name,
                "' is not in the weight_map");
  return shards_[found->second].get(name, options);
}

std::map<std::string, at::Tensor> ShardedSafetensors::get_all(const TensorLoadOptions& options) const {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, shard] : shard_of_) tensors.emplace(name, shards_[shard].get(name, options));
  return tensors;
}

const TensorInfo& ShardedSafetensors::info(const std::string& name) const {
  auto found = shard_of_.find(name);
  LINTIME_CHECK(found != shard_of_.end(), "safetensors index '", index_path_, "': tensor '", name,
                "' is not in the weight_map");
  return shards_[found->second].info(name);
}

namespace {
// POSIX stat rather than std::filesystem: libtorch.so exports its own copies of the
// std::filesystem free functions, which the dynamic linker may pick over libstdc++'s.
bool file_exists(const std::string& file) {
  struct stat file_stat {};
  return ::stat(file.c_str(), &file_stat) == 0;
}

// The file to open for `path`: itself, or the weights file a model folder holds.
std::string resolve_weights_path(const std::string& path) {
  if (!is_directory(path)) return path;
  if (file_exists(path + "/model.safetensors")) return path + "/model.safetensors";
  if (file_exists(path + "/model.safetensors.index.json")) return path + "/model.safetensors.index.json";
  if (file_exists(path + "/pytorch_model.bin")) return path + "/pytorch_model.bin";
  if (file_exists(path + "/pytorch_model.bin.index.json")) return path + "/pytorch_model.bin.index.json";
  fail("weights directory '", path, "': expected model.safetensors, model.safetensors.index.json, ",
       "pytorch_model.bin or pytorch_model.bin.index.json inside");
}

bool is_torch_checkpoint(const std::string& path) {
  auto ends_with = [&](const std::string& suffix) {
    return path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".bin") || ends_with(".bin.index.json") || ends_with(".pt") || ends_with(".pth");
}
}  // namespace

ModelWeights::ModelWeights(const std::string& path) : source_(resolve_weights_path(path)) {
  if (is_torch_checkpoint(source_)) {
    pickled_ = std::make_unique<TorchCheckpoint>(source_);
  } else if (ends_with(source_, ".json")) {
    sharded_.emplace(source_);
  } else {
    single_.emplace(source_);
  }
}

ModelWeights::~ModelWeights() = default;
ModelWeights::ModelWeights(ModelWeights&&) noexcept = default;

std::vector<std::string> ModelWeights::names() const {
  if (pickled_) return pickled_->names();
  if (sharded_) return sharded_->names();
  std::vector<std::string> sorted = single_->names();
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

bool ModelWeights::contains(const std::string& name) const {
  if (pickled_) return pickled_->contains(name);
  return sharded_ ? sharded_->contains(name) : single_->contains(name);
}

const TensorInfo& ModelWeights::info(const std::string& name) const {
  if (pickled_) return pickled_->info(name);
  return sharded_ ? sharded_->info(name) : single_->info(name);
}

at::Tensor ModelWeights::get(const std::string& name, const TensorLoadOptions& options) const {
  if (pickled_) return pickled_->get(name, options);
  return sharded_ ? sharded_->get(name, options) : single_->get(name, options);
}

std::map<std::string, at::Tensor> load_safetensors_weights(const std::string& path,
                                                           const TensorLoadOptions& options) {
  const std::string file = resolve_weights_path(path);
  if (ends_with(file, ".json")) return ShardedSafetensors(file).get_all(options);
  return load_safetensors(file, options);
}

}  // namespace lintime::io
