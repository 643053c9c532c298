// AdamW update, decay rules and state export/import. The arithmetic follows the order of
// torch.optim.AdamW's single-tensor path so that results match it to the last bit in fp32.
#include "train/adamw.h"

#include "core/tensor_checks.h"
#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <set>

namespace lintime::train {

namespace {

bool is_embedding_name(const std::string& name) {
  return name.find("embed") != std::string::npos || name.find("wte") != std::string::npos ||
         name.find("wpe") != std::string::npos;
}

const char* kSuffixes[] = {".exp_avg", ".exp_avg_sq", ".step"};

}  // namespace

DecayRule default_decay_rule(bool decay_embeddings) {
  return [decay_embeddings](const std::string& name, const at::Tensor& parameter) {
    if (parameter.dim() < 2) return false;
    if (!decay_embeddings && is_embedding_name(name)) return false;
    return true;
  };
}

DecayRule decay_all_rule() {
  return [](const std::string&, const at::Tensor&) { return true; };
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> named_parameters, AdamWOptions options,
             DecayRule decays)
    : options_(options) {
  LINTIME_CHECK(options.lr >= 0, "AdamW: lr must be >= 0, got ", options.lr);
  LINTIME_CHECK(options.beta1 >= 0 && options.beta1 < 1, "AdamW: beta1 must be in [0, 1), got ",
                options.beta1);
  LINTIME_CHECK(options.beta2 >= 0 && options.beta2 < 1, "AdamW: beta2 must be in [0, 1), got ",
                options.beta2);
  LINTIME_CHECK(options.eps >= 0, "AdamW: eps must be >= 0, got ", options.eps);
  LINTIME_CHECK(options.weight_decay >= 0, "AdamW: weight_decay must be >= 0, got ",
                options.weight_decay);
  if (!decays) decays = default_decay_rule(options.decay_embeddings);
  std::set<std::string> seen;
  for (auto& [name, parameter] : named_parameters) {
    LINTIME_CHECK(parameter.defined(), "AdamW: parameter '", name, "' is undefined");
    LINTIME_CHECK(at::isFloatingType(parameter.scalar_type()), "AdamW: parameter '", name,
                  "' must be floating point, got ", c10::toString(parameter.scalar_type()));
    LINTIME_CHECK(seen.insert(name).second, "AdamW: parameter '", name, "' appears twice");
    Slot slot;
    slot.name = name;
    slot.decays = decays(name, parameter);
    slot.moment_dtype = options.moment_dtype.value_or(parameter.scalar_type());
    LINTIME_CHECK(at::isFloatingType(slot.moment_dtype), "AdamW: the moments' dtype must be floating point, got ",
                  c10::toString(slot.moment_dtype));
    slot.separate_moments = slot.moment_dtype != parameter.scalar_type();
    slot.parameter = std::move(parameter);
    slots_.push_back(std::move(slot));
  }
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  ++step_count_;
  if (options_.fused) fused_step();  // every slot whose moments share its parameter's dtype
  for (Slot& slot : slots_) {
    if (!options_.fused || slot.separate_moments) step_one(slot);
  }
}

void AdamW::step_one(Slot& slot) {
  const at::Tensor& gradient = slot.parameter.grad();
  if (!gradient.defined()) return;
  const at::Tensor parameter = slot.parameter.detach();
  if (!slot.exp_avg.defined()) {
    const auto options = parameter.options().dtype(slot.moment_dtype);
    slot.exp_avg = at::zeros_like(parameter, options, at::MemoryFormat::Preserve);
    slot.exp_avg_sq = at::zeros_like(parameter, options, at::MemoryFormat::Preserve);
  }
  // In the moments' dtype: the parameter itself, or (separate moments) a copy of it rounded
  // back once at the end.
  at::Tensor value = slot.separate_moments ? parameter.to(slot.moment_dtype) : parameter;
  const at::Tensor grad = slot.separate_moments ? gradient.to(slot.moment_dtype) : gradient;
  const int64_t step = ++slot.steps;
  if (slot.decays && options_.weight_decay != 0) value.mul_(1.0 - options_.lr * options_.weight_decay);
  slot.exp_avg.lerp_(grad, 1.0 - options_.beta1);
  slot.exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step));
  const double step_size = options_.lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  at::Tensor denominator = (slot.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(options_.eps);
  value.addcdiv_(slot.exp_avg, denominator, -step_size);
  if (slot.separate_moments) parameter.copy_(value);
}

void AdamW::fused_step() {
  for (bool decaying : {true, false}) {
    std::vector<at::Tensor> parameters, gradients, exp_avgs, exp_avg_sqs, steps;
    for (Slot& slot : slots_) {
      if (slot.decays != decaying || slot.separate_moments || !slot.parameter.grad().defined()) continue;
      if (!slot.exp_avg.defined()) {
        slot.exp_avg = at::zeros_like(slot.parameter.detach(), at::MemoryFormat::Preserve);
        slot.exp_avg_sq = at::zeros_like(slot.parameter.detach(), at::MemoryFormat::Preserve);
      }
      if (!slot.fused_steps.defined())
        slot.fused_steps = at::full({}, static_cast<double>(slot.steps), slot.parameter.options().dtype(at::kFloat));
      ++slot.steps;
      parameters.push_back(slot.parameter.detach());
      gradients.push_back(slot.parameter.grad());
      exp_avgs.push_back(slot.exp_avg);
      exp_avg_sqs.push_back(slot.exp_avg_sq);
      steps.push_back(slot.fused_steps);
    }
    if (parameters.empty()) continue;
    at::_foreach_add_(steps, 1);  // the kernel reads the step it is taking, as torch.optim does
    const double decay = decaying ? options_.weight_decay : 0.0;
    if (lr_tensor_.defined()) {
      at::_fused_adamw_(parameters, gradients, exp_avgs, exp_avg_sqs, {}, steps, lr_tensor_, options_.beta1,
                        options_.beta2, decay, options_.eps, /*amsgrad=*/false, /*maximize=*/false);
    } else {
      at::_fused_adamw_(parameters, gradients, exp_avgs, exp_avg_sqs, {}, steps, options_.lr, options_.beta1,
                        options_.beta2, decay, options_.eps, /*amsgrad=*/false, /*maximize=*/false);
    }
  }
}

void AdamW::read_lr_from(at::Tensor lr) {
  LINTIME_CHECK(options_.fused, "AdamW: a learning rate read from a tensor needs the fused update (fused = true)");
  for (const Slot& slot : slots_) {
    LINTIME_CHECK(!slot.separate_moments, "AdamW: parameter '", slot.name, "' keeps its moments in another dtype; ",
                  "its update reads the learning rate on the host and cannot read it from a tensor");
  }
  LINTIME_CHECK(lr.defined() && lr.dim() == 0 && lr.scalar_type() == at::kFloat,
                "AdamW: the learning rate tensor must be an fp32 scalar");
  for (const Slot& slot : slots_) {
    LINTIME_CHECK(slot.parameter.device() == lr.device(), "AdamW: the learning rate tensor is on ", lr.device(),
                  ", parameter '", slot.name, "' on ", slot.parameter.device());
  }
  lr_tensor_ = std::move(lr);
}

AdamW::StepCounts AdamW::step_counts() const {
  StepCounts counts;
  counts.calls = step_count_;
  for (const Slot& slot : slots_) counts.per_parameter.push_back(slot.steps);
  return counts;
}

void AdamW::set_step_counts(const StepCounts& counts) {
  LINTIME_CHECK(counts.per_parameter.size() == slots_.size(), "AdamW: step counts for ", counts.per_parameter.size(),
                " parameters, the optimizer has ", slots_.size());
  step_count_ = counts.calls;
  for (size_t i = 0; i < slots_.size(); ++i) slots_[i].steps = counts.per_parameter[i];
}

void AdamW::zero_grad() {
  for (Slot& slot : slots_)
    if (slot.parameter.grad().defined()) slot.parameter.mutable_grad() = at::Tensor();
}

bool AdamW::decays(const std::string& name) const {
  for (const Slot& slot : slots_)
    if (slot.name == name) return slot.decays;
  fail("AdamW: no parameter named '", name, "'");
}

std::vector<std::string> AdamW::parameter_names() const {
  std::vector<std::string> names;
  for (const Slot& slot : slots_) names.push_back(slot.name);
  return names;
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const Slot& slot : slots_) {
    if (!slot.exp_avg.defined()) continue;
    state.emplace_back(slot.name + ".exp_avg", slot.exp_avg);
    state.emplace_back(slot.name + ".exp_avg_sq", slot.exp_avg_sq);
    state.emplace_back(slot.name + ".step", at::scalar_tensor(slot.steps, at::kLong));
  }
  return state;
}

void AdamW::validate_state(const std::map<std::string, at::Tensor>& state) const {
  std::set<std::string> expected;
  size_t found = 0;
  for (const Slot& slot : slots_) {
    int present = 0;
    for (const char* suffix : kSuffixes) {
      const std::string key = slot.name + suffix;
      expected.insert(key);
      auto entry = state.find(key);
      if (entry == state.end()) continue;
      ++present;
      ++found;
      const at::Tensor& tensor = entry->second;
      LINTIME_CHECK(tensor.defined(), "AdamW state: tensor '", key, "' is undefined");
      if (std::string(suffix) == ".step") {
        LINTIME_CHECK(tensor.numel() == 1 && !at::isFloatingType(tensor.scalar_type()),
                      "AdamW state: tensor '", key, "' must be one integer, got ",
                      c10::toString(tensor.scalar_type()), " of shape ", shape_string(tensor.sizes()));
        LINTIME_CHECK(tensor.item<int64_t>() >= 1, "AdamW state: tensor '", key,
                      "' must be >= 1, got ", tensor.item<int64_t>());
      } else {
        LINTIME_CHECK(tensor.sizes() == slot.parameter.sizes(), "AdamW state: tensor '", key,
                      "' has shape ", shape_string(tensor.sizes()), ", expected ",
                      shape_string(slot.parameter.sizes()), " (the parameter's)");
        LINTIME_CHECK(at::isFloatingType(tensor.scalar_type()), "AdamW state: tensor '", key,
                      "' must be floating point, got ", c10::toString(tensor.scalar_type()));
      }
    }
    LINTIME_CHECK(present == 0 || present == 3, "AdamW state: parameter '", slot.name,
                  "' needs all of .exp_avg, .exp_avg_sq and .step, found ", present, " of them");
  }
  if (found != state.size()) {
    for (const auto& [key, tensor] : state)
      LINTIME_CHECK(expected.count(key), "AdamW state: unexpected tensor '", key,
                    "' (no such parameter in the optimizer)");
  }
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& state, int64_t step_count) {
  LINTIME_CHECK(step_count >= 0, "AdamW state: step count must be >= 0, got ", step_count);
  validate_state(state);
  // Convert everything before assigning anything, so a failed copy leaves the state whole.
  struct Loaded {
    at::Tensor exp_avg, exp_avg_sq;
    int64_t steps = 0;
  };
  std::vector<Loaded> loaded(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& slot = slots_[i];
    auto exp_avg = state.find(slot.name + ".exp_avg");
    if (exp_avg == state.end()) continue;
    auto convert = [&](const at::Tensor& tensor) {
      at::Tensor result = at::empty_like(slot.parameter.detach(), slot.parameter.options().dtype(slot.moment_dtype),
                                         at::MemoryFormat::Preserve);
      result.copy_(tensor.detach());
      return result;
    };
    loaded[i].exp_avg = convert(exp_avg->second);
    loaded[i].exp_avg_sq = convert(state.at(slot.name + ".exp_avg_sq"));
    loaded[i].steps = state.at(slot.name + ".step").item<int64_t>();
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].exp_avg = loaded[i].exp_avg;
    slots_[i].exp_avg_sq = loaded[i].exp_avg_sq;
    slots_[i].steps = loaded[i].steps;
    slots_[i].fused_steps = at::Tensor();  // made again from steps
  }
  step_count_ = step_count;
}

}  // namespace lintime::train
