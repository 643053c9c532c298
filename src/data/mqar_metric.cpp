// MQAR accuracy and loss (see mqar_metric.h).
#include "data/mqar_metric.h"

#include "core/error.h"
#include "data/mqar.h"

#include <ATen/ATen.h>

#include <limits>
#include <numeric>

namespace lintime::data {
namespace {

void check_logits_labels(const char* what, const at::Tensor& logits, const at::Tensor& labels) {
  LINTIME_CHECK(logits.defined() && logits.dim() == 3, what, ": logits must have shape [B, L, V], got ",
                logits.defined() ? logits.dim() : 0, " dims");
  LINTIME_CHECK(labels.defined() && labels.dim() == 2 && labels.size(0) == logits.size(0) &&
                    labels.size(1) == logits.size(1),
                what, ": labels must have shape [B, L] = [", logits.size(0), ", ", logits.size(1), "]");
  LINTIME_CHECK(labels.scalar_type() == at::kLong, what, ": labels must be int64");
}

}  // namespace

at::Tensor mqar_example_accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  check_logits_labels("mqar_example_accuracy", logits, labels);
  const at::Tensor target = labels.to(logits.device());
  const at::Tensor labelled = target.ne(kMqarIgnoreIndex);                  // [B, L]
  const at::Tensor correct = logits.detach().argmax(-1).eq(target).logical_and(labelled);
  const at::Tensor hits = correct.sum(1).to(at::kDouble);                    // [B]
  const at::Tensor total = labelled.sum(1).to(at::kDouble);
  return (hits / total).cpu();                                               // 0/0 = NaN
}

at::Tensor mqar_loss(const at::Tensor& logits, const at::Tensor& labels) {
  check_logits_labels("mqar_loss", logits, labels);
  const at::Tensor flat = logits.reshape({-1, logits.size(-1)});
  const at::Tensor compute = flat.scalar_type() == at::kDouble ? flat : flat.to(at::kFloat);
  return at::cross_entropy_loss(compute, labels.to(logits.device()).reshape({-1}), {},
                                at::Reduction::Mean, kMqarIgnoreIndex);
}

MqarLabelled mqar_labelled(const at::Tensor& labels) {
  LINTIME_CHECK(labels.defined() && labels.dim() == 2 && labels.scalar_type() == at::kLong,
                "mqar_labelled: labels must be an int64 tensor of shape [B, L]");
  const at::Tensor flat = labels.reshape({-1});
  MqarLabelled result;
  result.positions = flat.ne(kMqarIgnoreIndex).nonzero().reshape({-1});
  result.labels = flat.index_select(0, result.positions);
  return result;
}

at::Tensor mqar_labelled_loss(const at::Tensor& logits, const at::Tensor& labels) {
  LINTIME_CHECK(logits.defined() && logits.dim() == 2, "mqar_labelled_loss: logits must have shape [P, V]");
  LINTIME_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == logits.size(0) &&
                    labels.scalar_type() == at::kLong,
                "mqar_labelled_loss: labels must be an int64 tensor of shape [P] = [", logits.size(0), "]");
  const at::Tensor compute = logits.scalar_type() == at::kDouble ? logits : logits.to(at::kFloat);
  return at::cross_entropy_loss(compute, labels.to(logits.device()), {}, at::Reduction::Mean, kMqarIgnoreIndex);
}

at::Tensor mqar_labelled_example_accuracy(const at::Tensor& logits, const MqarLabelled& labelled, int64_t rows,
                                          int64_t length) {
  LINTIME_CHECK(logits.defined() && logits.dim() == 2 && labelled.positions.defined() &&
                    labelled.positions.dim() == 1 && labelled.positions.size(0) == logits.size(0) &&
                    labelled.labels.sizes() == labelled.positions.sizes(),
                "mqar_labelled_example_accuracy: logits must be [P, V] with P = the labelled positions (",
                labelled.positions.defined() ? labelled.positions.numel() : 0, ")");
  LINTIME_CHECK(rows >= 1 && length >= 1, "mqar_labelled_example_accuracy: rows and length must be >= 1");
  const at::Tensor positions = labelled.positions.to(logits.device());
  const at::Tensor row = at::floor_divide(positions, length);  // the example each position belongs to
  const auto options = logits.options().dtype(at::kDouble);
  const at::Tensor correct = logits.detach().argmax(-1).eq(labelled.labels.to(logits.device())).to(at::kDouble);
  const at::Tensor hits = at::zeros({rows}, options).index_add_(0, row, correct);
  const at::Tensor total = at::zeros({rows}, options).index_add_(0, row, at::ones_like(correct));
  return hits / total;  // 0/0 = NaN, as mqar_example_accuracy
}

MqarAccuracy::MqarAccuracy(int64_t num_segments) {
  LINTIME_CHECK(num_segments >= 1, "MqarAccuracy: num_segments must be >= 1, got ", num_segments);
  sums_.assign(static_cast<size_t>(num_segments), 0.0);
  device_sums_.resize(static_cast<size_t>(num_segments));
  counts_.assign(static_cast<size_t>(num_segments), 0);
}

const std::vector<double>& MqarAccuracy::sums() const {
  for (size_t i = 0; i < device_sums_.size(); ++i) {
    if (!device_sums_[i].defined()) continue;
    sums_[i] += device_sums_[i].item<double>();
    device_sums_[i] = at::Tensor();
  }
  return sums_;
}

void MqarAccuracy::add(int64_t segment_index, const at::Tensor& example_accuracy) {
  LINTIME_CHECK(segment_index >= 0 && segment_index < static_cast<int64_t>(sums_.size()),
                "MqarAccuracy: segment must be in [0, ", sums_.size(), "), got ", segment_index);
  LINTIME_CHECK(example_accuracy.defined() && example_accuracy.dim() == 1,
                "MqarAccuracy: example_accuracy must have shape [B]");
  at::Tensor sum = example_accuracy.detach().to(at::kDouble).sum();
  at::Tensor& pending = device_sums_[static_cast<size_t>(segment_index)];
  pending = pending.defined() ? pending + sum.to(pending.device()) : sum;
  counts_[segment_index] += example_accuracy.numel();
}

void MqarAccuracy::add(int64_t segment_index, const at::Tensor& logits, const at::Tensor& labels) {
  add(segment_index, mqar_example_accuracy(logits, labels));
}

double MqarAccuracy::overall() const {
  const int64_t n = count();
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  const std::vector<double>& totals = sums();
  return std::accumulate(totals.begin(), totals.end(), 0.0) / static_cast<double>(n);
}

double MqarAccuracy::segment(int64_t index) const {
  LINTIME_CHECK(index >= 0 && index < static_cast<int64_t>(sums_.size()),
                "MqarAccuracy: segment must be in [0, ", sums_.size(), "), got ", index);
  if (counts_[index] == 0) return std::numeric_limits<double>::quiet_NaN();
  return sums()[static_cast<size_t>(index)] / static_cast<double>(counts_[index]);
}

std::vector<double> MqarAccuracy::per_segment() const {
  std::vector<double> result;
  for (size_t i = 0; i < sums_.size(); ++i) result.push_back(segment(static_cast<int64_t>(i)));
  return result;
}

int64_t MqarAccuracy::count(int64_t segment_index) const {
  LINTIME_CHECK(segment_index >= 0 && segment_index < static_cast<int64_t>(counts_.size()),
                "MqarAccuracy: segment must be in [0, ", counts_.size(), "), got ", segment_index);
  return counts_[segment_index];
}

int64_t MqarAccuracy::count() const { return std::accumulate(counts_.begin(), counts_.end(), int64_t{0}); }

}  // namespace lintime::data
