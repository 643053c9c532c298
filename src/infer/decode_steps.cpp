#include "infer/decode_steps.h"

namespace lintime::infer {

DecodeSteps::DecodeSteps(models::CausalLm& model, bool cuda_graphs)
    : model_(model), graphed_(cuda_graphs && decode_graphs_compiled() && model.steps_are_replayable()) {}

at::Tensor DecodeSteps::prefill(const at::Tensor& input_ids, int64_t total_tokens) {
  graph_.reset();  // the recording points at the old state tensors
  return model_.prefill(input_ids, total_tokens);
}

at::Tensor DecodeSteps::step(const at::Tensor& tokens) {
  if (!graphed_ || !tokens.is_cuda()) return model_.step(tokens);
  int step_calls = 0;
  at::Tensor logits = graph_.run(tokens, [this](const at::Tensor& t) { return model_.step(t); }, &step_calls);
  model_.recount_tokens(1 - step_calls);  // the token count as if the step ran once
  return logits;
}

}  // namespace lintime::infer
