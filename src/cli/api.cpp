#include "initless/cli/api.h"

#include <algorithm>
#include <cstdlib>

#include <fmt/format.h>

#include "initless/gateway/server.h"
#include "initless/sys/error.h"
#include "initless/sys/socket.h"

namespace initless::cli {

namespace {
constexpr std::chrono::milliseconds kConnectLimit = std::chrono::seconds(10);
}

void add_server_option(CLI::App* cmd, std::string& server) {
    cmd->add_option("--server", server, "the initless server (default: $INITLESS_SERVER or 127.0.0.1:8080)");
}

std::string server_address(const std::string& flag) {
    if (!flag.empty()) return flag;
    const char* env = std::getenv("INITLESS_SERVER");
    if (env && *env) return env;
    return "127.0.0.1:8080";
}

gateway::HttpResponse call(const std::string& server, const gateway::HttpRequest& request,
                           std::chrono::milliseconds timeout,
                           const std::function<void(std::string_view)>& on_body) {
    std::string address = server_address(server);
    auto [host, port] = gateway::parse_address(address);
    sys::UniqueFd fd;
    try {
        // Bounded: a host that does not answer (or a daemon whose accept queue is full) would hold the
        // command for the kernel's SYN retries, about two minutes.
        fd = sys::connect_tcp(sys::TcpAddress{host, port},
                              std::min<std::chrono::milliseconds>(timeout, kConnectLimit));
    } catch (const Error& e) {
        throw Error(fmt::format("cannot reach the initless server at {} ({}); start it with `initless serve`",
                                address, e.what()));
    }
    // The API's token goes to the API only: a function's route must never see it (functions are
    // untrusted code, and the gateway forwards a client's Authorization to them).
    const char* token = std::getenv("INITLESS_API_TOKEN");
    if (token && *token && request.target.starts_with("/system/") &&
        !request.headers.count("Authorization")) {
        gateway::HttpRequest with_token = request;
        with_token.headers["Authorization"] = std::string("Bearer ") + token;
        return gateway::http_request(std::move(fd), with_token, timeout, on_body);
    }
    return gateway::http_request(std::move(fd), request, timeout, on_body);
}

std::string first_line(const std::string& text) {
    auto nl = text.find('\n');
    return nl == std::string::npos ? text : text.substr(0, nl);
}

}  // namespace initless::cli
