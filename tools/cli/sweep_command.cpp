// `lintime sweep SWEEP.toml [--out DIR] [--jobs N] [--device D] [--only NAMES] [--table-only]`:
// every run of a recall figure (train/sweep.h), each a `lintime train` child process writing
// into its own folder, up to N at once (runs of tiny models share one GPU well); then the table
// of best accuracies (sweep.json, table.md) and the figure (figure.png, scripts/plot_sweep.py).
// Finished runs (result.json) are kept; an interrupted one resumes from its checkpoint, so the
// same command after SIGINT/SIGTERM or a crash continues where the sweep stopped.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/device.h"
#include "core/error.h"
#include "train/checkpoint.h"
#include "train/config_document.h"
#include "train/mqar_config.h"
#include "train/sweep.h"

#include <spawn.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace lintime::cli {
namespace {

namespace fs = std::filesystem;

#ifndef LINTIME_SOURCE_DIR
#define LINTIME_SOURCE_DIR "."
#endif

std::atomic<int> stop_signal{0};
void remember_signal(int signal) { stop_signal = signal; }

struct SweepOptions {
  std::string sweep;
  std::string out;
  std::string device = "auto";
  int64_t jobs = 1;
  int threads = 1;
  std::vector<std::string> only;
  std::vector<std::string> points;     // point labels ("d128"); empty: every point
  std::vector<std::string> overrides;  // --set key=value over every run's config
  bool table_only = false;
};

// Writes `text` to `path` through a temporary file and a rename (never half-written).
void write_file_atomically(const fs::path& path, const std::string& text) {
  const fs::path temporary = path.string() + ".tmp";
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    LINTIME_CHECK(file.good(), "sweep: cannot write ", temporary.string());
    file << text;
    file.flush();
    LINTIME_CHECK(file.good(), "sweep: writing ", temporary.string(), " failed (disk full?)");
  }
  fs::rename(temporary, path);
}

// `lintime train` for one run, its output appended to the run's train.log.
pid_t start_run(const std::string& binary, const train::SweepRun& run, const fs::path& dir, const SweepOptions& options) {
  fs::create_directories(dir);
  write_file_atomically(dir / "config.toml", train::to_toml(run.config));
  std::vector<std::string> arguments = {binary,           "train",  (dir / "config.toml").string(), "--out",
                                        dir.string(),     "--device", options.device, "--threads",
                                        std::to_string(options.threads)};
  if (train::checkpoint_exists((dir / "checkpoint").string())) arguments.push_back("--resume");
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string log = (dir / "train.log").string();
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t child = 0;
  std::fflush(stdout);
  const int spawned = posix_spawn(&child, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  LINTIME_CHECK(spawned == 0, "sweep: cannot start ", binary, " (", std::strerror(spawned), ")");
  return child;
}

// The last non-empty line of a run's log (its error line when it failed).
std::string last_line(const fs::path& log) {
  std::ifstream file(log);
  std::string line, last;
  while (std::getline(file, line)) {
    if (!line.empty() && line.find('\r') == std::string::npos) last = line;
  }
  return last;
}

// Runs the python script that draws the figure; a missing python or matplotlib is a warning
// (the table is the result; the figure can be drawn later with --table-only).
void draw_figure(const fs::path& table, const fs::path& figure) {
  const char* source_override = std::getenv("LINTIME_SOURCE_DIR");
  const std::string source = source_override && *source_override ? source_override : LINTIME_SOURCE_DIR;
  const char* python_override = std::getenv("LINTIME_PYTHON");
  std::string python = python_override && *python_override ? python_override : source + "/.venv/bin/python";
  std::string script = source + "/scripts/plot_sweep.py";
  std::string table_path = table.string(), figure_path = figure.string(), out_flag = "--out";
  std::vector<char*> argv = {python.data(), script.data(), table_path.data(), out_flag.data(), figure_path.data(), nullptr};
  pid_t child = 0;
  std::fflush(stdout);
  if (!fs::is_regular_file(script) || posix_spawnp(&child, python.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
    std::fprintf(stderr, "lintime sweep: warning: no figure (cannot run %s %s; set LINTIME_SOURCE_DIR or LINTIME_PYTHON)\n",
                 python.c_str(), script.c_str());
    return;
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    std::fprintf(stderr, "lintime sweep: warning: %s did not draw the figure\n", script.c_str());
}

int write_table(const train::SweepPlan& plan, const fs::path& out) {
  const auto points = train::summarize_sweep(plan, out.string());
  write_file_atomically(out / "sweep.json", train::sweep_table_json(plan, points).dump(2) + "\n");
  const std::string markdown = train::sweep_table_markdown(plan, points);
  write_file_atomically(out / "table.md", markdown);
  std::printf("\n%s", markdown.c_str());
  draw_figure(out / "sweep.json", out / "figure.png");
  std::printf("table: %s, %s; figure: %s\n", (out / "sweep.json").c_str(), (out / "table.md").c_str(),
              (out / "figure.png").c_str());
  return 0;
}

std::string joined(const std::set<std::string>& names) {
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

int run_sweep(const SweepOptions& options) {
  const train::SweepPlan plan = train::load_sweep_plan(options.sweep, options.overrides);
  const fs::path out = options.out.empty() ? fs::path("runs") / fs::path(options.sweep).stem() : fs::path(options.out);
  LINTIME_CHECK(!fs::exists(out) || fs::is_directory(out), "sweep: --out ", out.string(), " is a file, not a folder");
  std::set<std::string> known;
  for (const auto& model : plan.models) known.insert(model.name);
  for (const std::string& name : options.only) {
    LINTIME_CHECK(known.count(name), "sweep: --only names model \"", name, "\", which ", options.sweep, " does not have");
  }
  const std::vector<train::SweepRun> every_run = train::sweep_runs(plan);
  std::set<std::string> labels;
  for (const train::SweepRun& run : every_run) labels.insert(run.point_label);
  for (const std::string& label : options.points) {
    LINTIME_CHECK(labels.count(label), "sweep: --points names point \"", label, "\", which ", options.sweep,
                  " does not have (its points: ", joined(labels), ")");
  }
  if (options.table_only) {
    LINTIME_CHECK(fs::is_directory(out), "sweep: --table-only: ", out.string(), " holds no runs of this sweep");
    return write_table(plan, out);
  }
  if (options.device == "cuda") (void)resolve_device(options.device);  // no GPU: one line now, not one per run

  std::vector<train::SweepRun> pending;
  int64_t finished_before = 0;
  for (train::SweepRun run : every_run) {
    if (!options.only.empty() && std::find(options.only.begin(), options.only.end(), run.model) == options.only.end())
      continue;
    if (!options.points.empty() &&
        std::find(options.points.begin(), options.points.end(), run.point_label) == options.points.end())
      continue;
    // A run folder of another config (the sweep file or --set changed) is not taken for this
    // run's: neither its result nor its checkpoint.
    const fs::path written = out / run.dir / "config.toml";
    if (fs::is_regular_file(written)) {
      std::ifstream file(written);
      const std::string before((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
      LINTIME_CHECK(before == train::to_toml(run.config), "sweep: ", written.string(),
                    " differs from this run's config (the sweep file or --set changed); give another --out, or "
                    "remove that run's folder to train it again");
    }
    if (fs::is_regular_file(out / run.dir / "result.json")) {
      ++finished_before;
    } else {
      pending.push_back(std::move(run));
    }
  }
  fs::create_directories(out);
  const int64_t total = finished_before + static_cast<int64_t>(pending.size());
  std::printf("lintime sweep: %s -> %s: %lld runs (%lld finished before), %lld at a time on %s\n", options.sweep.c_str(),
              out.c_str(), static_cast<long long>(total), static_cast<long long>(finished_before),
              static_cast<long long>(options.jobs), options.device.c_str());
  std::fflush(stdout);

  const std::string binary = fs::read_symlink("/proc/self/exe").string();
  struct sigaction action {};
  action.sa_handler = remember_signal;
  sigemptyset(&action.sa_mask);
  struct sigaction previous_interrupt {}, previous_terminate {};
  sigaction(SIGINT, &action, &previous_interrupt);
  sigaction(SIGTERM, &action, &previous_terminate);

  struct Running {
    const train::SweepRun* run;
    std::chrono::steady_clock::time_point start;
  };
  std::map<pid_t, Running> running;
  size_t next = 0;
  int64_t done = finished_before, failed = 0;
  bool forwarded = false;
  while (!running.empty() || (stop_signal == 0 && next < pending.size())) {
    while (stop_signal == 0 && next < pending.size() && static_cast<int64_t>(running.size()) < options.jobs) {
      const train::SweepRun& run = pending[next++];
      running[start_run(binary, run, out / run.dir, options)] = {&run, std::chrono::steady_clock::now()};
    }
    if (stop_signal != 0 && !forwarded) {
      // Each run writes its checkpoint and stops (a terminal's Ctrl-C reaches them too).
      for (const auto& [pid, _] : running) ::kill(pid, SIGTERM);
      forwarded = true;
    }
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      LINTIME_CHECK(errno == EINTR, "sweep: waiting for runs failed: ", std::strerror(errno));
      continue;
    }
    const auto found = running.find(pid);
    if (found == running.end()) continue;
    const train::SweepRun& run = *found->second.run;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - found->second.start).count();
    running.erase(found);
    const fs::path dir = out / run.dir;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0 && fs::is_regular_file(dir / "result.json")) {
      ++done;
      std::ifstream file(dir / "result.json");
      const auto result = nlohmann::json::parse(file, nullptr, /*allow_exceptions=*/false);
      const double best = result.is_object() && result.contains("best_accuracy") ? result["best_accuracy"].get<double>() : -1;
      std::printf("[%lld/%lld] %s %s lr %g: best %.2f %% in %.0f s\n", static_cast<long long>(done),
                  static_cast<long long>(total), run.model.c_str(), run.point_label.c_str(), run.lr, 100 * best, seconds);
    } else if (code == 130 || stop_signal != 0) {
      std::printf("stopped: %s %s lr %g (checkpoint kept)\n", run.model.c_str(), run.point_label.c_str(), run.lr);
    } else {
      ++failed;
      std::printf("failed: %s %s lr %g (exit %d): %s (log: %s)\n", run.model.c_str(), run.point_label.c_str(), run.lr,
                  code, last_line(dir / "train.log").c_str(), (dir / "train.log").c_str());
    }
    std::fflush(stdout);
  }
  sigaction(SIGINT, &previous_interrupt, nullptr);
  sigaction(SIGTERM, &previous_terminate, nullptr);
  write_table(plan, out);
  if (stop_signal != 0) {
    std::fprintf(stderr, "lintime sweep: interrupted; %lld of %lld runs finished (the same command continues)\n",
                 static_cast<long long>(done), static_cast<long long>(total));
    return 130;
  }
  if (failed > 0) {
    std::fprintf(stderr, "lintime: error: sweep: %lld of %lld runs failed (their logs are named above)\n",
                 static_cast<long long>(failed), static_cast<long long>(total));
    return 1;
  }
  return 0;
}

}  // namespace

std::function<int()> add_sweep_command(CLI::App& app) {
  auto* command = app.add_subcommand("sweep", "Run every (model, size, learning rate) of a recall figure and plot the best accuracies");
  auto options = std::make_shared<SweepOptions>();
  command->add_option("SWEEP", options->sweep, "Sweep file (configs/mqar/*-figure.toml)")->required()->check(CLI::ExistingFile);
  command->add_option("--out", options->out, "Output folder (default runs/<sweep name>)")
      ->check(non_empty());
  command->add_option("--device", options->device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  command->add_option("--jobs", options->jobs, "Runs at once (default 1)")->check(integer_in(1, 256));
  command->add_option("--threads", options->threads, "CPU threads of each run (default 1)")->check(integer_in(0, kMaxThreads));
  command->add_option("--only", options->only, "Run only these models (by name; the table still lists every model)")
      ->delimiter(',');
  command->add_option("--points", options->points,
                      "Run only these points (by label, e.g. d128; the table still lists every point)")
      ->delimiter(',');
  command->add_option("--set", options->overrides,
                      "Override a value of every run's config: key=value (e.g. train.precision=bf16)");
  command->add_flag("--table-only", options->table_only, "Write the table and figure from the finished runs, train nothing");
  return [options]() { return run_sweep(*options); };
}

}  // namespace lintime::cli
