// The client side of `initless serve`'s API, for the verbs that talk to a daemon (deploy, invoke,
// ls, logs, rm, stats). The server is `--server ADDR`, else $INITLESS_SERVER, else 127.0.0.1:8080.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

#include "initless/gateway/http_client.h"

namespace initless::cli {

// Adds --server to a verb; the value is resolved by `server_address`.
void add_server_option(CLI::App* cmd, std::string& server);
std::string server_address(const std::string& flag);

// One request to the daemon; throws initless::Error with "cannot reach the initless server at ADDR"
// when nothing listens there. A request to the API (/system/...) carries $INITLESS_API_TOKEN, if set,
// as `Authorization: Bearer` (serve --api-token-file); no other request does.
gateway::HttpResponse call(const std::string& server, const gateway::HttpRequest& request,
                           std::chrono::milliseconds timeout = std::chrono::minutes(10),
                           const std::function<void(std::string_view)>& on_body = {});

// The first line of an error body, for one-line error messages.
std::string first_line(const std::string& text);

}  // namespace initless::cli
