// Unix sockets: listeners, socket pairs, and orphaned socketpair ends. Checkpoint (through a copy of
// the fd, pidfd_getfd, and the sandbox netns's sock_diag dump): a listener keeps its address and
// shutdown state (one with connections waiting to be accepted is refused: their clients cannot be
// connected again); an unnamed connected socket whose peer is in the sandbox's netns is one end of a
// socketpair, paired across the tree by the lower inode, with its shutdown state and what is queued
// for it peeked (fds in flight break the contract); an unnamed socket whose peer was closed is an
// orphan, with what it still has to read; a connection made through a listener, and a bound or
// unbound socket neither listening nor connected, are refused naming the address. Restore: listeners are
// bound again (a stale socket file removed first), listen with 4096 and are shut down as they were; pairs are
// made with socketpair, their buffer sizes set, each end's queue sent again through its peer, message by
// message, then each end shut down as it was; an orphan is a socketpair end whose peer queues its
// data again and is closed.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/inspect.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"
#include "state/kinds.h"

namespace initless::state::unix_sockets {

namespace {

json options_json(const std::vector<image::SocketOption>& options) {
    json out = json::array();
    for (const auto& o : options) out.push_back({o.level, o.name, o.value});
    return out;
}

std::vector<image::SocketOption> options_from(const json& j) {
    std::vector<image::SocketOption> out;
    for (const auto& o : j) out.push_back({o[0], o[1], o[2]});
    return out;
}

// What is queued for a socket pair end to receive; the running function keeps every byte.
// Datagrams keep their boundaries; fds in flight break the rule.
void read_queued(int sock, const std::string& where, image::UnixPairFd& f) {
    auto queued = sys::peek_queued(sock, f.type == SOCK_STREAM);
    if (!queued.complete)
        throw ContractError(where +
                            ": file descriptors or oversized messages are queued in it; rule: nothing "
                            "in flight when ready");
    for (const auto& m : queued.messages) {
        f.queued.insert(f.queued.end(), m.begin(), m.end());
        if (f.type != SOCK_STREAM) f.message_sizes.push_back(static_cast<uint32_t>(m.size()));
    }
}

// The socket file of a unix address, "" for an abstract or unnamed one.
std::string socket_path(const std::vector<uint8_t>& address) {
    sockaddr_un un{};
    std::memcpy(&un, address.data(), std::min(address.size(), sizeof un));
    return un.sun_path[0] ? std::string(un.sun_path, strnlen(un.sun_path, sizeof un.sun_path))
                          : std::string();
}

// A unix address for messages: its path, "@name" when abstract, "(unnamed)".
std::string address_name(const std::vector<uint8_t>& address) {
    if (address.size() <= sizeof(sa_family_t)) return "(unnamed)";
    std::string path = socket_path(address);
    if (!path.empty()) return path;
    const char* abstract = reinterpret_cast<const char*>(address.data()) + sizeof(sa_family_t) + 1;
    return "@" + std::string(abstract, address.size() - sizeof(sa_family_t) - 1);
}

// sk_shutdown (1: receive side, 2: send side) as shutdown()'s `how`, -1 for none.
int shutdown_how(int sk_shutdown) {
    switch (sk_shutdown & 3) {
        case 1:
            return SHUT_RD;
        case 2:
            return SHUT_WR;
        case 3:
            return SHUT_RDWR;
    }
    return -1;
}

}  // namespace

std::optional<image::FdObject> read(const FdSource& s) {
    if (!S_ISSOCK(s.st.st_mode)) return std::nullopt;
    sys::UniqueFd sock = sys::pidfd_getfd(s.pidfd, s.fd);
    if (sys::socket_option(sock.get(), SOL_SOCKET, SO_DOMAIN) != AF_UNIX) return std::nullopt;
    auto where = fmt::format("process {} fd {}", s.pid, s.fd);
    int type = sys::socket_option(sock.get(), SOL_SOCKET, SO_TYPE);
    std::vector<uint8_t> address = sys::socket_name(sock.get());
    struct stat st = sys::stat_fd(sock.get());
    auto diag_it = s.unix_sockets->find(st.st_ino);
    sys::UnixSocketDiag diag = diag_it != s.unix_sockets->end() ? diag_it->second : sys::UnixSocketDiag{};
    std::string path = socket_path(address);
    std::string name = address_name(address);
    if (sys::socket_option(sock.get(), SOL_SOCKET, SO_ACCEPTCONN)) {
        // A connection waiting to be accepted cannot be made again without its client: a restored
        // listener would be empty, and a program that knows a connection waits would block in accept.
        // (Not poll: a listener shut down for receiving polls readable too.)
        if (diag.rqueue > 0)
            throw ContractError(fmt::format(
                "{}: a unix listening socket ({}) with {} connection(s) waiting to be accepted; rule: "
                "accept or refuse pending connections before ready",
                where, name, diag.rqueue));
        image::UnixListenFd l;
        l.type = type;
        l.address = address;
        l.path = path;
        l.shutdown = diag.shutdown;
        return l;
    }
    bool named = address.size() > sizeof(sa_family_t);
    if (!named && diag.peer) {
        if (sys::peer_is_unnamed(sock.get())) {
            image::UnixPairFd p;
            p.type = type;
            p.pair_id = std::min<uint64_t>(st.st_ino, diag.peer);
            p.end = st.st_ino < diag.peer ? 0 : 1;
            p.shutdown = diag.shutdown;
            for (int opt : {SO_SNDBUF, SO_RCVBUF})
                p.options.push_back({SOL_SOCKET, opt, sys::socket_option(sock.get(), SOL_SOCKET, opt)});
            read_queued(sock.get(), where, p);
            return p;
        }
    }
    std::vector<uint8_t> peer = sys::peer_name(sock.get());
    // Connected to an unnamed peer that no longer has a socket (diag reports no peer inode): a
    // socketpair end whose other end was closed. What it still holds to read is kept.
    if (!named && !diag.peer && diag_it != s.unix_sockets->end() &&
        (peer.size() == sizeof(sa_family_t) || (type == SOCK_STREAM && sys::peer_gone(sock.get())))) {
        image::UnixPairFd queue;
        queue.type = type;
        read_queued(sock.get(), where, queue);
        image::UnixOrphanFd o;
        o.type = type;
        o.queued = std::move(queue.queued);
        o.message_sizes = std::move(queue.message_sizes);
        o.shutdown = diag.shutdown;
        return o;
    }
    if (!peer.empty())
        throw ContractError(fmt::format(
            "{}: a unix socket {} connected to {} (a connection made through a listening socket, not a "
            "socketpair): it cannot be connected again at restore; rule: hold no connections when ready",
            where, name, address_name(peer)));
    throw ContractError(fmt::format(
        "{}: a unix {} socket {} that is neither listening nor connected; rule: only listening unix "
        "sockets and socket pairs are restored",
        where,
        type == SOCK_DGRAM       ? "datagram"
        : type == SOCK_SEQPACKET ? "seqpacket"
                                 : "stream",
        name));
}

void store(json& j, const image::UnixListenFd& f) {
    j["type"] = f.type;
    j["address"] = hex(f.address);
    j["path"] = f.path;
    j["shutdown"] = f.shutdown;
}
void load(const json& j, image::UnixListenFd& f) {
    f.type = j.at("type");
    f.address = unhex(j.at("address"));
    f.path = j.at("path");
    f.shutdown = j.value("shutdown", 0);
}
void store(json& j, const image::UnixPairFd& f) {
    j["type"] = f.type;
    j["pair_id"] = f.pair_id;
    j["end"] = f.end;
    j["options"] = options_json(f.options);
    j["queued"] = hex(f.queued);
    j["message_sizes"] = f.message_sizes;
    j["shutdown"] = f.shutdown;
}
void load(const json& j, image::UnixPairFd& f) {
    f.type = j.at("type");
    f.pair_id = j.at("pair_id");
    f.end = j.at("end");
    f.options = options_from(j.at("options"));
    f.queued = unhex(j.at("queued"));
    f.message_sizes = j.at("message_sizes").get<std::vector<uint32_t>>();
    f.shutdown = j.value("shutdown", 0);
}
void store(json& j, const image::UnixOrphanFd& f) {
    j["type"] = f.type;
    j["queued"] = hex(f.queued);
    j["message_sizes"] = f.message_sizes;
    j["shutdown"] = f.shutdown;
}
void load(const json& j, image::UnixOrphanFd& f) {
    f.type = j.value("type", SOCK_STREAM);  // images before queues were kept: empty stream ends
    f.queued = unhex(j.value("queued", std::string()));
    f.message_sizes = j.value("message_sizes", std::vector<uint32_t>());
    f.shutdown = j.value("shutdown", 0);
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::UnixListenFd& o) {
    std::string what = fmt::format("fd {}", f.fd);
    uint64_t nonblock = (f.flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
    if (!o.path.empty())
        t.op(SYS_unlink, {region.put_string(o.path)}, -1, STUB_OP_ALLOW_FAIL, {}, what + " unlink");
    t.op(SYS_socket, {AF_UNIX, static_cast<uint64_t>(o.type) | nonblock, 0}, kTmp, 0, {}, what + " socket");
    t.op(SYS_bind, {0, region.put(o.address.data(), o.address.size()), o.address.size()}, -1, 0, {{0, kTmp}},
         what + " bind");
    t.op(SYS_listen, {0, 4096}, -1, 0, {{0, kTmp}}, what + " listen");
    // A listener shut down for receiving makes accept fail at once; without it, accept would block.
    if (int how = shutdown_how(o.shutdown); how >= 0)
        t.op(SYS_shutdown, {0, static_cast<uint64_t>(how)}, -1, 0, {{0, kTmp}}, what + " shutdown");
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::UnixOrphanFd& o) {
    std::string what = fmt::format("fd {}", f.fd);
    uint64_t nonblock = (f.flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
    uint64_t pair = region.put(nullptr, 8);
    t.op(SYS_socketpair, {AF_UNIX, static_cast<uint64_t>(o.type) | nonblock, 0, pair}, -1, 0, {},
         what + " socketpair");
    t.op(0, {pair}, kTmp, STUB_OP_LOAD32, {}, "socketpair end");
    t.op(0, {pair + 4}, kPipeW, STUB_OP_LOAD32, {}, "socketpair peer");
    // What it had to read is sent again by its peer, message by message, before the peer goes.
    std::vector<uint32_t> sizes = o.message_sizes;
    if (sizes.empty() && !o.queued.empty()) sizes.push_back(static_cast<uint32_t>(o.queued.size()));
    uint64_t data = o.queued.empty() ? 0 : region.put(o.queued.data(), o.queued.size(), 1);
    for (uint32_t size : sizes) {
        t.op(SYS_sendto, {0, data, size, MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0}, -1, STUB_OP_EXPECT_ARG2,
             {{0, kPipeW}}, what + " requeue data");
        data += size;
    }
    t.op(SYS_close, {0}, -1, 0, {{0, kPipeW}}, what + " close the peer");
    // A stream or seqpacket end is shut both ways by its peer's close; a datagram end only by itself.
    if (int how = shutdown_how(o.shutdown); how >= 0 && o.type == SOCK_DGRAM)
        t.op(SYS_shutdown, {0, static_cast<uint64_t>(how)}, -1, 0, {{0, kTmp}}, what + " shutdown");
}

void plan_pair(Table& t, Region& region, const image::UnixPairFd& end0, const image::UnixPairFd& end1,
               int lift, const std::string& what) {
    uint64_t pair = region.put(nullptr, 8);
    t.op(SYS_socketpair, {AF_UNIX, static_cast<uint64_t>(end0.type), 0, pair}, -1, 0, {},
         what + " socketpair");
    fds::plan_lift_ends(t, pair, lift, what);
    for (auto [end, slot] : {std::pair{&end0, kPipeR}, std::pair{&end1, kTmp}})
        for (const auto& o : end->options) {
            int v = o.value / 2;  // the kernel doubles what is set, and reports the doubled value
            t.op(SYS_setsockopt,
                 {0, static_cast<uint64_t>(o.level), static_cast<uint64_t>(o.name), region.put(v),
                  sizeof(int)},
                 -1, STUB_OP_ALLOW_FAIL, {{0, slot}}, what + " buffer size");
        }
    // What end X had queued to receive is sent again through its peer, message by message.
    for (auto [end, via] : {std::pair{&end0, kTmp}, std::pair{&end1, kPipeR}}) {
        if (end->queued.empty() && end->message_sizes.empty()) continue;  // (empty messages count)
        uint64_t data = end->queued.empty() ? 0 : region.put(end->queued.data(), end->queued.size(), 1);
        std::vector<uint32_t> sizes = end->message_sizes;
        if (sizes.empty()) sizes.push_back(static_cast<uint32_t>(end->queued.size()));
        for (uint32_t size : sizes) {
            t.op(SYS_sendto, {0, data, size, MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0}, -1, STUB_OP_EXPECT_ARG2,
                 {{0, via}}, what + " requeue data");
            data += size;
        }
    }
    // Shut down after the data is queued again (a shut send side refuses it). Either end's call
    // marks both (its send side and the peer's receive side, or the reverse), so calling it on each
    // end for its own shut sides gives the pair the state it had, whichever end called it.
    for (auto [end, slot] : {std::pair{&end0, kPipeR}, std::pair{&end1, kTmp}})
        if (int how = shutdown_how(end->shutdown); how >= 0)
            t.op(SYS_shutdown, {0, static_cast<uint64_t>(how)}, -1, 0, {{0, slot}}, what + " shutdown");
}

}  // namespace initless::state::unix_sockets
