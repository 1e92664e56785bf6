// `initless page-server --image PATH --listen ADDR`: serves an image's pages.img over TCP to
// `initless restore DIR --pages-from ADDR` on other hosts (include/initless/pages/remote.h).
#include <csignal>
#include <cstdio>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "initless/cli/verbs.h"
#include "initless/image/image.h"
#include "initless/pages/remote.h"
#include "initless/sandbox/sandbox.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"

namespace initless::cli {

void add_page_server(CLI::App& app) {
    auto* cmd =
        app.add_subcommand("page-server",
                           "serve an image's pages over TCP to restores elsewhere (restore --pages-from); "
                           "SIGTERM or SIGINT stops it");
    static std::string image_dir, listen = "0.0.0.0:7070";
    static bool no_verify = false;
    static unsigned client_idle_s = 60;
    cmd->add_option("--image", image_dir, "image directory made by `initless snapshot`")->required();
    cmd->add_option("--listen", listen, "HOST:PORT to listen on (port 0: any free port, printed)");
    cmd->add_flag("--no-verify", no_verify,
                  "skip the MAC check of pages.img at start (it reads the whole image)");
    cmd->add_option("--client-idle-s", client_idle_s,
                    "close a client that asks nothing for this long (restores reconnect when they need more)")
        ->check(CLI::Range(1u, 86400u));
    static std::string log_level = "info";
    cmd->add_option("--log-level", log_level,
                    "log level (info: one line per client, its end and every bad request)");
    cmd->callback([] {
        auto logger = spdlog::stderr_color_mt("initless");
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
        logger->set_level(spdlog::level::from_str(log_level));
        logger->flush_on(spdlog::level::info);
        spdlog::set_default_logger(logger);
        std::signal(SIGPIPE, SIG_IGN);
        // Before any thread starts, so that every thread has them blocked and only the signalfd sees them.
        sys::UniqueFd stop = sys::signal_fd({SIGTERM, SIGINT});
        image::Image img = image::load(image_dir, image::Key::of_state_dir(sandbox::state_dir()), !no_verify);
        auto addr = sys::parse_tcp_address(listen);
        pages::remote::ClientLimits limits;
        limits.idle = std::chrono::seconds(client_idle_s);
        pages::RemotePageServer server(img, addr, limits);
        addr.port = server.port();
        std::printf("page-server: %s listening on %s\n", image_dir.c_str(), addr.str().c_str());
        std::fflush(stdout);
        server.run(stop.get());
    });
}

}  // namespace initless::cli
