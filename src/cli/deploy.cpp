#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/cli/api.h"
#include "initless/cli/verbs.h"
#include "initless/sys/error.h"

namespace initless::cli {

namespace {
struct DeployOptions {
    std::string dir;
    std::string server;
    bool json = false;
};
}  // namespace

void add_deploy(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "deploy", "register a function with the server and build its snapshot, step by step");
    static DeployOptions o;
    cmd->add_option("DIR", o.dir, "function directory (holds function.toml)")->required();
    add_server_option(cmd, o.server);
    cmd->add_flag("--json", o.json, "print each step as a JSON line");
    cmd->callback([] {
        std::error_code ec;
        auto dir = std::filesystem::canonical(o.dir, ec);
        if (ec) throw Error(fmt::format("deploy {}: {}", o.dir, ec.message()));
        gateway::HttpRequest req;
        req.method = "POST";
        req.target = "/system/functions";
        req.headers["Accept"] = "application/x-ndjson";
        req.headers["Content-Type"] = "application/json";
        req.body = nlohmann::json{{"path", dir.string()}}.dump();
        std::string pending, error;
        bool ok = false;
        auto on_line = [&](const std::string& line) {
            if (line.empty()) return;
            auto event = nlohmann::json::parse(line, nullptr, false);
            if (event.is_discarded()) return;
            if (o.json) std::printf("%s\n", line.c_str());
            if (event.contains("step")) {
                if (!o.json)
                    std::printf("%s", fmt::format("  {:<14} {:>9.1f} ms\n", event["step"].get<std::string>(),
                                                  event["ms"].get<double>())
                                          .c_str());
            } else if (event.contains("error")) {
                error = event["error"].get<std::string>();
            } else if (event.value("ok", false)) {
                ok = true;
                if (!o.json)
                    std::printf("%s",
                                fmt::format("deployed {} in {:.1f} ms (snapshot {:.1f} MiB)\n",
                                            event["function"].get<std::string>(),
                                            event["total_ms"].get<double>(), event["image_mb"].get<double>())
                                    .c_str());
            }
            std::fflush(stdout);
        };
        auto res = call(o.server, req, std::chrono::minutes(30), [&](std::string_view chunk) {
            pending.append(chunk);
            for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
                on_line(pending.substr(0, nl));
                pending.erase(0, nl + 1);
            }
        });
        on_line(pending);
        if (res.status >= 400) throw Error(fmt::format("deploy {}: {}", o.dir, first_line(res.body)));
        if (!error.empty()) throw Error(fmt::format("deploy {}: {}", o.dir, error));
        if (!ok) throw Error(fmt::format("deploy {}: the server ended the deploy without a result", o.dir));
    });
}

}  // namespace initless::cli
