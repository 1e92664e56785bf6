#include "initless/sys/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
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
    dir = UniqueFd(::open(path.parent_path().empty() ? "." : path.parent_path().c_str(),
                          O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw SysError(fmt::format("open {}", path.parent_path().string()), errno);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string name = fmt::format("/proc/self/fd/{}/{}", dir.get(), path.filename().string());
    if (name.size() >= sizeof addr.sun_path)
        throw Error(fmt::format("socket name too long: {}", path.string()));
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

UniqueFd start_connect_in_netns(int netns_fd, uint16_t port) {
    UniqueFd self_ns(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!self_ns) throw SysError("open own netns", errno);
    check(::setns(netns_fd, CLONE_NEWNET), "setns into sandbox netns");
    UniqueFd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    int socket_errno = errno;
    // Back home before anything can throw: this thread must never stay in the sandbox's namespace.
    if (::setns(self_ns.get(), CLONE_NEWNET) != 0) std::abort();
    if (!sock) throw SysError("socket in sandbox netns", socket_errno);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // The socket is the sandbox namespace's: connecting from here reaches its loopback.
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS)
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

StreamPeek peek_stream(int sock) {
    char byte;
    ssize_t n = retry_eintr([&] { return ::recv(sock, &byte, 1, MSG_PEEK | MSG_DONTWAIT); });
    if (n > 0) return StreamPeek::Bytes;
    if (n == 0) return StreamPeek::Closed;
    return errno == EAGAIN || errno == EWOULDBLOCK ? StreamPeek::Quiet : StreamPeek::Closed;
}

SplicePipe::SplicePipe(size_t size) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw SysError("pipe2", errno);
    read_ = UniqueFd(fds[0]);
    write_ = UniqueFd(fds[1]);
    // Refused past the user's pipe-buffer limits (no CAP_SYS_RESOURCE here): the default size then.
    ::fcntl(write_.get(), F_SETPIPE_SZ, static_cast<int>(size));
    int granted = ::fcntl(write_.get(), F_GETPIPE_SZ);
    capacity_ = granted > 0 ? static_cast<size_t>(granted) : 4096;
}

ssize_t SplicePipe::fill(int from, size_t max) {
    size_t room = std::min(max, capacity_ - held_);
    if (room == 0) {
        errno = EAGAIN;
        return -1;
    }
    ssize_t n = ::splice(from, nullptr, write_.get(), nullptr, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) held_ += static_cast<size_t>(n);
    return n;
}

ssize_t SplicePipe::drain(int to) {
    if (held_ == 0) return 0;
    ssize_t n = ::splice(read_.get(), nullptr, to, nullptr, held_, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) held_ -= static_cast<size_t>(n);
    return n;
}

bool tcp_connect_pending(int sock) {
    tcp_info info{};
    socklen_t len = sizeof info;
    if (::getsockopt(sock, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return false;  // the write will tell
    return info.tcpi_state == TCP_SYN_SENT;
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

// ---- TCP (the remote page server) ----------------------------------------------------------------

std::string TcpAddress::str() const {
    return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                               : fmt::format("{}:{}", host, port);
}

TcpAddress parse_tcp_address(const std::string& text) {
    TcpAddress a;
    auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
        throw Error(fmt::format("address '{}' is not HOST:PORT", text));
    a.host = text.substr(0, colon);
    if (a.host.size() > 2 && a.host.front() == '[' && a.host.back() == ']')
        a.host = a.host.substr(1, a.host.size() - 2);
    unsigned long port = 0;
    try {
        size_t used = 0;
        port = std::stoul(text.substr(colon + 1), &used);
        if (used != text.size() - colon - 1) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
        throw Error(fmt::format("address '{}': the port is not a number", text));
    }
    if (port > 65535) throw Error(fmt::format("address '{}': port {} is out of range", text, port));
    a.port = static_cast<uint16_t>(port);
    return a;
}

namespace {
struct Resolved {
    sockaddr_storage addr{};
    socklen_t len = 0;
    int family = AF_INET;
};

Resolved resolve(const TcpAddress& a) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string port = std::to_string(a.port);
    int rc = ::getaddrinfo(a.host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0 || !res) throw Error(fmt::format("resolve {}: {}", a.str(), ::gai_strerror(rc)));
    Resolved r;
    std::memcpy(&r.addr, res->ai_addr, res->ai_addrlen);
    r.len = res->ai_addrlen;
    r.family = res->ai_family;
    ::freeaddrinfo(res);
    return r;
}

int ms_until(std::chrono::steady_clock::time_point deadline) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30));
}

// Waits for `events` on `sock` until `deadline`; throws ETIMEDOUT.
void wait_for(int sock, short events, std::chrono::steady_clock::time_point deadline, const char* what) {
    for (;;) {
        pollfd p{sock, events, 0};
        int n = ::poll(&p, 1, ms_until(deadline));
        if (n > 0) return;
        if (n == 0) throw SysError(what, ETIMEDOUT);
        if (errno != EINTR) throw SysError(what, errno);
    }
}
}  // namespace

UniqueFd listen_tcp(const TcpAddress& addr, int backlog) {
    Resolved r = resolve(addr);
    UniqueFd s(::socket(r.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s) throw SysError("socket", errno);
    int one = 1;
    check(::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), "setsockopt SO_REUSEADDR");
    check(::bind(s.get(), reinterpret_cast<sockaddr*>(&r.addr), r.len), fmt::format("bind {}", addr.str()));
    check(::listen(s.get(), backlog), fmt::format("listen {}", addr.str()));
    return s;
}

uint16_t local_port(int sock) {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    check(::getsockname(sock, reinterpret_cast<sockaddr*>(&a), &len), "getsockname");
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port);
    return ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
}

namespace {
// Waits by `deadline` for the connect begun on non-blocking `sock` to end (its error thrown, naming
// `what`), then makes the socket blocking.
void finish_connect(int sock, std::chrono::steady_clock::time_point deadline, const std::string& what,
                    std::chrono::milliseconds timeout) {
    wait_for(sock, POLLOUT, deadline,
             fmt::format("{}: not accepted within {} ms (no answer, or an accept queue full)", what,
                         timeout.count())
                 .c_str());
    int err = 0;
    socklen_t len = sizeof err;
    check(::getsockopt(sock, SOL_SOCKET, SO_ERROR, &err, &len), "getsockopt SO_ERROR");
    if (err) throw SysError(what, err);
    int flags = ::fcntl(sock, F_GETFL);
    check(flags < 0 ? -1 : ::fcntl(sock, F_SETFL, flags & ~O_NONBLOCK), "fcntl ~O_NONBLOCK");
}
}  // namespace

UniqueFd connect_in_netns(int netns_fd, uint16_t port, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    UniqueFd sock = start_connect_in_netns(netns_fd, port);
    finish_connect(sock.get(), deadline, fmt::format("connect to 127.0.0.1:{} in sandbox", port), timeout);
    return sock;
}

UniqueFd connect_tcp(const TcpAddress& addr, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    Resolved r = resolve(addr);
    UniqueFd s(::socket(r.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s) throw SysError("socket", errno);
    std::string what = fmt::format("connect {}", addr.str());
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&r.addr), r.len) != 0 && errno != EINPROGRESS)
        throw SysError(what, errno);
    finish_connect(s.get(), deadline, what, timeout);
    int one = 1;
    check(::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), "setsockopt TCP_NODELAY");
    return s;
}

void send_all_by(int sock, const void* data, size_t len, std::chrono::steady_clock::time_point deadline) {
    const char* p = static_cast<const char*>(data);
    while (len > 0) {
        ssize_t n = ::send(sock, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) throw SysError("send", errno);
        wait_for(sock, POLLOUT, deadline, "send");
    }
}

size_t receive_some_by(int sock, void* data, size_t len, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        ssize_t n = ::recv(sock, data, len, MSG_DONTWAIT);
        if (n >= 0) return static_cast<size_t>(n);
        if (errno == EINTR) continue;
        if (errno != EAGAIN) throw SysError("receive", errno);
        wait_for(sock, POLLIN, deadline, "receive");
    }
}

void receive_all_by(int sock, void* data, size_t len, std::chrono::steady_clock::time_point deadline) {
    char* p = static_cast<char*>(data);
    while (len > 0) {
        size_t n = receive_some_by(sock, p, len, deadline);
        if (n == 0) throw SysError("receive (the peer closed the connection)", ECONNRESET);
        p += n;
        len -= n;
    }
}

UniqueFd accept_tcp(int listener, std::string& peer) {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    UniqueFd s(retry_eintr(
        [&] { return ::accept4(listener, reinterpret_cast<sockaddr*>(&a), &len, SOCK_CLOEXEC); }));
    if (!s) {
        if (errno == EAGAIN || errno == ECONNABORTED) return {};
        throw SysError("accept", errno);
    }
    char host[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (a.ss_family == AF_INET6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&a);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        peer = fmt::format("[{}]:{}", host, port);
    } else {
        auto* in = reinterpret_cast<sockaddr_in*>(&a);
        ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        peer = fmt::format("{}:{}", host, port);
    }
    int one = 1;
    check(::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), "setsockopt TCP_NODELAY");
    return s;
}

UniqueFd event_fd() {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) throw SysError("eventfd", errno);
    return fd;
}

void notify(int event_fd) {
    uint64_t one = 1;
    check(::write(event_fd, &one, sizeof one), "write eventfd");
}

int wait_readable(std::span<const int> fds, std::chrono::milliseconds timeout) {
    std::vector<pollfd> p;
    for (int fd : fds) p.push_back({fd, POLLIN, 0});
    for (;;) {
        int n = ::poll(p.data(), p.size(), timeout.count() < 0 ? -1 : static_cast<int>(timeout.count()));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw SysError("poll", errno);
        for (size_t i = 0; i < p.size(); ++i)
            if (p[i].revents) return static_cast<int>(i);
        return -1;
    }
}

}  // namespace initless::sys
