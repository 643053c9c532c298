// PyTorch checkpoints written by torch.save in its zip format (torch ≥ 1.6): pytorch_model.bin,
// or the shards listed by pytorch_model.bin.index.json ({"weight_map": {name: shard}}), each a
// flat state dict of tensors by name — how hazyresearch/based-360m and older Hugging Face
// models ship. The zip is read by libtorch's PyTorchStreamReader; data.pkl by a small pickle
// reader of lintime's own that knows only what torch.save writes for a state dict (dicts,
// OrderedDicts, tuples, lists, scalars, strings and tensors rebuilt from their storages) and
// runs no code: any other global is refused. Libtorch's own unpickler cannot be used: it
// reads an OrderedDict as None. The tensors are read into memory; errors are one line naming
// the file and, where there is one, the entry.
#pragma once

#include "io/safetensors.h"

#include <map>
#include <string>
#include <vector>

namespace lintime::io {

class TorchCheckpoint {
 public:
  // `path`: a .bin file or a .bin.index.json. Throws lintime::Error.
  explicit TorchCheckpoint(const std::string& path);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  // Throws lintime::Error naming the checkpoint when `name` is absent.
  const TensorInfo& info(const std::string& name) const;
  at::Tensor get(const std::string& name, const TensorLoadOptions& options = {}) const;

 private:
  void read_file(const std::string& file);
  std::string path_;
  std::map<std::string, at::Tensor> tensors_;
  std::map<std::string, TensorInfo> infos_;
};

}  // namespace lintime::io
