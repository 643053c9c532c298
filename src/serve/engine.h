// The serving engine (vLLM's and llama.cpp server's scheduling loop, architecture.md): one
// thread owns the model and a cache of `max_sequences` state slots. Each iteration it admits
// queued requests into free slots, prefills one chunk of each new prompt (so that running
// streams are not stalled by a long prompt; chunks of equal length run as one batch), runs one
// batched decode step over every sequence that is decoding (Decoder::forward_slots, or
// recorded buckets: infer/slot_steps.h; the other slots' states are not touched), samples
// each sequence's next token with its own generator, and retires sequences that end (EOS, their
// token budget, or cancelled by their client). Requests talk to it through a Stream.
//
// Prefix-state cache: a recurrent model's state after a prompt prefix has the same size whatever
// the prefix's length, so the engine keeps the states of recent prefixes at chunk boundaries
// (LRU, bounded in bytes); a prompt that extends a cached prefix starts from its state and
// prefills only the rest.
#pragma once

#include "infer/sampling.h"
#include "infer/slot_steps.h"
#include "models/causal_lm.h"
#include "serve/metrics.h"
#include "state/cache.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace lintime::serve {

struct GenerationRequest {
  std::vector<int64_t> prompt;  // token ids, at least one
  int64_t max_new_tokens = 16;  // >= 1
  infer::SamplingOptions sampling;
  uint64_t seed = 0;
  std::optional<int64_t> eos;   // the sequence ends at this token (not kept)
};

// One request's channel between the thread that serves its client and the engine.
class Stream {
 public:
  enum class Finish { kNone, kEos, kLength, kCancelled, kError };
  using Clock = std::chrono::steady_clock;

  // Client side: waits up to `timeout` for tokens after the first `seen`, or the end. Returns
  // every token so far in `tokens` and the finish state.
  Finish wait(size_t seen, std::vector<int64_t>& tokens, std::chrono::milliseconds timeout);
  // The client is gone or needs no more tokens (a stop string): the engine retires the sequence.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  const std::string& error() const { return error_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t reused_prefix_tokens() const { return reused_prefix_tokens_; }

  // Engine side.
  void push(int64_t token);
  void finish(Finish reason, std::string error = {});

 private:
  friend class Engine;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<int64_t> tokens_;
  Finish finish_ = Finish::kNone;
  std::string error_;
  std::atomic<bool> cancelled_{false};
  int64_t prompt_tokens_ = 0, reused_prefix_tokens_ = 0;
  Clock::time_point arrived_ = Clock::now(), last_token_;
};

struct EngineOptions {
  int64_t max_sequences = 16;       // state slots: sequences decoded together
  int64_t max_queue = 64;           // requests waiting for a slot; more are refused (503)
  int64_t prefill_chunk = 256;      // prompt tokens prefilled per sequence per iteration
  int64_t prefix_cache_bytes = 256LL << 20;  // 0: no prefix-state cache
  // The most tokens (prompt and generated) a sequence may reach: a KV cache is reserved for that
  // many in every slot at its first use, so it never grows (a growth copies every slot's cache and
  // records the decode buckets anew) and what it needs is checked when the engine starts. 0:
  // grown as sequences lengthen. States of a fixed size (GSA, BASED) do not depend on it.
  int64_t tokens_per_sequence = 0;
  int64_t choices = 0;              // logit columns tokens may come from (0: all; the tokenizer's
                                    // vocabulary leaves a padded head's extra columns out)
  // How a batched decode step runs. kBuckets: fixed-size buckets replayed as CUDA graphs on a GPU
  // (infer/slot_steps.h; on a CPU the same staging without recording), for models whose steps
  // are replayable; kSlots: Decoder::forward_slots; kAuto: buckets on a GPU where they apply.
  enum class StepMode { kAuto, kBuckets, kSlots };
  StepMode step_mode = StepMode::kAuto;
};

class Engine {
 public:
  // `model` must outlive the engine. Starts the engine thread.
  Engine(models::CausalLm& model, const EngineOptions& options, Metrics* metrics = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; nullptr when the queue is full or the engine no longer admits.
  std::shared_ptr<Stream> submit(GenerationRequest request);
  // Stops admitting new requests (SIGTERM); queued and running ones go on.
  void stop_admitting() { admitting_ = false; }
  bool admitting() const { return admitting_; }
  // Queued plus running requests.
  int64_t pending() const;
  int64_t active_sequences() const { return active_count_; }
  int64_t free_slots() const;  // for tests: slots not holding a sequence
  int64_t state_bytes() const;  // for tests, while idle: bytes the slots' states hold
  const EngineOptions& options() const { return options_; }
  int64_t prefix_cache_entries() const;
  // Whether decode steps run through recorded buckets (EngineOptions::step_mode resolved).
  bool bucketed_steps() const { return slot_steps_ != nullptr; }

 private:
  struct Sequence {
    std::shared_ptr<Stream> stream;
    GenerationRequest request;
    int64_t slot = -1;
    int64_t prefilled = 0;        // prompt tokens in the state
    int64_t generated = 0;
    int64_t next_token = -1;      // sampled, not yet fed
    at::Generator generator;
  };
  struct PrefixEntry {
    std::vector<std::unique_ptr<state::LayerState>> layers;
    int64_t tokens = 0, bytes = 0;
    std::list<std::string>::iterator lru;
  };

  void loop();
  void admit_queued();
  // One chunk of each prompt in `prefilling`: those whose chunks have the same length together,
  // up to kPrefillBatchTokens tokens per forward.
  void prefill_chunks(const std::vector<Sequence*>& prefilling);
  void prefill_together(const std::vector<Sequence*>& group, int64_t count);
  // The tokens `sequence`'s next prefill chunk takes.
  int64_t next_chunk_length(const Sequence& sequence) const;
  void decode_step(std::vector<Sequence*>& decoding);
  // After a token is chosen for `sequence`: pushes it or ends the sequence.
  // The next token of each sequence from its row of logits [rows, V] (on the model's device).
  // Greedy rows take an argmax on the device, so only their token ids cross to the host; rows
  // that sample copy their logits and draw on the host from their own generator.
  std::vector<int64_t> next_tokens(const std::vector<Sequence*>& sequences, const at::Tensor& logits);
  void take_token(Sequence& sequence, int64_t token);
  void retire(Sequence& sequence, Stream::Finish reason, const std::string& error = {});
  void store_prefix(const Sequence& sequence);
  int64_t restore_longest_prefix(Sequence& sequence);
  static std::string prefix_key(const std::vector<int64_t>& tokens, int64_t length);

  // Prompt tokens one batched prefill forward takes at most (its activations stay small).
  static constexpr int64_t kPrefillBatchTokens = 32768;

  models::CausalLm& model_;
  EngineOptions options_;
  Metrics* metrics_;
  state::Cache cache_;
  std::unique_ptr<infer::SlotSteps> slot_steps_;  // null: steps through forward_slots
  int64_t choices_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable work_;
  std::deque<std::unique_ptr<Sequence>> queue_;
  std::vector<std::unique_ptr<Sequence>> active_;  // engine thread only
  std::atomic<int64_t> active_count_{0};
  std::atomic<bool> admitting_{true}, stopping_{false};

  mutable std::mutex prefix_mutex_;
  std::map<std::string, PrefixEntry> prefixes_;
  std::list<std::string> prefix_lru_;  // most recent first
  int64_t prefix_bytes_ = 0;

  std::thread thread_;
};

}  // namespace lintime::serve
