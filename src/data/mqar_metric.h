// MQAR metric and loss (docs/mqar.md §2). Accuracy of one example = mean over its labelled
// positions (label != −100) of argmax(logits) == label; a test set reports the mean over
// examples, overall and per segment. The loss is cross-entropy over labelled positions only.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lintime::data {

// logits [B, L, V] (any floating dtype), labels [B, L] int64 → [B] float64 accuracies.
// An example without labelled positions has accuracy NaN (MQAR examples always have N ≥ 1).
at::Tensor mqar_example_accuracy(const at::Tensor& logits, const at::Tensor& labels);

// Mean cross-entropy over labelled positions (ignore_index −100), computed in fp32 (fp64 for
// fp64 logits); differentiable. Returns a scalar tensor.
at::Tensor mqar_loss(const at::Tensor& logits, const at::Tensor& labels);

// The labelled positions of a batch: `positions` [P] int64, flat indices into B·L in row-major
// order, and `labels` [P] their labels. Training computes the head only there: MQAR labels 2N
// of L positions (1/8 in the GSA paper's setting), and the vocabulary-wide logits elsewhere
// would be most of a tiny model's step.
struct MqarLabelled {
  at::Tensor positions, labels;
};
MqarLabelled mqar_labelled(const at::Tensor& labels);  // labels [B, L] int64, on any device

// The mean cross-entropy of logits [P, V] at the labelled positions against labels [P]: the
// value of mqar_loss on the whole batch (the same terms, the same mean), in fp32 (fp64 for fp64
// logits); differentiable.
at::Tensor mqar_labelled_loss(const at::Tensor& logits, const at::Tensor& labels);

// The [B] float64 accuracies of a batch of B rows of length L from the logits [P, V] at its
// labelled positions only (`labelled` = mqar_labelled(labels); MqarModel::logits_at): the value
// mqar_example_accuracy gives on the whole batch's logits. On the logits' device, no sync.
at::Tensor mqar_labelled_example_accuracy(const at::Tensor& logits, const MqarLabelled& labelled, int64_t rows,
                                          int64_t length);

// Accumulates per-example accuracies over a test set made of segments. Sums stay on the
// accuracies' device until a result is read (one sync per evaluation, not one per batch).
class MqarAccuracy {
 public:
  explicit MqarAccuracy(int64_t num_segments);
  // example_accuracy: [b] accuracies of examples that belong to `segment`.
  void add(int64_t segment, const at::Tensor& example_accuracy);  // any device
  void add(int64_t segment, const at::Tensor& logits, const at::Tensor& labels);

  double overall() const;               // mean over every example added (NaN when none)
  double segment(int64_t index) const;  // mean over the segment's examples (NaN when none)
  std::vector<double> per_segment() const;
  int64_t count(int64_t segment) const;
  int64_t count() const;

 private:
  const std::vector<double>& sums() const;  // the device sums, read once

  mutable std::vector<at::Tensor> device_sums_;  // float64 scalars not yet read
  mutable std::vector<double> sums_;
  std::vector<int64_t> counts_;
};

}  // namespace lintime::data
