#include "initless/sys/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
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
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (fds)
                fds->emplace_back(received);
            else
                ::close(received);
        }
    }
    return n > 0 || (msg.msg_flags & MSG_TRUNC);
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
    if (retry_eintr([&] { return ::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr); }) != 0)
        throw SysError(fmt::format("connect to 127.0.0.1:{} in sandbox", port), errno);
    int one = 1;
    ::setsockopt(sock.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return sock;
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
