// A blocking HTTP/1.1 client for one request over an already connected socket (the controller
// reaches sandboxed functions through sockets made inside their network namespace). Parsing is
// Boost.Beast's, so chunked and Content-Length bodies both work.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "initless/sys/unique_fd.h"

namespace initless::gateway {

struct HttpResponse {
    int status = 0;
    std::string body;
    std::map<std::string, std::string> headers;
};

struct HttpRequest {
    std::string method = "GET";
    std::string target = "/";
    std::map<std::string, std::string> headers;
    std::string body;
};

// Sends `request` and reads the response. With `on_body`, the body is handed over piece by piece as
// it arrives (a streamed, chunked response) and not kept in the result; an error's body (status 400 and
// up) is kept in the result instead (its first 64 KiB), not handed over. Throws initless::Error on a
// socket or parse error, or when `timeout` passes without progress.
HttpResponse http_request(sys::UniqueFd socket, const HttpRequest& request,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30),
                          const std::function<void(std::string_view)>& on_body = {});

// Sends `GET target` and reads the whole response, a body of at most kGetBodyMax; throws
// initless::Error on a socket or parse error, a longer body, or when the exchange is not over within
// `timeout` (in all: a function that trickles its answer is bounded too).
inline constexpr uint64_t kGetBodyMax = 64ull << 20;
HttpResponse http_get(sys::UniqueFd socket, std::string_view target,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace initless::gateway
