// A blocking HTTP/1.1 client for one request over an already connected socket (the controller
// reaches sandboxed functions through sockets made inside their network namespace). Parsing is
// Boost.Beast's, so chunked and Content-Length bodies both work.
#pragma once

#include <chrono>
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

// Sends `GET target` and reads the whole response; throws initless::Error on a socket or parse error.
HttpResponse http_get(sys::UniqueFd socket, std::string_view target,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace initless::gateway
