// The subcommands of the `lintime` binary. Each registers its CLI11 options and runs.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace lintime::cli {

// Adds the subcommand to `app`; the returned function runs it after parsing (exit code).
std::function<int()> add_train_command(CLI::App& app);
std::function<int()> add_eval_command(CLI::App& app);
std::function<int()> add_info_command(CLI::App& app);
std::function<int()> add_bench_command(CLI::App& app);
std::function<int()> add_forward_command(CLI::App& app);
std::function<int()> add_generate_command(CLI::App& app);
std::function<int()> add_perplexity_command(CLI::App& app);
std::function<int()> add_plot_command(CLI::App& app);
std::function<int()> add_tokenize_command(CLI::App& app);
std::function<int()> add_convert_command(CLI::App& app);
std::function<int()> add_serve_command(CLI::App& app);
std::function<int()> add_sweep_command(CLI::App& app);

}  // namespace lintime::cli
