// The daemon's admin verbs: ls, logs, rm, stats.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/cli/api.h"
#include "initless/cli/verbs.h"
#include "initless/sys/error.h"

namespace initless::cli {

using json = nlohmann::json;

namespace {
json get_json(const std::string& server, const std::string& target) {
    gateway::HttpRequest req;
    req.target = target;
    auto res = call(server, req, std::chrono::seconds(30));
    if (res.status >= 400) throw Error(first_line(res.body));
    return json::parse(res.body);
}

std::string age(double s) {
    if (s < 120) return fmt::format("{:.0f}s", s);
    if (s < 7200) return fmt::format("{:.0f}m", s / 60);
    return fmt::format("{:.1f}h", s / 3600);
}
}  // namespace

void add_ls(CLI::App& app) {
    auto* cmd = app.add_subcommand("ls", "list the server's functions and their instances");
    static std::string server;
    static bool as_json = false;
    add_server_option(cmd, server);
    cmd->add_flag("--json", as_json, "print the server's JSON");
    cmd->callback([] {
        json fns = get_json(server, "/system/functions");
        if (as_json) {
            std::printf("%s\n", fns.dump(2).c_str());
            return;
        }
        std::printf("%-24s %-9s %-9s %5s %6s %5s %5s\n", "FUNCTION", "SNAPSHOT", "STRATEGY", "POOL", "QUEUED",
                    "IDLE", "BUSY");
        for (const auto& f : fns) {
            std::printf("%-24s %-9s %-9s %5d %6d %5d %5d\n", f["name"].get<std::string>().c_str(),
                        f["snapshot"].is_null() ? "none" : "yes", f["strategy"].get<std::string>().c_str(),
                        f["pool"].get<int>(), f["queued"].get<int>(), f["idle"].get<int>(),
                        f["busy"].get<int>());
            for (const auto& i : f["instances"])
                std::printf("  %-34s %-5s age %-6s requests %-6llu start %s\n",
                            i["id"].get<std::string>().c_str(), i["state"].get<std::string>().c_str(),
                            age(i["age_s"].get<double>()).c_str(),
                            static_cast<unsigned long long>(i["requests"].get<uint64_t>()),
                            i["start"].get<std::string>().c_str());
        }
    });
}

void add_logs(CLI::App& app) {
    auto* cmd = app.add_subcommand("logs", "print what a function's instances logged");
    static std::string server, name;
    static bool follow = false;
    cmd->add_option("NAME", name, "function name")->required();
    cmd->add_flag("-f,--follow", follow, "keep printing as the instances log");
    add_server_option(cmd, server);
    cmd->callback([] {
        gateway::HttpRequest req;
        req.target = "/system/logs?name=" + name + (follow ? "&follow=1" : "");
        auto res = call(server, req, follow ? std::chrono::hours(24 * 365) : std::chrono::seconds(30),
                        [&](std::string_view chunk) {
                            std::fwrite(chunk.data(), 1, chunk.size(), stdout);
                            std::fflush(stdout);
                        });
        if (res.status >= 400) throw Error(first_line(res.body));
    });
}

void add_rm(CLI::App& app) {
    auto* cmd =
        app.add_subcommand("rm", "remove a function from the server (its instances and snapshot too)");
    static std::string server, name;
    cmd->add_option("NAME", name, "function name")->required();
    add_server_option(cmd, server);
    cmd->callback([] {
        gateway::HttpRequest req;
        req.method = "DELETE";
        req.target = "/system/functions";
        req.headers["Content-Type"] = "application/json";
        req.body = json{{"functionName", name}}.dump();
        auto res = call(server, req, std::chrono::seconds(30));
        if (res.status >= 400) throw Error(first_line(res.body));
        std::printf("%s", res.body.c_str());
    });
}

void add_stats(CLI::App& app) {
    auto* cmd = app.add_subcommand("stats", "start counts per function (warm, cold = restored, boot)");
    static std::string server;
    static bool as_json = false;
    add_server_option(cmd, server);
    cmd->add_flag("--json", as_json, "print the server's JSON");
    cmd->callback([] {
        json s = get_json(server, "/system/stats");
        if (as_json) {
            std::printf("%s\n", s.dump(2).c_str());
            return;
        }
        std::printf("%-24s %7s %7s %7s %9s %5s %6s\n", "FUNCTION", "WARM", "COLD", "BOOT", "INSTANCES",
                    "POOL", "QUEUED");
        for (const auto& [name, f] : s.items())
            std::printf("%-24s %7.0f %7.0f %7.0f %9d %5d %6d\n", name.c_str(),
                        f["starts"]["warm"].get<double>(), f["starts"]["cold"].get<double>(),
                        f["starts"]["boot"].get<double>(), f["instances"].get<int>(), f["pool"].get<int>(),
                        f["queued"].get<int>());
    });
}

}  // namespace initless::cli
