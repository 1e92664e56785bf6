// Looking at objects from outside, as the checkpoint reads a frozen process: files by path, copies of
// its sockets and pipes (see pidfd_getfd), its resource limits, the clocks. Thin wrappers that throw
// SysError with context; any thread.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace initless::sys {

struct stat stat_path(const std::string& path);
struct stat stat_fd(int fd);
bool lstat_path(const std::string& path, struct stat& out);  // false when it does not exist

int socket_option(int sock, int level, int name);  // an int option (getsockopt)
std::vector<uint8_t> socket_name(int sock);        // the sockaddr bytes of getsockname
std::vector<uint8_t> peer_name(int sock);          // the sockaddr bytes of getpeername, empty if unconnected
std::string describe_address(const std::vector<uint8_t>& address);  // "127.0.0.1:80", "[::1]:80"
uint16_t address_port(const std::vector<uint8_t>& address);         // an inet or inet6 port, else 0
bool readable_now(int fd);         // poll says POLLIN at once (data queued, a connection waiting ...)
int tcp_state(int sock);           // TCP_ESTABLISHED, TCP_CLOSE ... (TCP_INFO tcpi_state)
int tcp_accept_queue(int sock);    // a TCP listener's connections waiting to be accepted (tcpi_unacked)
bool peer_is_unnamed(int sock);    // connected to a peer that has no address (a socketpair end)
bool peer_gone(int sock);          // a stream whose peer is gone, nothing left to read (peek reads EOF)
int tcp_listen_backlog(int sock);  // a TCP listener's backlog limit (TCP_INFO tcpi_sacked), 0 if unknown
// A TCP socket that has sent or received a segment (TCP_INFO tcpi_segs_out/in): in TCP_CLOSE, a
// connection that ended (or a connect that failed), not a socket that was never used.
bool tcp_exchanged_segments(int sock);

// The entries at and below directory `dir` whose lstat is inode `ino` of device `dev`, without
// descending into other filesystems, after looking at no more than `max_entries` entries (else
// `complete` is false). Paths are relative to `dir` ("" for `dir` itself).
struct InodePaths {
    struct Match {
        std::string path;
        bool symlink = false;
    };
    std::vector<Match> matches;
    bool complete = true;
};
InodePaths find_inode(const std::string& dir, dev_t dev, ino_t ino, size_t max_entries);
// The path the kernel gives (the /proc/self/fd link) of the object a file handle (fdinfo's
// fhandle-type and f_handle) names on the filesystem of `mount_dir`, opened O_PATH through that
// mount; empty when the handle cannot be opened. Relative to the root of the mount's namespace when
// that is not ours; may name another object (a disconnected dentry): the caller checks it.
std::string path_of_handle(const std::string& mount_dir, int type, const std::vector<uint8_t>& handle);

uint64_t pipe_size(int fd);                   // F_GETPIPE_SZ, 0 if unknown
std::vector<uint8_t> read_available(int fd);  // what a pipe holds now (FIONREAD), read out of it
void write_at(int fd, const void* data, size_t len, uint64_t offset);  // the whole range or throw

std::vector<std::pair<uint64_t, uint64_t>> process_rlimits(pid_t pid);  // {soft, hard} per RLIMIT_*
int64_t clock_ns(clockid_t clock);

}  // namespace initless::sys
