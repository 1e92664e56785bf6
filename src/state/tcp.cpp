// TCP listeners (IPv4 and IPv6). Checkpoint (through a copy of the fd): a TCP socket that is not
// listening is an established or half-open connection, which breaks the contract; a listener keeps
// its address, backlog (the kernel reports a listener's limit in tcpi_sacked) and the options a
// server sets. Restore: socket, the options, bind, listen.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

std::optional<image::FdObject> read(const FdSource& s) {
    if (!S_ISSOCK(s.st.st_mode)) return std::nullopt;
    sys::UniqueFd sock = sys::pidfd_getfd(s.pidfd, s.fd);
    int domain = sys::socket_option(sock.get(), SOL_SOCKET, SO_DOMAIN);
    int type = sys::socket_option(sock.get(), SOL_SOCKET, SO_TYPE);
    if ((domain != AF_INET && domain != AF_INET6) || type != SOCK_STREAM) return std::nullopt;
    auto where = fmt::format("process {} fd {}", s.pid, s.fd);
    if (!sys::socket_option(sock.get(), SOL_SOCKET, SO_ACCEPTCONN))
        throw ContractError(where +
                            ": a TCP socket that is not listening (an established or half-open "
                            "connection); rule: hold no connections when ready, reconnect after restore");
    image::TcpListenFd l;
    l.domain = domain;
    l.type = type;
    l.address = sys::socket_name(sock.get());
    l.backlog = sys::tcp_listen_backlog(sock.get());
    for (auto [level, name] : {std::pair{SOL_SOCKET, SO_REUSEADDR},
                               {SOL_SOCKET, SO_REUSEPORT},
                               {SOL_SOCKET, SO_KEEPALIVE},
                               {IPPROTO_TCP, TCP_NODELAY},
                               {IPPROTO_TCP, TCP_DEFER_ACCEPT}})
        l.options.push_back({level, name, sys::socket_option(sock.get(), level, name)});
    if (domain == AF_INET6)
        l.options.push_back(
            {IPPROTO_IPV6, IPV6_V6ONLY, sys::socket_option(sock.get(), IPPROTO_IPV6, IPV6_V6ONLY)});
    return l;
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

void plan_create(Table& t, Region& region, const image::Fd& f, const image::TcpListenFd& o) {
    std::string what = fmt::format("fd {}", f.fd);
    uint64_t nonblock = (f.flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
    t.op(SYS_socket, {static_cast<uint64_t>(o.domain), static_cast<uint64_t>(o.type) | nonblock, 0}, kTmp, 0,
         {}, what + " socket");
    for (const auto& opt : o.options) {
        int v = opt.value;
        t.op(SYS_setsockopt,
             {0, static_cast<uint64_t>(opt.level), static_cast<uint64_t>(opt.name), region.put(v),
              sizeof(int)},
             -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " setsockopt");
    }
    t.op(SYS_bind, {0, region.put(o.address.data(), o.address.size()), o.address.size()}, -1, 0, {{0, kTmp}},
         what + " bind");
    t.op(SYS_listen, {0, static_cast<uint64_t>(o.backlog > 0 ? o.backlog : 4096)}, -1, 0, {{0, kTmp}},
         what + " listen");
}

}  // namespace initless::state::tcp
