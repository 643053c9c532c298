#include "train/lm_trainer.h"

#include "core/config_reader.h"
#include "core/device.h"
#include "core/error.h"
#include "core/paths.h"
#include "data/lm_batches.h"
#include "data/tokenize_corpus.h"
#include "io/token_shards.h"
#include "models/architecture.h"
#include "models/causal_lm.h"
#include "train/distributed.h"
#include "train/linear_cross_entropy.h"
#include "train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>

namespace lintime::train {
namespace fs = std::filesystem;

namespace {

std::string file_name_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The name a model folder gives a tokenizer file (text::load_tokenizer reads these).
std::string tokenizer_file_name(const std::string& path) {
  if (ends_with(path, "vocab.json")) return "vocab.json";
  if (ends_with(path, "merges.txt")) return "merges.txt";
  if (ends_with(path, ".model")) return "tokenizer.model";
  if (ends_with(path, ".json")) return "tokenizer.json";
  return file_name_of(path);
}

// The model folder's tokenizer, when it has one: its identity, to compare with the shards'.
std::optional<data::TokenizerSource> folder_tokenizer(const std::string& folder) {
  for (const char* name : {"tokenizer.model", "tokenizer.json", "vocab.json"}) {
    struct stat info {};
    if (::stat((folder + "/" + name).c_str(), &info) == 0) return data::load_tokenizer_source(folder);
  }
  return std::nullopt;
}

// Hugging Face's tokenizer_config.json for the tokenizer's files: GPT-2's BPE (vocab.json +
// merges.txt), a tokenizer.json, or Llama's SentencePiece model, with its special tokens.
nlohmann::json hugging_face_tokenizer_config(const data::TokenizerSource& tokenizer, int64_t eos_id) {
  if (tokenizer.identity.kind == "sentencepiece") {
    return {{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"},
            {"add_bos_token", true}, {"add_eos_token", false}};
  }
  const std::string eos = tokenizer.tokenizer->decode({eos_id});
  const bool gpt2_files = ends_with(tokenizer.files.front(), "vocab.json");
  return {{"tokenizer_class", gpt2_files ? "GPT2Tokenizer" : "PreTrainedTokenizerFast"},
          {"bos_token", eos}, {"eos_token", eos}, {"unk_token", eos}};
}

class LmTask final : public TrainingTask {
 public:
  LmTask(const LmTrainConfig& config, const c10::Device& device, Communicator* communicator)
      : config_(config),
        device_(device),
        communicator_(communicator),
        rank_(communicator ? communicator->rank() : 0),
        world_size_(communicator ? communicator->world_size() : 1) {
    // The step's rows are split evenly over the ranks, each rank's share into micro-batches.
    LINTIME_CHECK(config.rows_per_step() % (world_size_ * config.micro_batch_rows) == 0, "train.batch_tokens: the ",
                  config.rows_per_step(), " rows of a step (batch_tokens / seq_len) do not split into ", world_size_,
                  " ranks x micro-batches of train.micro_batch_rows = ", config.micro_batch_rows,
                  " rows (make batch_tokens / seq_len a multiple of WORLD_SIZE x micro_batch_rows)");
    rank_rows_ = config.rows_per_step() / world_size_;
    const io::TokenManifest manifest = io::read_token_manifest(config.data.shards);
    if (config.model.from.empty()) {
      model_ = models::build_causal_lm(config.model.config, config.optim.seed, config.model.config_path);
      model_->module().to(device);
    } else {
      model_ = models::load_causal_lm(config.model.from, at::kFloat, device);
      if (auto tokenizer = folder_tokenizer(config.model.from)) {
        LINTIME_CHECK(tokenizer->identity.hash == manifest.tokenizer.hash, "data: the shards in '", config.data.shards,
                      "' were made with another tokenizer (", manifest.tokenizer.kind, " from '",
                      manifest.tokenizer.source, "') than the model's in '", config.model.from, "'");
      }
    }
    model_->set_config_json(config.model.config);
    const int64_t vocab = model_->vocab_size();
    io::TokenShardSetOptions shard_options;
    shard_options.vocab_size = vocab;
    const auto train_split = io::TokenShardSet::open(config.data.shards, "train", shard_options);
    const auto val_split = io::TokenShardSet::open(config.data.shards, "val", shard_options);
    train_rows_ = std::make_unique<data::LmRows>(
        train_split, data::LmRowsOptions{config.data.seq_len, config.data.seed, config.data.document_boundaries, true});
    val_rows_ = std::make_unique<data::LmRows>(
        val_split, data::LmRowsOptions{config.data.seq_len, config.data.seed, config.data.document_boundaries, false});
    LINTIME_CHECK(train_rows_->windows() >= config.rows_per_step(), "data: the train split of '", config.data.shards,
                  "' holds ", train_rows_->windows(), " rows of ", config.data.seq_len, " tokens, fewer than one step's ",
                  config.rows_per_step(), " (lower train.batch_tokens or data.seq_len)");
    eval_rows_ = std::min(val_rows_->windows(), config.eval_tokens / config.data.seq_len);
    model_->decoder().model.set_activation_checkpointing(config.activation_checkpointing);
    tokenizer_files_ = checkpoint_tokenizer_files(manifest, &tokenizer_texts_);

    // 6 FLOPs per parameter and token (forward 2, backward 4) for the matrix products: every
    // parameter but an untied embedding's lookup table (attention's own products not counted).
    const auto& decoder_config = model_->decoder().decoder_config();
    int64_t parameters = 0;
    for (const auto& [name, parameter] : model_->module().named_parameters()) parameters += parameter.numel();
    parameters_ = parameters;
    const int64_t lookup = decoder_config.tie_word_embeddings ? 0 : decoder_config.vocab_size * decoder_config.hidden_size;
    flops_per_token_ = 6.0 * static_cast<double>(parameters - lookup);
  }

  layers::Module& model() override { return model_->module(); }
  nlohmann::json config_document() const override { return config_.to_document(); }
  nlohmann::json rng_description() const override {
    return {{"model_seed", config_.optim.seed}, {"data_seed", config_.data.seed}};
  }
  int64_t steps_per_epoch() const override { return std::max<int64_t>(1, train_rows_->windows() / config_.rows_per_step()); }
  int64_t total_steps() const override { return config_.optim.max_steps; }
  int64_t micro_batches() const override { return rank_rows_ / config_.micro_batch_rows; }
  const char* score_name() const override { return "val_loss"; }
  bool stops_at_target() const override { return false; }
  double flops_per_token() const override { return flops_per_token_; }
  nlohmann::json model_config() const override { return config_.model.config; }
  std::vector<std::pair<std::string, std::string>> checkpoint_files() const override { return tokenizer_files_; }
  std::vector<std::pair<std::string, std::string>> checkpoint_texts() const override { return tokenizer_texts_; }

  at::Tensor training_loss(int64_t step, int64_t micro, int64_t* tokens) override {
    if (micro == 0 || step != batches_step_) load_step(step);
    const data::LmBatch& batch = step_batches_.at(static_cast<size_t>(micro));
    *tokens = batch.input_ids.numel();
    return loss_of(batch, static_cast<double>(step_targets_));
  }

  TaskEvaluation evaluate() override {
    at::NoGradGuard no_grad;
    double loss_sum = 0;
    double targets = 0;
    int64_t index = 0;
    for (int64_t first = 0; first < eval_rows_; first += config_.micro_batch_rows, ++index) {
      if (index % world_size_ != rank_) continue;  // the ranks share the validation batches
      const data::LmBatch batch = val_rows_->rows(first, std::min(config_.micro_batch_rows, eval_rows_ - first));
      if (batch.target_tokens == 0) continue;
      loss_sum += loss_of(batch, 1.0).item<double>();
      targets += static_cast<double>(batch.target_tokens);
    }
    if (communicator_ != nullptr) {
      const auto sums = communicator_->sum({loss_sum, targets}, "summing the validation loss over the ranks");
      loss_sum = sums[0];
      targets = sums[1];
    }
    last_val_loss_ = targets > 0 ? loss_sum / targets : NAN;
    const double perplexity = std::exp(last_val_loss_);
    char summary[128];
    std::snprintf(summary, sizeof(summary), "val loss %.4f, perplexity %.2f", last_val_loss_, perplexity);
    return {{{"val_loss", last_val_loss_}, {"val_perplexity", perplexity}, {"val_tokens", targets}},
            -last_val_loss_, summary, last_val_loss_};
  }

  double last_val_loss() const { return last_val_loss_; }
  int64_t parameters() const { return parameters_; }

 private:
  // This rank's micro-batches of `step` and the step's target count over every rank (the
  // step's loss is the mean over all of them). Row indices are global: rank r of W takes rows
  // [s·R + r·R/W, s·R + (r+1)·R/W) of step s's R, so a run on any world size sees the same rows.
  void load_step(int64_t step) {
    step_batches_.clear();
    int64_t targets = 0;
    const int64_t rows = config_.micro_batch_rows;
    const int64_t first = step * config_.rows_per_step() + rank_ * rank_rows_;
    for (int64_t micro = 0; micro < micro_batches(); ++micro) {
      step_batches_.push_back(train_rows_->rows(first + micro * rows, rows));
      targets += step_batches_.back().target_tokens;
    }
    step_targets_ = communicator_ == nullptr
                        ? targets
                        : static_cast<int64_t>(communicator_->sum({static_cast<double>(targets)},
                                                                  "summing the step's target tokens over the ranks")[0]);
    batches_step_ = step;
  }

  // Σ over the batch's targets of −log p(label) / normalizer.
  at::Tensor loss_of(const data::LmBatch& batch, double normalizer) {
    models::Decoder& decoder = model_->decoder();
    at::Tensor hidden;
    if (batch.cu_seqlens.defined()) {
      // cu_seqlens stays on the host: the decoder reads it there and copies it to the device once
      // (from the device it would have to wait for the GPU).
      hidden = decoder.hidden_states(batch.input_ids.reshape({1, -1}).to(device_), nullptr, batch.cu_seqlens);
    } else {
      hidden = decoder.hidden_states(batch.input_ids.to(device_));
    }
    LinearCrossEntropyOptions options;
    options.chunk_tokens = config_.loss_chunk_tokens;
    options.normalizer = std::max(normalizer, 1.0);
    return linear_cross_entropy(hidden.reshape({-1, hidden.size(-1)}), decoder.head_weight(), at::Tensor(),
                                batch.labels.reshape({-1}).to(device_), options);
  }

  // The tokenizer the shards were made with, copied into every checkpoint under the names a
  // model folder uses, with the tokenizer_config.json Hugging Face's AutoTokenizer reads to pick
  // its class (`texts`); checked against the manifest's hash so that a changed file is not copied.
  static std::vector<std::pair<std::string, std::string>> checkpoint_tokenizer_files(
      const io::TokenManifest& manifest, std::vector<std::pair<std::string, std::string>>* texts) {
    const std::string& source = manifest.tokenizer.source;
    if (source.empty()) return {};  // shards written without a tokenizer (tests, benchmarks)
    struct stat info {};
    if (::stat(source.c_str(), &info) != 0) {
      std::fprintf(stderr, "lintime train: the tokenizer '%s' of the shards is gone; checkpoints will hold no tokenizer\n",
                   source.c_str());
      return {};
    }
    const data::TokenizerSource tokenizer = data::load_tokenizer_source(source);
    LINTIME_CHECK(tokenizer.identity.hash == manifest.tokenizer.hash, "data: the tokenizer '", source,
                  "' changed since the shards were written (its files hash differently); tokenize again");
    std::vector<std::pair<std::string, std::string>> files;
    for (const std::string& file : tokenizer.files) files.emplace_back(file, tokenizer_file_name(file));
    texts->emplace_back("tokenizer_config.json", hugging_face_tokenizer_config(tokenizer, manifest.eos_id).dump(2) + "\n");
    return files;
  }

  LmTrainConfig config_;
  c10::Device device_;
  Communicator* communicator_ = nullptr;
  int64_t rank_ = 0, world_size_ = 1, rank_rows_ = 0;
  std::unique_ptr<models::CausalLm> model_;
  std::unique_ptr<data::LmRows> train_rows_, val_rows_;
  int64_t eval_rows_ = 0;
  std::vector<data::LmBatch> step_batches_;
  int64_t batches_step_ = -1, step_targets_ = 0;
  std::vector<std::pair<std::string, std::string>> tokenizer_files_, tokenizer_texts_;
  double flops_per_token_ = 0, last_val_loss_ = NAN;
  int64_t parameters_ = 0;
};

}  // namespace

std::string resolved_precision(const std::string& precision, const std::string& device_type) {
  if (precision != "auto") return precision;
  return device_type == "cuda" ? "bf16" : "fp32";
}

LmTrainResult train_lm(const LmTrainConfig& config, const LmTrainOptions& options) {
  const auto wall_start = std::chrono::steady_clock::now();
  const c10::Device device = resolve_device(options.device);
  const std::string precision = resolved_precision(config.precision, device.is_cuda() ? "cuda" : "cpu");
  LmTask task(config, device, options.communicator);
  OptimSettings settings = config.optim;
  settings.precision = precision;
  const TrainerResult trained = train(task, settings, options);

  LmTrainResult result;
  result.steps = trained.steps;
  result.total_steps = trained.total_steps;
  result.interrupted = trained.interrupted;
  result.checkpoint_dir = trained.checkpoint_dir;
  result.parameters = task.parameters();
  result.device = device.str();
  result.precision = precision;
  result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  if (trained.interrupted) return result;
  result.val_loss = task.last_val_loss();
  result.val_perplexity = std::exp(result.val_loss);
  result.best_val_loss = -trained.best_score;

  const nlohmann::json summary = {{"steps", result.steps}, {"total_steps", result.total_steps},
                                  {"val_loss", result.val_loss}, {"val_perplexity", result.val_perplexity},
                                  {"best_val_loss", result.best_val_loss}, {"parameters", result.parameters},
                                  {"device", result.device}, {"precision", result.precision},
                                  {"wall_seconds", result.wall_seconds}, {"stopped_early", trained.stopped_early}};
  if (options.communicator == nullptr || options.communicator->is_root()) {
    config::write_json_file_atomically((fs::path(options.out_dir) / "result.json").string(), summary);
  }
  return result;
}

}  // namespace lintime::train
