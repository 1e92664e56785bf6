#include "initless/sys/inspect.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

bool lstat_path(const std::string& path, struct stat& out) {
    if (::lstat(path.c_str(), &out) == 0) return true;
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw SysError("lstat " + path, errno);
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

InodePaths find_inode(const std::string& dir, dev_t dev, ino_t ino, size_t max_entries) {
    InodePaths out;
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) throw SysError("lstat " + dir, errno);
    if (st.st_dev == dev && st.st_ino == ino) out.matches.push_back({"", S_ISLNK(st.st_mode)});
    if (!S_ISDIR(st.st_mode) || st.st_dev != dev) return out;
    size_t seen = 1;
    std::vector<std::string> pending{""};  // directories to read, relative to `dir`
    while (!pending.empty()) {
        std::string rel = std::move(pending.back());
        pending.pop_back();
        std::string path = rel.empty() ? dir : dir + "/" + rel;
        int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;  // gone or not readable: not a path the watch could be re-added by
        DIR* d = ::fdopendir(fd);
        if (!d) {
            ::close(fd);
            continue;
        }
        while (dirent* e = ::readdir(d)) {
            if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
            if (++seen > max_entries) {
                out.complete = false;
                ::closedir(d);
                return out;
            }
            struct stat est {};
            if (::fstatat(::dirfd(d), e->d_name, &est, AT_SYMLINK_NOFOLLOW) != 0 || est.st_dev != dev)
                continue;
            std::string child = rel.empty() ? std::string(e->d_name) : rel + "/" + e->d_name;
            if (est.st_ino == ino) out.matches.push_back({child, S_ISLNK(est.st_mode)});
            if (S_ISDIR(est.st_mode)) pending.push_back(std::move(child));
        }
        ::closedir(d);
    }
    return out;
}

std::string path_of_handle(const std::string& mount_dir, int type, const std::vector<uint8_t>& handle) {
    int mount_fd = ::open(mount_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);  // not O_PATH: EBADF
    if (mount_fd < 0) return "";
    std::vector<uint8_t> buf(sizeof(file_handle) + handle.size());
    auto* fh = reinterpret_cast<file_handle*>(buf.data());
    fh->handle_bytes = static_cast<unsigned>(handle.size());
    fh->handle_type = type;
    std::memcpy(fh->f_handle, handle.data(), handle.size());
    int fd = ::open_by_handle_at(mount_fd, fh, O_PATH | O_CLOEXEC);
    ::close(mount_fd);
    if (fd < 0) return "";
    char link[4096];
    ssize_t n = ::readlink(fmt::format("/proc/self/fd/{}", fd).c_str(), link, sizeof link);
    ::close(fd);
    return n > 0 ? std::string(link, static_cast<size_t>(n)) : "";
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
