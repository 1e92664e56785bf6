#include <csignal>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "initless/cli/verbs.h"
#include "initless/controller/controller.h"
#include "initless/gateway/server.h"
#include "initless/policy/catalog.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/process.h"

namespace initless::cli {

namespace {
struct ServeOptions {
    std::string listen = "127.0.0.1:8080";
    std::string state = "/var/lib/initless";
    std::string policy = "ttl";
    double memory_mb = 4096;
    std::string image_store = "disk";
    int io_threads = 2;
    uint32_t spin_us = 100;
    uint64_t max_body_mb = 64;
    uint64_t max_held_bodies_mb = 1024;
    std::string api_token_file;
    std::string log_level = "info";
    uint32_t restores_at_once = 0;
    uint32_t refills_at_once = 0;
};
// The token in `path`, without surrounding white space; throws initless::Error if it is missing or short.
std::string read_api_token(const std::string& path) {
    std::string token = sys::read_file(path);
    auto first = token.find_first_not_of(" \t\r\n");
    auto last = token.find_last_not_of(" \t\r\n");
    token = first == std::string::npos ? "" : token.substr(first, last - first + 1);
    if (token.size() < 16 || token.find_first_of(" \t\r\n") != std::string::npos)
        throw Error(
            fmt::format("--api-token-file {}: the token must be one word of 16 characters or more", path));
    return token;
}
}  // namespace

void add_serve(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "serve", "run the initless daemon: gateway, pools, dispatch, keep-alive (foreground)");
    static ServeOptions o;
    cmd->add_option("--listen", o.listen, "address of the gateway and API (host:port)");
    cmd->add_option("--state", o.state, "state dir: function registry and images (on disk)");
    cmd->add_option("--policy", o.policy, "keep-alive policy")->check(CLI::IsMember(policy::policy_names()));
    cmd->add_option("--memory-mb", o.memory_mb,
                    "idle-memory budget: idle instances beyond it are evicted by the policy")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--image-store", o.image_store,
                    "where images live: disk (in the state dir) or tmpfs (in RAM)")
        ->check(CLI::IsMember({"disk", "tmpfs"}));
    cmd->add_option("--io-threads", o.io_threads, "gateway I/O threads")->check(CLI::Range(1, 64));
    cmd->add_option("--spin-us", o.spin_us,
                    "while at most one request is in flight, an idle gateway thread polls this long "
                    "before it sleeps (0: never)")
        ->check(CLI::Range(0, 10000));
    cmd->add_option("--max-body-mb", o.max_body_mb, "largest request body")->check(CLI::Range(1, 4096));
    cmd->add_option("--max-held-bodies-mb", o.max_held_bodies_mb,
                    "request bodies held at once, all connections together; beyond it a request gets 503")
        ->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--restores-at-once", o.restores_at_once,
                    "restores of one function running at once; more start as these end (default 2 per CPU)")
        ->check(CLI::Range(1, 4096));
    cmd->add_option("--refills-at-once", o.refills_at_once,
                    "pool refills running at once, all functions together (default 1 per CPU)")
        ->check(CLI::Range(1, 4096));
    cmd->add_option("--api-token-file", o.api_token_file,
                    "a file holding the API's token: /system/... then wants 'Authorization: Bearer TOKEN' "
                    "from every client (the CLI sends $INITLESS_API_TOKEN); without it the API answers "
                    "clients on this host only");
    cmd->add_option("--log-level", o.log_level, "debug | info | warn | error")
        ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
    cmd->callback([] {
        std::string api_token = o.api_token_file.empty() ? "" : read_api_token(o.api_token_file);
        if (o.max_held_bodies_mb < o.max_body_mb)
            throw Error(
                fmt::format("--max-held-bodies-mb ({}) is below --max-body-mb ({}): a body between the two "
                            "could never be taken",
                            o.max_held_bodies_mb, o.max_body_mb));
        auto logger = spdlog::stderr_color_mt("initless");
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
        logger->set_level(spdlog::level::from_str(o.log_level));
        logger->flush_on(spdlog::level::info);
        spdlog::set_default_logger(logger);
        std::signal(SIGPIPE, SIG_IGN);
        uint64_t fds = sys::raise_fd_limit();
        controller::ControllerOptions copts;
        copts.state_dir = o.state;
        copts.image_store_tmpfs = o.image_store == "tmpfs";
        copts.policy = o.policy;
        copts.memory_mb = o.memory_mb;
        copts.restores_at_once = o.restores_at_once;
        copts.refills_at_once = o.refills_at_once;
        spdlog::info("event=starting state={} policy={} memory_mb={} image_store={} fd_limit={}", o.state,
                     o.policy, o.memory_mb, o.image_store, fds);
        controller::Controller controller(copts);
        gateway::ServerOptions sopts;
        sopts.listen = o.listen;
        sopts.io_threads = o.io_threads;
        sopts.spin_us = o.spin_us;
        sopts.body_limit_bytes = o.max_body_mb << 20;
        sopts.request_bodies_limit_bytes = o.max_held_bodies_mb << 20;
        sopts.api_token = api_token;
        gateway::Server server(controller, sopts);
        controller.start();
        server.run();
    });
}

}  // namespace initless::cli
