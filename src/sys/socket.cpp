#include "initless/sys/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "initless/sys/error.h"

namespace initless::sys {

SocketPair seqpacket_pair() {
    int sv[2];
    check(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), "socketpair");
    return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

namespace {
// sockaddr_un naming `path` as /proc/self/fd/<dir>/<name>; `dir` must stay open while it is used.
sockaddr_un unix_address(const std::filesystem::path& path, UniqueFd& dir) {
    dir = UniqueFd(::open(path.parent_path().empty() ? "." : path.parent_path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw SysError(fmt::format("open {}", path.parent_path().string()), errno);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string name = fmt::format("/proc/self/fd/{}/{}", dir.get(), path.filename().string());
    if (name.size() >= sizeof addr.sun_path) throw Error(fmt::format("socket name too long: {}", path.string()));
    std::memcpy(addr.sun_path, name.c_str(), name.size() + 1);
    return addr;
}
}  // namespace

UniqueFd listen_unix_seqpacket(const std::filesystem::path& path) {
    UniqueFd dir;
    sockaddr_un addr = unix_address(path, dir);
    UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!s) throw SysError("socket", errno);
    ::unlink(path.c_str());
    check(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), "bind " + path.string());
    check(::listen(s.get(), 16), "listen " + path.string());
    return s;
}

UniqueFd connect_unix_seqpacket(const std::filesystem::path& path) {
    UniqueFd dir;
    sockaddr_un addr = unix_address(path, dir);
    UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!s) throw SysError("socket", errno);
    if (retry_eintr([&] { return ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr); }) != 0)
        throw SysError("connect " + path.string(), errno);
    return s;
}

void send_message(int fd, std::string_view data, std::span<const int> fds) {
    iovec iov{const_cast<char*>(data.data()), data.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control;
    if (!fds.empty()) {
        control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    if (retry_eintr([&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL); }) < 0) throw SysError("sendmsg", errno);
}

namespace {
// Hands every fd a received message carries to `take`.
template <typename Take>
void received_fds(msghdr& msg, Take take) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            take(received);
        }
    }
}
}  // namespace

bool receive_message(int fd, std::string& data, std::vector<UniqueFd>* fds) {
    data.resize(1 << 16);
    iovec iov{data.data(), data.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = retry_eintr([&] { return ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); });
    if (n < 0) throw SysError("recvmsg", errno);
    data.resize(static_cast<size_t>(n));
    received_fds(msg, [&](int received) {
        if (fds)
            fds->emplace_back(received);
        else
            ::close(received);
    });
    return n > 0 || (msg.msg_flags & MSG_TRUNC);
}

QueuedData peek_queued(int sock, bool stream) {
    int old_off = 0;
    socklen_t len = sizeof old_off;
    check(::getsockopt(sock, SOL_SOCKET, SO_PEEK_OFF, &old_off, &len), "getsockopt SO_PEEK_OFF");
    int zero = 0;
    check(::setsockopt(sock, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero), "setsockopt SO_PEEK_OFF");
    // A datagram or seqpacket socket reads 0 both for an empty message and, for ever, at the end
    // once its peer has shut down. With SO_PASSCRED every message comes with its sender's
    // credentials and the end with none, which tells them apart; a second peek steps past an empty
    // message (the kernel skips one it has already shown at the peek offset).
    int old_passcred = 0;
    if (!stream) {
        len = sizeof old_passcred;
        check(::getsockopt(sock, SOL_SOCKET, SO_PASSCRED, &old_passcred, &len), "getsockopt SO_PASSCRED");
        int one = 1;
        check(::setsockopt(sock, SOL_SOCKET, SO_PASSCRED, &one, sizeof one), "setsockopt SO_PASSCRED");
    }
    QueuedData out;
    std::vector<uint8_t> buf(1 << 16);
    int error = 0;
    for (;;) {
        iovec iov{buf.data(), buf.size()};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 32) + CMSG_SPACE(sizeof(ucred))];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t n = ::recvmsg(sock, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno != EAGAIN) error = errno;
            break;
        }
        bool fds_in_flight = false, credentials = false;
        received_fds(msg, [&](int received) {
            fds_in_flight = true;
            ::close(received);
        });
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) credentials = true;
        if (fds_in_flight || (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
            out.complete = false;
            break;
        }
        if (n == 0 && (stream || !credentials)) break;  // the end of the stream (or nothing queued)
        if (out.messages.size() >= kMaxPeekedMessages) {
            out.complete = false;  // never endless, whatever the kernel answers
            break;
        }
        out.messages.emplace_back(buf.begin(), buf.begin() + n);
    }
    if (!stream) ::setsockopt(sock, SOL_SOCKET, SO_PASSCRED, &old_passcred, sizeof old_passcred);
    ::setsockopt(sock, SOL_SOCKET, SO_PEEK_OFF, &old_off, sizeof old_off);
    if (error) throw SysError("peek at a socket's queued data", error);
    return out;
}

UniqueFd connect_in_netns(int netns_fd, uint16_t port) {
    UniqueFd self_ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!self_ns) throw SysError("open own netns", errno);
    check(::setns(netns_fd, CLONE_NEWNET), "setns into sandbox netns");
    UniqueFd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int socket_errno = errno;
    // Back home before anything can throw: this thread must never stay in the sandbox's namespace.
    if (::setns(self_ns.get(), CLONE_NEWNET) != 0) std::abort();
    if (!sock) throw SysError("socket in sandbox netns", socket_errno);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (retry_eintr([&] { return ::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr); }) !=
        0)
        throw SysError(fmt::format("connect to 127.0.0.1:{} in sandbox", port), errno);
    int one = 1;
    ::setsockopt(sock.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return sock;
}

UniqueFd listen_in_netns(int netns_fd, uint16_t port) {
    UniqueFd self_ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!self_ns) throw SysError("open own netns", errno);
    check(::setns(netns_fd, CLONE_NEWNET), "setns into sandbox netns");
    UniqueFd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int socket_errno = errno;
    if (::setns(self_ns.get(), CLONE_NEWNET) != 0) std::abort();  // as in connect_in_netns
    if (!sock) throw SysError("socket in sandbox netns", socket_errno);
    int one = 1;
    ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    check(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr),
          fmt::format("bind 127.0.0.1:{} in sandbox", port));
    check(::listen(sock.get(), 16), "listen in sandbox");
    return sock;
}

bool stream_closed_by_peer(int sock) {
    char byte;
    ssize_t n = ::recv(sock, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return false;  // bytes nobody asked for: not ours to judge, the caller's parser will
    if (n == 0) return true;
    return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

void set_quickack(int sock) {
    int one = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

void set_cloexec(int fd) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) throw SysError("set close-on-exec", errno);
}

UniqueFd duplicate(int fd) {
    UniqueFd out(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (!out) throw SysError("dup", errno);
    return out;
}

std::map<uint64_t, uint64_t> unix_socket_peers(int netns_fd) {
    std::map<uint64_t, uint64_t> peers;
    for (const auto& [inode, diag] : unix_socket_diag(netns_fd))
        if (diag.peer) peers[inode] = diag.peer;
    return peers;
}

std::map<uint64_t, UnixSocketDiag> unix_socket_diag(int netns_fd) {
    UniqueFd self_ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!self_ns) throw SysError("open own netns", errno);
    check(::setns(netns_fd, CLONE_NEWNET), "setns into sandbox netns");
    UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    int socket_errno = errno;
    if (::setns(self_ns.get(), CLONE_NEWNET) != 0) std::abort();  // as in connect_in_netns
    if (!nl) throw SysError("netlink sock_diag socket in sandbox netns", socket_errno);
    struct {
        nlmsghdr nh;
        unix_diag_req req;
    } request{};
    request.nh.nlmsg_len = sizeof request;
    request.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    request.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.req.sdiag_family = AF_UNIX;
    request.req.udiag_states = ~0u;
    request.req.udiag_show = UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN;
    if (retry_eintr([&] { return ::send(nl.get(), &request, sizeof request, 0); }) < 0)
        throw SysError("send sock_diag request", errno);
    std::map<uint64_t, UnixSocketDiag> sockets;
    alignas(nlmsghdr) char buf[32768];
    for (;;) {
        ssize_t n = retry_eintr([&] { return ::recv(nl.get(), buf, sizeof buf, 0); });
        if (n < 0) throw SysError("recv sock_diag reply", errno);
        auto len = static_cast<unsigned>(n);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE) return sockets;
            if (h->nlmsg_type == NLMSG_ERROR) {
                auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
                throw SysError("sock_diag dump of unix sockets", -e->error);
            }
            auto* msg = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
            auto rta_len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *msg));
            UnixSocketDiag& d = sockets[msg->udiag_ino];
            for (auto* a = reinterpret_cast<rtattr*>(msg + 1); RTA_OK(a, rta_len); a = RTA_NEXT(a, rta_len)) {
                if (a->rta_type == UNIX_DIAG_PEER) {
                    uint32_t peer = 0;
                    std::memcpy(&peer, RTA_DATA(a), sizeof peer);
                    d.peer = peer;
                } else if (a->rta_type == UNIX_DIAG_SHUTDOWN) {
                    uint8_t how = 0;
                    std::memcpy(&how, RTA_DATA(a), sizeof how);
                    d.shutdown = how;
                } else if (a->rta_type == UNIX_DIAG_RQLEN) {
                    unix_diag_rqlen q{};
                    std::memcpy(&q, RTA_DATA(a), sizeof q);
                    d.rqueue = q.udiag_rqueue;
                }
            }
        }
    }
}

void set_loopback_up() {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) throw SysError("socket for ioctl", errno);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    check(::ioctl(s.get(), SIOCGIFFLAGS, &ifr), "SIOCGIFFLAGS lo");
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    check(::ioctl(s.get(), SIOCSIFFLAGS, &ifr), "SIOCSIFFLAGS lo");
}

}  // namespace initless::sys
