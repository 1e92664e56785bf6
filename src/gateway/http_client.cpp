#include "initless/gateway/http_client.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "initless/sys/error.h"

namespace initless::gateway {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;

HttpResponse http_get(sys::UniqueFd socket, std::string_view target, std::chrono::milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(socket.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(socket.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    boost::asio::io_context ioc;
    tcp::socket s(ioc);
    boost::system::error_code ec;
    s.assign(tcp::v4(), socket.release(), ec);
    if (ec) throw Error("http: adopt socket: " + ec.message());

    http::request<http::empty_body> req{http::verb::get, std::string(target), 11};
    req.set(http::field::host, "localhost");
    req.set(http::field::user_agent, "initless");
    req.set(http::field::connection, "close");
    http::write(s, req, ec);
    if (ec) throw Error(fmt::format("http GET {}: write: {}", target, ec.message()));
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(s, buffer, res, ec);
    if (ec) throw Error(fmt::format("http GET {}: read: {}", target, ec.message()));
    HttpResponse out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    for (const auto& field : res) out.headers[std::string(field.name_string())] = std::string(field.value());
    s.close(ec);
    return out;
}

}  // namespace initless::gateway
