// Strict reading of language-model training configs.
#include "train/lm_config.h"

#include "core/config_reader.h"
#include "core/error.h"
#include "core/paths.h"
#include "models/architecture.h"
#include "train/config_document.h"
#include "train/optim_fields.h"

#include <cmath>
#include <sys/stat.h>

namespace lintime::train {
namespace {

// [model]: `config` (a config.json path or an inline table) or `from` (a model folder).
LmModelSettings read_model(const nlohmann::json& table) {
  config::StrictObject fields(table, "model", {"config", "from"});
  LmModelSettings model;
  const nlohmann::json config = fields.get_raw("config");
  model.from = fields.get("from", std::string());
  LINTIME_CHECK(config.is_null() != model.from.empty(), "config table [model]: give exactly one of 'config' (a ",
                "config.json to train from fresh weights) and 'from' (a model folder to finetune)");
  if (!model.from.empty()) {
    LINTIME_CHECK(is_directory(model.from), "config key \"model.from\": '", model.from,
                  "' is not a directory (expected a model folder with config.json and its weights)");
    model.config_path = model.from + "/config.json";
    model.config = config::read_json_file(model.config_path, "model config");
  } else if (config.is_string()) {
    model.config_path = config.get<std::string>();
    model.config = config::read_json_file(model.config_path, "model config");
  } else {
    LINTIME_CHECK(config.is_object(), "config key \"model.config\": expected a config.json path or a table, got ",
                  config::shown(config));
    model.config = config;
  }
  models::architecture_of(model.config, model.config_path.empty() ? "config key \"model.config\"" : model.config_path);
  return model;
}

}  // namespace

std::string training_task_of(const nlohmann::json& document, const std::string& where) {
  if (!document.is_object() || !document.contains("task")) return "mqar";
  const nlohmann::json& task = document.at("task");
  LINTIME_CHECK(task.is_string() && (task == "mqar" || task == "lm"), where, ": config key \"task\": expected \"mqar\" ",
                "or \"lm\", got ", config::shown(task));
  return task.get<std::string>();
}

LmTrainConfig LmTrainConfig::from_document(const nlohmann::json& document) {
  LINTIME_CHECK(document.is_object(), "config: expected a table with task = \"lm\", [model], [data] and [train]");
  for (const auto& [key, value] : document.items())
    LINTIME_CHECK(key == "task" || key == "model" || key == "data" || key == "train", "config: unknown table '", key,
                  "' (known: task, model, data, train)");
  LINTIME_CHECK(training_task_of(document, "config") == "lm", "config: task must be \"lm\" for a language model");
  LINTIME_CHECK(document.contains("model"), "config: table [model] is missing (expected 'config' or 'from')");
  LmTrainConfig config;
  config.model = read_model(document.at("model"));

  config::StrictObject data(document.value("data", nlohmann::json::object()), "data");
  LINTIME_CHECK(data.has("shards"), "config key \"data.shards\": missing, expected a directory written by `lintime tokenize`");
  config.data.shards = data.get("shards", std::string());
  config.data.seq_len = data.get("seq_len", config.data.seq_len);
  config.data.document_boundaries = data.get("document_boundaries", config.data.document_boundaries);
  const int64_t data_seed = data.get("seed", int64_t{0});
  data.finish({"shards", "seq_len", "document_boundaries", "seed"});
  LINTIME_CHECK(data_seed >= 0, "config key \"data.seed\": must be >= 0, got ", data_seed);
  config.data.seed = static_cast<uint64_t>(data_seed);
  LINTIME_CHECK(config.data.seq_len >= 1, "config key \"data.seq_len\": must be >= 1, got ", config.data.seq_len);

  config::StrictObject train(document.value("train", nlohmann::json::object()), "train");
  auto& o = config.optim;
  // The language-model defaults (fla's and flame's): AdamW betas (0.9, 0.95), warmup then cosine.
  o.beta2 = 0.95;
  o.weight_decay = 0.1;
  o.decay_embeddings = false;
  o.schedule = "warmup_cosine";
  o.min_lr_ratio = 0.1;
  o.lr = 3e-4;
  o.eval_every = 0;
  std::vector<std::string> known = read_optimizer_fields(train, o);
  config.batch_tokens = train.get("batch_tokens", config.batch_tokens);
  config.micro_batch_rows = train.get("micro_batch_rows", config.micro_batch_rows);
  config.precision = train.get("precision", config.precision);
  config.activation_checkpointing = train.get("activation_checkpointing", config.activation_checkpointing);
  config.loss_chunk_tokens = train.get("loss_chunk_tokens", config.loss_chunk_tokens);
  config.eval_tokens = train.get("eval_tokens", config.eval_tokens);
  o.fused_adamw = train.get("fused_adamw", o.fused_adamw);
  o.master_weights = train.get("master_weights", o.master_weights);
  o.fp32_moments = train.get("fp32_moments", o.fp32_moments);
  o.initial_loss_scale = train.get("loss_scale", o.initial_loss_scale);
  known.insert(known.end(), {"batch_tokens", "micro_batch_rows", "precision", "activation_checkpointing",
                             "loss_chunk_tokens", "eval_tokens", "fused_adamw", "master_weights", "fp32_moments", "loss_scale"});
  train.finish(known);
  LINTIME_CHECK(o.max_steps >= 1, "config key \"train.max_steps\": must be >= 1 for a language model, got ", o.max_steps);
  LINTIME_CHECK(o.warmup_steps <= o.max_steps, "config key \"train.warmup_steps\": must not exceed train.max_steps (",
                o.max_steps, "), got ", o.warmup_steps);
  const int64_t seq_len = config.data.seq_len;
  LINTIME_CHECK(config.batch_tokens >= seq_len && config.batch_tokens % seq_len == 0, "config key \"train.batch_tokens\": ",
                "must be a multiple of data.seq_len (", seq_len, "), got ", config.batch_tokens);
  LINTIME_CHECK(config.micro_batch_rows >= 1 && config.rows_per_step() % config.micro_batch_rows == 0,
                "config key \"train.micro_batch_rows\": must divide the ", config.rows_per_step(),
                " rows of a step (batch_tokens / seq_len), got ", config.micro_batch_rows);
  LINTIME_CHECK(config.precision == "auto" || config.precision == "fp32" || config.precision == "fp64" ||
                    config.precision == "bf16" || config.precision == "fp16",
                "config key \"train.precision\": must be one of auto, fp32, fp64, bf16, fp16, got '", config.precision, "'");
  LINTIME_CHECK(o.master_weights || config.precision == "bf16" || config.precision == "auto",
                "config key \"train.master_weights\": false needs train.precision = \"bf16\" (fp16 loses small updates ",
                "without fp32 masters; fp32 and fp64 have none), got precision '", config.precision, "'");
  LINTIME_CHECK(o.master_weights || !o.shard_optimizer, "config key \"train.master_weights\": false is not ",
                "supported with train.shard_optimizer (the shards hold fp32 masters)");
  LINTIME_CHECK(!o.fp32_moments || !o.master_weights, "config key \"train.fp32_moments\": true applies to bf16 ",
                "weights without master copies (train.master_weights = false); with master weights the moments are ",
                "fp32 already");
  LINTIME_CHECK(config.activation_checkpointing >= 0, "config key \"train.activation_checkpointing\": must be >= 0 ",
                "(0: none, k: every k-th block), got ", config.activation_checkpointing);
  LINTIME_CHECK(o.initial_loss_scale >= 1 && std::isfinite(o.initial_loss_scale), "config key \"train.loss_scale\": ",
                "must be a finite number >= 1 (fp16's initial loss scale), got ", o.initial_loss_scale);
  LINTIME_CHECK(config.loss_chunk_tokens >= 1, "config key \"train.loss_chunk_tokens\": must be >= 1, got ",
                config.loss_chunk_tokens);
  LINTIME_CHECK(config.eval_tokens >= seq_len, "config key \"train.eval_tokens\": must be at least one row (",
                seq_len, " tokens), got ", config.eval_tokens);
  return config;
}

nlohmann::json LmTrainConfig::to_document() const {
  nlohmann::json model_table = {{"config", model.config}};
  if (!model.from.empty()) model_table = {{"from", model.from}};
  nlohmann::json train = optimizer_fields_json(optim);
  train.update({{"batch_tokens", batch_tokens}, {"micro_batch_rows", micro_batch_rows}, {"precision", precision},
                {"activation_checkpointing", activation_checkpointing}, {"loss_chunk_tokens", loss_chunk_tokens},
                {"eval_tokens", eval_tokens}, {"fused_adamw", optim.fused_adamw},
                {"loss_scale", optim.initial_loss_scale}});
  if (!optim.master_weights) train["master_weights"] = false;  // absent when true: older runs' configs stay equal
  if (optim.fp32_moments) train["fp32_moments"] = true;
  return {{"task", "lm"},
          {"model", model_table},
          {"data", {{"shards", data.shards}, {"seq_len", data.seq_len},
                    {"document_boundaries", data.document_boundaries}, {"seed", data.seed}}},
          {"train", train}};
}

LmTrainConfig load_lm_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  auto document = read_toml_file(path);
  apply_overrides(document, overrides);
  try {
    return LmTrainConfig::from_document(document);
  } catch (const Error& error) {
    fail(path, ": ", error.what());
  }
}

}  // namespace lintime::train
