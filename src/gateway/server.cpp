#include "initless/gateway/server.h"

#include <sched.h>
#include <sys/stat.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <deque>
#include <limits>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "bodies.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/socket.h"

namespace initless::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using controller::Acquired;
using controller::Outcome;

std::pair<std::string, uint16_t> parse_address(const std::string& address) {
    auto colon = address.rfind(':');
    if (colon == std::string::npos || colon + 1 == address.size())
        throw Error(fmt::format("'{}' is not an address of the form host:port", address));
    std::string host = address.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host.empty() || host == "localhost") host = "127.0.0.1";
    unsigned long port = 0;
    try {
        size_t used = 0;
        port = std::stoul(address.substr(colon + 1), &used);
        if (used != address.size() - colon - 1 || port > 65535) throw std::out_of_range("port");
    } catch (const std::exception&) {
        throw Error(fmt::format("'{}' has no valid port", address));
    }
    return {host, static_cast<uint16_t>(port)};
}

namespace {

constexpr uint32_t kUpstreamHeaderLimit = 256 * 1024;  // a function's response head
// A function's response body of a declared length up to this is held whole and sent to the client
// in one write with its head; a longer one, or one of no declared length (chunked, or until the
// function closes), is passed on as it arrives (Session::pass_on_response).
constexpr uint64_t kHeldResponseLimit = 256 * 1024;
// Beast reads into a flat buffer as much as it has room for (its capacity, 512 bytes at least), up to
// 64 KiB. A buffer sized by a request's or response's head (a KiB or two) then read a body of
// megabytes a KiB or two per syscall: 2 GiB through the gateway took 18 s of the daemon's CPU (0.55 s
// straight from the function). A body that did not come with its head gets this much room to be read in.
constexpr size_t kBodyReadSize = 64 * 1024;
// The rest of a passed-on body of a declared length goes from the function's socket to the client's
// through a pipe of this size (splice), past Beast's parser and the daemon's memory.
constexpr size_t kSplicePipeSize = 256 * 1024;
// Moved through the pipe per turn before the loop's other connections get theirs.
constexpr size_t kSpliceTurn = 1 << 20;
// What the read buffers may hold: the parser takes a message's bytes as they come, so they hold a head
// and a read's worth, except where the parser waits for a line end with no limit of its own (Beast
// 1.74 bounds a head, not a chunk's size line or a trailer): a function sending "1" and then no line
// end, or a client doing the same in a chunked request body, grew the buffer 64 KiB a read for as
// long as the exchange lasted (up to timeout_s: gigabytes). Past the limit the read fails
// (http::error::buffer_overflow): a 502 "not valid HTTP" or a cut response, a 400 to the client.
constexpr size_t kUpstreamBufferLimit = kUpstreamHeaderLimit + kHeldResponseLimit + kBodyReadSize;
size_t request_buffer_limit(uint32_t header_limit_bytes) {
    return header_limit_bytes + 2 * kBodyReadSize;
}

std::string_view sv(beast::string_view s) {
    return {s.data(), s.size()};
}

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Fields that describe one connection, not the message: never forwarded either way (the proxy
// writes its own length and connection fields). Known names by Beast's field code, which its parser
// has already computed: comparing strings here cost a strlen and a compare per field and name.
bool hop_by_hop(http::field name) {
    switch (name) {
        case http::field::connection:
        case http::field::keep_alive:
        case http::field::transfer_encoding:
        case http::field::te:
        case http::field::trailer:
        case http::field::upgrade:
        case http::field::proxy_authenticate:
        case http::field::proxy_authorization:
        case http::field::content_length:
        case http::field::host:
        case http::field::expect:  // the gateway answers it (read) and sends the function a whole body
            return true;
        default:
            return false;
    }
}

// Fields the gateway writes itself, which a function or a client must not be able to set in its
// place: the function's own are dropped (as the client would otherwise get two, and could be told a
// cold start was warm), and so is a client's X-Forwarded-For (replaced, as before by Beast's set).
bool named(beast::string_view name, std::string_view want) {
    return name.size() == want.size() && beast::iequals(name, beast::string_view(want.data(), want.size()));
}
bool gateway_response_field(beast::string_view name) {
    return named(name, "Server-Timing") || named(name, "X-Initless-Start") ||
           named(name, "X-Initless-Instance");
}

// Milliseconds with three decimals, as Server-Timing carries them (fmt's float path, and then
// snprintf, were each a few percent of the daemon's CPU per warm request).
void append_ms(std::string& out, double ms) {
    if (!(ms > 0)) ms = 0;  // NaN too
    auto us = static_cast<long long>(std::min(ms, 1e12) * 1000 + 0.5);
    char buf[24];
    char* end = std::to_chars(buf, buf + sizeof buf, us / 1000).ptr;
    long long frac = us % 1000;
    *end++ = '.';
    *end++ = static_cast<char>('0' + frac / 100);
    *end++ = static_cast<char>('0' + frac / 10 % 10);
    *end++ = static_cast<char>('0' + frac % 10);
    out.append(buf, end);
}

// A request target's path: without its query, and of the absolute form (`GET http://host/path`, which a
// server must accept, RFC 9112 3.2.2) only the path.
std::string_view path_of(std::string_view target) {
    for (std::string_view scheme : {"http://", "https://"})
        if (target.size() > scheme.size() &&
            beast::iequals(beast::string_view(target.data(), scheme.size()),
                           beast::string_view(scheme.data(), scheme.size()))) {
            size_t slash = target.find('/', scheme.size());
            target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
        }
    return target.substr(0, target.find('?'));
}

std::string query_param(std::string_view target, std::string_view key) {
    auto q = target.find('?');
    if (q == std::string_view::npos) return "";
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
        auto amp = rest.find('&');
        std::string_view kv = rest.substr(0, amp);
        auto eq = kv.find('=');
        if (kv.substr(0, eq) == key)
            return eq == std::string_view::npos ? "1" : std::string(kv.substr(eq + 1));
        if (amp == std::string_view::npos) break;
        rest = rest.substr(amp + 1);
    }
    return "";
}

}  // namespace

struct Server::Impl {
    controller::Controller& controller;
    ServerOptions options;
    // One io_context per I/O thread, each run by that thread alone, and every connection (with its
    // upstream sockets and timers) on one of them from accept to close: a request then never changes
    // threads. With one io_context shared by two threads, each readiness event could be handed to the
    // other thread (a futex wake), and on this VM that cost ~120 us per request at one connection
    // (docs/bench/gateway.md, "io model").
    struct Loop {
        net::io_context ioc{1};
        // Asio re-arms a context's timerfd whenever a new timer becomes the earliest. Every request
        // arms and cancels per-operation timeouts (seconds away); with this timer always due sooner,
        // none of them is ever the earliest, and the request path makes no timerfd syscall (4 per
        // request before). It also keeps `run` from returning while the loop has no connection.
        net::steady_timer pacemaker{ioc};
        void beat() {
            pacemaker.expires_after(std::chrono::milliseconds(250));
            pacemaker.async_wait([this](beast::error_code ec) {
                if (!ec && !ioc.stopped()) beat();
            });
        }

        // Runs the loop on the calling thread until it is stopped. With `spin` > 0, a loop that finds nothing
        // to do polls for up to `spin` before it sleeps, while at most one request is in flight in the whole
        // gateway: a request alone then finds the gateway awake at both of its hops (the client's request,
        // the function's response) instead of waking a thread whose vCPU had halted, which on this VM (halt
        // polling off) cost more than the gateway's own work (DESIGN.md, "The daemon"). With more in flight
        // the loop has events to take anyway, and polling would only take CPU from the functions and the
        // clients. Between polls the thread yields, so that it only takes CPU time that no runnable task on
        // its CPU wants (with a busy loop holding one of the two CPUs, polling without yielding made one
        // connection's p50 56 us, with yielding 52 us, not polling 54 us; polling took 0.55 of a CPU, polling
        // and yielding 0.38). Each kind of wait (with a request in flight, or without) is polled for while
        // polling catches it: a poll that ran out is not tried for the next wait of its kind, and a wait
        // slept through brings polling back only if it took at most twice the spin (it is measured with the
        // wake-up in it). So a function slower than the spin, or an idle client, costs one poll in two at
        // most, and none once its waits are long.
        void run(Clock::duration spin, const std::atomic<int>& in_flight) {
            if (spin <= Clock::duration::zero()) {
                ioc.run();
                return;
            }
            std::array<bool, 2> worth{true, true};  // polling for a wait without a request in flight, with
            while (!ioc.stopped()) {
                if (ioc.poll() > 0) continue;
                int requests = in_flight.load(std::memory_order_relaxed);
                bool busy = requests > 0;
                auto idle_since = Clock::now();
                bool ran = false;
                if (requests <= 1 && worth[busy]) {
                    while (!ran && Clock::now() - idle_since < spin && !ioc.stopped()) {
                        ran = ioc.poll() > 0;
                        if (!ran) sched_yield();
                    }
                    worth[busy] = ran;
                    if (!ran) ioc.run_one();
                } else {
                    ioc.run_one();
                    worth[busy] = Clock::now() - idle_since <= 2 * spin;
                }
            }
        }
    };
    std::vector<std::unique_ptr<Loop>> loops;
    size_t next_loop = 0;  // accept's round robin; only the first loop's thread uses it
    net::io_context& ioc;  // the first loop's: the acceptor's, the signals'
    tcp::acceptor acceptor{ioc};
    net::signal_set signals{ioc, SIGTERM, SIGINT};
    std::atomic<bool> stopping{false};
    std::atomic<int> in_flight{0};  // function requests between routing and their answer's write
    BodyBudget request_bodies{options.request_bodies_limit_bytes};  // held by every connection at once
    std::thread shutdown_thread;

    static std::vector<std::unique_ptr<Loop>> make_loops(int n) {
        std::vector<std::unique_ptr<Loop>> out;
        for (int i = 0; i < std::max(1, n); ++i) out.push_back(std::make_unique<Loop>());
        return out;
    }

    Impl(controller::Controller& c, ServerOptions o)
        : controller(c), options(std::move(o)), loops(make_loops(options.io_threads)), ioc(loops[0]->ioc) {
        auto& m = controller.metrics();
        m.declare("initless_request_bodies_held_bytes", controller::Metrics::Type::Gauge,
                  "Bytes of request bodies the gateway holds now (bounded by --max-held-bodies-mb).");
        m.declare(
            "gateway_responses_cut_total", controller::Metrics::Type::Counter,
            "Responses passed on as they arrived and ended early, after their head, by function and why: "
            "client (it left), timeout (timeout_s passed), function (it failed), invalid (its body).");
    }

    void stop_loops() {
        for (auto& l : loops) l->ioc.stop();
    }

    void accept();
    void begin_stop(const char* why) {
        if (stopping.exchange(true)) return;
        spdlog::info("event=stopping why={}", why);
        beast::error_code ec;
        acceptor.close(ec);
        // The controller drains on a thread of its own while the I/O threads keep serving.
        shutdown_thread = std::thread([this] {
            controller.shutdown();
            stop_loops();
        });
    }
};

namespace {

// The connections to one instance that its function kept alive, as open Asio sockets: reusing one
// costs no epoll registration (an fd adopted and released per request cost three syscalls). Kept
// with the instance (Instance::gateway_state) and closed with it.
struct UpstreamPool {
    std::mutex mu;
    std::vector<std::unique_ptr<tcp::socket>> idle;
};

std::shared_ptr<UpstreamPool> pool_of(controller::Instance& instance) {
    return std::static_pointer_cast<UpstreamPool>(instance.gateway_state(
        [] { return std::static_pointer_cast<void>(std::make_shared<UpstreamPool>()); }));
}

// A connection being made to the instance (see Session::when_connected), on loop `ioc`.
std::unique_ptr<tcp::socket> new_upstream_socket(controller::Instance& instance, net::io_context& ioc) {
    auto socket = std::make_unique<tcp::socket>(ioc);
    auto fd = instance.connect();
    socket->assign(tcp::v4(), fd.get());
    fd.release();                // the socket's now
    socket->non_blocking(true);  // see Session::write_all
    return socket;
}

// A kept-alive connection to `instance` of the caller's loop (`ioc`: a socket serves the loop it was
// made on), or a new one. Each is looked at first (one syscall): one the function closed is dropped,
// and so is one holding bytes the function sent after its last response (a second write of an answer,
// a body to a HEAD sent apart): reused, they were the next request's answer, and every later client's
// answer was the one before (a client getting another's response). Should the function close one
// just after it was looked at, the request is sent once more on a new connection.
// An instance that takes one request at a time may serve one connection at a time too (Python's
// HTTPServer speaking HTTP/1.1 reads its kept-alive connection until it closes): a new connection
// beside one idle on another loop would wait for it until the function's timeout (a 504 for every
// request that went to another loop than the last one). So before one is made, the others of such an
// instance are closed, each on its own loop (a socket is used by its loop's thread only).
std::unique_ptr<tcp::socket> take_upstream(controller::Instance& instance, net::io_context& ioc,
                                           bool& reused) {
    auto pool = pool_of(instance);
    std::unique_ptr<tcp::socket> kept;
    std::vector<std::unique_ptr<tcp::socket>> elsewhere;
    std::vector<std::unique_ptr<tcp::socket>> stale;  // closed when this returns (this loop's)
    {
        std::lock_guard lock(pool->mu);
        for (size_t i = pool->idle.size(); i-- > 0 && !kept;) {
            if (&pool->idle[i]->get_executor().context() != &ioc) continue;
            std::unique_ptr<tcp::socket> c = std::move(pool->idle[i]);
            pool->idle.erase(pool->idle.begin() + static_cast<long>(i));
            auto seen = sys::peek_stream(c->native_handle());
            if (seen == sys::StreamPeek::Quiet)
                kept = std::move(c);
            else if (seen == sys::StreamPeek::Bytes)
                stale.push_back(std::move(c));
        }
        if (!kept && instance.concurrency() == 1) elsewhere.swap(pool->idle);
    }
    if (!stale.empty())
        spdlog::warn(
            "event=upstream-dropped function={} connections={} reason=\"bytes after the function's "
            "response\"",
            instance.function(), stale.size());
    if (kept) {
        reused = true;
        return kept;
    }
    for (auto& c : elsewhere) {
        std::shared_ptr<tcp::socket> socket = std::move(c);
        net::post(socket->get_executor(), [socket] {
            beast::error_code ignored;
            socket->close(ignored);
        });
    }
    reused = false;
    return new_upstream_socket(instance, ioc);
}

// As many idle connections are kept as the instance takes requests at once (at least 64, at most
// 1024: the daemon's fds are bounded, 20000 on this machine without CAP_SYS_RESOURCE to raise it,
// and shared by every instance and client). With a fixed 64, a function taking 1000 at once had
// most of its connections closed after each response and opened again for the next request (a
// connect in its namespace, an accept, a TIME_WAIT each): 1000 kept-alive clients got 0.8 k
// requests/s through the gateway.
void give_back_upstream(controller::Instance& instance, std::unique_ptr<tcp::socket> socket) {
    auto pool = pool_of(instance);
    size_t keep = std::clamp<size_t>(instance.concurrency(), 64, 1024);
    std::lock_guard lock(pool->mu);
    if (pool->idle.size() < keep) pool->idle.push_back(std::move(socket));
}

// Counts one function request in Server::Impl::in_flight while it is held.
class InFlight {
  public:
    InFlight() = default;
    explicit InFlight(std::atomic<int>& count) : count_(&count) {
        count.fetch_add(1, std::memory_order_relaxed);
    }
    InFlight(InFlight&& other) noexcept : count_(std::exchange(other.count_, nullptr)) {}
    InFlight& operator=(InFlight&& other) noexcept {
        if (this != &other) {
            reset();
            count_ = std::exchange(other.count_, nullptr);
        }
        return *this;
    }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;
    ~InFlight() { reset(); }
    void reset() {
        if (count_) count_->fetch_sub(1, std::memory_order_relaxed);
        count_ = nullptr;
    }

  private:
    std::atomic<int>* count_ = nullptr;
};

class Session : public std::enable_shared_from_this<Session> {
  public:
    Session(tcp::socket socket, Server::Impl& server, net::io_context& loop)
        : stream_(std::move(socket)),
          server_(server),
          loop_(loop),
          buffer_(request_buffer_limit(server.options.header_limit_bytes)) {}

    void start() {
        net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
    }

  private:
    using Response = http::response<http::string_body>;

    // The upstream socket as Beast reads a response from it. A response that needs a second read
    // may come from a peer with Nagle on that holds its next write (the body, say) until the first is
    // acknowledged, while Linux delays that ACK (tens of ms on a request/response connection):
    // every read after a response's first sets TCP_QUICKACK, which also sends an ACK already due.
    // A response that arrives in one piece, the common case, costs no such call and no ACK packet
    // of its own (it rides on the next request).
    struct Upstream;
    struct ResponseReader {
        Upstream* up;
        using executor_type = tcp::socket::executor_type;
        executor_type get_executor() { return up->socket->get_executor(); }
        template <class Buffers, class Handler>
        void async_read_some(const Buffers& buffers, Handler&& handler) {
            if (up->reads++ > 0) sys::set_quickack(up->socket->native_handle());
            up->socket->async_read_some(buffers, std::forward<Handler>(handler));
        }
    };

    struct Upstream {
        std::unique_ptr<tcp::socket> socket;
        ResponseReader reader{this};
        int reads = 0;  // of the response being read
        beast::flat_buffer buffer{kUpstreamBufferLimit};
        std::string head;  // the request to the function: its head (see forward_head) and body
        RequestBody::value_type body;
        std::optional<http::response_parser<ResponseBody>> parser;
        bool reused = false;
        bool retried = false;
        // A request whose body did not go at once: its response is read while it is written (a function
        // may answer, a 413 or a 401, before it takes the body, and never take it). An answer that
        // comes first ends the write, and the connection, left in the middle of a request, is not
        // kept.
        bool writing = false;
        bool read_early = false;
        bool request_cut = false;
        size_t written = 0;  // of head and body, by write_upstream_rest
    };

    void read() {
        req_.body() = {};  // the last request's body, if not sent to a function, goes back to the budget
        if (response_body_.capacity() > 16 * 1024) std::string().swap(response_body_);  // idle: keep little
        parser_.emplace();
        parser_->get().body().budget = &server_.request_bodies;
        parser_->header_limit(server_.options.header_limit_bytes);
        parser_->body_limit(server_.options.body_limit_bytes);
        parser_->eager(true);  // a body that came with the head is parsed with it: no second operation
        stream_.expires_after(std::chrono::seconds(120));
        // The head first: a client that sent `Expect: 100-continue` waits for a 100 before its body
        // (curl does for bodies over 1 MiB, for a second). Usually the whole request came in the same
        // read, and the head's completion goes straight on.
        http::async_read_header(
            stream_, buffer_, *parser_,
            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read_header(ec); });
    }

    void on_read_header(beast::error_code ec) {
        if (ec) {
            on_read(ec);
            return;
        }
        // Who may use the API is settled before a body is read or a 100 Continue sent.
        if (path_of(sv(parser_->get().target())).starts_with("/system/") && !api_allowed(parser_->get()))
            return;
        if (parser_->is_done()) {
            on_read(ec);
            return;
        }
        // A declared length that the request bodies' budget has no room for now is refused before the body
        // is sent. The budget is taken as bytes arrive (a head alone must not hold it).
        if (auto length = parser_->content_length(); length && !parser_->get().body().has_room_for(*length)) {
            on_read(http::error::body_limit);
            return;
        }
        // Room to read the body in, if it may not fit in what the head left (given back in on_read).
        if (auto length = parser_->content_length(); !length || *length > buffer_.capacity() - buffer_.size())
            buffer_.reserve(kBodyReadSize);
        auto expect = parser_->get()[http::field::expect];
        if (beast::iequals(expect, "100-continue")) {
            static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
            beast::error_code wec;
            net::write(stream_.socket(), net::buffer(kContinue.data(), kContinue.size()), wec);
            if (wec) {
                close();
                return;
            }
        }
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
            ec == net::error::connection_reset || ec == net::error::operation_aborted ||
            ec == net::error::bad_descriptor) {
            close();
            return;
        }
        if (ec) {
            // What the refused request's body took goes back now, before the client can see the answer and
            // send its next request (not when this connection's parser goes).
            parser_->get().body().release();
            std::string().swap(parser_->get().body().data);
            int status = 400;
            std::string why = "bad request: " + ec.message();
            if (ec == http::error::header_limit) {
                status = 431;
                why = fmt::format("request header fields too large (limit {} bytes)",
                                  server_.options.header_limit_bytes);
            } else if (ec == http::error::body_limit && parser_->get().body().refused) {
                status = 503;
                why = fmt::format(
                    "the gateway holds as many request bodies as it may at once ({} MiB): try again later",
                    server_.request_bodies.limit() >> 20);
            } else if (ec == http::error::body_limit) {
                status = 413;
                why =
                    fmt::format("request body too large (limit {} bytes)", server_.options.body_limit_bytes);
            }
            spdlog::info("event=bad-request status={} error=\"{}\"", status, ec.message());
            keep_alive_ = false;
            send_text(static_cast<http::status>(status), why);
            return;
        }
        req_ = parser_->release();
        // An idle connection keeps a small buffer (1000 of them, each with 64 KiB, would be 64 MiB).
        if (buffer_.capacity() > 16 * 1024 && buffer_.size() == 0) buffer_.shrink_to_fit();
        keep_alive_ = req_.keep_alive() && !server_.stopping;
        route();
    }

    void route() {
        std::string_view target = sv(req_.target());
        // Only the path and query of an absolute form go on ("/" when it has no path: not in the target).
        std::string_view path = path_of(target);
        bool within = path.data() >= target.data() && path.data() <= target.data() + target.size();
        target = within ? target.substr(static_cast<size_t>(path.data() - target.data())) : path;
        auto method = req_.method();
        if (path.starts_with("/function/")) {
            invoke(path, target);
        } else if (path == "/healthz") {
            send_text(http::status::ok, "ok");
        } else if (path == "/metrics" && method == http::verb::get) {
            Response res{http::status::ok, req_.version()};
            res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
            server_.controller.metrics().set("initless_request_bodies_held_bytes", {},
                                             static_cast<double>(server_.request_bodies.held()));
            res.body() = server_.controller.metrics_text();
            send(std::move(res));
        } else if (path == "/system/functions" && method == http::verb::get) {
            send_json(http::status::ok, server_.controller.list());
        } else if (path == "/system/functions" && method == http::verb::post) {
            deploy();
        } else if (path == "/system/functions" && method == http::verb::delete_) {
            remove_function();
        } else if (path.starts_with("/system/function/") && method == http::verb::get) {
            auto d = server_.controller.describe(std::string(path.substr(17)));
            if (d)
                send_json(http::status::ok, *d);
            else
                send_text(http::status::not_found,
                          fmt::format("no function named '{}' is deployed", path.substr(17)));
        } else if (path.starts_with("/system/scale-function/") && method == http::verb::post) {
            scale(std::string(path.substr(23)));
        } else if (path == "/system/logs" && method == http::verb::get) {
            logs(target);
        } else if (path == "/system/stats" && method == http::verb::get) {
            send_json(http::status::ok, server_.controller.stats());
        } else {
            send_text(http::status::not_found,
                      fmt::format("no route for {} {}", std::string(req_.method_string()), path));
        }
    }

    // Whether this request may use the API; if not, it has been answered (401 or 403). See server.h.
    // Called with the request's head, before its body is read: a refusal closes the connection.
    bool api_allowed(const http::request_header<>& head) {
        const std::string& token = server_.options.api_token;
        unsigned version = head.version() ? head.version() : 11;
        // A web page is not a client of the API: functions are served on the same origin, so a page a
        // function serves (untrusted) could otherwise remove or deploy functions, or read others' logs,
        // through the browser of anyone on this host who opens it; any other site could send a form. A
        // browser says where a request comes from (Origin on any but a same-origin GET, Sec-Fetch-Site
        // on all; "none" is an address typed by the user); the CLI and curl send neither.
        auto site = sv(head["Sec-Fetch-Site"]);
        if (head.find(http::field::origin) != head.end() || (!site.empty() && site != "none")) {
            spdlog::info("event=api-refused client={} why=web-page", client_address());
            Response res{http::status::forbidden, version};
            res.set(http::field::content_type, "text/plain; charset=utf-8");
            res.body() =
                "the API does not take requests from web pages (this one carries Origin or Sec-Fetch-Site)\n";
            keep_alive_ = false;
            send(std::move(res));
            return false;
        }
        if (!token.empty()) {
            if (carries_api_token(sv(head[http::field::authorization]))) return true;
            spdlog::info("event=api-refused client={} why=token", client_address());
            Response res{http::status::unauthorized, version};
            res.set(http::field::www_authenticate, "Bearer realm=\"initless\"");
            res.set(http::field::content_type, "text/plain; charset=utf-8");
            res.body() = "the API wants Authorization: Bearer <the token of serve's --api-token-file>\n";
            keep_alive_ = false;
            send(std::move(res));
            return false;
        }
        beast::error_code ec;
        auto address = stream_.socket().remote_endpoint(ec).address();
        if (!ec && address.is_v6() && address.to_v6().is_v4_mapped())
            address = net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6());
        if (!ec && address.is_loopback()) return true;
        spdlog::info("event=api-refused client={} why=not-local", client_address());
        Response res{http::status::forbidden, version};
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() =
            "the API answers only clients on this host; start serve with --api-token-file to let others in "
            "with "
            "the token\n";
        keep_alive_ = false;
        send(std::move(res));
        return false;
    }

    // Whether an Authorization value is "Bearer <the API's token>".
    bool carries_api_token(std::string_view auth) const {
        const std::string& token = server_.options.api_token;
        constexpr std::string_view kBearer = "Bearer ";
        return !token.empty() && auth.size() > kBearer.size() &&
               beast::iequals(beast::string_view(auth.data(), kBearer.size()),
                              beast::string_view(kBearer.data(), kBearer.size())) &&
               same_secret(auth.substr(kBearer.size()), token);
    }

    // Compared in time that does not depend on where they differ (a client must not learn the token a
    // byte at a time from how fast it is refused).
    static bool same_secret(std::string_view a, std::string_view b) {
        unsigned char diff = a.size() == b.size() ? 0 : 1;
        for (size_t i = 0; i < a.size(); ++i)
            diff |= static_cast<unsigned char>(a[i] ^ (b.empty() ? 0 : b[i % b.size()]));
        return diff == 0;
    }

    const std::string& client_address() {
        if (client_address_.empty()) {
            beast::error_code ec;
            auto remote = stream_.socket().remote_endpoint(ec);
            client_address_ = ec ? "unknown" : remote.address().to_string();
        }
        return client_address_;
    }

    // ---- functions ----

    void invoke(std::string_view path, std::string_view target) {
        std::string_view rest = path.substr(10);
        auto slash = rest.find('/');
        function_ = std::string(rest.substr(0, slash));
        std::string forward_path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
        auto q = target.find('?');
        if (q != std::string_view::npos) forward_path += std::string(target.substr(q));
        if (function_.empty()) {
            send_text(http::status::not_found, "no function name in the path");
            return;
        }
        started_ = Clock::now();
        in_flight_ = InFlight(server_.in_flight);
        auto up = std::make_shared<Upstream>();
        client_address();  // for X-Forwarded-For
        up->body = std::move(req_.body());
        forward_head(up->head, forward_path, up->body.data.size());
        upstream_ = up;
        // A warm slot is found at once, on this thread, inside this connection's strand: dispatch then
        // runs on_acquired inline instead of queueing it.
        server_.controller.acquire(function_, [self = shared_from_this()](Acquired a) {
            net::dispatch(self->stream_.get_executor(),
                          [self, a = std::move(a)]() mutable { self->on_acquired(std::move(a)); });
        });
    }

    void on_acquired(Acquired a) {
        slot_ = std::move(a);
        if (slot_.error_status) {
            finish_error(static_cast<http::status>(slot_.error_status), slot_.error);
            return;
        }
        connect_upstream();
    }

    void connect_upstream() {
        auto& up = *upstream_;
        try {
            up.socket = take_upstream(*slot_.instance, loop_, up.reused);
        } catch (const std::exception& e) {
            upstream_failed(e.what());
            return;
        }
        exec_started_ = Clock::now();
        arm_deadline();
        if (up.reused)
            write_upstream();
        else
            when_connected(0);
    }

    // A new connection to the function is established before connect() returns (on loopback the
    // handshake runs in the connecting thread) unless the function's accept queue was full and its
    // kernel dropped the SYN; ours would then send it again only after 1 s, then 3, then 7 (1000
    // clients at once through the gateway against Node's backlog of 511: p99 of 1-7 s, 467 drops).
    // Such a connection is given a short while, then replaced by a new one, waiting 5 ms, 10, ... up
    // to 160 between tries (each with jitter); the function's timeout_s (arm_deadline) bounds the whole.
    void when_connected(int tries) {
        auto& up = *upstream_;
        if (!sys::tcp_connect_pending(up.socket->native_handle())) {
            write_upstream();
            return;
        }
        uint64_t wait = ++connect_wait_;
        up.socket->async_wait(
            tcp::socket::wait_write, [self = shared_from_this(), wait](beast::error_code ec) {
                if (wait != self->connect_wait_) return;  // given up on by the retry timer below
                ++self->connect_wait_;
                self->connect_retry_->cancel();
                if (ec) {
                    self->upstream_error(ec);  // the deadline closed it, say
                    return;
                }
                self->write_upstream();  // a refused connect shows there, as an error of the write
            });
        if (!connect_retry_) connect_retry_.emplace(loop_);
        // Half the step plus a random part of the other half: connections dropped together would
        // otherwise all try again together, and each such round gets one accept queue's worth in.
        thread_local std::minstd_rand jitter{std::random_device{}()};
        int step_us = 5000 << std::min(tries, 5);
        connect_retry_->expires_after(std::chrono::microseconds(
            step_us / 2 + std::uniform_int_distribution<int>(0, step_us / 2)(jitter)));
        connect_retry_->async_wait([self = shared_from_this(), wait, tries](beast::error_code ec) {
            if (ec || wait != self->connect_wait_) return;
            auto& up = *self->upstream_;
            if (!up.socket->is_open() || !sys::tcp_connect_pending(up.socket->native_handle()))
                return;  // connected meanwhile: its write-ready wait is about to run
            ++self->connect_wait_;
            spdlog::debug("event=upstream-connect-retry function={} try={}", self->function_, tries + 1);
            try {
                up.socket = new_upstream_socket(*self->slot_.instance, self->loop_);  // closes the old one
            } catch (const std::exception& e) {
                self->upstream_failed(e.what());
                return;
            }
            self->when_connected(tries + 1);
        });
    }

    // The request as the function gets it: the client's method, the path after the function's name
    // with the query, the client's fields but the hop-by-hop ones, then Host, X-Forwarded-For and
    // the body's length (as Beast's prepare_payload would: none for an empty body of a method that
    // takes none). Written here rather than by Beast's serializer from a second message: copying
    // every field into that message and serializing it through Beast's buffer sequences was about a
    // tenth of the daemon's CPU per warm request (perf, docs/bench/gateway.md). Names and values
    // come from Beast's parser, which refused any with a CR or LF.
    void forward_head(std::string& head, std::string_view target, size_t body_size) const {
        head.clear();
        head.reserve(512);
        head += sv(req_.method_string());
        head += ' ';
        head += target;
        head += " HTTP/1.1\r\n";
        for (const auto& field : req_)  // the API's token (a client sending it everywhere) never goes on
            if (!hop_by_hop(field.name()) && !named(field.name_string(), "X-Forwarded-For") &&
                !(field.name() == http::field::authorization && carries_api_token(sv(field.value()))))
                append_field(head, sv(field.name_string()), sv(field.value()));
        append_field(head, "Host", "localhost");
        append_field(head, "X-Forwarded-For", client_address_);
        auto method = req_.method();
        if (body_size > 0 || method == http::verb::post || method == http::verb::put ||
            method == http::verb::options)
            append_field(head, "Content-Length", std::to_string(body_size));
        head += "\r\n";
    }

    static void append_field(std::string& out, std::string_view name, std::string_view value) {
        out += name;
        out += ": ";
        out += value;
        out += "\r\n";
    }

    // Handlers of the upstream socket run on its executor, this connection's loop (the socket was
    // made on loop_), so they need no binding to the stream's.
    void write_upstream() {
        auto& up = *upstream_;
        uint64_t attempt = ++upstream_writes_;
        up.writing = true;
        up.read_early = false;
        up.request_cut = false;
        beast::error_code ec;
        size_t n = write_now(*up.socket, up.head, up.body.data, ec);
        if (ec || n == up.head.size() + up.body.data.size()) {
            on_upstream_written(ec, attempt);
            return;
        }
        up.written = n;
        up.read_early = true;
        write_upstream_rest(attempt);
        up.reads = 0;
        read_upstream_response();
    }

    // The rest of a request the function's socket did not take at once, a step at a time, each step
    // looking whether the write is still wanted before it makes the next: an answer that came first
    // ends it (on_upstream_head). Asio's composed async_write is not used here: a cancel reaches only
    // a step waiting in the reactor, and one whose completion was already queued went on writing, into
    // a socket and from buffers freed meanwhile (a review found it). The handler holds the Upstream,
    // so what a step in flight writes from lives until it ends.
    void write_upstream_rest(uint64_t attempt) {
        auto up = upstream_;
        std::array<net::const_buffer, 2> buffers{net::buffer(up->head), net::buffer(up->body.data)};
        beast::buffers_suffix<std::array<net::const_buffer, 2>> rest(buffers);
        rest.consume(up->written);
        up->socket->async_write_some(
            rest, [self = shared_from_this(), up, attempt](beast::error_code ec, size_t n) {
                // Given up (an answer came, the request ended, a retry on a new connection): touch nothing.
                if (attempt != self->upstream_writes_ || up != self->upstream_) return;
                up->written += n;
                if (!ec && up->written < up->head.size() + up->body.data.size()) {
                    self->write_upstream_rest(attempt);
                    return;
                }
                self->on_upstream_written(ec, attempt);
            });
    }

    // What non-blocking `socket` takes of head and body now, in one sendmsg (none when it is full: no
    // error then).
    static size_t write_now(tcp::socket& socket, std::string_view head, std::string_view body,
                            beast::error_code& ec) {
        std::array<net::const_buffer, 2> buffers{net::buffer(head), net::buffer(body)};
        size_t n = socket.write_some(buffers, ec);
        if (ec == net::error::would_block || ec == net::error::try_again) {
            ec = {};
            n = 0;
        }
        return n;
    }

    // Writes what `socket` takes at once, then the rest by an asynchronous write. A head and body
    // that fit in the socket's buffer (nearly every request and response) are then sent by one
    // sendmsg and `done` runs now: an asynchronous write that completes at once still queues its
    // completion, and Asio polls epoll once more before running it (two of a warm request's four
    // epoll_waits on one connection). The socket is non-blocking (set where it is made).
    template <class AsyncStream, class Done>
    void write_all(tcp::socket& socket, AsyncStream& stream, std::string_view head, std::string_view body,
                   Done&& done) {
        beast::error_code ec;
        size_t n = write_now(socket, head, body, ec);
        if (ec || n == head.size() + body.size()) {
            done(ec);
            return;
        }
        std::array<net::const_buffer, 2> buffers{net::buffer(head), net::buffer(body)};
        auto rest = std::make_shared<beast::buffers_suffix<std::array<net::const_buffer, 2>>>(buffers);
        rest->consume(n);
        net::async_write(
            stream, *rest,
            [rest, done = std::forward<Done>(done)](beast::error_code ec, size_t) mutable { done(ec); });
    }

    // The function's timeout_s for the request in flight. A connection has one timer wait at a
    // time: a request only moves deadline_at_, and a wait that ends before it waits again (arming
    // and cancelling the timer per request cost two handler runs and a queue update each).
    // A wait set for later than this request's deadline (an earlier request's, of a function with a
    // longer timeout_s, on the same connection) is replaced by one for it.
    void arm_deadline() {
        timed_out_ = false;
        deadline_armed_ = true;
        deadline_at_ = Clock::now() + std::chrono::seconds(slot_.instance->timeout_s());
        if (!deadline_waiting_ || deadline_->expiry() > deadline_at_) wait_deadline();
    }

    void wait_deadline() {
        if (!deadline_) deadline_.emplace(stream_.get_executor());
        deadline_waiting_ = true;
        uint64_t wait = ++deadline_wait_;
        deadline_->expires_at(deadline_at_);  // ends a pending wait (operation_aborted)
        deadline_->async_wait([self = shared_from_this(), wait](beast::error_code ec) {
            if (wait != self->deadline_wait_) return;  // a wait replaced by a sooner one
            self->deadline_waiting_ = false;
            if (ec || !self->deadline_armed_) return;
            if (Clock::now() < self->deadline_at_) {  // a later request's deadline
                self->wait_deadline();
                return;
            }
            if (!self->upstream_ || !self->upstream_->socket) return;
            self->timed_out_ = true;
            beast::error_code ignored;
            self->upstream_->socket->close(ignored);  // the pending read or write ends with an error
            // A response being passed on may be waiting for the client to take a piece instead.
            if (self->passing_) self->close();
        });
    }

    void disarm_deadline() { deadline_armed_ = false; }

    void on_upstream_written(beast::error_code ec, uint64_t attempt) {
        // A write of a connection given up (retried) or of a request over ends later than its successor
        // began.
        if (!upstream_ || upstream_writes_ != attempt) return;
        auto& up = *upstream_;
        up.writing = false;
        if (up.read_early) {
            // The read decides: a write ended by the answer (cancelled), or failing because the function
            // closed after answering, is no error of the exchange; a function that closed without
            // answering ends the read too.
            if (ec) up.request_cut = true;
            return;
        }
        if (ec) {
            upstream_error(ec);
            return;
        }
        up.reads = 0;
        read_upstream_response();
    }

    // Reads the head of the function's next response (the answer, or an interim one before it) with a
    // new parser, and with it any of the body that came in the same reads.
    void read_upstream_response() {
        auto& up = *upstream_;
        up.parser.emplace();
        // No limit on the body: one over kHeldResponseLimit is passed on as it arrives, not held.
        up.parser->body_limit(std::numeric_limits<uint64_t>::max());
        up.parser->header_limit(kUpstreamHeaderLimit);
        up.parser->eager(true);  // the body that came with the head is parsed with it (usually all of it)
        if (req_.method() == http::verb::head) up.parser->skip(true);
        http::async_read_header(
            up.reader, up.buffer, *up.parser,
            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_upstream_head(ec); });
    }

    void upstream_error(beast::error_code ec) {
        auto& up = *upstream_;
        beast::error_code ignored;
        if (up.socket) up.socket->close(ignored);
        if (timed_out_) {
            disarm_deadline();
            release_with_diagnosis(Outcome::TimedOut, http::status::gateway_timeout);
            return;
        }
        // A kept-alive connection the function closed meanwhile: once more on a new one.
        bool nothing_back = !up.parser || !up.parser->got_some();
        if (up.reused && !up.retried && nothing_back) {
            up.retried = true;
            up.reused = false;
            up.buffer.clear();
            up.parser.reset();
            try {
                up.socket = new_upstream_socket(*slot_.instance, loop_);
            } catch (const std::exception& e) {
                upstream_failed(e.what());
                return;
            }
            when_connected(0);
            return;
        }
        upstream_failed(ec == http::error::end_of_stream
                            ? "the function closed the connection before answering"
                        : ec == http::error::partial_message
                            ? "the function closed the connection in the middle of its response"
                            : "the connection to the function broke (" + ec.message() + ")");
    }

    void upstream_failed(const std::string& transport) {
        disarm_deadline();
        beast::error_code ignored;
        if (upstream_->socket) upstream_->socket->close(ignored);
        spdlog::debug("event=upstream-failed function={} error=\"{}\"", function_, transport);
        release_with_diagnosis(Outcome::UpstreamFailed, http::status::bad_gateway, transport);
    }

    // Gives the slot back after a failure; the controller's one-line diagnosis becomes the answer.
    void release_with_diagnosis(Outcome outcome, http::status status, std::string broken = {}) {
        auto self = shared_from_this();
        server_.controller.release(
            slot_, outcome,
            [self, status](std::string reason) {
                net::post(self->stream_.get_executor(),
                          [self, status, reason] { self->finish_error(status, reason); });
            },
            std::move(broken));
    }

    // A read of the function's response failed before its head was passed on.
    void upstream_read_failed(beast::error_code ec) {
        if (not_http(ec)) {
            refuse_response(ec == http::error::header_limit
                                ? fmt::format("the function's response head is over the limit ({} bytes)",
                                              kUpstreamHeaderLimit)
                                : "the function's response is not valid HTTP (" + ec.message() + ")");
            return;
        }
        upstream_error(ec);
    }

    // A response that is not HTTP, or over a limit, from a function that is still there: a 502 at once
    // (no wait for an exit that will not come); the connection is closed, the instance stays.
    void refuse_response(const std::string& why) {
        auto& up = *upstream_;
        disarm_deadline();
        beast::error_code ignored;
        up.socket->close(ignored);
        server_.controller.release(slot_, Outcome::Ok);
        finish_error(http::status::bad_gateway, why);
    }

    // Whether a read of the function's response failed on what it sent (Beast's parser refused it), not
    // on the connection (closed early, reset, aborted).
    static bool not_http(beast::error_code ec) {
        return ec.category() == http::make_error_code(http::error::header_limit).category() &&
               ec != http::error::end_of_stream && ec != http::error::partial_message;
    }

    void on_upstream_head(beast::error_code ec) {
        if (ec) {
            upstream_read_failed(ec);
            return;
        }
        auto& up = *upstream_;
        auto& parser = *up.parser;
        unsigned code = parser.get().result_int();
        if (code < 100 || code > 599 || code == 101) {
            // Beast takes any three digits. A 101 switches protocols, which the gateway never asked for
            // (it does not pass Upgrade on): passed on, it reached HTTP/1.0 clients too, with no framing.
            refuse_response(fmt::format("the function's response is not valid HTTP (status {})", code));
            return;
        }
        if (code < 200) {
            // An interim response (a 100 Continue from a server that saw no Expect, a 103): the answer
            // comes after it.
            read_upstream_response();
            return;
        }
        if (up.writing) {
            // The answer came before the function took the whole body: the rest is not sent (the step in
            // flight is cancelled: no read is pending now; one already done makes no next step), and the
            // connection is not kept.
            ++upstream_writes_;
            up.writing = false;
            up.request_cut = true;
            beast::error_code ignored;
            up.socket->cancel(ignored);
        }
        if (parser.is_done()) {  // the common case: head and body came together
            answer_held();
            return;
        }
        auto length = parser.content_length();
        if (!length || *length > up.buffer.capacity() - up.buffer.size()) up.buffer.reserve(kBodyReadSize);
        if (!parser.chunked() && length && *length <= kHeldResponseLimit) {
            http::async_read(up.reader, up.buffer, parser,
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                                 if (ec)
                                     self->upstream_read_failed(ec);
                                 else
                                     self->answer_held();
                             });
            return;
        }
        pass_on_response();
    }

    std::string server_timing(double exec_ms) const {
        std::string timing = "queue;dur=";
        append_ms(timing, slot_.queue_ms);
        timing += ", sandbox;dur=";
        append_ms(timing, slot_.sandbox_ms);
        timing += ", restore;dur=";
        append_ms(timing, slot_.restore_ms);
        timing += ", exec;dur=";
        append_ms(timing, exec_ms);
        return timing;
    }

    void log_start(unsigned status, double exec_ms) const {
        if (slot_.kind != controller::StartKind::Warm)
            spdlog::info(
                "event=invoke function={} start={} status={} queue_ms={:.2f} sandbox_ms={:.2f} "
                "restore_ms={:.2f} exec_ms={:.2f}",
                function_, controller::start_kind_name(slot_.kind), status, slot_.queue_ms, slot_.sandbox_ms,
                slot_.restore_ms, exec_ms);
    }

    // The upstream connection goes back to the instance's pool if the function keeps it alive and sent
    // nothing past its response, else it is closed.
    void done_with_upstream(bool keep_alive) {
        auto& up = *upstream_;
        if (keep_alive && up.buffer.size() == 0 && !up.request_cut) {
            give_back_upstream(*slot_.instance, std::move(up.socket));
        } else {
            beast::error_code ignored;
            up.socket->close(ignored);
        }
    }

    // The whole response is here: its head and body go to the client in one write.
    void answer_held() {
        auto& up = *upstream_;
        disarm_deadline();
        double exec_ms = ms_since(exec_started_);
        auto upstream_res = up.parser->release();
        unsigned status = upstream_res.result_int();
        response_body_ = std::move(upstream_res.body());  // none to a HEAD request (skipped)
        response_head(upstream_res, server_timing(exec_ms), response_body_.size());
        done_with_upstream(upstream_res.keep_alive());
        server_.controller.release(slot_, Outcome::Ok);
        log_start(status, exec_ms);
        record(status);
        upstream_.reset();
        slot_ = {};
        in_flight_.reset();
        stream_.expires_after(std::chrono::seconds(60));  // for what is not written at once
        write_all(stream_.socket(), stream_, response_head_, response_body_,
                  [self = shared_from_this()](beast::error_code ec) { self->after_write(ec); });
    }

    // A response too long to hold, or of no declared length (a stream of events, a download): its head
    // goes to the client now, and its body piece by piece as it arrives, each piece read from the
    // function only when the last was written (a slow client slows the function down rather than
    // filling the daemon's memory). The body keeps the function's declared length, or else is sent
    // chunked (to an HTTP/1.0 client: until the connection closes). The function's timeout_s bounds
    // the whole, as it does a held response; Server-Timing's exec is the time to the head. Should the
    // function fail or time out after the head, the client's connection is closed without the rest
    // (it sees a body shorter than declared, or no last chunk) and the instance is handled as for any
    // failed request.
    void pass_on_response() {
        // The request's body is not needed again (a request is sent again only when nothing came back)
        // and goes back to the budget now rather than when the client has read the whole response.
        upstream_->body = {};
        auto& parser = *upstream_->parser;
        double exec_ms = ms_since(exec_started_);
        auto length = parser.content_length();
        passing_chunked_ = !length && req_.version() >= 11;
        if (!length && !passing_chunked_) keep_alive_ = false;
        response_head(parser.get(), server_timing(exec_ms), length, passing_chunked_);
        passing_status_ = parser.get().result_int();
        passing_ = true;
        passing_keep_alive_ = parser.keep_alive();
        // With a declared length the rest is a count of bytes: read past the parser (read_piece).
        passing_declared_ = length.has_value();
        passing_left_ = length.value_or(0);
        log_start(passing_status_, exec_ms);
        pass_on_piece(std::move(response_head_));
    }

    // Writes `prefix` (the head, for the first piece) and what the parser has of the body, then reads on.
    void pass_on_piece(std::string prefix) {
        auto& parser = *upstream_->parser;
        std::string& body = parser.get().body();
        bool last = parser.is_done();
        passing_left_ -= std::min<uint64_t>(passing_left_, body.size());
        piece_head_ = std::move(prefix);
        piece_.clear();
        if (passing_chunked_ && !body.empty()) {
            piece_head_ += fmt::format("{:x}\r\n", body.size());
            body += "\r\n";
        }
        piece_.swap(body);  // the parser appends the next piece to an empty string
        if (passing_chunked_ && last) piece_ += "0\r\n\r\n";
        stream_.expires_after(std::chrono::seconds(60));
        write_all(
            stream_.socket(), stream_, piece_head_, piece_,
            [self = shared_from_this(), last](beast::error_code ec) { self->on_piece_written(ec, last); });
    }

    void on_piece_written(beast::error_code ec, bool last) {
        // The deadline may have closed both connections after this write completed, before this ran.
        if (!ec && timed_out_) ec = net::error::operation_aborted;
        // The client went away, or timeout_s passed while a piece waited for the client to take it (a
        // slow client, or a response longer than timeout_s allows): the instance stays.
        if (ec) {
            std::string reason = timed_out_ ? fmt::format(
                                                  "the response was still being sent to the client when "
                                                  "timeout_s ({} s) passed",
                                                  slot_.instance->timeout_s())
                                            : std::string("the client closed its connection");
            disarm_deadline();
            done_with_upstream(false);
            server_.controller.release(slot_, Outcome::Ok);
            end_cut(timed_out_ ? "timeout" : "client", reason);
            return;
        }
        if (!last) {
            read_piece();
            return;
        }
        disarm_deadline();
        // A function that sent more than it declared (read past, when reading straight from its socket)
        // must not have that taken for its answer to the next request on this connection.
        done_with_upstream(passing_keep_alive_ &&
                           sys::peek_stream(upstream_->socket->native_handle()) == sys::StreamPeek::Quiet);
        server_.controller.release(slot_, Outcome::Ok);
        end_passing_on();
        after_write({});
    }

    void read_piece() {
        auto& up = *upstream_;
        // A declared length with nothing left in the parser's buffer (a read can end inside a head) is a
        // count of bytes: spliced on.
        if (passing_declared_ && up.buffer.size() == 0 && !pipe_ && !no_pipe_) {
            try {
                pipe_.emplace(kSplicePipeSize);
            } catch (const Error& e) {  // out of fds, say: the parser's path below still works
                spdlog::warn("event=no-splice-pipe error=\"{}\"", e.what());
                no_pipe_ = true;
            }
        }
        if (pipe_ && up.buffer.size() == 0) {
            splice_on();
            return;
        }
        // Chunked, or until the function closes (the parser finds the end), or what the buffer holds.
        watch_client();
        http::async_read_some(
            up.reader, up.buffer, *up.parser,
            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_piece_read(ec); });
    }

    // Moves the body on through the pipe until a side has to be waited for (then that wait calls this
    // again) or a turn's worth went (then this is posted again). One operation at a time is pending, on
    // one side, as for the other paths, and its failure goes where theirs would: on_piece_read for the
    // function's side, on_piece_written for the client's.
    void splice_on() {
        auto& up = *upstream_;
        size_t moved = 0;
        while (moved < kSpliceTurn) {
            if (pipe_->held() == 0) {
                if (passing_left_ == 0) {
                    on_piece_written({}, true);
                    return;
                }
                ssize_t n = pipe_->fill(up.socket->native_handle(), static_cast<size_t>(passing_left_));
                if (n == 0) {
                    on_piece_read(http::error::partial_message);
                    return;
                }
                if (n < 0 && errno != EAGAIN) {
                    on_piece_read(beast::error_code(errno, beast::system_category()));
                    return;
                }
                if (n < 0) {
                    watch_client();
                    up.socket->async_wait(tcp::socket::wait_read,
                                          [self = shared_from_this()](beast::error_code ec) {
                                              if (ec)
                                                  self->on_piece_read(ec);
                                              else
                                                  self->splice_on();
                                          });
                    return;
                }
                passing_left_ -= static_cast<uint64_t>(n);
            }
            ssize_t m = pipe_->drain(stream_.socket().native_handle());
            if (m < 0 && errno != EAGAIN) {
                on_piece_written(beast::error_code(errno, beast::system_category()), false);
                return;
            }
            if (m < 0) {
                stream_.socket().async_wait(tcp::socket::wait_write,
                                            [self = shared_from_this()](beast::error_code ec) {
                                                if (ec)
                                                    self->on_piece_written(ec, false);
                                                else
                                                    self->splice_on();
                                            });
                return;
            }
            moved += static_cast<size_t>(m);
        }
        net::post(stream_.get_executor(), [self = shared_from_this()] { self->splice_on(); });
    }

    // While the function is waited for (a stream of events waits between them), a client that leaves is
    // noticed: its connection becomes readable (the end of its stream), the function's is closed, and the
    // read waiting on it ends in on_piece_read, which frees the slot. Otherwise the instance's slot stayed
    // taken until timeout_s. A client that sent its next request early is not watched further (its bytes
    // wait for read()).
    void watch_client() {
        if (watching_client_) return;
        watching_client_ = true;
        uint64_t watch = ++client_watch_;
        stream_.socket().async_wait(
            tcp::socket::wait_read, [self = shared_from_this(), watch](beast::error_code ec) {
                if (watch != self->client_watch_) return;  // the response ended meanwhile (end_passing_on)
                self->watching_client_ = false;
                if (ec || !self->passing_ ||
                    sys::peek_stream(self->stream_.socket().native_handle()) != sys::StreamPeek::Closed)
                    return;
                self->client_gone_ = true;
                beast::error_code ignored;
                if (self->upstream_ && self->upstream_->socket) self->upstream_->socket->close(ignored);
            });
    }

    void on_piece_read(beast::error_code ec) {
        if (!ec && timed_out_) ec = net::error::operation_aborted;  // see on_piece_written
        if (!ec && client_gone_) ec = net::error::operation_aborted;
        if (ec && client_gone_) {
            disarm_deadline();
            server_.controller.release(slot_, Outcome::Ok);
            end_cut("client", "the client closed its connection");
            return;
        }
        if (!ec) {
            pass_on_piece({});
            return;
        }
        // The head is out: the client can only be told by the connection closing early.
        auto& up = *upstream_;
        beast::error_code ignored;
        up.socket->close(ignored);
        bool timed_out = timed_out_;
        disarm_deadline();
        std::string broken = timed_out ? fmt::format("the response was not over when timeout_s ({} s) passed",
                                                     slot_.instance->timeout_s())
                             : ec == http::error::partial_message
                                 ? "the function closed the connection in the middle of its response"
                             : not_http(ec)
                                 ? "the function's response body is not valid HTTP (" + ec.message() + ")"
                                 : "the connection to the function broke (" + ec.message() + ")";
        bool invalid = !timed_out && not_http(ec);
        const char* why = timed_out ? "timeout" : invalid ? "invalid" : "function";
        auto cut = [self = shared_from_this(), why](std::string reason) {
            net::post(self->stream_.get_executor(), [self, why, reason] { self->end_cut(why, reason); });
        };
        // A function whose body is not HTTP is alive, and one whose head came within timeout_s has not hung
        // (a stream of events waits between them; other requests may be on the instance): the instance
        // stays. One that no longer answers at all is found by its next request's timeout.
        if (invalid || timed_out) {
            server_.controller.release(slot_, Outcome::Ok);
            cut(broken);
            return;
        }
        server_.controller.release(slot_, Outcome::UpstreamFailed, cut, broken);
    }

    // A response passed on ends early, its slot released: counted (`why`: client, timeout, function,
    // invalid), logged with `reason`, and the client's connection closed, the only way to tell it.
    void end_cut(const char* why, const std::string& reason) {
        server_.controller.metrics().add("gateway_responses_cut_total",
                                         {{"function_name", function_}, {"why", why}});
        spdlog::info("event=invoke-cut function={} status={} reason=\"{}\"", function_, passing_status_,
                     reason);
        end_passing_on();
        close();
    }

    void end_passing_on() {
        passing_ = false;
        client_gone_ = false;
        if (watching_client_) {  // nothing else is pending on the client's socket at this point
            watching_client_ = false;
            ++client_watch_;
            beast::error_code ignored;
            stream_.socket().cancel(ignored);
        }
        passing_left_ = 0;
        pipe_.reset();
        no_pipe_ = false;
        record(passing_status_);
        upstream_.reset();
        slot_ = {};
        in_flight_.reset();
        piece_.clear();
        piece_.shrink_to_fit();
    }

    // The head of a function's response to the client: its status and fields but the hop-by-hop
    // ones and Server, then ours, the body's length (or chunked) and the connection's fate, as `send`
    // would have Beast write them (see forward_head for why not through a Beast message). Needs slot_.
    void response_head(const http::response_header<>& res, const std::string& timing,
                       boost::optional<uint64_t> length, bool chunked = false) {
        std::string& h = response_head_;
        h.clear();
        h.reserve(512);
        h += req_.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
        unsigned status = res.result_int();
        h += std::to_string(status);
        h += ' ';
        // The function's own reason phrase (Beast's parser allows no CR or LF in it), else the code's
        // (none for a code HTTP does not name: an empty phrase is valid).
        if (!res.reason().empty())
            h += sv(res.reason());
        else if (http::int_to_status(status) != http::status::unknown)
            h += sv(http::obsolete_reason(res.result()));
        h += "\r\n";
        for (const auto& field : res)
            if (!hop_by_hop(field.name()) && field.name() != http::field::server &&
                !gateway_response_field(field.name_string()))
                append_field(h, sv(field.name_string()), sv(field.value()));
        append_field(h, "Server-Timing", timing);
        append_field(h, "X-Initless-Start", controller::start_kind_name(slot_.kind));
        append_field(h, "X-Initless-Instance", slot_.instance->id());
        append_field(h, "Server", "initless");
        bool bodiless = status / 100 == 1 || status == 204 || status == 304;
        if (req_.method() == http::verb::head) {
            // The length of the GET it stands for, as the function said it (Beast checked it is one).
            auto declared = res.find(http::field::content_length);
            if (declared != res.end()) append_field(h, "Content-Length", sv(declared->value()));
        } else if (!bodiless && length) {
            append_field(h, "Content-Length", std::to_string(*length));
        } else if (!bodiless && chunked) {
            append_field(h, "Transfer-Encoding", "chunked");
        }
        if (req_.version() >= 11 && !keep_alive_) append_field(h, "Connection", "close");
        if (req_.version() < 11 && keep_alive_) append_field(h, "Connection", "keep-alive");
        h += "\r\n";
    }

    void finish_error(http::status status, std::string why) {  // a copy: `why` may be slot_.error
        // No series for a name nobody deployed: they are never erased, so a client naming new
        // functions would grow the daemon's memory (and /metrics) without end.
        if (status != http::status::not_found) record(static_cast<unsigned>(status));
        spdlog::info("event=invoke-error function={} status={} reason=\"{}\"", function_,
                     static_cast<unsigned>(status), why);
        upstream_.reset();
        slot_ = {};
        in_flight_.reset();
        send_text(status, why);
    }

    // The two gateway metrics of a request. Their samples are looked up once per function and
    // status on this connection (a client calling one function keeps hitting the same two).
    void record(unsigned status) {
        auto& m = server_.controller.metrics();
        if (metrics_function_ != function_) {
            metrics_function_ = function_;
            seconds_ = m.histogram("gateway_functions_seconds", {{"function_name", function_}});
            invocations_.clear();
        }
        auto it = std::find_if(invocations_.begin(), invocations_.end(),
                               [status](const auto& c) { return c.first == status; });
        if (it == invocations_.end()) {
            invocations_.emplace_back(
                status, m.counter("gateway_function_invocation_total",
                                  {{"function_name", function_}, {"code", std::to_string(status)}}));
            it = std::prev(invocations_.end());
        }
        m.record(it->second, seconds_, ms_since(started_) / 1000);
    }

    // ---- admin ----

    void deploy() {
        std::string path;
        try {
            json body = json::parse(req_.body().data);
            path = body.at("path").get<std::string>();
        } catch (const std::exception& e) {
            send_text(http::status::bad_request,
                      std::string("deploy wants a JSON body {\"path\": \"/function/dir\"}: ") + e.what());
            return;
        }
        if (path.empty() || path.front() != '/') {
            send_text(http::status::bad_request, "deploy: the path must be absolute");
            return;
        }
        bool stream = sv(req_[http::field::accept]).find("application/x-ndjson") != std::string_view::npos;
        auto self = shared_from_this();
        if (stream) begin_stream("application/x-ndjson");
        server_.controller.deploy(path, [self, stream](const json& event) {
            net::post(self->stream_.get_executor(), [self, stream, event] {
                bool end = event.contains("ok") || event.contains("error");
                if (stream) {
                    self->stream_chunk(event.dump() + "\n", end);
                } else if (end) {
                    if (event.contains("error"))
                        self->send_json(http::status::unprocessable_entity, event);
                    else
                        self->send_json(http::status::created, event);
                }
            });
        });
    }

    void remove_function() {
        std::string name = query_param(sv(req_.target()), "name");
        if (name.empty()) {
            try {
                name = json::parse(req_.body().data).at("functionName").get<std::string>();
            } catch (const std::exception&) {
                send_text(http::status::bad_request,
                          "remove wants {\"functionName\": \"<name>\"} or ?name=<name>");
                return;
            }
        }
        bool removed = false;
        try {
            removed = server_.controller.remove(name);
        } catch (const Error& e) {
            send_text(http::status::service_unavailable, e.what());
            return;
        }
        if (removed)
            send_text(http::status::accepted, fmt::format("removed {}", name));
        else
            send_text(http::status::not_found, fmt::format("no function named '{}' is deployed", name));
    }

    void scale(const std::string& name) {
        uint32_t replicas = 0;
        try {
            replicas = json::parse(req_.body().data).at("replicas").get<uint32_t>();
        } catch (const std::exception&) {
            send_text(http::status::bad_request, "scale wants {\"replicas\": N}");
            return;
        }
        auto r = server_.controller.scale(name, replicas);
        if (r)
            send_json(http::status::accepted, *r);
        else
            send_text(http::status::not_found, fmt::format("no function named '{}' is deployed", name));
    }

    void logs(std::string_view target) {
        std::string name = query_param(target, "name");
        auto path = server_.controller.log_path(name);
        if (!path) {
            send_text(http::status::not_found, fmt::format("no function named '{}' is deployed", name));
            return;
        }
        log_path_ = *path;
        log_function_ = name;
        bool follow = query_param(target, "follow") == "1" || query_param(target, "follow") == "true";
        std::string text;
        try {
            sys::UniqueFd fd = sys::open_file(log_path_, O_RDONLY);
            text = sys::read_from(fd.get(), 0, 64u << 20);
            struct stat st {};
            if (::fstat(fd.get(), &st) == 0) log_ino_ = st.st_ino;
        } catch (const Error&) {
        }
        log_offset_ = text.size();
        if (!follow) {
            send_text(http::status::ok, text, false);
            return;
        }
        begin_stream("text/plain; charset=utf-8");
        if (!text.empty()) stream_chunk(text, false);
        follow_logs();
    }

    void follow_logs() {
        if (!timer_) timer_.emplace(stream_.get_executor());
        timer_->expires_after(std::chrono::milliseconds(200));
        timer_->async_wait([self = shared_from_this()](beast::error_code ec) {
            if (ec || self->stream_failed_) return;
            if (self->server_.stopping) {
                self->stream_chunk("", true);
                return;
            }
            // A client that left is noticed here, not at the next write: a quiet log has none, and the
            // session (its socket, this timer) stayed until the daemon stopped.
            if (sys::peek_stream(self->stream_.socket().native_handle()) == sys::StreamPeek::Closed) {
                self->close();
                return;
            }
            if (!self->server_.controller.log_path(self->log_function_)) {
                self->stream_chunk("[initless: the function was removed]\n", true);
                return;
            }
            // Read on only once the client took what was sent: one that does not read holds at most
            // one piece here, not the log as it grows.
            if (self->writing_ || !self->pending_.empty()) {
                self->follow_logs();
                return;
            }
            std::string more;
            try {
                sys::UniqueFd fd = sys::open_file(self->log_path_, O_RDONLY);
                // The log is replaced by its newer half past its limit: the offset into the old one
                // means nothing in the new one, which is followed from its end.
                std::string notice;
                struct stat st {};
                if (::fstat(fd.get(), &st) == 0 && st.st_ino != self->log_ino_) {
                    // (A log that did not exist yet when the follow began is read from its start.)
                    if (self->log_ino_ != 0) {
                        self->log_offset_ = static_cast<uint64_t>(st.st_size);
                        notice = "[initless: the log was cut to its newer half here; lines may be missing]\n";
                    }
                    self->log_ino_ = st.st_ino;
                }
                more = sys::read_from(fd.get(), self->log_offset_, 1 << 20);
                self->log_offset_ += more.size();
                more.insert(0, notice);
            } catch (const Error&) {
            }
            if (!more.empty()) self->stream_chunk(more, false);
            self->follow_logs();
        });
    }

    // ---- responses ----

    void send_text(http::status status, const std::string& text, bool newline = true) {
        Response res{status, req_.version() ? req_.version() : 11};
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() = text + (newline && (text.empty() || text.back() != '\n') ? "\n" : "");
        send(std::move(res));
    }

    void send_json(http::status status, const json& j) {
        Response res{status, req_.version() ? req_.version() : 11};
        res.set(http::field::content_type, "application/json");
        res.body() = j.dump() + "\n";
        send(std::move(res));
    }

    void send(Response res) {
        res.set(http::field::server, "initless");
        res.keep_alive(keep_alive_);
        res.prepare_payload();
        auto msg = std::make_shared<Response>(std::move(res));
        stream_.expires_after(std::chrono::seconds(60));
        http::async_write(stream_, *msg, [self = shared_from_this(), msg](beast::error_code ec, size_t) {
            self->after_write(ec);
        });
    }

    void after_write(beast::error_code ec) {
        if (ec || !keep_alive_) {
            close();
            return;
        }
        read();
    }

    // A chunked response whose body is written as it is produced (deploy steps, followed logs).
    void begin_stream(const char* content_type) {
        stream_res_.emplace(http::status::ok, req_.version());
        stream_res_->set(http::field::server, "initless");
        stream_res_->set(http::field::content_type, content_type);
        stream_res_->chunked(true);
        stream_res_->keep_alive(false);
        keep_alive_ = false;
        stream_sr_.emplace(*stream_res_);
        writing_ = true;
        stream_.expires_never();
        http::async_write_header(stream_, *stream_sr_,
                                 [self = shared_from_this()](beast::error_code ec, size_t) {
                                     self->writing_ = false;
                                     if (ec) self->stream_failed_ = true;
                                     self->write_next_chunk();
                                 });
    }

    void stream_chunk(std::string data, bool last) {
        if (!data.empty()) pending_.push_back({std::move(data), false});
        if (last) pending_.push_back({std::string(), true});
        if (!writing_) write_next_chunk();
    }

    void write_next_chunk() {
        if (stream_failed_) {
            pending_.clear();
            close();
            return;
        }
        if (pending_.empty() || writing_) return;
        auto item = std::make_shared<std::pair<std::string, bool>>(std::move(pending_.front()));
        pending_.pop_front();
        writing_ = true;
        auto done = [self = shared_from_this(), item](beast::error_code ec, size_t) {
            self->writing_ = false;
            self->stream_.expires_never();  // between pieces the stream waits for the log, not the client
            if (ec) self->stream_failed_ = true;
            if (item->second) {
                self->close();
                return;
            }
            self->write_next_chunk();
        };
        // A client that takes no piece for a minute is gone as far as this stream is concerned.
        stream_.expires_after(std::chrono::seconds(60));
        if (item->second)
            net::async_write(stream_, http::make_chunk_last(), done);
        else
            net::async_write(stream_, http::make_chunk(net::buffer(item->first)), done);
    }

    void close() {
        if (timer_) timer_->cancel();
        if (deadline_) deadline_->cancel();  // its wait holds this session
        if (connect_retry_) connect_retry_->cancel();
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        stream_.socket().close(ec);
    }

    beast::tcp_stream stream_;
    Server::Impl& server_;
    net::io_context& loop_;         // the loop this connection lives on (its upstream sockets too)
    uint64_t upstream_writes_ = 0;  // requests written to functions (see on_upstream_written)
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<RequestBody>> parser_;
    http::request<RequestBody> req_;
    bool keep_alive_ = true;

    std::string function_;
    std::string client_address_;
    Clock::time_point started_, exec_started_;
    std::shared_ptr<Upstream> upstream_;
    std::string response_head_, response_body_;  // a function's response on its way to the client
    std::string piece_head_, piece_;             // a piece of a response passed on (pass_on_piece)
    bool passing_ = false;                       // a response's head is out, its body being passed on
    bool passing_chunked_ = false;               // the response passed on goes chunked to the client
    bool passing_keep_alive_ = false;            // the function keeps its connection after it
    bool passing_declared_ = false;              // its length was declared: passing_left_ counts it down
    uint64_t passing_left_ = 0;                  // of its declared length, not read yet
    std::optional<sys::SplicePipe> pipe_;        // while a declared length is spliced on
    bool no_pipe_ = false;                       // none could be made for this response
    bool watching_client_ = false, client_gone_ = false;  // see watch_client
    uint64_t client_watch_ = 0;                           // the current watch's number
    unsigned passing_status_ = 0;
    std::string metrics_function_;  // whose samples the two below are
    controller::Metrics::HistogramRef seconds_;
    std::vector<std::pair<unsigned, controller::Metrics::CounterRef>> invocations_;
    Acquired slot_;
    InFlight in_flight_;  // held from routing a function request to writing its answer
    std::optional<net::steady_timer> deadline_;
    Clock::time_point deadline_at_;
    bool deadline_armed_ = false, deadline_waiting_ = false;
    uint64_t deadline_wait_ = 0;                      // the current wait's number
    std::optional<net::steady_timer> connect_retry_;  // see when_connected
    uint64_t connect_wait_ = 0;                       // the current connect wait's number
    bool timed_out_ = false;

    std::optional<http::response<http::empty_body>> stream_res_;
    std::optional<http::response_serializer<http::empty_body>> stream_sr_;
    std::deque<std::pair<std::string, bool>> pending_;
    bool writing_ = false, stream_failed_ = false;
    std::optional<net::steady_timer> timer_;
    std::filesystem::path log_path_;
    uint64_t log_offset_ = 0;
    std::string log_function_;  // whose log is followed
    ino_t log_ino_ = 0;         // the followed log's inode (replaced when it is cut)
};

}  // namespace

void Server::Impl::accept() {
    net::io_context& loop = loops[next_loop++ % loops.size()]->ioc;
    acceptor.async_accept(loop, [this, &loop](beast::error_code ec, tcp::socket socket) {
        if (ec) {
            if (!stopping && ec != net::error::operation_aborted) {
                spdlog::warn("event=accept-failed error=\"{}\"", ec.message());
                // Out of fds, say: try again shortly rather than spin.
                auto t = std::make_shared<net::steady_timer>(ioc, std::chrono::milliseconds(50));
                t->async_wait([this, t](beast::error_code) { accept(); });
            }
            return;
        }
        try {
            sys::set_cloexec(socket.native_handle());
        } catch (const Error&) {
        }
        beast::error_code nd;
        socket.set_option(tcp::no_delay(true), nd);
        socket.non_blocking(true, nd);  // see Session::write_all
        std::make_shared<Session>(std::move(socket), *this, loop)->start();
        accept();
    });
}

Server::Server(controller::Controller& controller, ServerOptions options)
    : impl_(std::make_unique<Impl>(controller, std::move(options))) {}

Server::~Server() {
    if (impl_->shutdown_thread.joinable()) impl_->shutdown_thread.join();
}

void Server::run(const std::function<void(uint16_t)>& ready) {
    auto& I = *impl_;
    auto [host, port] = parse_address(I.options.listen);
    beast::error_code ec;
    auto address = net::ip::make_address(host, ec);
    if (ec) throw Error(fmt::format("listen address '{}': {}", host, ec.message()));
    tcp::endpoint endpoint{address, port};
    I.acceptor.open(endpoint.protocol(), ec);
    if (!ec) sys::set_cloexec(I.acceptor.native_handle());
    if (!ec) I.acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) I.acceptor.bind(endpoint, ec);
    if (!ec) I.acceptor.listen(4096, ec);
    if (ec) throw Error(fmt::format("listen on {}: {}", I.options.listen, ec.message()));
    uint16_t bound = I.acceptor.local_endpoint().port();
    I.signals.async_wait([&I](beast::error_code ec, int sig) {
        if (!ec) I.begin_stop(sig == SIGTERM ? "SIGTERM" : "SIGINT");
    });
    I.accept();
    for (auto& l : I.loops) l->beat();
    spdlog::info("event=listening address={}:{}", host, bound);
    if (ready) ready(bound);
    std::vector<std::thread> threads;
    auto spin = std::chrono::microseconds(I.options.spin_us);
    for (size_t i = 1; i < I.loops.size(); ++i)
        threads.emplace_back([&I, i, spin] { I.loops[i]->run(spin, I.in_flight); });
    I.loops[0]->run(spin, I.in_flight);
    for (auto& t : threads) t.join();
    if (I.shutdown_thread.joinable()) I.shutdown_thread.join();
}

void Server::stop() {
    net::post(impl_->ioc, [this] { impl_->begin_stop("stop"); });
}

}  // namespace initless::gateway
