#include "initless/sys/inspect.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "initless/sys/error.h"

namespace initless::sys {

struct stat stat_path(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw SysError("stat " + path, errno);
    return st;
}

struct stat stat_fd(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw SysError(fmt::format("fstat fd {}", fd), errno);
    return st;
}

int socket_option(int sock, int level, int name) {
    int v = 0;
    socklen_t len = sizeof v;
    if (::getsockopt(sock, level, name, &v, &len) != 0)
        throw SysError(fmt::format("getsockopt {}/{}", level, name), errno);
    return v;
}

std::vector<uint8_t> socket_name(int sock) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    check(::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len), "getsockname");
    const auto* bytes = reinterpret_cast<const uint8_t*>(&addr);
    return {bytes, bytes + len};
}

std::vector<uint8_t> peer_name(int sock) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getpeername(sock, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        if (errno == ENOTCONN) return {};
        throw SysError("getpeername", errno);
    }
    const auto* bytes = reinterpret_cast<const uint8_t*>(&addr);
    return {bytes, bytes + len};
}

std::string describe_address(const std::vector<uint8_t>& address) {
    sockaddr_storage a{};
    std::memcpy(&a, address.data(), std::min(address.size(), sizeof a));
    char text[INET6_ADDRSTRLEN] = "?";
    if (address.size() >= sizeof(sockaddr_in) && a.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
        ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        return fmt::format("{}:{}", text, ntohs(in->sin_port));
    }
    if (address.size() >= sizeof(sockaddr_in6) && a.ss_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
        return fmt::format("[{}]:{}", text, ntohs(in6->sin6_port));
    }
    return "(none)";
}

uint16_t address_port(const std::vector<uint8_t>& address) {
    sockaddr_storage a{};
    std::memcpy(&a, address.data(), std::min(address.size(), sizeof a));
    if (a.ss_family == AF_INET && address.size() >= sizeof(sockaddr_in))
        return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
    if (a.ss_family == AF_INET6 && address.size() >= sizeof(sockaddr_in6))
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
    return 0;
}

bool readable_now(int fd) {
    pollfd p{fd, POLLIN, 0};
    return retry_eintr([&] { return ::poll(&p, 1, 0); }) > 0 && (p.revents & POLLIN);
}

int tcp_state(int sock) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    check(::getsockopt(sock, IPPROTO_TCP, TCP_INFO, &ti, &len), "getsockopt TCP_INFO");
    return ti.tcpi_state;
}

int tcp_accept_queue(int sock) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    return ::getsockopt(sock, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 ? static_cast<int>(ti.tcpi_unacked) : 0;
}

bool peer_is_unnamed(int sock) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    return ::getpeername(sock, reinterpret_cast<sockaddr*>(&addr), &len) == 0 && len <= sizeof(sa_family_t);
}

bool peer_gone(int sock) {
    char byte;
    return ::recv(sock, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

int tcp_listen_backlog(int sock) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    return ::getsockopt(sock, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 ? static_cast<int>(ti.tcpi_sacked) : 0;
}

uint64_t pipe_size(int fd) {
    int size = ::fcntl(fd, F_GETPIPE_SZ);
    return size > 0 ? static_cast<uint64_t>(size) : 0;
}

std::vector<uint8_t> read_available(int fd) {
    int pending = 0;
    if (::ioctl(fd, FIONREAD, &pending) != 0 || pending <= 0) return {};
    std::vector<uint8_t> data(static_cast<size_t>(pending));
    ssize_t n = ::read(fd, data.data(), data.size());
    data.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return data;
}

void write_at(int fd, const void* data, size_t len, uint64_t offset) {
    ssize_t w = ::pwrite(fd, data, len, static_cast<off_t>(offset));
    if (w != static_cast<ssize_t>(len))
        throw SysError(fmt::format("write {} bytes at {}", len, offset), w < 0 ? errno : ENOSPC);
}

std::vector<std::pair<uint64_t, uint64_t>> process_rlimits(pid_t pid) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (int res = 0; res < RLIM_NLIMITS; ++res) {
        rlimit64 lim{};
        if (::prlimit64(pid, static_cast<__rlimit_resource>(res), nullptr, &lim) != 0)
            throw SysError(fmt::format("prlimit of process {}", pid), errno);
        out.push_back({lim.rlim_cur, lim.rlim_max});
    }
    return out;
}

int64_t clock_ns(clockid_t clock) {
    timespec ts{};
    ::clock_gettime(clock, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace initless::sys
