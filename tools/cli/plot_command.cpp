// `lintime plot RUN_DIR... [--out FILE.png] [--title TEXT]`: loss, perplexity and accuracy curves
// of training runs as a PNG. The drawing is matplotlib's, in scripts/plot_runs.py; this command
// runs that script with the project's .venv python (LINTIME_PYTHON overrides it) through
// posix_spawnp, arguments passed as an argv (no shell), and returns its exit code.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/error.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

extern char** environ;

namespace lintime::cli {
namespace {

#ifndef LINTIME_SOURCE_DIR
#define LINTIME_SOURCE_DIR "."
#endif

// The source tree holding scripts/ and .venv: $LINTIME_SOURCE_DIR, else the one the binary was built from.
std::string source_dir() {
  const char* from_environment = std::getenv("LINTIME_SOURCE_DIR");
  return from_environment && *from_environment ? from_environment : LINTIME_SOURCE_DIR;
}

struct PlotOptions {
  std::vector<std::string> runs;
  std::string out, title;
};

int run_plot(const PlotOptions& options) {
  for (const std::string& run : options.runs) {  // named here, in lintime's words, before python starts
    const std::filesystem::path path(run);
    LINTIME_CHECK(std::filesystem::is_regular_file(path) || std::filesystem::is_regular_file(path / "metrics.jsonl"),
                  "plot: '", run, "' is not a run: expected a run directory holding metrics.jsonl, or a metrics file");
  }
  const std::string source = source_dir();
  const std::string script = source + "/scripts/plot_runs.py";
  LINTIME_CHECK(std::filesystem::is_regular_file(script), "plot: ", script,
                " not found; expected the lintime source tree there (set LINTIME_SOURCE_DIR to it)");
  const char* python_override = std::getenv("LINTIME_PYTHON");
  const std::string python =
      python_override && *python_override ? python_override : source + "/.venv/bin/python";

  std::vector<std::string> arguments = {python, script};
  if (!options.out.empty()) arguments.insert(arguments.end(), {"--out", options.out});
  if (!options.title.empty()) arguments.insert(arguments.end(), {"--title", options.title});
  arguments.push_back("--");  // run directories are never taken for options
  arguments.insert(arguments.end(), options.runs.begin(), options.runs.end());
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);

  std::fflush(stdout);
  std::fflush(stderr);
  pid_t child = 0;
  const int spawned = posix_spawnp(&child, python.c_str(), nullptr, nullptr, argv.data(), environ);
  LINTIME_CHECK(spawned == 0, "plot: cannot run python '", python, "' (", std::strerror(spawned),
                "); run `make setup` (scripts/bootstrap.sh), which creates .venv with matplotlib, "
                "or set LINTIME_PYTHON");
  int status = 0;
  while (waitpid(child, &status, 0) < 0) {
    LINTIME_CHECK(errno == EINTR, "plot: waiting for ", python, " failed: ", std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  LINTIME_CHECK(!WIFSIGNALED(status), "plot: ", python, " was killed by signal ", WTERMSIG(status));
  return 1;
}

}  // namespace

std::function<int()> add_plot_command(CLI::App& app) {
  auto* command = app.add_subcommand("plot", "Plot training runs' loss, perplexity and accuracy curves as a PNG");
  auto options = std::make_shared<PlotOptions>();
  command->add_option("RUN_DIR", options->runs, "Run directories (each holding metrics.jsonl) or metrics files")
      ->required();
  command->add_option("--out", options->out, "The PNG to write (default RUN_DIR/plot.png for one run)")
      ->check(non_empty());
  command->add_option("--title", options->title, "The figure's title (default: the run names)");
  return [options]() { return run_plot(*options); };
}

}  // namespace lintime::cli
