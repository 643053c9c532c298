#include "serve/engine.h"

#include "core/device.h"
#include "core/error.h"
#include "models/decoder.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>

namespace lintime::serve {

// ---- Stream

Stream::Finish Stream::wait(size_t seen, std::vector<int64_t>& tokens, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return tokens_.size() > seen || finish_ != Finish::kNone; });
  tokens = tokens_;
  return finish_;
}

void Stream::push(int64_t token) {
  {
    std::lock_guard lock(mutex_);
    tokens_.push_back(token);
  }
  changed_.notify_all();
}

void Stream::finish(Finish reason, std::string error) {
  {
    std::lock_guard lock(mutex_);
    if (finish_ != Finish::kNone) return;
    finish_ = reason;
    error_ = std::move(error);
  }
  changed_.notify_all();
}

// ---- Engine

namespace {
constexpr int64_t kMaxTokensPerSequence = int64_t{1} << 40;  // far past any context; keeps byte counts in range
}  // namespace

Engine::Engine(models::CausalLm& model, const EngineOptions& options, Metrics* metrics)
    : model_(model), options_(options), metrics_(metrics) {
  LINTIME_CHECK(options.max_sequences >= 1, "serve: max_sequences must be >= 1, got ", options.max_sequences);
  LINTIME_CHECK(options.max_queue >= 0, "serve: max_queue must be >= 0, got ", options.max_queue);
  LINTIME_CHECK(options.prefill_chunk >= 1, "serve: prefill_chunk must be >= 1, got ", options.prefill_chunk);
  LINTIME_CHECK(options.prefix_cache_bytes >= 0, "serve: prefix_cache_bytes must be >= 0, got ",
                options.prefix_cache_bytes);
  models::Decoder& decoder = model_.decoder();
  const bool replayable = decoder.slot_steps_are_replayable();
  LINTIME_CHECK(options.step_mode != EngineOptions::StepMode::kBuckets || replayable,
                "serve: this model's decode steps cannot be replayed in buckets (a layer reads its position on ",
                "the host, or its states are kept narrowed); run it with forward_slots");
  const bool bucketed = options.step_mode == EngineOptions::StepMode::kBuckets ||
                        (options.step_mode == EngineOptions::StepMode::kAuto && replayable &&
                         decoder.head_weight().is_cuda() && infer::decode_graphs_compiled());
  // Buckets pad their rows with one more slot that no sequence is admitted to.
  const int64_t slots = options.max_sequences + (bucketed ? 1 : 0);
  LINTIME_CHECK(options.tokens_per_sequence >= 0 && options.tokens_per_sequence <= kMaxTokensPerSequence,
                "serve: tokens per sequence (prompt and new tokens) must lie in [0, ", kMaxTokensPerSequence, "], got ",
                options.tokens_per_sequence);
  // What the slots hold (a KV cache: reserved for tokens_per_sequence, else after a first token).
  const int64_t reserved = std::max<int64_t>(options.tokens_per_sequence, 1);
  check_fits("serve: the decoding states of " + std::to_string(slots) + " sequence slots (--max-sequences) of " +
                 std::to_string(reserved) + " tokens (--max-prompt-tokens + --max-new-tokens)",
             static_cast<double>(slots) * static_cast<double>(decoder.state_bytes_after(reserved)),
             decoder.head_weight().device());
  cache_ = decoder.make_cache(slots, options.tokens_per_sequence);
  if (bucketed) {
    cache_.withhold(options.max_sequences);
    slot_steps_ = std::make_unique<infer::SlotSteps>(decoder, cache_, options.max_sequences, options.max_sequences);
  }
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  stopping_ = true;
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<Stream> Engine::submit(GenerationRequest request) {
  LINTIME_CHECK(!request.prompt.empty(), "serve: a request needs at least one prompt token");
  LINTIME_CHECK(request.max_new_tokens >= 1, "serve: max_new_tokens must be >= 1, got ", request.max_new_tokens);
  infer::validate(request.sampling);
  auto sequence = std::make_unique<Sequence>();
  sequence->stream = std::make_shared<Stream>();
  sequence->stream->prompt_tokens_ = static_cast<int64_t>(request.prompt.size());
  sequence->generator = at::make_generator<at::CPUGeneratorImpl>(request.seed);
  sequence->request = std::move(request);
  std::shared_ptr<Stream> stream = sequence->stream;
  {
    std::lock_guard lock(mutex_);
    const auto pending = active_count_ + static_cast<int64_t>(queue_.size());
    if (!admitting_ || stopping_ || pending >= options_.max_sequences + options_.max_queue) return nullptr;
    queue_.push_back(std::move(sequence));
    if (metrics_) metrics_->set_queue_length(static_cast<int64_t>(queue_.size()));
  }
  work_.notify_all();
  return stream;
}

int64_t Engine::pending() const {
  std::lock_guard lock(mutex_);
  return active_count_ + static_cast<int64_t>(queue_.size());
}

int64_t Engine::state_bytes() const {
  int64_t total = 0;
  for (int64_t i = 0; i < cache_.num_layers(); ++i) total += cache_.layer(i).allocated_bytes();
  return total;
}

int64_t Engine::free_slots() const {
  std::lock_guard lock(mutex_);
  int64_t free = 0;
  for (int64_t slot = 0; slot < cache_.batch_size(); ++slot) free += cache_.in_use(slot) || cache_.withheld(slot) ? 0 : 1;
  return free;
}

int64_t Engine::prefix_cache_entries() const {
  std::lock_guard lock(prefix_mutex_);
  return static_cast<int64_t>(prefixes_.size());
}

void Engine::loop() {
  at::NoGradGuard no_grad;
  while (true) {
    {
      std::unique_lock lock(mutex_);
      work_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active_.empty(); });
      if (stopping_) break;
    }
    admit_queued();
    for (auto& sequence : active_) {
      if (sequence->stream->cancelled()) retire(*sequence, Stream::Finish::kCancelled);
    }
    // Prefill: one chunk of every new prompt per iteration, so that decoding streams wait at
    // most one chunk's forward per iteration.
    std::vector<Sequence*> prefilling;
    for (auto& sequence : active_) {
      if (sequence->slot >= 0 && sequence->prefilled < static_cast<int64_t>(sequence->request.prompt.size())) {
        prefilling.push_back(sequence.get());
      }
    }
    if (!prefilling.empty()) prefill_chunks(prefilling);
    std::vector<Sequence*> decoding;
    for (auto& sequence : active_) {
      if (sequence->slot >= 0 && sequence->next_token >= 0) decoding.push_back(sequence.get());
    }
    if (!decoding.empty()) {
      const auto started = std::chrono::steady_clock::now();
      try {
        decode_step(decoding);
        if (metrics_ && prefilling.empty()) {
          metrics_->observe_decode_step(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        }
      } catch (const std::exception& error) {
        for (Sequence* sequence : decoding) retire(*sequence, Stream::Finish::kError, error.what());
      }
    }
    {
      std::lock_guard lock(mutex_);
      std::erase_if(active_, [](const std::unique_ptr<Sequence>& sequence) { return sequence->slot < 0; });
      active_count_ = static_cast<int64_t>(active_.size());
      if (metrics_) {
        metrics_->set_active_sequences(active_count_);
        metrics_->set_queue_length(static_cast<int64_t>(queue_.size()));
      }
    }
  }
  // Shutting down: every request still here ends, so that no client waits forever.
  std::lock_guard lock(mutex_);
  for (auto& sequence : active_) sequence->stream->finish(Stream::Finish::kCancelled, "the server is shutting down");
  for (auto& sequence : queue_) sequence->stream->finish(Stream::Finish::kCancelled, "the server is shutting down");
  active_.clear();
  queue_.clear();
  active_count_ = 0;
}

void Engine::admit_queued() {
  std::lock_guard lock(mutex_);
  while (!queue_.empty()) {
    std::unique_ptr<Sequence>& next = queue_.front();
    if (next->stream->cancelled()) {  // gone before it started
      next->stream->finish(Stream::Finish::kCancelled);
      queue_.pop_front();
      continue;
    }
    const int64_t slot = cache_.admit();
    if (slot < 0) break;
    next->slot = slot;
    const int64_t reused = restore_longest_prefix(*next);
    next->stream->reused_prefix_tokens_ = reused;
    if (metrics_ && options_.prefix_cache_bytes > 0) metrics_->count_prefix_cache(reused > 0, reused);
    active_.push_back(std::move(next));
    queue_.pop_front();
  }
  active_count_ = static_cast<int64_t>(active_.size());
}

int64_t Engine::next_chunk_length(const Sequence& sequence) const {
  const int64_t remaining = static_cast<int64_t>(sequence.request.prompt.size()) - sequence.prefilled;
  // A layer that cannot continue a prefill (a position read on the host) takes the prompt whole.
  return model_.decoder().prefills_continue() ? std::min(options_.prefill_chunk, remaining) : remaining;
}

void Engine::prefill_chunks(const std::vector<Sequence*>& prefilling) {
  const int64_t vocab = model_.decoder().model.embeddings.weight.size(0);
  std::map<int64_t, std::vector<Sequence*>> by_length;  // chunk length -> sequences
  for (Sequence* sequence : prefilling) {
    // Checked here so that a bad prompt ends alone, not with the batch it would have joined (and
    // before it reaches a GPU, where an id past the table would be a device-side fault).
    const auto& prompt = sequence->request.prompt;
    const auto [low, high] = std::minmax_element(prompt.begin(), prompt.end());
    if (*low < 0 || *high >= vocab) {
      retire(*sequence, Stream::Finish::kError,
             "serve: the prompt must be token ids in [0, " + std::to_string(vocab) + "), got values in [" +
                 std::to_string(*low) + ", " + std::to_string(*high) + "]");
      continue;
    }
    by_length[next_chunk_length(*sequence)].push_back(sequence);
  }
  for (const auto& [count, sequences] : by_length) {
    const size_t per_forward = static_cast<size_t>(std::max<int64_t>(1, kPrefillBatchTokens / count));
    for (size_t first = 0; first < sequences.size(); first += per_forward) {
      const std::vector<Sequence*> group(sequences.begin() + static_cast<std::ptrdiff_t>(first),
                                         sequences.begin() + static_cast<std::ptrdiff_t>(std::min(sequences.size(), first + per_forward)));
      try {
        prefill_together(group, count);
      } catch (const std::exception& error) {
        for (Sequence* sequence : group) retire(*sequence, Stream::Finish::kError, error.what());
      }
    }
  }
}

void Engine::prefill_together(const std::vector<Sequence*>& group, int64_t count) {
  std::vector<int64_t> ids, slots;
  for (const Sequence* sequence : group) {
    const auto begin = sequence->request.prompt.begin() + sequence->prefilled;
    ids.insert(ids.end(), begin, begin + count);
    slots.push_back(sequence->slot);
  }
  const int64_t rows = static_cast<int64_t>(group.size());
  const at::Tensor input = at::tensor(ids, at::kLong).view({rows, count}).to(model_.decoder().head_weight().device());
  // [rows, vocab]: only the last position's logits, which a finished prompt's first token needs.
  const at::Tensor last = model_.decoder().forward_slots(input, cache_, slots, /*last_position_only=*/true).select(1, 0);
  std::vector<Sequence*> complete;  // prompts done: their first token comes from `last`
  std::vector<int64_t> complete_rows;
  for (int64_t row = 0; row < rows; ++row) {
    Sequence& sequence = *group[static_cast<size_t>(row)];
    sequence.prefilled += count;
    if (metrics_) metrics_->add_tokens(count, 0);
    if (options_.prefix_cache_bytes > 0 && sequence.prefilled % options_.prefill_chunk == 0) store_prefix(sequence);
    if (sequence.prefilled == static_cast<int64_t>(sequence.request.prompt.size())) {
      complete.push_back(&sequence);
      complete_rows.push_back(row);
    }
  }
  if (complete.empty()) return;
  const at::Tensor row_index = at::tensor(complete_rows, at::kLong).to(last.device());
  const std::vector<int64_t> tokens = next_tokens(complete, last.index_select(0, row_index));
  for (size_t i = 0; i < complete.size(); ++i) take_token(*complete[i], tokens[i]);
}

void Engine::decode_step(std::vector<Sequence*>& decoding) {
  std::vector<int64_t> tokens, slots;
  for (const Sequence* sequence : decoding) {
    tokens.push_back(sequence->next_token);
    slots.push_back(sequence->slot);
  }
  at::Tensor logits;  // [B, V]
  if (slot_steps_) {
    logits = slot_steps_->step(tokens, slots);
  } else {
    const at::Tensor ids = at::tensor(tokens, at::kLong)
                               .view({static_cast<int64_t>(tokens.size()), 1})
                               .to(model_.decoder().head_weight().device());
    logits = model_.decoder().forward_slots(ids, cache_, slots).select(1, 0);
  }
  if (metrics_) metrics_->set_batch_size(static_cast<int64_t>(decoding.size()));
  const std::vector<int64_t> next = next_tokens(decoding, logits);
  for (size_t row = 0; row < decoding.size(); ++row) take_token(*decoding[row], next[row]);
}

std::vector<int64_t> Engine::next_tokens(const std::vector<Sequence*>& sequences, const at::Tensor& logits) {
  const int64_t width = logits.size(-1);
  const int64_t choices = options_.choices > 0 ? std::min(options_.choices, width) : width;
  // In fp32, as choose_next_tokens scores them (an fp64 model's argmax is that of its rounded logits).
  const at::Tensor scores = logits.slice(-1, 0, choices).to(at::kFloat);
  std::vector<int64_t> sampling_rows;
  for (size_t row = 0; row < sequences.size(); ++row) {
    if (!infer::is_greedy(sequences[row]->request.sampling)) sampling_rows.push_back(static_cast<int64_t>(row));
  }
  std::vector<int64_t> tokens(sequences.size(), -1);
  if (sampling_rows.size() < sequences.size()) {  // one argmax for all rows; [rows] ids to the host
    const at::Tensor argmax = scores.argmax(-1).to(at::kCPU);
    const int64_t* chosen = argmax.data_ptr<int64_t>();
    for (size_t row = 0; row < sequences.size(); ++row) tokens[row] = chosen[row];
  }
  if (!sampling_rows.empty()) {  // those rows' logits to the host in one copy
    const at::Tensor on_host =
        scores.index_select(0, at::tensor(sampling_rows, at::kLong).to(scores.device())).to(at::kCPU);
    for (size_t i = 0; i < sampling_rows.size(); ++i) {
      Sequence& sequence = *sequences[static_cast<size_t>(sampling_rows[i])];
      tokens[static_cast<size_t>(sampling_rows[i])] =
          infer::choose_next_tokens(on_host.narrow(0, static_cast<int64_t>(i), 1), sequence.request.sampling,
                                    sequence.generator)[0]
              .item<int64_t>();
    }
  }
  return tokens;
}

void Engine::take_token(Sequence& sequence, int64_t token) {
  const auto now = Stream::Clock::now();
  Stream& stream = *sequence.stream;
  if (metrics_) {
    if (sequence.generated == 0) {
      metrics_->observe_time_to_first_token(std::chrono::duration<double>(now - stream.arrived_).count());
    } else {
      metrics_->observe_time_per_output_token(std::chrono::duration<double>(now - stream.last_token_).count());
    }
  }
  stream.last_token_ = now;
  ++sequence.generated;
  sequence.next_token = -1;
  if (sequence.request.eos && token == *sequence.request.eos) {
    retire(sequence, Stream::Finish::kEos);
    return;
  }
  stream.push(token);
  if (metrics_) metrics_->add_tokens(0, 1);
  if (sequence.generated >= sequence.request.max_new_tokens) {
    retire(sequence, Stream::Finish::kLength);
  } else {
    sequence.next_token = token;
  }
}

void Engine::retire(Sequence& sequence, Stream::Finish reason, const std::string& error) {
  if (sequence.slot < 0) return;
  {
    std::lock_guard lock(mutex_);
    cache_.retire(sequence.slot);
  }
  sequence.slot = -1;
  sequence.stream->finish(reason, error);
}

// ---- Prefix-state cache

std::string Engine::prefix_key(const std::vector<int64_t>& tokens, int64_t length) {
  return std::string(reinterpret_cast<const char*>(tokens.data()), static_cast<size_t>(length) * sizeof(int64_t));
}

void Engine::store_prefix(const Sequence& sequence) {
  const int64_t tokens = sequence.prefilled;
  std::string key = prefix_key(sequence.request.prompt, tokens);
  std::lock_guard lock(prefix_mutex_);
  if (auto found = prefixes_.find(key); found != prefixes_.end()) {  // refresh its place
    prefix_lru_.erase(found->second.lru);
    prefix_lru_.push_front(key);
    found->second.lru = prefix_lru_.begin();
    return;
  }
  PrefixEntry entry;
  entry.tokens = tokens;
  const at::Tensor rows = at::full({1}, sequence.slot, at::kLong);
  for (int64_t i = 0; i < cache_.num_layers(); ++i) {
    entry.layers.push_back(cache_.layer(i).gather(rows, tokens));
    entry.bytes += entry.layers.back()->allocated_bytes();
  }
  if (entry.bytes > options_.prefix_cache_bytes) return;
  while (prefix_bytes_ + entry.bytes > options_.prefix_cache_bytes && !prefix_lru_.empty()) {
    auto oldest = prefixes_.find(prefix_lru_.back());
    prefix_bytes_ -= oldest->second.bytes;
    prefixes_.erase(oldest);
    prefix_lru_.pop_back();
  }
  prefix_lru_.push_front(key);
  entry.lru = prefix_lru_.begin();
  prefix_bytes_ += entry.bytes;
  prefixes_.emplace(std::move(key), std::move(entry));
}

int64_t Engine::restore_longest_prefix(Sequence& sequence) {
  if (options_.prefix_cache_bytes == 0 || !model_.decoder().prefills_continue()) return 0;
  const auto& prompt = sequence.request.prompt;
  const int64_t chunk = options_.prefill_chunk;
  // A prefix strictly shorter than the prompt: the last prompt token must run to give logits.
  std::lock_guard lock(prefix_mutex_);
  for (int64_t length = (static_cast<int64_t>(prompt.size()) - 1) / chunk * chunk; length >= chunk; length -= chunk) {
    auto found = prefixes_.find(prefix_key(prompt, length));
    if (found == prefixes_.end()) continue;
    const at::Tensor rows = at::full({1}, sequence.slot, at::kLong);
    for (int64_t i = 0; i < cache_.num_layers(); ++i) {
      // scatter writes the part's tensors into the slot; a copy keeps the cached entry intact.
      auto copy = found->second.layers[static_cast<size_t>(i)]->gather(at::zeros({1}, at::kLong), length);
      cache_.layer(i).scatter(*copy, rows);
    }
    cache_.advance_slot(sequence.slot, length);
    sequence.prefilled = length;
    prefix_lru_.erase(found->second.lru);
    prefix_lru_.push_front(found->first);
    found->second.lru = prefix_lru_.begin();
    return length;
  }
  return 0;
}

}  // namespace lintime::serve
