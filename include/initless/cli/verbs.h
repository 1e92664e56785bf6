// The `initless` command: one file per verb under src/cli, each registering itself on the app.
// A verb's callback throws initless::Error on failure; main prints it as one line and exits 1.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace initless::cli {

void add_run(CLI::App& app);
void add_gc(CLI::App& app);
void add_snapshot(CLI::App& app);
void add_restore(CLI::App& app);
void add_page_server(CLI::App& app);
void add_sim(CLI::App& app);
void add_serve(CLI::App& app);
void add_deploy(CLI::App& app);
void add_invoke(CLI::App& app);
void add_ls(CLI::App& app);
void add_logs(CLI::App& app);
void add_rm(CLI::App& app);
void add_stats(CLI::App& app);
void add_spec(CLI::App& app);
void add_init(CLI::App& app);  // hidden: the sandbox's pid 1
// runc's contract (create, start, state, kill, delete, exec, ps, pause, resume, update, features,
// list) and its global flags (--root, --log, --log-format, --systemd-cgroup, --version).
void add_oci_runtime(CLI::App& app);
// Appends an error line to the --log file given, if any (the shim reads it); main calls it.
void log_runtime_error(const std::string& message);

}  // namespace initless::cli
