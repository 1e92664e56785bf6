#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/cli/timing.h"
#include "initless/cli/verbs.h"
#include "initless/gateway/http_client.h"
#include "initless/sandbox/sandbox.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"

namespace initless::cli {

namespace {
struct RunOptions {
    std::string dir;
    std::string request = "/";
    bool json = false;
};
}  // namespace

void add_run(CLI::App& app) {
    auto* cmd = app.add_subcommand("run", "boot a function normally in a sandbox and send it one request");
    static RunOptions o;
    cmd->add_option("DIR", o.dir, "function directory (holds function.toml)")->required();
    cmd->add_option("--request", o.request, "path of the GET request to send");
    cmd->add_flag("--json", o.json, "print one JSON object");
    cmd->callback([] {
        sandbox::collect_garbage();
        spec::FunctionSpec spec = spec::load(o.dir);
        Stopwatch total, phase;
        auto sb = sandbox::Sandbox::prepare(spec);
        double prepare_ms = phase.lap_ms();
        auto fn = sb.start();
        sb.wait_ready(spec.ready, std::chrono::seconds(spec.timeout_s));
        double init_ms = phase.lap_ms();
        gateway::HttpResponse res;
        try {
            res = gateway::http_get(sb.connect(spec.port, std::chrono::seconds(spec.timeout_s)), o.request,
                                    std::chrono::seconds(spec.timeout_s));
        } catch (const Error& e) {
            // A function killed for memory ends the connection like any crash: say which it was.
            if (sb.cgroup().oom_killed())
                throw Error(fmt::format(
                    "{}: the function was killed by the OOM killer during {} (memory_mb = {}): {}", spec.name,
                    o.request, spec.memory_mb, e.what()));
            throw Error(fmt::format("{}: GET {} (timeout_s = {}): {}; its processes: {}", spec.name,
                                    o.request, spec.timeout_s, e.what(), sb.describe_processes()));
        }
        double exec_ms = phase.lap_ms();
        double total_ms = total.lap_ms();
        std::string instance = sb.id();
        sb.teardown();
        if (o.json) {
            nlohmann::json out = {{"function", spec.name},    {"instance", instance}, {"mode", "boot"},
                                  {"prepare_ms", prepare_ms}, {"init_ms", init_ms},   {"exec_ms", exec_ms},
                                  {"total_ms", total_ms},     {"status", res.status}, {"body", res.body}};
            std::printf("%s\n", out.dump().c_str());
        } else {
            std::printf("%s",
                        fmt::format("{} {} -> {}\n{}\n", spec.name, o.request, res.status, res.body).c_str());
            std::printf(
                "%s",
                fmt::format("boot: prepare {:.1f} ms + init {:.1f} ms; exec {:.1f} ms; total {:.1f} ms\n",
                            prepare_ms, init_ms, exec_ms, total_ms)
                    .c_str());
        }
    });
}

}  // namespace initless::cli
