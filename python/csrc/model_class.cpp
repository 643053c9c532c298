// torch.classes.lintime.Model: a model folder loaded by lintime's architecture registry, for the
// Python package (lintime.load_model wraps it in a torch.nn.Module). A TorchScript custom class
// rather than a pybind11 module: it needs no Python headers or libtorch_python, so the same
// shared library serves torch.ops.load_library and the package.
#include "core/device.h"
#include "core/error.h"
#include "infer/generate.h"
#include "models/architecture.h"
#include "models/decoder.h"

#include <ATen/ATen.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <memory>
#include <string>

namespace lintime::python {
namespace {

// float64 is not a command-line dtype but is what Python users check gradients and references in.
at::ScalarType dtype_named(const std::string& name) {
  return name == "float64" ? at::kDouble : parse_dtype(name);
}

class Model : public torch::CustomClassHolder {
 public:
  Model(const std::string& model_dir, const std::string& device, const std::string& dtype)
      : model_(models::load_causal_lm(model_dir, dtype_named(dtype), resolve_device(device))) {}

  // input_ids [B, T] int64 -> logits [B, T, logits_width] in the model's dtype.
  at::Tensor forward(const at::Tensor& input_ids) {
    at::NoGradGuard no_grad;
    return model_->forward(input_ids);
  }
  // Starts the decoding state from a prompt: the last position's logits [B, V].
  at::Tensor prefill(const at::Tensor& input_ids, int64_t total_tokens) {
    at::NoGradGuard no_grad;
    return model_->prefill(input_ids, total_tokens);
  }
  // One token per sequence [B] -> logits [B, V], advancing the state.
  at::Tensor step(const at::Tensor& tokens) {
    at::NoGradGuard no_grad;
    return model_->step(tokens);
  }
  // The generated tokens of each sequence (EOS left out); eos < 0: none; temperature 0: greedy.
  c10::List<c10::List<int64_t>> generate(const at::Tensor& prompt, int64_t max_new_tokens, double temperature,
                                         int64_t top_k, double top_p, int64_t seed, int64_t eos) {
    infer::GenerateOptions options;
    options.max_new_tokens = max_new_tokens;
    options.sampling.greedy = temperature == 0.0;
    options.sampling.temperature = temperature;
    options.sampling.top_k = top_k;
    options.sampling.top_p = top_p;
    LINTIME_CHECK(seed >= 0, "generate: seed must be non-negative, got ", seed);
    options.seed = static_cast<uint64_t>(seed);
    if (eos >= 0) options.eos = eos;
    options.choices = model_->vocab_size();
    const auto result = infer::generate(*model_, prompt, options);
    c10::List<c10::List<int64_t>> tokens;
    for (const auto& sequence : result.tokens) tokens.push_back(c10::List<int64_t>(sequence));
    return tokens;
  }
  // "float32" (default) or "bfloat16": recurrent states kept narrow between calls (Decoder).
  void set_state_dtype(const std::string& dtype) {
    LINTIME_CHECK(dtype == "float32" || dtype == "bfloat16", "state_dtype: expected float32 or bfloat16, got \"",
                  dtype, "\"");
    model_->decoder().set_recurrent_state_dtype(dtype_named(dtype));
  }
  std::string name() const { return model_->name(); }
  std::string config_json() const { return model_->config_json().dump(); }
  int64_t vocab_size() const { return model_->vocab_size(); }
  int64_t state_bytes_per_sequence(int64_t tokens) const { return model_->state_bytes_per_sequence(tokens); }
  // The parameters under the model's own (checkpoint-layout) names, shared with the model.
  c10::Dict<std::string, at::Tensor> parameters() {
    c10::Dict<std::string, at::Tensor> result;
    for (const auto& [name, parameter] : model_->module().named_parameters()) result.insert(name, parameter);
    return result;
  }

 private:
  std::unique_ptr<models::CausalLm> model_;
};

}  // namespace

TORCH_LIBRARY_FRAGMENT(lintime, m) {
  m.class_<Model>("Model")
      .def(torch::init<std::string, std::string, std::string>())
      .def("forward", &Model::forward)
      .def("prefill", &Model::prefill)
      .def("step", &Model::step)
      .def("generate", &Model::generate)
      .def("set_state_dtype", &Model::set_state_dtype)
      .def("name", &Model::name)
      .def("config_json", &Model::config_json)
      .def("vocab_size", &Model::vocab_size)
      .def("state_bytes_per_sequence", &Model::state_bytes_per_sequence)
      .def("parameters", &Model::parameters);
}

}  // namespace lintime::python
