// The OCI runtime verbs (runtime.h), with runc's flags as containerd's runc shim passes them:
//   initless [--root DIR] [--log FILE] [--log-format json|text] [--systemd-cgroup] VERB ...
// Errors also go to --log as a JSON line {"level":"error","msg":...,"time":...}: the shim reads the
// last error of that file when a verb exits non-zero.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/cli/verbs.h"
#include "initless/runtime/runtime.h"

#include "initless_commit.h"  // generated at build time: cmake/commit.cmake
#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::cli {

namespace {

using json = nlohmann::json;

struct GlobalOptions {
    std::string root = "/run/initless-oci";
    std::string log;
    std::string log_format = "text";
    bool systemd_cgroup = false;
    bool debug = false;
    std::string rootless;
    std::string criu;
    std::string snapshot_store;  // init-less containers' snapshots (runtime.h)
};

GlobalOptions& globals() {
    static GlobalOptions g;
    return g;
}

runtime::Runtime open_runtime() {
    if (globals().systemd_cgroup)
        throw Error(
            "--systemd-cgroup: systemd cgroups are not supported (no systemd here); use the cgroupfs driver");
    runtime::RuntimeOptions options;
    options.snapshot_store = globals().snapshot_store;
    options.log = globals().log;
    options.log_json = globals().log_format == "json";
    options.debug = globals().debug;
    return runtime::Runtime(globals().root, options);
}

}  // namespace

void log_runtime_error(const std::string& message) {
    const auto& g = globals();
    if (g.log.empty()) return;
    std::string line = runtime::log_line("error", message, g.log_format == "json");
    if (FILE* f = std::fopen(g.log.c_str(), "a")) {
        std::fputs(line.c_str(), f);
        std::fclose(f);
    }
}

void add_oci_runtime(CLI::App& app) {
    auto& g = globals();
    app.add_option("--root", g.root, "OCI runtime: where containers' state lives")->group("OCI runtime");
    app.add_option("--log", g.log, "OCI runtime: log file (errors)")->group("OCI runtime");
    app.add_option("--log-format", g.log_format, "OCI runtime: text | json")->group("OCI runtime");
    app.add_flag("--systemd-cgroup", g.systemd_cgroup, "refused: systemd cgroups are not supported")
        ->group("OCI runtime");
    app.add_option(
           "--snapshot-store", g.snapshot_store,
           "OCI runtime: where init-less containers' snapshots live (default $INITLESS_OCI_STORE, else "
           "/var/lib/initless/oci); daemon.json runtimeArgs can pass it")
        ->group("OCI runtime");
    app.add_flag("--debug", g.debug, "OCI runtime: log each verb's steps with their times (debug level)")
        ->group("OCI runtime");
    app.add_option("--rootless", g.rootless, "accepted for runc compatibility")->group("");
    app.add_option("--criu", g.criu, "accepted for runc compatibility")->group("");
    app.set_version_flag("--version,-v", "initless version 0.1.0\ncommit: " INITLESS_COMMIT "\nspec: 1.0.2");
    const char* group = "OCI runtime (runc's contract)";

    {
        auto* cmd =
            app.add_subcommand("create", "create a container from a bundle (its init waits for start)")
                ->group(group);
        static runtime::CreateOptions o;
        static std::string id, pid_file, console_socket;
        static bool no_pivot = false, no_new_keyring = false, detach = false;
        static int preserve_fds = 0;
        cmd->add_option("--bundle,-b", o.bundle, "the bundle (config.json and root)")->default_str(".");
        cmd->add_option("--pid-file", pid_file, "write init's pid here");
        cmd->add_option("--console-socket", console_socket, "refused: no terminal support yet");
        cmd->add_flag("--no-pivot", no_pivot, "accepted; pivot_root is always used");
        cmd->add_flag("--no-new-keyring", no_new_keyring, "accepted; no session keyring is made");
        cmd->add_flag("--detach,-d", detach, "accepted (create always detaches)");
        cmd->add_option("--preserve-fds", preserve_fds, "refused unless 0");
        cmd->add_option("id", id)->required();
        cmd->callback([] {
            if (o.bundle.empty()) o.bundle = ".";
            if (!pid_file.empty()) o.pid_file = pid_file;
            if (!console_socket.empty()) o.console_socket = console_socket;
            if (preserve_fds) throw Error("--preserve-fds is not supported");
            open_runtime().create(id, o);
        });
    }
    {
        auto* cmd = app.add_subcommand("start", "start a created container's process")->group(group);
        static std::string id;
        cmd->add_option("id", id)->required();
        cmd->callback([] { open_runtime().start(id); });
    }
    {
        auto* cmd = app.add_subcommand("state", "print a container's OCI state JSON")->group(group);
        static std::string id;
        cmd->add_option("id", id)->required();
        cmd->callback([] { std::cout << open_runtime().state(id).dump(2) << "\n"; });
    }
    {
        auto* cmd = app.add_subcommand("kill", "send a signal to a container (default TERM)")->group(group);
        static std::string id, signal = "TERM";
        static bool all = false;
        cmd->add_flag("--all,-a", all, "signal every process in the container's cgroup");
        cmd->add_option("id", id)->required();
        cmd->add_option("signal", signal);
        cmd->callback([] { open_runtime().kill(id, runtime::parse_signal(signal), all); });
    }
    {
        auto* cmd =
            app.add_subcommand("delete", "delete a stopped (or with --force, any) container")->group(group);
        static std::string id;
        static bool force = false;
        cmd->add_flag("--force,-f", force, "kill it first if it runs");
        cmd->add_option("id", id)->required();
        cmd->callback([] { open_runtime().remove(id, force); });
    }
    {
        auto* cmd = app.add_subcommand("features", "print the OCI features JSON")->group(group);
        cmd->callback([] { std::cout << runtime::Runtime::features().dump(2) << "\n"; });
    }
    {
        auto* cmd = app.add_subcommand("ps", "list a container's processes (host pids)")->group(group);
        static std::string id, format = "table";
        static std::vector<std::string> ps_args;
        cmd->add_option("--format,-f", format, "json | table");
        cmd->add_option("id", id)->required();
        cmd->add_option("ps_args", ps_args, "ignored");
        cmd->callback([] {
            auto pids = open_runtime().pids(id);
            if (format == "json") {
                std::cout << json(pids).dump() << "\n";
            } else {
                std::cout << "PID\n";
                for (pid_t p : pids) std::cout << p << "\n";
            }
        });
    }
    {
        auto* cmd = app.add_subcommand("list", "list containers")->group(group);
        static std::string format = "table";
        cmd->add_option("--format,-f", format, "json | table");
        cmd->callback([] {
            auto all = open_runtime().list();
            if (format == "json") {
                std::cout << json(all).dump() << "\n";
            } else {
                std::cout << fmt::format("{:<40} {:<8} {:<10} {}\n", "ID", "PID", "STATUS", "BUNDLE");
                for (const auto& s : all)
                    std::cout << fmt::format("{:<40} {:<8} {:<10} {}\n", s["id"].get<std::string>(),
                                             s["pid"].get<int>(), s["status"].get<std::string>(),
                                             s["bundle"].get<std::string>());
            }
        });
    }
    {
        auto* cmd = app.add_subcommand("exec", "run another process in a running container")->group(group);
        static runtime::ExecOptions o;
        static std::string id, pid_file, console_socket;
        cmd->add_option("--process,-p", o.process_json, "an OCI process JSON file")->required();
        cmd->add_option("--pid-file", pid_file, "write the process's pid here");
        cmd->add_option("--console-socket", console_socket, "refused: no terminal support yet");
        cmd->add_flag("--detach,-d", o.detach, "return once it is started");
        cmd->add_option("id", id)->required();
        cmd->callback([] {
            if (!console_socket.empty())
                throw Error("a terminal (--console-socket) is not supported by initless yet");
            if (!pid_file.empty()) o.pid_file = pid_file;
            int status = open_runtime().exec(id, o);
            if (status != 0) std::exit(status);
        });
    }
    {
        auto* cmd = app.add_subcommand("pause", "freeze a container's processes")->group(group);
        static std::string id;
        cmd->add_option("id", id)->required();
        cmd->callback([] { open_runtime().pause(id); });
    }
    {
        auto* cmd = app.add_subcommand("resume", "thaw a paused container")->group(group);
        static std::string id;
        cmd->add_option("id", id)->required();
        cmd->callback([] { open_runtime().resume(id); });
    }
    {
        auto* cmd = app.add_subcommand("update", "change a container's cgroup limits")->group(group);
        static std::string id, resources;
        cmd->add_option("--resources,-r", resources, "LinuxResources JSON file, - for stdin")->required();
        cmd->add_option("id", id)->required();
        cmd->callback([] {
            std::string text;
            if (resources == "-") {
                text.assign(std::istreambuf_iterator<char>(std::cin), {});
            } else {
                text = sys::read_file(resources);
            }
            open_runtime().update(id, json::parse(text));
        });
    }
}

}  // namespace initless::cli
