// Reading torch.save state dicts (see the header).
#include "io/torch_checkpoint.h"

#include "core/error.h"
#include "core/paths.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <variant>

namespace lintime::io {
namespace {

// The values a torch.save state dict pickle holds. Containers are shared, as pickle's memo is.
struct PickleValue;
using PickleList = std::vector<PickleValue>;
using PickleDict = std::vector<std::pair<PickleValue, PickleValue>>;  // insertion order
struct Global {
  std::string name;  // "module.qualname"
};
struct Storage {
  at::Tensor flat;  // the storage's elements, 1-D
};
struct Mark {};
struct None {};
struct PickleValue {
  std::variant<None, Mark, bool, int64_t, double, std::string, Global, Storage, at::Tensor,
               std::shared_ptr<PickleList>,  // list or tuple
               std::shared_ptr<PickleDict>>
      value;
};

const char* kind_of(const PickleValue& v) {
  static const char* const names[] = {"None",  "mark",   "bool",    "int",  "float", "str",
                                      "global", "storage", "tensor", "list or tuple", "dict"};
  return names[v.value.index()];
}

at::ScalarType storage_dtype(const std::string& storage_class, const std::string& where) {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},  {"torch.DoubleStorage", at::kDouble}, {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong}, {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},  {"torch.CharStorage", at::kChar},    {"torch.ByteStorage", at::kByte},
      {"torch.BoolStorage", at::kBool}};
  auto found = types.find(storage_class);
  LINTIME_CHECK(found != types.end(), where, ": unsupported storage type ", storage_class);
  return found->second;
}

class StateDictReader {
 public:
  StateDictReader(caffe2::serialize::PyTorchStreamReader& archive, std::string where)
      : archive_(archive), where_(std::move(where)) {}

  PickleValue read() {
    auto [data, size] = archive_.getRecord("data.pkl");
    bytes_ = static_cast<const uint8_t*>(data.get());
    size_ = size;
    position_ = 0;
    keep_ = std::move(data);
    return run();
  }

 private:
  [[noreturn]] void broken(const std::string& what) const {
    fail(where_, ": data.pkl at byte ", position_, ": ", what);
  }
  uint8_t byte() {
    if (position_ >= size_) broken("unexpected end");
    return bytes_[position_++];
  }
  uint64_t little(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(byte()) << (8 * i);
    return v;
  }
  std::string take(uint64_t n) {
    if (position_ + n > size_) broken("unexpected end");
    std::string s(reinterpret_cast<const char*>(bytes_ + position_), n);
    position_ += n;
    return s;
  }
  std::string line() {
    std::string s;
    for (char c = static_cast<char>(byte()); c != '\n'; c = static_cast<char>(byte())) s += c;
    return s;
  }
  PickleValue pop() {
    if (stack_.empty()) broken("pop from an empty stack");
    PickleValue v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const PickleValue& top(const char* op) const {
    if (stack_.empty()) broken(std::string(op) + " on an empty stack");
    return stack_.back();
  }
  std::vector<PickleValue> pop_to_mark() {
    std::vector<PickleValue> items;
    while (true) {
      PickleValue v = pop();
      if (std::holds_alternative<Mark>(v.value)) break;
      items.push_back(std::move(v));
    }
    return {items.rbegin(), items.rend()};
  }
  PickleValue tuple(std::vector<PickleValue> items) {
    return {std::make_shared<PickleList>(std::move(items))};
  }
  std::shared_ptr<PickleDict> dict_on_top() {
    if (stack_.empty() || !std::holds_alternative<std::shared_ptr<PickleDict>>(stack_.back().value))
      broken("SETITEM on a non-dict");
    return std::get<std::shared_ptr<PickleDict>>(stack_.back().value);
  }
  std::shared_ptr<PickleList> list_on_top() {
    if (stack_.empty() || !std::holds_alternative<std::shared_ptr<PickleList>>(stack_.back().value))
      broken("APPEND on a non-list");
    return std::get<std::shared_ptr<PickleList>>(stack_.back().value);
  }
  static int64_t as_int(const PickleValue& v, const char* what, const StateDictReader& r) {
    if (!std::holds_alternative<int64_t>(v.value)) r.broken(std::string("expected an int for ") + what);
    return std::get<int64_t>(v.value);
  }
  std::vector<int64_t> int_tuple(const PickleValue& v, const char* what) {
    if (!std::holds_alternative<std::shared_ptr<PickleList>>(v.value)) broken(std::string("expected a tuple for ") + what);
    std::vector<int64_t> out;
    for (const auto& item : *std::get<std::shared_ptr<PickleList>>(v.value)) out.push_back(as_int(item, what, *this));
    return out;
  }

  // ('storage', storage class, key, location, numel) -> the storage's elements.
  PickleValue persistent_load(const PickleValue& pid) {
    if (!std::holds_alternative<std::shared_ptr<PickleList>>(pid.value)) broken("persistent id is not a tuple");
    const auto& items = *std::get<std::shared_ptr<PickleList>>(pid.value);
    if (items.size() != 5 || !std::holds_alternative<std::string>(items[0].value) ||
        std::get<std::string>(items[0].value) != "storage" || !std::holds_alternative<Global>(items[1].value) ||
        !std::holds_alternative<std::string>(items[2].value))
      broken("persistent id is not ('storage', type, key, location, numel)");
    const std::string key = std::get<std::string>(items[2].value);
    auto cached = storages_.find(key);
    if (cached != storages_.end()) return {Storage{cached->second}};
    const at::ScalarType dtype = storage_dtype(std::get<Global>(items[1].value).name, where_);
    const int64_t numel = as_int(items[4], "storage size", *this);
    const std::string record = "data/" + key;
    LINTIME_CHECK(archive_.hasRecord(record), where_, ": storage record '", record, "' is missing");
    const size_t bytes = archive_.getRecordSize(record);
    LINTIME_CHECK(bytes == static_cast<size_t>(numel) * c10::elementSize(dtype), where_, ": storage '", key, "' holds ",
                  bytes, " bytes, expected ", numel, " elements of ", c10::toString(dtype));
    at::Tensor flat = at::empty({numel}, at::TensorOptions().dtype(dtype));
    if (bytes > 0) archive_.getRecord(record, flat.data_ptr(), bytes);
    storages_[key] = flat;
    return {Storage{flat}};
  }

  PickleValue call(const PickleValue& callable, const PickleValue& arguments) {
    if (!std::holds_alternative<Global>(callable.value)) broken("REDUCE of a non-global");
    const std::string& name = std::get<Global>(callable.value).name;
    if (!std::holds_alternative<std::shared_ptr<PickleList>>(arguments.value)) broken("REDUCE arguments are not a tuple");
    const auto& args = *std::get<std::shared_ptr<PickleList>>(arguments.value);
    if (name == "collections.OrderedDict" && args.empty()) return {std::make_shared<PickleDict>()};
    if (name == "torch._utils._rebuild_tensor_v2" && args.size() >= 4) {
      if (!std::holds_alternative<Storage>(args[0].value)) broken("_rebuild_tensor_v2 without a storage");
      const at::Tensor& flat = std::get<Storage>(args[0].value).flat;
      const int64_t offset = as_int(args[1], "storage offset", *this);
      const std::vector<int64_t> sizes = int_tuple(args[2], "size"), strides = int_tuple(args[3], "stride");
      if (sizes.size() != strides.size()) broken("tensor size and stride differ in length");
      int64_t last = offset;
      for (size_t i = 0; i < sizes.size(); ++i) {
        if (sizes[i] < 0 || strides[i] < 0) broken("negative tensor size or stride");
        if (sizes[i] == 0) last = -1;
        if (last >= 0) last += (sizes[i] - 1) * strides[i];
      }
      if (offset < 0 || last >= flat.numel()) broken("tensor reaches past its storage");
      return {flat.as_strided(sizes, strides, offset)};
    }
    if ((name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") &&
        !args.empty() && std::holds_alternative<at::Tensor>(args[0].value))
      return args[0];
    fail(where_, ": data.pkl calls ", name, ", which a state dict of tensors does not need (refused)");
  }

  PickleValue run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                   // PROTO
        case 0x95: little(8); break;                // FRAME
        case '.': return pop();                     // STOP
        case '(': stack_.push_back({Mark{}}); break;  // MARK
        case 'N': stack_.push_back({None{}}); break;
        case 0x88: stack_.push_back({true}); break;   // NEWTRUE
        case 0x89: stack_.push_back({false}); break;  // NEWFALSE
        case 'K': stack_.push_back({static_cast<int64_t>(byte())}); break;        // BININT1
        case 'M': stack_.push_back({static_cast<int64_t>(little(2))}); break;     // BININT2
        case 'J': stack_.push_back({static_cast<int64_t>(static_cast<int32_t>(little(4)))}); break;  // BININT
        case 0x8a: {  // LONG1
          const int n = byte();
          if (n > 8) broken("integer wider than 64 bits");
          uint64_t v = little(n);
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
          stack_.push_back({static_cast<int64_t>(v)});
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | byte();
          double d;
          std::memcpy(&d, &bits, 8);
          stack_.push_back({d});
          break;
        }
        case 'X': stack_.push_back({take(little(4))}); break;     // BINUNICODE
        case 0x8c: stack_.push_back({take(byte())}); break;       // SHORT_BINUNICODE
        case 'B': stack_.push_back({take(little(4))}); break;     // BINBYTES
        case 'C': stack_.push_back({take(byte())}); break;        // SHORT_BINBYTES
        case 'c': {                                               // GLOBAL
          const std::string module = line();
          stack_.push_back({Global{module + "." + line()}});
          break;
        }
        case 'q': memo_[byte()] = top("BINPUT"); break;             // BINPUT
        case 'r': memo_[little(4)] = top("LONG_BINPUT"); break;     // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top("MEMOIZE"); break;     // MEMOIZE
        case 'h':
        case 'j': {  // BINGET, LONG_BINGET
          const uint64_t key = op == 'h' ? byte() : little(4);
          auto found = memo_.find(key);
          if (found == memo_.end()) broken("memo entry missing");
          stack_.push_back(found->second);
          break;
        }
        case '0': pop(); break;  // POP
        case ')': stack_.push_back(tuple({})); break;
        case 0x85: { auto a = pop(); stack_.push_back(tuple({a})); break; }
        case 0x86: { auto b = pop(), a = pop(); stack_.push_back(tuple({a, b})); break; }
        case 0x87: { auto c = pop(), b = pop(), a = pop(); stack_.push_back(tuple({a, b, c})); break; }
        case 't': stack_.push_back(tuple(pop_to_mark())); break;
        case ']': stack_.push_back({std::make_shared<PickleList>()}); break;  // EMPTY_LIST
        case 'a': { auto v = pop(); list_on_top()->push_back(std::move(v)); break; }
        case 'e': { auto items = pop_to_mark(); auto list = list_on_top(); for (auto& v : items) list->push_back(std::move(v)); break; }
        case '}': stack_.push_back({std::make_shared<PickleDict>()}); break;  // EMPTY_DICT
        case 's': { auto v = pop(), k = pop(); dict_on_top()->emplace_back(std::move(k), std::move(v)); break; }
        case 'u': {  // SETITEMS
          auto items = pop_to_mark();
          if (items.size() % 2) broken("SETITEMS with an odd number of items");
          auto dict = dict_on_top();
          for (size_t i = 0; i < items.size(); i += 2) dict->emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'Q': { auto pid = pop(); stack_.push_back(persistent_load(pid)); break; }  // BINPERSID
        case 'R': { auto args = pop(), callable = pop(); stack_.push_back(call(callable, args)); break; }
        case 'b': pop(); break;  // BUILD: attributes (an OrderedDict's _metadata) are not needed
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          broken(std::string("unsupported pickle opcode ") + hex);
        }
      }
    }
  }

  caffe2::serialize::PyTorchStreamReader& archive_;
  std::string where_;
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0, position_ = 0;
  at::DataPtr keep_;
  std::vector<PickleValue> stack_;
  std::map<uint64_t, PickleValue> memo_;
  std::map<std::string, at::Tensor> storages_;
};

}  // namespace

TorchCheckpoint::TorchCheckpoint(const std::string& path) : path_(path) {
  if (!ends_with(path, ".json")) {
    read_file(path);
    return;
  }
  const std::string what = "PyTorch checkpoint index '" + path + "'";
  const ShardIndex index = read_shard_index(path, what);
  std::set<std::string> shards;
  for (const auto& [name, shard] : index.weight_map) shards.insert(shard);
  for (const std::string& shard : shards) read_file(index.directory + "/" + shard);
  for (const auto& [name, shard] : index.weight_map) {
    LINTIME_CHECK(tensors_.count(name) > 0, what, ": tensor '", name, "' is mapped to '", shard,
                  "' but that shard does not hold it");
  }
}

void TorchCheckpoint::read_file(const std::string& file) {
  const std::string where = "PyTorch checkpoint '" + file + "'";
  {
    std::ifstream stream(file, std::ios::binary);
    LINTIME_CHECK(stream.good(), where, ": cannot open");
    char magic[2] = {0, 0};
    stream.read(magic, 2);
    LINTIME_CHECK(magic[0] == 'P' && magic[1] == 'K', where,
                  ": not a zip archive (expected torch.save's format of torch >= 1.6)");
  }
  PickleValue loaded;
  try {
    caffe2::serialize::PyTorchStreamReader archive(file);
    loaded = StateDictReader(archive, where).read();
  } catch (const c10::Error& error) {
    fail(where, ": cannot read (", error.what_without_backtrace(), ")");
  }
  LINTIME_CHECK(std::holds_alternative<std::shared_ptr<PickleDict>>(loaded.value), where,
                ": expected a state dict (a dict of tensors by name), got a ", kind_of(loaded));
  for (const auto& [key, value] : *std::get<std::shared_ptr<PickleDict>>(loaded.value)) {
    LINTIME_CHECK(std::holds_alternative<std::string>(key.value), where, ": expected tensor names as keys, got a ",
                  kind_of(key));
    const std::string& name = std::get<std::string>(key.value);
    LINTIME_CHECK(std::holds_alternative<at::Tensor>(value.value), where, ": entry '", name, "' is a ",
                  kind_of(value), ", expected a tensor (a flat state dict)");
    LINTIME_CHECK(tensors_.count(name) == 0, where, ": tensor '", name, "' appears twice");
    const at::Tensor& tensor = std::get<at::Tensor>(value.value);
    TensorInfo info;
    info.dtype = tensor.scalar_type();
    info.dtype_name = safetensors_dtype_name(tensor.scalar_type());
    info.shape = tensor.sizes().vec();
    infos_[name] = info;
    tensors_[name] = tensor;
  }
}

std::vector<std::string> TorchCheckpoint::names() const {
  std::vector<std::string> result;
  for (const auto& [name, tensor] : tensors_) result.push_back(name);
  return result;
}

const TensorInfo& TorchCheckpoint::info(const std::string& name) const {
  auto found = infos_.find(name);
  LINTIME_CHECK(found != infos_.end(), "PyTorch checkpoint '", path_, "': no tensor '", name, "'");
  return found->second;
}

at::Tensor TorchCheckpoint::get(const std::string& name, const TensorLoadOptions& options) const {
  info(name);
  const at::Tensor& tensor = tensors_.at(name);
  const bool convert = (options.dtype && *options.dtype != tensor.scalar_type()) ||
                       (options.device && *options.device != tensor.device());
  if (convert) {
    return tensor.to(options.device.value_or(tensor.device()), options.dtype.value_or(tensor.scalar_type()))
        .contiguous();
  }
  return tensor.clone(at::MemoryFormat::Contiguous);
}

}  // namespace lintime::io
