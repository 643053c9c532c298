#include "serve/metrics.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace lintime::serve {

Metrics::Metrics() {
  time_to_first_token_.bounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  time_per_output_token_.bounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
  decode_step_.bounds = time_per_output_token_.bounds;
  time_to_first_token_.counts.assign(time_to_first_token_.bounds.size(), 0);
  time_per_output_token_.counts.assign(time_per_output_token_.bounds.size(), 0);
  decode_step_.counts.assign(decode_step_.bounds.size(), 0);
}

void Metrics::Histogram::observe(double value) {
  const auto bucket = std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();
  if (bucket < static_cast<std::ptrdiff_t>(counts.size())) ++counts[static_cast<size_t>(bucket)];
  ++count;
  sum += value;
}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::add_tokens(int64_t prompt_tokens, int64_t generated_tokens) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += prompt_tokens;
  generated_tokens_ += generated_tokens;
}

void Metrics::set_queue_length(int64_t value) {
  std::lock_guard lock(mutex_);
  queue_length_ = value;
}

void Metrics::set_active_sequences(int64_t value) {
  std::lock_guard lock(mutex_);
  active_sequences_ = value;
}

void Metrics::set_batch_size(int64_t value) {
  std::lock_guard lock(mutex_);
  batch_size_ = value;
}

void Metrics::set_memory_peak_bytes(double value) {
  std::lock_guard lock(mutex_);
  memory_peak_bytes_ = value;
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard lock(mutex_);
  time_to_first_token_.observe(seconds);
}

void Metrics::observe_time_per_output_token(double seconds) {
  std::lock_guard lock(mutex_);
  time_per_output_token_.observe(seconds);
}

void Metrics::observe_decode_step(double seconds) {
  std::lock_guard lock(mutex_);
  decode_step_.observe(seconds);
}

void Metrics::count_prefix_cache(bool hit, int64_t reused_tokens) {
  std::lock_guard lock(mutex_);
  ++(hit ? prefix_hits_ : prefix_misses_);
  prefix_reused_tokens_ += reused_tokens;
}

namespace {

void write_histogram(std::ostringstream& out, const char* name, const char* help, const std::vector<double>& bounds,
                     const std::vector<int64_t>& counts, int64_t count, double sum) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " histogram\n";
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += counts[i];
    char bound[32];
    std::snprintf(bound, sizeof(bound), "%g", bounds[i]);
    out << name << "_bucket{le=\"" << bound << "\"} " << cumulative << '\n';
  }
  out << name << "_bucket{le=\"+Inf\"} " << count << '\n' << name << "_sum " << sum << '\n' << name << "_count " << count << '\n';
}

void write_scalar(std::ostringstream& out, const char* name, const char* type, const char* help, int64_t value) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n' << name << ' ' << value << '\n';
}

}  // namespace

std::string Metrics::render() const {
  std::lock_guard lock(mutex_);
  std::ostringstream out;
  out << "# HELP lintime_requests_total HTTP requests by endpoint and status.\n# TYPE lintime_requests_total counter\n";
  for (const auto& [key, value] : requests_) {
    out << "lintime_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << value << '\n';
  }
  write_scalar(out, "lintime_prompt_tokens_total", "counter", "Prompt tokens prefilled.", prompt_tokens_);
  write_scalar(out, "lintime_generation_tokens_total", "counter", "Tokens generated.", generated_tokens_);
  write_scalar(out, "lintime_queue_length", "gauge", "Requests waiting for a sequence slot.", queue_length_);
  write_scalar(out, "lintime_active_sequences", "gauge", "Sequences holding a state slot.", active_sequences_);
  write_scalar(out, "lintime_memory_peak_bytes", "gauge",
               "Peak memory of the model's device: the GPU allocator's peak, or the process's resident peak on a CPU.",
               static_cast<int64_t>(memory_peak_bytes_));
  write_scalar(out, "lintime_batch_size", "gauge", "Sequences in the last batched decode step.", batch_size_);
  write_scalar(out, "lintime_prefix_cache_hits_total", "counter", "Requests that continued a cached prefix state.",
               prefix_hits_);
  write_scalar(out, "lintime_prefix_cache_misses_total", "counter", "Requests prefilled from the start.", prefix_misses_);
  write_scalar(out, "lintime_prefix_cache_reused_tokens_total", "counter", "Prompt tokens not prefilled thanks to the cache.",
               prefix_reused_tokens_);
  write_histogram(out, "lintime_time_to_first_token_seconds", "From a request's arrival to its first token.",
                  time_to_first_token_.bounds, time_to_first_token_.counts, time_to_first_token_.count,
                  time_to_first_token_.sum);
  write_histogram(out, "lintime_time_per_output_token_seconds", "Between consecutive tokens of a sequence.",
                  time_per_output_token_.bounds, time_per_output_token_.counts, time_per_output_token_.count,
                  time_per_output_token_.sum);
  write_histogram(out, "lintime_decode_step_seconds",
                  "Batched decode steps of iterations that prefilled no prompt chunk (the steady step).",
                  decode_step_.bounds, decode_step_.counts, decode_step_.count, decode_step_.sum);
  return out.str();
}

}  // namespace lintime::serve
