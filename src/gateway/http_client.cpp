#include "initless/gateway/http_client.h"

#include <sys/socket.h>

#include <sys/time.h>
#include <limits>

#include <fmt/format.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "initless/sys/error.h"

namespace initless::gateway {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;

HttpResponse http_get(sys::UniqueFd socket, std::string_view target, std::chrono::milliseconds timeout) {
    HttpRequest request;
    request.target = std::string(target);
    return http_request(std::move(socket), request, timeout);
}

sys::UniqueFd connect_tcp(const std::string& host, uint16_t port) {
    boost::asio::io_context ioc;
    tcp::socket s(ioc);
    boost::system::error_code ec;
    auto address = boost::asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec) throw Error(fmt::format("'{}' is not an IP address: {}", host, ec.message()));
    s.connect(tcp::endpoint(address, port), ec);
    if (ec) throw Error(fmt::format("connect to {}:{}: {}", host, port, ec.message()));
    s.set_option(tcp::no_delay(true), ec);
    return sys::UniqueFd(s.release());
}

HttpResponse http_request(sys::UniqueFd socket, const HttpRequest& request, std::chrono::milliseconds timeout,
                          const std::function<void(std::string_view)>& on_body) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(socket.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(socket.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    boost::asio::io_context ioc;
    tcp::socket s(ioc);
    boost::system::error_code ec;
    s.assign(tcp::v4(), socket.release(), ec);
    if (ec) throw Error("http: adopt socket: " + ec.message());
    http::request<http::string_body> req{http::string_to_verb(request.method), request.target, 11};
    if (req.method() == http::verb::unknown) req.method_string(request.method);
    req.set(http::field::host, "localhost");
    req.set(http::field::user_agent, "initless");
    for (const auto& [k, v] : request.headers) req.set(k, v);
    req.body() = request.body;
    req.keep_alive(false);
    req.prepare_payload();
    http::write(s, req, ec);
    if (ec) throw Error(fmt::format("http {} {}: write: {}", request.method, request.target, ec.message()));
    boost::beast::flat_buffer buffer;
    HttpResponse out;
    if (!on_body) {
        http::response_parser<http::string_body> parser;
        parser.body_limit(1ull << 34);
        if (req.method() == http::verb::head) parser.skip(true);
        http::read(s, buffer, parser, ec);
        if (ec)
            throw Error(fmt::format("http {} {}: read: {}", request.method, request.target, ec.message()));
        auto res = parser.release();
        out.status = static_cast<int>(res.result_int());
        out.body = std::move(res.body());
        for (const auto& field : res)
            out.headers[std::string(field.name_string())] = std::string(field.value());
        return out;
    }
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());  // not boost::none: Beast 1.74 compares a
                                                                   // length with it as "greater"
    if (req.method() == http::verb::head) parser.skip(true);
    http::read_header(s, buffer, parser, ec);
    if (ec) throw Error(fmt::format("http {} {}: read: {}", request.method, request.target, ec.message()));
    out.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get())
        out.headers[std::string(field.name_string())] = std::string(field.value());
    char chunk[16384];
    constexpr size_t kErrorBodyMax = 64 * 1024;
    std::string* whole = out.status >= 400 ? &out.body : nullptr;  // an error is kept, not streamed
    while (!parser.is_done()) {
        parser.get().body().data = chunk;
        parser.get().body().size = sizeof chunk;
        // read_some, not read: hand over each piece as it arrives (read would wait to fill the buffer).
        http::read_some(s, buffer, parser, ec);
        if (ec == http::error::need_buffer) ec = {};
        if (ec)
            throw Error(fmt::format("http {} {}: read: {}", request.method, request.target, ec.message()));
        size_t got = sizeof chunk - parser.get().body().size;
        if (got && whole)
            whole->append(chunk, std::min(got, kErrorBodyMax - std::min(whole->size(), kErrorBodyMax)));
        else if (got)
            on_body(std::string_view(chunk, got));
    }
    return out;
}

}  // namespace initless::gateway
