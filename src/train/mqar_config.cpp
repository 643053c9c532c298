// Strict reading of MQAR training configs.
#include "train/mqar_config.h"

#include "core/error.h"
#include "core/config_reader.h"
#include "train/config_document.h"
#include "train/lm_config.h"
#include "train/optim_fields.h"

#include <algorithm>
#include <cmath>

namespace lintime::train {
namespace {

std::vector<data::MqarSegmentConfig> read_segments(const nlohmann::json& list, const std::string& path,
                                                   const MqarDataSettings& data) {
  LINTIME_CHECK(list.is_array() && !list.empty(), "config key \"", path,
                "\": must be a non-empty array of {seq_len, kv_pairs, examples} tables");
  std::vector<data::MqarSegmentConfig> segments;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = path + "[" + std::to_string(i) + "]";
    config::StrictObject fields(list[i], where);
    data::MqarSegmentConfig segment;
    segment.vocab_size = data.vocab_size;
    segment.input_seq_len = fields.require_integer("seq_len");
    segment.num_kv_pairs = fields.require_integer("kv_pairs");
    segment.num_examples = fields.require_integer("examples");
    segment.power_a = fields.get("power_a", data.power_a);
    segment.random_non_queries = fields.get("random_non_queries", data.random_non_queries);
    fields.finish({"seq_len", "kv_pairs", "examples", "power_a", "random_non_queries"});
    data::validate(segment, where);
    segments.push_back(segment);
  }
  return segments;
}

nlohmann::json segments_to_json(const std::vector<data::MqarSegmentConfig>& segments) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& s : segments)
    list.push_back({{"seq_len", s.input_seq_len}, {"kv_pairs", s.num_kv_pairs}, {"examples", s.num_examples},
                    {"power_a", s.power_a}, {"random_non_queries", s.random_non_queries}});
  return list;
}

}  // namespace

MqarTrainConfig MqarTrainConfig::from_document(const nlohmann::json& document) {
  LINTIME_CHECK(document.is_object(), "config: expected a table with [model], [data] and [train]");
  for (const auto& [key, value] : document.items())
    LINTIME_CHECK(key == "model" || key == "data" || key == "train", "config: unknown table '", key,
                  "' (known tables: model, data, train)");
  MqarTrainConfig config;

  config::StrictObject data_fields(document.value("data", nlohmann::json::object()), "data");
  auto& data = config.data;
  data.vocab_size = data_fields.get("vocab_size", data.vocab_size);
  data.power_a = data_fields.get("power_a", data.power_a);
  data.random_non_queries = data_fields.get("random_non_queries", data.random_non_queries);
  const int64_t data_seed = data_fields.get("seed", int64_t{0});
  LINTIME_CHECK(data_seed >= 0, "config key \"data.seed\": must be >= 0, got ", data_seed);
  data.seed = static_cast<uint64_t>(data_seed);
  LINTIME_CHECK(data_fields.has("train"), "config key \"data.train\": missing, expected an array of segments");
  LINTIME_CHECK(data_fields.has("test"), "config key \"data.test\": missing, expected an array of segments");
  data.train_segments = read_segments(data_fields.get_raw("train"), "data.train", data);
  data.test_segments = read_segments(data_fields.get_raw("test"), "data.test", data);
  data_fields.finish({"vocab_size", "power_a", "random_non_queries", "seed", "train", "test"});

  // [model]: d_model, layers, norm_eps, initializer_range, and one sub-table per mixer name.
  nlohmann::json model_json = nlohmann::json::object();
  nlohmann::json mixer_options = nlohmann::json::object();
  const auto known_mixers = models::mixer_names();
  const nlohmann::json model_table = document.value("model", nlohmann::json::object());
  for (const auto& [key, value] : model_table.items()) {
    if (std::find(known_mixers.begin(), known_mixers.end(), key) != known_mixers.end()) {
      mixer_options[key] = value;
    } else {
      LINTIME_CHECK(key != "vocab_size", "config: set the vocabulary with 'data.vocab_size', not 'model.vocab_size'");
      model_json[key] = value;
    }
  }
  model_json["vocab_size"] = data.vocab_size;
  model_json["mixer_options"] = mixer_options;
  try {
    models::from_json(model_json, config.model);
  } catch (const nlohmann::json::exception& error) {
    fail("config: [model]: ", error.what());
  }

  config::StrictObject train(document.value("train", nlohmann::json::object()), "train");
  auto& o = config.optim;
  o.batch_size = train.get("batch_size", o.batch_size);
  o.test_batch_size = train.get("test_batch_size", o.test_batch_size);
  o.epochs = train.get("epochs", o.epochs);
  o.lr_sweep = train.get_number_list("lr_sweep", o.lr_sweep);
  o.target_accuracy = train.get("target_accuracy", o.target_accuracy);
  o.precision = train.get("precision", o.precision);
  LINTIME_CHECK(o.precision == "fp32" || o.precision == "bf16" || o.precision == "fp64",
                "config key \"train.precision\": must be one of fp32 (the papers' MQAR runs), bf16 (bf16 compute, fp32 ",
                "master weights and moments) or fp64, got '", o.precision, "'");
  LINTIME_CHECK(o.target_accuracy > 0 && o.target_accuracy <= 1, "config key \"train.target_accuracy\": expected an ",
                "accuracy in (0, 1] (training stops once evaluation reaches it), got ", o.target_accuracy);
  std::vector<std::string> known = {"batch_size", "test_batch_size", "epochs", "lr_sweep", "target_accuracy",
                                    "precision"};
  const auto shared = read_optimizer_fields(train, o);
  known.insert(known.end(), shared.begin(), shared.end());
  train.finish(known);
  LINTIME_CHECK(o.batch_size >= 1, "config key \"train.batch_size\": must be >= 1, got ", o.batch_size);
  LINTIME_CHECK(o.test_batch_size >= 1, "config key \"train.test_batch_size\": must be >= 1, got ", o.test_batch_size);
  LINTIME_CHECK(o.epochs >= 1, "config key \"train.epochs\": must be >= 1, got ", o.epochs);
  for (size_t i = 0; i < o.lr_sweep.size(); ++i) {
    const double lr = o.lr_sweep[i];
    LINTIME_CHECK(lr > 0 && std::isfinite(lr), "config key \"train.lr_sweep\": values must be positive, got ", lr);
    // Each rate trains into its own folder, named by the rate.
    LINTIME_CHECK(std::find(o.lr_sweep.begin(), o.lr_sweep.begin() + static_cast<std::ptrdiff_t>(i), lr) ==
                      o.lr_sweep.begin() + static_cast<std::ptrdiff_t>(i),
                  "config key \"train.lr_sweep\": ", lr, " is given twice");
  }
  return config;
}

nlohmann::json MqarTrainConfig::to_document() const {
  nlohmann::json model_json;
  models::to_json(model_json, model);
  nlohmann::json model_table = nlohmann::json::object();
  for (const auto& [key, value] : model_json.items()) {
    if (key == "vocab_size") continue;
    if (key == "mixer_options") {
      for (const auto& [mixer, options] : value.items()) model_table[mixer] = options;
      continue;
    }
    model_table[key] = value;
  }
  const auto& o = optim;
  nlohmann::json train = optimizer_fields_json(o);
  train.update({{"batch_size", o.batch_size}, {"test_batch_size", o.test_batch_size}, {"epochs", o.epochs},
                {"target_accuracy", o.target_accuracy}});
  if (!o.lr_sweep.empty()) train["lr_sweep"] = o.lr_sweep;
  if (o.precision != "fp32") train["precision"] = o.precision;  // absent for fp32: older runs' configs stay equal
  nlohmann::json data_table = {{"vocab_size", data.vocab_size}, {"power_a", data.power_a},
                               {"random_non_queries", data.random_non_queries}, {"seed", data.seed},
                               {"train", segments_to_json(data.train_segments)},
                               {"test", segments_to_json(data.test_segments)}};
  return {{"model", model_table}, {"data", data_table}, {"train", train}};
}

int64_t MqarTrainConfig::total_steps(int64_t batches_per_epoch) const {
  const int64_t by_epochs = optim.epochs * batches_per_epoch;
  return optim.max_steps > 0 ? std::min(optim.max_steps, by_epochs) : by_epochs;
}

MqarTrainConfig load_mqar_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  auto document = read_toml_file(path);
  apply_overrides(document, overrides);
  LINTIME_CHECK(training_task_of(document, path) == "mqar", path, ": task must be \"mqar\" for an MQAR config");
  document.erase("task");
  return MqarTrainConfig::from_document(document);
}

}  // namespace lintime::train
