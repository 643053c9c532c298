// The `lintime` command-line tool: train, eval, info, bench, forward, generate, perplexity,
// tokenize, plot. Every failure prints one line
// "lintime: error: ..." naming what is wrong and what was expected, and exits non-zero.
#include "tools/cli/commands.h"

#include "core/error.h"

#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <malloc.h>
#include <new>
#include <string>
#include <vector>

namespace {

// One line whatever the message holds (some ATen and CLI11 messages span several).
std::string one_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at)) text.replace(at, 1, "; ");
  return text;
}

// ATen's allocation failures as what they mean for the user: how much was asked. Its CPU
// allocator says "[enforce fail at alloc_cpu.cpp:N] ... you tried to allocate N bytes ...";
// sizes whose product overflows say "Storage size calculation overflowed with sizes=[...]".
std::string explained(const std::string& message) {
  const std::string asked = "you tried to allocate ";
  if (const size_t at = message.find(asked); at != std::string::npos) {
    const double bytes = std::strtod(message.c_str() + at + asked.size(), nullptr);
    char text[160];
    std::snprintf(text, sizeof text, "out of memory: the command asked for %.3g GB at once, more than this machine can give; "
                  "use smaller sizes", bytes / 1e9);
    return text;
  }
  if (const size_t at = message.find("Storage size calculation overflowed"); at != std::string::npos) {
    const size_t sizes = message.find("sizes=", at);
    return "the sizes asked for hold more elements than 64 bits can count" +
           (sizes == std::string::npos ? std::string() : " (" + message.substr(sizes, message.find(']', sizes) + 1 - sizes) + ")") +
           "; use smaller sizes";
  }
  return message;
}

int report(const std::string& message, int code = 1) {
  std::cerr << "lintime: error: " << one_line(message) << std::endl;
  return code;
}

// glibc serves every block above 32 MB with its own mmap and unmaps it on free, so each large
// CPU tensor (a language model's [tokens, vocabulary] chunk of logits is hundreds of MB) is
// page-faulted in, zeroed by the kernel and unmapped again, step after step. Keeping such blocks
// in the heap and reusing them took the CPU worked example (configs/lm/gsa-tiny-shakespeare.toml,
// 12 steps, 2 cores) from 25.0 s to 17.5 s, system time from 13.5 s to 1 s. Left as the user set
// it when GLIBC_TUNABLES is given.
void keep_large_blocks_in_the_heap() {
  if (std::getenv("GLIBC_TUNABLES") != nullptr) return;
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace

int main(int argc, char** argv) {
  keep_large_blocks_in_the_heap();
  CLI::App app{"lintime: linear-time sequence models (Gated Slot Attention, GLA) in C++"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  std::vector<std::pair<CLI::App*, std::function<int()>>> commands;
  auto add = [&](std::function<int()> (*adder)(CLI::App&)) {
    auto run = adder(app);
    commands.emplace_back(app.get_subcommands({}).back(), std::move(run));
  };
  add(lintime::cli::add_train_command);
  add(lintime::cli::add_eval_command);
  add(lintime::cli::add_info_command);
  add(lintime::cli::add_bench_command);
  add(lintime::cli::add_forward_command);
  add(lintime::cli::add_generate_command);
  add(lintime::cli::add_perplexity_command);
  add(lintime::cli::add_plot_command);
  add(lintime::cli::add_tokenize_command);
  add(lintime::cli::add_convert_command);
  add(lintime::cli::add_serve_command);
  add(lintime::cli::add_sweep_command);
  if (argc > 1 && argv[1][0] != '-') {  // CLI11 would say only "A subcommand is required"
    std::string known;
    bool found = false;
    for (auto& entry : commands) {
      found = found || entry.first->get_name() == argv[1];
      known += (known.empty() ? "" : ", ") + entry.first->get_name();
    }
    if (!found) return report(std::string("unknown command '") + argv[1] + "'; expected one of " + known, 2);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    // A usage error: one line naming the flag, exit 2 (as getopt-style tools do).
    std::string command = "lintime";
    for (auto& entry : commands) {
      if (entry.first->parsed()) command += " " + entry.first->get_name();
    }
    return report(std::string(error.what()) + " (see '" + command + " --help')", 2);
  }
  try {
    for (auto& [command, run] : commands)
      if (command->parsed()) return run();
  } catch (const lintime::Error& error) {
    return report(error.what());
  } catch (const c10::Error& error) {
    return report(explained(error.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return report("out of memory: the command asked for more memory than this machine can give; use smaller sizes");
  } catch (const std::exception& error) {
    return report(error.what());
  }
  return 1;
}
