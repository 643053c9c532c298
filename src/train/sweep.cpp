// Sweep files read into runs, and finished runs read into the table (see the header).
#include "train/sweep.h"

#include "core/config_reader.h"
#include "core/error.h"
#include "train/config_document.h"
#include "train/mqar_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <set>
#include <sstream>

namespace lintime::train {
namespace {

using nlohmann::json;

// `patch` merged into `base` key by key; nested tables merge, anything else replaces.
void merge_into(json& base, const json& patch) {
  for (const auto& [key, value] : patch.items()) {
    if (value.is_object() && base.contains(key) && base[key].is_object()) {
      merge_into(base[key], value);
    } else {
      base[key] = value;
    }
  }
}

// "d128" for a point that only sets d_model; otherwise d<size> first, then the other leaf keys
// and values without their tables ("d48_feature_dim8", "window64").
std::string point_label(const json& point) {
  std::string label = point.contains("d_model") ? "d" + std::to_string(point["d_model"].get<int64_t>()) : "";
  std::function<void(const json&)> add = [&](const json& node) {
    for (const auto& [key, value] : node.items()) {
      if (key == "d_model" && &node == &point) continue;
      if (value.is_object()) {
        add(value);
      } else {
        label += (label.empty() ? "" : "_") + key + (value.is_string() ? value.get<std::string>() : value.dump());
      }
    }
  };
  add(point);
  return label;
}

// A directory name for a rate that reads as the rate: lr-0.001, lr-5e-05.
std::string lr_dir(double lr) {
  std::ostringstream out;
  out << "lr-" << lr;
  return out.str();
}

// A model name or point label as one directory name inside the output folder: letters, digits,
// '-', '_' and '.', the rest '_', and never "." or ".." (a leading '.' becomes '_').
std::string safe_name(const std::string& name) {
  std::string result = name.empty() ? "_" : name;
  for (char& c : result) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  }
  if (result.front() == '.') result.front() = '_';
  return result;
}

// Names and labels become folder names and table cells: printable, and short enough for a file
// system's 255-byte names.
constexpr size_t kLongestName = 100;
bool printable(const std::string& text) {
  return std::none_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// The dotted keys a point sets under [model] ("model.d_model", "model.based.feature_dim").
void point_keys(const json& node, const std::string& prefix, std::set<std::string>& keys) {
  for (const auto& [key, value] : node.items()) {
    if (value.is_object()) {
      point_keys(value, prefix + key + ".", keys);
    } else {
      keys.insert(prefix + key);
    }
  }
}

}  // namespace

SweepPlan load_sweep_plan(const std::string& path, const std::vector<std::string>& overrides) {
  json document = read_toml_file(path);
  LINTIME_CHECK(document.contains("sweep") && document["sweep"].is_object(), "sweep: ", path,
                " has no [sweep] table (expected title, plot, d_model, lr and [[sweep.models]])");
  SweepPlan plan;
  config::StrictObject sweep(document["sweep"], "sweep", {"title", "plot", "d_model", "lr", "models"});
  plan.title = sweep.get_as<std::string>("title", std::filesystem::path(path).stem().string());
  plan.plot = sweep.get_as<std::string>("plot", "by_d");
  LINTIME_CHECK(plan.plot == "by_d" || plan.plot == "frontier", "config key \"sweep.plot\": expected \"by_d\" or \"frontier\", got \"",
                plan.plot, "\"");
  plan.lrs = sweep.get_number_list("lr", {});
  LINTIME_CHECK(!plan.lrs.empty(), "config key \"sweep.lr\": expected one or more learning rates");
  std::set<double> seen_lrs;
  for (double lr : plan.lrs) {
    LINTIME_CHECK(lr > 0 && std::isfinite(lr), "config key \"sweep.lr\": rates must be positive, got ", lr);
    LINTIME_CHECK(seen_lrs.insert(lr).second, "config key \"sweep.lr\": ", lr, " is given twice");
  }
  std::vector<json> sizes;
  std::set<double> seen_sizes;
  for (double d : sweep.get_number_list("d_model", {})) {
    LINTIME_CHECK(d >= 1 && d == std::floor(d), "config key \"sweep.d_model\": sizes must be positive integers, got ", d);
    LINTIME_CHECK(seen_sizes.insert(d).second, "config key \"sweep.d_model\": ", d, " is given twice");
    sizes.push_back({{"d_model", static_cast<int64_t>(d)}});
  }
  const json models = sweep.get_raw("models");
  LINTIME_CHECK(models.is_array() && !models.empty(), "config key \"sweep.models\": expected one or more [[sweep.models]] tables");
  std::set<std::string> names;
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string where = "sweep.models[" + std::to_string(i) + "]";
    config::StrictObject entry(models[i], where, {"name", "paper", "model", "points"});
    SweepModel model;
    model.name = entry.get_as<std::string>("name", "");
    LINTIME_CHECK(!model.name.empty() && model.name.size() <= kLongestName && printable(model.name), "config key \"",
                  where, ".name\": expected a name of 1 to ", kLongestName, " printable characters");
    LINTIME_CHECK(names.insert(safe_name(model.name)).second, "config key \"", where, ".name\": \"", model.name,
                  "\" is used twice");
    model.model = entry.get_raw("model");
    LINTIME_CHECK(model.model.is_object(), "config key \"", where, ".model\": expected a table (layers and mixer options)");
    const json points = entry.get_raw("points");
    if (points.is_null()) {
      model.points = sizes;
    } else {
      LINTIME_CHECK(points.is_array() && !points.empty() && std::all_of(points.begin(), points.end(), [](const json& p) {
                      return p.is_object() && !p.empty();
                    }),
                    "config key \"", where, ".points\": expected an array of tables, each merged into [model]");
      model.points.assign(points.begin(), points.end());
    }
    LINTIME_CHECK(!model.points.empty(), "config key \"", where, "\": no points to run: give sweep.d_model or points");
    std::set<std::string> labels;
    for (const json& point : model.points) {
      const std::string label = point_label(point);
      LINTIME_CHECK(label.size() <= kLongestName && printable(label), "config key \"", where, ".points\": the point \"",
                    label.substr(0, kLongestName), "\" makes a label longer than ", kLongestName,
                    " characters or with control characters");
      LINTIME_CHECK(labels.insert(safe_name(label)).second, "config key \"", where, ".points\": the point ", label,
                    " is given twice");
    }
    if (entry.has("paper")) {
      model.paper = entry.get_number_list("paper", {});
      LINTIME_CHECK(model.paper.size() == model.points.size(), "config key \"", where, ".paper\": expected one value per point (",
                    model.points.size(), "), got ", model.paper.size());
    }
    plan.models.push_back(std::move(model));
  }
  document.erase("sweep");
  plan.shared = std::move(document);
  // What the points vary names their runs: an override of it would train another size under
  // the same label.
  std::set<std::string> varied = {"train.lr", "train.lr_sweep"};
  for (const SweepModel& model : plan.models) {
    for (const json& point : model.points) point_keys(point, "model.", varied);
  }
  for (const std::string& override : overrides) {
    const std::string key = override.substr(0, override.find('='));
    LINTIME_CHECK(!varied.count(key), "sweep: --set ", key, ": ",
                  key.rfind("train.lr", 0) == 0 ? "a sweep's rates are sweep.lr in " + path
                                                : "the sweep's points set this key (their labels name the runs); change "
                                                  "the points in " + path);
  }
  plan.overrides = overrides;
  // Every run's config is checked now, with the run named.
  for (const SweepRun& run : sweep_runs(plan)) {
    try {
      MqarTrainConfig::from_document(run.config);
    } catch (const Error& error) {
      fail("sweep: run ", run.dir, ": ", error.what());
    }
  }
  return plan;
}

std::vector<SweepRun> sweep_runs(const SweepPlan& plan) {
  std::vector<SweepRun> runs;
  for (size_t m = 0; m < plan.models.size(); ++m) {
    const SweepModel& model = plan.models[m];
    for (size_t p = 0; p < model.points.size(); ++p) {
      for (double lr : plan.lrs) {
        SweepRun run;
        run.model = model.name;
        run.model_index = m;
        run.point_index = p;
        run.point_label = point_label(model.points[p]);
        run.lr = lr;
        run.dir = safe_name(model.name) + "/" + safe_name(run.point_label) + "/" + lr_dir(lr);
        run.config = plan.shared;
        if (!run.config.contains("model") || !run.config["model"].is_object()) run.config["model"] = json::object();
        merge_into(run.config["model"], model.model);
        merge_into(run.config["model"], model.points[p]);
        if (!run.config.contains("train") || !run.config["train"].is_object()) run.config["train"] = json::object();
        run.config["train"]["lr"] = lr;
        run.config["train"].erase("lr_sweep");
        apply_overrides(run.config, plan.overrides);
        runs.push_back(std::move(run));
      }
    }
  }
  return runs;
}

std::vector<SweepPoint> summarize_sweep(const SweepPlan& plan, const std::string& out_dir) {
  std::vector<SweepPoint> points;
  const std::vector<SweepRun> runs = sweep_runs(plan);
  for (const SweepRun& run : runs) {
    if (points.empty() || points.back().model != run.model || points.back().point_label != run.point_label) {
      const MqarTrainConfig config = MqarTrainConfig::from_document(run.config);
      SweepPoint point;
      point.model = run.model;
      point.point_label = run.point_label;
      point.d_model = config.model.d_model;
      point.state_bytes = config.model.state_bytes_per_sequence();
      const SweepModel& model = plan.models[run.model_index];
      if (!model.paper.empty()) point.paper = model.paper[run.point_index];
      points.push_back(point);
    }
    SweepPoint& point = points.back();
    ++point.runs_total;
    const auto result_path = std::filesystem::path(out_dir) / run.dir / "result.json";
    if (!std::filesystem::is_regular_file(result_path)) continue;
    std::ifstream file(result_path);
    json result;
    try {
      result = json::parse(file);
    } catch (const json::exception& error) {
      fail("sweep: ", result_path.string(), " is not valid JSON (", error.what(), "); remove it to rerun that run");
    }
    LINTIME_CHECK(result.contains("best_accuracy") && result["best_accuracy"].is_number(), "sweep: ", result_path.string(),
                  " has no best_accuracy; remove it to rerun that run");
    ++point.runs_finished;
    const double accuracy = result["best_accuracy"].get<double>();
    if (!point.best_accuracy || accuracy > *point.best_accuracy) {
      point.best_accuracy = accuracy;
      point.best_lr = run.lr;
    }
  }
  return points;
}

nlohmann::json sweep_table_json(const SweepPlan& plan, const std::vector<SweepPoint>& points) {
  json rows = json::array();
  for (const SweepPoint& point : points) {
    json row = {{"model", point.model},           {"point", point.point_label},
                {"d_model", point.d_model},       {"state_bytes", point.state_bytes},
                {"runs_finished", point.runs_finished}, {"runs_total", point.runs_total}};
    row["best_accuracy"] = point.best_accuracy ? json(*point.best_accuracy) : json(nullptr);
    row["best_lr"] = point.best_accuracy ? json(point.best_lr) : json(nullptr);
    row["paper_percent"] = point.paper ? json(*point.paper) : json(nullptr);
    rows.push_back(row);
  }
  return {{"title", plan.title}, {"plot", plan.plot}, {"lrs", plan.lrs}, {"points", rows}};
}

std::string sweep_table_markdown(const SweepPlan& plan, const std::vector<SweepPoint>& points) {
  std::ostringstream out;
  out << "### " << plan.title << "\n\n";
  out << "| model | point | state bytes | best accuracy | best lr | runs | paper |\n";
  out << "|---|---|---:|---:|---:|---:|---:|\n";
  for (const SweepPoint& point : points) {
    out << "| " << point.model << " | " << point.point_label << " | " << point.state_bytes << " | ";
    if (point.best_accuracy) {
      out << std::fixed << std::setprecision(2) << 100.0 * *point.best_accuracy << " % | " << std::defaultfloat
          << point.best_lr;
    } else {
      out << "– | –";
    }
    out << " | " << point.runs_finished << "/" << point.runs_total << " | ";
    if (point.paper) {
      out << std::fixed << std::setprecision(1) << *point.paper << " %" << std::defaultfloat;
    } else {
      out << "–";
    }
    out << " |\n";
  }
  return out.str();
}

}  // namespace lintime::train
