#include "initless/gateway/http_client.h"

#include <limits>
#include <optional>

#include <fmt/format.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "initless/sys/error.h"

namespace initless::gateway {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using boost::asio::ip::tcp;

namespace {

using Clock = std::chrono::steady_clock;

// What bounds an exchange: each step (a write or a read of some bytes) must complete within `step`,
// and the whole of it by `whole` if set; the body kept is at most `body_max`.
struct Limits {
    std::chrono::milliseconds step;
    std::optional<std::chrono::milliseconds> whole;
    uint64_t body_max;
};

// The steps of one exchange, each bounded by the limits. Asynchronous under the hood: Asio's blocking
// calls, meeting a socket timeout (SO_RCVTIMEO), wait in poll() with no limit, so a function that never
// answers would hold the caller forever.
class BoundedSteps {
  public:
    BoundedSteps(sys::UniqueFd socket, const Limits& limits, const HttpRequest& request)
        : stream_(ioc_), limits_(limits), request_(request) {
        if (limits.whole) whole_by_ = Clock::now() + *limits.whole;
        boost::system::error_code ec;
        stream_.socket().assign(tcp::v4(), socket.release(), ec);
        if (ec) throw Error("http: adopt socket: " + ec.message());
    }
    beast::tcp_stream& stream() { return stream_; }

    // Runs `start(handler)` to completion; throws naming `what` on an error or a timeout.
    template <class Start>
    void step(const char* what, Start&& start) {
        boost::system::error_code ec;
        auto expiry = Clock::now() + limits_.step;
        bool whole = whole_by_ && *whole_by_ < expiry;
        stream_.expires_at(whole ? *whole_by_ : expiry);
        start([&](boost::system::error_code e, size_t) { ec = e; });
        ioc_.restart();
        ioc_.run();
        if (ec == http::error::need_buffer) ec = {};
        if (ec == beast::error::timeout && whole)
            throw Error(fmt::format("http {} {}: {}: the exchange was not over within its {} ms",
                                    request_.method, request_.target, what, limits_.whole->count()));
        if (ec == beast::error::timeout)
            throw Error(fmt::format("http {} {}: {}: nothing for {} ms", request_.method, request_.target,
                                    what, limits_.step.count()));
        if (ec)
            throw Error(
                fmt::format("http {} {}: {}: {}", request_.method, request_.target, what, ec.message()));
    }

  private:
    boost::asio::io_context ioc_;
    beast::tcp_stream stream_;
    Limits limits_;
    const HttpRequest& request_;
    std::optional<Clock::time_point> whole_by_;
};

HttpResponse exchange(sys::UniqueFd socket, const HttpRequest& request, const Limits& limits,
                      const std::function<void(std::string_view)>& on_body) {
    BoundedSteps io(std::move(socket), limits, request);
    auto& s = io.stream();
    http::request<http::string_body> req{http::string_to_verb(request.method), request.target, 11};
    if (req.method() == http::verb::unknown) req.method_string(request.method);
    req.set(http::field::host, "localhost");
    req.set(http::field::user_agent, "initless");
    for (const auto& [k, v] : request.headers) req.set(k, v);
    req.body() = request.body;
    req.keep_alive(false);
    req.prepare_payload();
    // Piece by piece, so that the limit is on progress: a large upload may take longer than it in all.
    http::request_serializer<http::string_body> serializer(req);
    while (!serializer.is_done())
        io.step("write", [&](auto handler) { http::async_write_some(s, serializer, std::move(handler)); });
    beast::flat_buffer buffer;
    HttpResponse out;
    if (!on_body) {
        http::response_parser<http::string_body> parser;
        parser.body_limit(limits.body_max);
        if (req.method() == http::verb::head) parser.skip(true);
        while (!parser.is_done())
            io.step("read",
                    [&](auto handler) { http::async_read_some(s, buffer, parser, std::move(handler)); });
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
    while (!parser.is_header_done())
        io.step("read",
                [&](auto handler) { http::async_read_header(s, buffer, parser, std::move(handler)); });
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
        io.step("read", [&](auto handler) { http::async_read_some(s, buffer, parser, std::move(handler)); });
        size_t got = sizeof chunk - parser.get().body().size;
        if (got && whole)
            whole->append(chunk, std::min(got, kErrorBodyMax - std::min(whole->size(), kErrorBodyMax)));
        else if (got)
            on_body(std::string_view(chunk, got));
    }
    return out;
}

}  // namespace

HttpResponse http_request(sys::UniqueFd socket, const HttpRequest& request, std::chrono::milliseconds timeout,
                          const std::function<void(std::string_view)>& on_body) {
    return exchange(std::move(socket), request, {timeout, std::nullopt, 1ull << 34}, on_body);
}

HttpResponse http_get(sys::UniqueFd socket, std::string_view target, std::chrono::milliseconds timeout) {
    HttpRequest request;
    request.target = std::string(target);
    return exchange(std::move(socket), request, {timeout, timeout, kGetBodyMax}, {});
}

}  // namespace initless::gateway
