// TCP sockets (IPv4 and IPv6). Checkpoint (through a copy of the fd), by the socket's TCP state:
// a listener keeps its address, backlog (the kernel reports a listener's limit in tcpi_sacked) and
// the options a server sets (one with connections waiting to be accepted is refused); a connection
// (established, half-closed, connecting, or ended with its fd still open) is restored reset, so a
// function that reconnects on failure goes on, and the snapshot lists it (a live one is refused
// instead with `refuse_tcp_connections`, and always for a request still open on the function's own
// port); a socket never connected is made again as it was.
// Restore: listeners socket, options, bind, listen; connections a socket reset over loopback (see
// plan_create for TcpConnectionFd); unconnected sockets socket, options, bind if they were bound.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/inspect.h"
#include "initless/sys/process.h"
#include "state/kinds.h"

namespace initless::state::tcp {

namespace {

const char* state_name(int state) {
    switch (state) {
        case TCP_ESTABLISHED:
            return "established";
        case TCP_SYN_SENT:
            return "connecting";
        case TCP_SYN_RECV:
            return "being accepted";
        case TCP_FIN_WAIT1:
        case TCP_FIN_WAIT2:
        case TCP_CLOSING:
            return "closed by the function, peer still sending";
        case TCP_CLOSE_WAIT:
            return "closed by the peer";
        case TCP_LAST_ACK:
            return "closing";
        case TCP_TIME_WAIT:
            return "time-wait";
    }
    return "?";
}

std::vector<image::SocketOption> read_options(int sock, int domain) {
    std::vector<image::SocketOption> options;
    for (auto [level, name] : {std::pair{SOL_SOCKET, SO_REUSEADDR},
                               {SOL_SOCKET, SO_REUSEPORT},
                               {SOL_SOCKET, SO_KEEPALIVE},
                               {IPPROTO_TCP, TCP_NODELAY},
                               {IPPROTO_TCP, TCP_DEFER_ACCEPT}})
        options.push_back({level, name, sys::socket_option(sock, level, name)});
    if (domain == AF_INET6)
        options.push_back({IPPROTO_IPV6, IPV6_V6ONLY, sys::socket_option(sock, IPPROTO_IPV6, IPV6_V6ONLY)});
    return options;
}

void plan_options(Table& t, Region& region, const std::vector<image::SocketOption>& options,
                  const std::string& what) {
    for (const auto& opt : options) {
        int v = opt.value;
        t.op(SYS_setsockopt,
             {0, static_cast<uint64_t>(opt.level), static_cast<uint64_t>(opt.name), region.put(v),
              sizeof(int)},
             -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " setsockopt");
    }
}

}  // namespace

std::optional<image::FdObject> read(const FdSource& s) {
    if (!S_ISSOCK(s.st.st_mode)) return std::nullopt;
    sys::UniqueFd sock = sys::pidfd_getfd(s.pidfd, s.fd);
    int domain = sys::socket_option(sock.get(), SOL_SOCKET, SO_DOMAIN);
    int type = sys::socket_option(sock.get(), SOL_SOCKET, SO_TYPE);
    if ((domain != AF_INET && domain != AF_INET6) || type != SOCK_STREAM ||
        sys::socket_option(sock.get(), SOL_SOCKET, SO_PROTOCOL) != IPPROTO_TCP)
        return std::nullopt;
    auto where = fmt::format("process {} fd {}", s.pid, s.fd);
    int state = sys::tcp_state(sock.get());
    if (state == TCP_LISTEN) {
        // A connection waiting in the queue would be lost (its client keeps a connection no restored
        // listener knows): the platform's own warmup request still arriving, most likely; the
        // snapshot builder tries again a moment later (the message says "connection").
        if (int queued = sys::tcp_accept_queue(sock.get()); queued > 0)
            throw ContractError(fmt::format(
                "{}: a TCP listening socket ({}) with {} connection(s) waiting to be accepted; rule: "
                "accept pending connections before ready",
                where, sys::describe_address(sys::socket_name(sock.get())), queued));
        image::TcpListenFd l;
        l.domain = domain;
        l.type = type;
        l.address = sys::socket_name(sock.get());
        l.backlog = sys::tcp_listen_backlog(sock.get());
        l.options = read_options(sock.get(), domain);
        return l;
    }
    // A socket in TCP_CLOSE that has exchanged segments is a connection that ended (reset, closed from
    // both sides, or a connect refused) whose fd the function kept: restored as a reset connection
    // below, never bound again, since its local address may be its listener's port (an accepted end).
    bool ended = state == TCP_CLOSE && sys::tcp_exchanged_segments(sock.get());
    if (state == TCP_CLOSE && !ended) {
        // Never connected: a plain socket, bound again to its address if it had a port.
        image::TcpUnconnectedFd u;
        u.domain = domain;
        u.type = type;
        std::vector<uint8_t> address = sys::socket_name(sock.get());
        if (sys::address_port(address)) u.address = std::move(address);
        u.options = read_options(sock.get(), domain);
        return u;
    }
    image::TcpConnectionFd c;
    c.domain = domain;
    c.type = type;
    c.state = state;
    c.local = sys::socket_name(sock.get());
    c.peer = sys::peer_name(sock.get());
    if (ended) {
        // Nothing is held open: not a request in flight nor a connection the contract forbids.
        std::string described = fmt::format("a TCP connection {} that ended", sys::describe_address(c.local));
        if (s.context)
            s.context->notes.push_back(
                fmt::format("{}: {}, restored as a reset connection", where, described));
        return c;
    }
    std::string described = fmt::format("a TCP connection {} -> {} ({})", sys::describe_address(c.local),
                                        sys::describe_address(c.peer), state_name(state));
    // A connection accepted on the function's own port is a request (the snapshot's warmup) the
    // function has not finished: the builder tries again a moment later (the message says "connection").
    if (s.context && s.context->port && sys::address_port(c.local) == s.context->port)
        throw ContractError(
            fmt::format("{}: {} on the function's port is a request still open; rule: "
                        "answer every request before the snapshot",
                        where, described));
    if (!s.context || s.context->refuse_tcp_connections)
        throw ContractError(
            fmt::format("{}: {}; rule: hold no connections when ready "
                        "(refuse_tcp_connections = true), reconnect after restore",
                        where, described));
    s.context->notes.push_back(fmt::format(
        "{}: {}, restored as a reset connection (the function must reconnect)", where, described));
    return c;
}

void store(json& j, const image::TcpListenFd& f) {
    json options = json::array();
    for (const auto& o : f.options) options.push_back({o.level, o.name, o.value});
    j["domain"] = f.domain;
    j["type"] = f.type;
    j["address"] = hex(f.address);
    j["options"] = std::move(options);
    j["backlog"] = f.backlog;
}

void load(const json& j, image::TcpListenFd& f) {
    f.domain = j.at("domain");
    f.type = j.at("type");
    f.address = unhex(j.at("address"));
    for (const auto& o : j.at("options")) f.options.push_back({o[0], o[1], o[2]});
    f.backlog = j.at("backlog");
}

void store(json& j, const image::TcpConnectionFd& f) {
    j["domain"] = f.domain;
    j["type"] = f.type;
    j["state"] = f.state;
    j["local"] = hex(f.local);
    j["peer"] = hex(f.peer);
}

void load(const json& j, image::TcpConnectionFd& f) {
    f.domain = j.at("domain");
    f.type = j.at("type");
    f.state = j.at("state");
    f.local = unhex(j.at("local"));
    f.peer = unhex(j.at("peer"));
}

void store(json& j, const image::TcpUnconnectedFd& f) {
    json options = json::array();
    for (const auto& o : f.options) options.push_back({o.level, o.name, o.value});
    j["domain"] = f.domain;
    j["type"] = f.type;
    j["address"] = hex(f.address);
    j["options"] = std::move(options);
}

void load(const json& j, image::TcpUnconnectedFd& f) {
    f.domain = j.at("domain");
    f.type = j.at("type");
    f.address = unhex(j.at("address"));
    for (const auto& o : j.at("options")) f.options.push_back({o[0], o[1], o[2]});
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::TcpListenFd& o) {
    std::string what = fmt::format("fd {}", f.fd);
    uint64_t nonblock = (f.flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
    t.op(SYS_socket, {static_cast<uint64_t>(o.domain), static_cast<uint64_t>(o.type) | nonblock, 0}, kTmp, 0,
         {}, what + " socket");
    plan_options(t, region, o.options, what);
    t.op(SYS_bind, {0, region.put(o.address.data(), o.address.size()), o.address.size()}, -1, 0, {{0, kTmp}},
         what + " bind");
    t.op(SYS_listen, {0, static_cast<uint64_t>(o.backlog > 0 ? o.backlog : 4096)}, -1, 0, {{0, kTmp}},
         what + " listen");
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::TcpUnconnectedFd& o) {
    std::string what = fmt::format("fd {}", f.fd);
    t.op(SYS_socket, {static_cast<uint64_t>(o.domain), static_cast<uint64_t>(o.type), 0}, kTmp, 0, {},
         what + " socket");
    plan_options(t, region, o.options, what);
    if (!o.address.empty())
        t.op(SYS_bind, {0, region.put(o.address.data(), o.address.size()), o.address.size()}, -1, 0,
             {{0, kTmp}}, what + " bind");
}

// A connection reset, made inside the restored process: a throwaway listener on the loopback of the
// sandbox's own network namespace, a socket connected to it, and the accepted end closed with
// SO_LINGER 0, which sends a reset. Why this way: it needs no peer outside the sandbox and no
// privilege (TCP_REPAIR would need CAP_NET_ADMIN and would leave a socket whose next send goes to the
// old peer and only fails after retransmissions), the handshake and the reset run synchronously on
// loopback, and ppoll waits until the reset has landed, so the socket is already failed when the
// function runs again: a read gives ECONNRESET (then end of stream), a write ECONNRESET or EPIPE,
// poll and epoll EPOLLERR|EPOLLHUP. Nothing stays behind: the listener is closed, the reset end
// leaves no TIME_WAIT, and a reset socket gives its local port back.
void plan_create(Table& t, Region& region, const image::Fd& f, const image::TcpConnectionFd& o) {
    std::string what = fmt::format("fd {} (connection restored reset)", f.fd);
    sockaddr_storage loopback{};
    socklen_t length = 0;
    if (o.domain == AF_INET6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&loopback);
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        length = sizeof(sockaddr_in6);
    } else {
        auto* in = reinterpret_cast<sockaddr_in*>(&loopback);
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        length = sizeof(sockaddr_in);
    }
    uint64_t address = region.put(&loopback, sizeof loopback);  // getsockname writes the port here
    uint32_t length_value = length;
    uint64_t length_at = region.put(length_value);
    auto domain = static_cast<uint64_t>(o.domain);
    t.op(SYS_socket, {domain, SOCK_STREAM, 0}, kPipeR, 0, {}, what + " listener");
    t.op(SYS_bind, {0, address, length}, -1, 0, {{0, kPipeR}}, what + " bind listener");
    t.op(SYS_listen, {0, 1}, -1, 0, {{0, kPipeR}}, what + " listen");
    t.op(SYS_getsockname, {0, address, length_at}, -1, 0, {{0, kPipeR}}, what + " listener port");
    t.op(SYS_socket, {domain, static_cast<uint64_t>(o.type), 0}, kTmp, 0, {}, what + " socket");
    t.op(SYS_connect, {0, address, length}, -1, 0, {{0, kTmp}}, what + " connect");
    t.op(SYS_accept4, {0, 0, 0, 0}, kPipeW, 0, {{0, kPipeR}}, what + " accept");
    linger abort{1, 0};
    t.op(SYS_setsockopt, {0, SOL_SOCKET, SO_LINGER, region.put(abort), sizeof abort}, -1, 0, {{0, kPipeW}},
         what + " linger 0");
    t.op(SYS_close, {0}, -1, 0, {{0, kPipeW}}, what + " reset");
    t.op(SYS_close, {0}, -1, 0, {{0, kPipeR}}, what + " close listener");
    pollfd wait{};
    wait.events = POLLIN;
    uint64_t wait_at = region.put(wait);
    t.op(0, {wait_at, 0}, -1, STUB_OP_STORE32, {{1, kTmp}}, what + " pollfd");
    timespec limit{1, 0};
    t.op(SYS_ppoll, {wait_at, 1, region.put(limit), 0, 0}, -1, 0, {}, what + " wait for the reset");
}

}  // namespace initless::state::tcp
