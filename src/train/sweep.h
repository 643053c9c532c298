// MQAR sweeps: the runs of a recall figure (models × sizes × learning rates) from one TOML file,
// and the table of best accuracies their results give. `lintime sweep` (tools/cli) runs them.
//
// A sweep file is an MQAR training config ([model], [data], [train] shared by every run) plus:
//   [sweep]
//   title = "..."                  # the plot's title
//   plot = "by_d"                  # accuracy against d_model, one line per model (the GSA
//                                  # paper's layout); "frontier": against state bytes (log x)
//   d_model = [64, 128, 256, 512]  # every model's sizes, unless the model gives `points`
//   lr = [1e-4, 5e-4, 1e-3]        # every (model, point) runs once per rate; the best counts
//   [[sweep.models]]
//   name = "GSA"
//   paper = [27.8, 98.0, 99.1, 99.0]   # optional: the paper's accuracy (%) per d_model
//   model = { layers = ["gsa", "gsa"], gsa = { num_heads = 4 } }   # merged over [model]
//   points = [{ d_model = 48, based = { feature_dim = 8 } }, ...]  # optional, replaces d_model
// Each run is the shared config with the model's table and the point merged into [model] and
// train.lr set; it lives in OUT/<model>/<point>/lr-<lr>/ (config.toml, train.log, the run's own
// files; result.json once it finished).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lintime::train {

struct SweepModel {
  std::string name;
  nlohmann::json model;                 // merged over the shared [model]
  std::vector<nlohmann::json> points;   // merged over that, one run per point and rate
  std::vector<double> paper;            // the paper's accuracy (%) per point, or empty
};

struct SweepPlan {
  std::string title;
  std::string plot;  // "by_d" or "frontier"
  std::vector<double> lrs;
  std::vector<SweepModel> models;
  nlohmann::json shared;  // the file without [sweep]
  std::vector<std::string> overrides;  // --set key=value over every run's config
};

struct SweepRun {
  std::string model;
  size_t model_index = 0, point_index = 0;
  std::string point_label;  // "d128", or the point's keys and values
  double lr = 0;
  std::string dir;  // relative to the sweep's output folder
  nlohmann::json config;
};

// Reads and checks a sweep file with `overrides` (--set key=value) over every run's config:
// every run's config is validated as an MQAR config here, so that a mistake in the tenth run is
// reported before the first one trains. An override may not set what the points vary (their
// labels name the runs) or train.lr_sweep (the rates are sweep.lr).
SweepPlan load_sweep_plan(const std::string& path, const std::vector<std::string>& overrides = {});

// Every run, model by model, point by point, rate by rate (the order they start in).
std::vector<SweepRun> sweep_runs(const SweepPlan& plan);

// One (model, point): the best result over the rates that have finished.
struct SweepPoint {
  std::string model, point_label;
  int64_t d_model = 0;
  int64_t state_bytes = 0;  // per sequence, as the trainer counts it
  int64_t runs_finished = 0, runs_total = 0;
  std::optional<double> best_accuracy;  // fraction, over finished runs
  double best_lr = 0;
  std::optional<double> paper;  // %
};

// Reads OUT/<run>/result.json of every run that has one.
std::vector<SweepPoint> summarize_sweep(const SweepPlan& plan, const std::string& out_dir);

// The table as JSON (sweep.json: title, plot, points) and as Markdown (table.md).
nlohmann::json sweep_table_json(const SweepPlan& plan, const std::vector<SweepPoint>& points);
std::string sweep_table_markdown(const SweepPlan& plan, const std::vector<SweepPoint>& points);

}  // namespace lintime::train
