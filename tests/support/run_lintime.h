// Runs the lintime binary of the build (LINTIME_BINARY, defined for the CLI tests) through the
// shell and captures its output, for tests of the command line. Header-only.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

extern char** environ;

namespace lintime::testing {

struct CommandResult {
  int exit_code;
  std::string out;  // what was captured
};

enum class Capture { both, stderr_only, stdout_only };

// `arguments` follow the binary's path on a shell command line; stdout and stderr are captured
// together, or one of them (the other discarded).
inline CommandResult run_lintime(const std::string& arguments, Capture capture = Capture::both,
                                 const std::string& environment = "") {
  const char* redirect = capture == Capture::both ? " 2>&1" : capture == Capture::stderr_only ? " 2>&1 >/dev/null" : " 2>/dev/null";
  const std::string command =
      (environment.empty() ? "" : "env " + environment + " ") + std::string(LINTIME_BINARY) + " " + arguments + redirect;
  CommandResult result{-1, ""};
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer{};
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) result.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The same with environment variables set for the command ("NAME=value NAME2=value").
inline CommandResult run_lintime_with_env(const std::string& environment, const std::string& arguments) {
  return run_lintime(arguments, Capture::both, environment);
}

// Starts the binary with `arguments` (argv after the binary's path; no shell) in the background,
// its output discarded; returns its pid, or -1 when it could not start.
inline pid_t spawn_lintime(std::vector<std::string> arguments) {
  arguments.insert(arguments.begin(), LINTIME_BINARY);
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int status = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return status == 0 ? pid : -1;
}

}  // namespace lintime::testing
