// The server's Prometheus metrics (GET /metrics, text exposition format 0.0.4): counters,
// gauges and cumulative histograms, updated from the engine and HTTP threads under one mutex
// (a few updates per token: no contention worth a lock-free design).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace lintime::serve {

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& endpoint, int status);
  void add_tokens(int64_t prompt_tokens, int64_t generated_tokens);
  void set_queue_length(int64_t value);
  void set_active_sequences(int64_t value);
  void set_batch_size(int64_t value);
  void observe_time_to_first_token(double seconds);
  void observe_time_per_output_token(double seconds);
  // One batched decode step in an iteration that ran no prompt chunk (host work and the copy of
  // its tokens included): the steady step, apart from prefills interleaved with decoding.
  void observe_decode_step(double seconds);
  void count_prefix_cache(bool hit, int64_t reused_tokens);
  void set_memory_peak_bytes(double value);
  // The exposition text.
  std::string render() const;

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<int64_t> counts;  // per bound, not cumulative (render sums them)
    int64_t count = 0;
    double sum = 0;
    void observe(double value);
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  int64_t queue_length_ = 0, active_sequences_ = 0, batch_size_ = 0;
  int64_t prefix_hits_ = 0, prefix_misses_ = 0, prefix_reused_tokens_ = 0;
  double memory_peak_bytes_ = 0;
  Histogram time_to_first_token_, time_per_output_token_, decode_step_;
};

}  // namespace lintime::serve
