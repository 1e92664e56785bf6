// UDP sockets (IPv4 and IPv6). Checkpoint (through a copy of the fd): the bound address, the
// connected peer and the options a program sets; datagrams queued for it are not read (they are the
// function's to read, and the running function keeps them) and are dropped from the image, which the
// snapshot's output says (a network may drop datagrams too; the function must not rely on them).
// Restore: socket, options, bind to the address it had (a connected socket's local port included, so
// its peer sees the same source), connect to its peer.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/inspect.h"
#include "initless/sys/process.h"
#include "state/kinds.h"

namespace initless::state::udp {

std::optional<image::FdObject> read(const FdSource& s) {
    if (!S_ISSOCK(s.st.st_mode)) return std::nullopt;
    sys::UniqueFd sock = sys::pidfd_getfd(s.pidfd, s.fd);
    int domain = sys::socket_option(sock.get(), SOL_SOCKET, SO_DOMAIN);
    if ((domain != AF_INET && domain != AF_INET6) ||
        sys::socket_option(sock.get(), SOL_SOCKET, SO_TYPE) != SOCK_DGRAM)
        return std::nullopt;
    auto where = fmt::format("process {} fd {}", s.pid, s.fd);
    int protocol = sys::socket_option(sock.get(), SOL_SOCKET, SO_PROTOCOL);
    if (protocol != IPPROTO_UDP)
        throw ContractError(
            fmt::format("{}: a datagram socket of protocol {} (ICMP echo, UDP-Lite ...) "
                        "cannot be recreated by initless; rule: only UDP datagram sockets",
                        where, protocol));
    image::UdpFd u;
    u.domain = domain;
    std::vector<uint8_t> address = sys::socket_name(sock.get());
    if (sys::address_port(address)) u.address = std::move(address);
    u.peer = sys::peer_name(sock.get());
    for (auto [level, name] :
         {std::pair{SOL_SOCKET, SO_REUSEADDR}, {SOL_SOCKET, SO_REUSEPORT}, {SOL_SOCKET, SO_BROADCAST}})
        u.options.push_back({level, name, sys::socket_option(sock.get(), level, name)});
    if (domain == AF_INET6)
        u.options.push_back(
            {IPPROTO_IPV6, IPV6_V6ONLY, sys::socket_option(sock.get(), IPPROTO_IPV6, IPV6_V6ONLY)});
    if (sys::readable_now(sock.get()) && s.context)
        s.context->notes.push_back(
            fmt::format("{}: a UDP socket {}{}: datagrams queued for it at the checkpoint are not restored",
                        where, u.address.empty() ? "(not bound)" : sys::describe_address(u.address),
                        u.peer.empty() ? "" : " connected to " + sys::describe_address(u.peer)));
    return u;
}

void store(json& j, const image::UdpFd& f) {
    json options = json::array();
    for (const auto& o : f.options) options.push_back({o.level, o.name, o.value});
    j["domain"] = f.domain;
    j["address"] = hex(f.address);
    j["peer"] = hex(f.peer);
    j["options"] = std::move(options);
}

void load(const json& j, image::UdpFd& f) {
    f.domain = j.at("domain");
    f.address = unhex(j.at("address"));
    f.peer = unhex(j.at("peer"));
    for (const auto& o : j.at("options")) f.options.push_back({o[0], o[1], o[2]});
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::UdpFd& o) {
    std::string what = fmt::format("fd {}", f.fd);
    t.op(SYS_socket, {static_cast<uint64_t>(o.domain), SOCK_DGRAM, IPPROTO_UDP}, kTmp, 0, {},
         what + " socket");
    for (const auto& opt : o.options) {
        int v = opt.value;
        t.op(SYS_setsockopt,
             {0, static_cast<uint64_t>(opt.level), static_cast<uint64_t>(opt.name), region.put(v),
              sizeof(int)},
             -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " setsockopt");
    }
    if (!o.address.empty())
        t.op(SYS_bind, {0, region.put(o.address.data(), o.address.size()), o.address.size()}, -1, 0,
             {{0, kTmp}}, what + " bind");
    if (!o.peer.empty())
        t.op(SYS_connect, {0, region.put(o.peer.data(), o.peer.size()), o.peer.size()}, -1, 0, {{0, kTmp}},
             what + " connect");
}

}  // namespace initless::state::udp
