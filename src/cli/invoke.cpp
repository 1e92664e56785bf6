#include <cstdio>
#include <vector>

#include <fmt/format.h>

#include "initless/cli/api.h"
#include "initless/cli/verbs.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::cli {

namespace {
struct InvokeOptions {
    std::string name;
    std::string path = "/";
    std::string data;
    std::string method;
    std::vector<std::string> headers;
    std::string server;
    bool verbose = false;
};
}  // namespace

void add_invoke(CLI::App& app) {
    auto* cmd = app.add_subcommand("invoke", "call a function through the server and print its answer");
    static InvokeOptions o;
    cmd->add_option("NAME", o.name, "function name")->required();
    cmd->add_option("PATH", o.path, "path inside the function (default /), with its query");
    cmd->add_option("-d,--data", o.data, "request body: a string, or @file");
    cmd->add_option("-X,--request", o.method, "method (default GET, or POST with --data)");
    cmd->add_option("-H,--header", o.headers, "extra header 'Name: value' (repeatable)");
    cmd->add_flag("-v,--verbose", o.verbose,
                  "also print the status, the start kind and the timings (to stderr)");
    add_server_option(cmd, o.server);
    cmd->callback([] {
        gateway::HttpRequest req;
        req.method = o.method.empty() ? (o.data.empty() ? "GET" : "POST") : o.method;
        std::string path = o.path.empty() || o.path[0] != '/' ? "/" + o.path : o.path;
        req.target = "/function/" + o.name + (path == "/" ? "" : path);
        if (!o.data.empty()) req.body = o.data[0] == '@' ? sys::read_file(o.data.substr(1)) : o.data;
        for (const auto& h : o.headers) {
            auto colon = h.find(':');
            if (colon == std::string::npos) throw Error(fmt::format("header '{}' is not 'Name: value'", h));
            std::string value = h.substr(colon + 1);
            value.erase(0, value.find_first_not_of(' '));
            req.headers[h.substr(0, colon)] = value;
        }
        // The body is printed as it arrives (a function streaming events shows each when it is sent);
        // an error's is kept for the one-line message.
        auto res = call(o.server, req, std::chrono::minutes(10), [](std::string_view piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
        });
        if (o.verbose) {
            auto get = [&](const char* k) {
                auto it = res.headers.find(k);
                return it == res.headers.end() ? std::string("-") : it->second;
            };
            std::fprintf(
                stderr, "%s",
                fmt::format("status: {}\nstart: {}\ninstance: {}\nserver-timing: {}\n", res.status,
                            get("X-Initless-Start"), get("X-Initless-Instance"), get("Server-Timing"))
                    .c_str());
        }
        if (res.status >= 400)
            throw Error(fmt::format("{} answered {}: {}", o.name, res.status, first_line(res.body)));
    });
}

}  // namespace initless::cli
