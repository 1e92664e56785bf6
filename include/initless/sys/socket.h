// Sockets: SEQPACKET messages carrying fds (SCM_RIGHTS), and TCP connections made from inside
// another network namespace (setns in, connect, setns back) so the controller reaches a sandboxed
// function on 127.0.0.1 without veth or NAT.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "initless/sys/unique_fd.h"

namespace initless::sys {

struct SocketPair {
    UniqueFd a, b;
};
SocketPair seqpacket_pair();
// A SOCK_SEQPACKET unix socket listening at `path` (an existing file there is replaced), and a client
// of one. The path is bound and connected through /proc/self/fd of its directory, so that its length
// is not bounded by sun_path (a runtime's state dir under a long --root).
UniqueFd listen_unix_seqpacket(const std::filesystem::path& path);
UniqueFd connect_unix_seqpacket(const std::filesystem::path& path);

void send_message(int fd, std::string_view data, std::span<const int> fds = {});
// Returns false on orderly EOF. Received fds are appended to `fds`.
bool receive_message(int fd, std::string& data, std::vector<UniqueFd>* fds = nullptr);

// What is queued for a socket to receive, read with MSG_PEEK at a moving SO_PEEK_OFF so that nothing
// is consumed (the socket's own peek offset is put back): one entry per datagram, or one for a
// stream. Stops at fds in flight (SCM_RIGHTS; the copies received are closed) or a truncated
// message, and says so in `complete`.
struct QueuedData {
    std::vector<std::vector<uint8_t>> messages;
    bool complete = true;
};
// At most this many messages (a unix socket's receive queue holds far fewer: max_dgram_qlen).
inline constexpr size_t kMaxPeekedMessages = 1 << 16;
QueuedData peek_queued(int sock, bool stream);

// Connects to 127.0.0.1:port inside the network namespace `netns_fd` (an open /proc/PID/ns/net),
// waiting at most `timeout` (a listener whose accept queue is full drops the SYN, and the kernel's
// retries go on for about two minutes): SysError ETIMEDOUT past it. The socket is blocking.
// Safe to call from any thread: only the calling thread switches namespaces, and it switches back.
UniqueFd connect_in_netns(int netns_fd, uint16_t port, std::chrono::milliseconds timeout);
// The same without waiting: the socket is non-blocking and may still be connecting, and a refusal
// shows on it (its first write fails); a listener whose accept queue is full leaves it connecting
// until the SYN retries get through, and its first write waits for that (a blocking connect there
// held the caller's thread for 1 s and more).
UniqueFd start_connect_in_netns(int netns_fd, uint16_t port);
// A TCP socket listening on 127.0.0.1:port inside the network namespace `netns_fd`, owned by the
// caller: a server the sandbox's processes reach on their loopback without being part of them.
UniqueFd listen_in_netns(int netns_fd, uint16_t port);

// What a connected stream socket holds, looked at without reading it (a MSG_PEEK of one byte):
//   Quiet  nothing waits and the peer has not closed it: an exchange that is over, a connection that
//          may serve the next one;
//   Bytes  bytes nobody asked for: not ours to judge (a parser will), but not a quiet connection;
//   Closed the peer closed or reset it (end of stream, or an error pending): never to be reused.
enum class StreamPeek { Quiet, Bytes, Closed };
StreamPeek peek_stream(int sock);

// A pipe through which a stream's bytes go from one socket to another with splice(2), by reference to
// the kernel's pages rather than copied through user memory. Both calls are non-blocking and report
// like the system calls: a count, 0 at the end of the stream (fill), or -1 with errno (EAGAIN: the
// socket has nothing to read, or no room, now). Thread: one user at a time.
class SplicePipe {
  public:
    // A pipe of `size` bytes if the kernel grants it (else its default); throws SysError if none can be made.
    explicit SplicePipe(size_t size);
    // Moves up to `max` bytes from socket `from` into the pipe, no more than it has room for.
    ssize_t fill(int from, size_t max);
    // Moves what the pipe holds into socket `to`, as much as it takes.
    ssize_t drain(int to);
    size_t held() const { return held_; }

  private:
    UniqueFd read_, write_;
    size_t capacity_ = 0, held_ = 0;
};
// True while a TCP socket's connect is still waiting for the peer's SYN-ACK (state SYN_SENT). On
// loopback the handshake completes inside connect() unless the listener dropped the SYN (its accept
// queue full), so a new connection still in this state then was not taken.
bool tcp_connect_pending(int sock);
// Acknowledges what arrives on a TCP socket at once instead of delaying the ACK (TCP_QUICKACK; not
// sticky: set before each read that waits for a peer that may write in pieces, since a peer with
// Nagle on holds its second small write until the first is acknowledged: 40 ms per response).
void set_quickack(int sock);
// Sets close-on-exec on an fd a library opened without it (Asio's sockets).
void set_cloexec(int fd);
// A new fd for the same open file description, close-on-exec.
UniqueFd duplicate(int fd);
// The peers of the connected unix sockets of the network namespace `netns_fd`, by socket inode
// (NETLINK_SOCK_DIAG with UDIAG_SHOW_PEER, asked from inside that namespace). A socket whose peer
// is gone is absent.
std::map<uint64_t, uint64_t> unix_socket_peers(int netns_fd);
// The same dump with more of each socket: its peer (0: none), its shutdown state (the kernel's
// sk_shutdown: 1 receive side shut, 2 send side shut) and, for a listener, how many connections wait
// in its accept queue (for others, the bytes queued to receive).
struct UnixSocketDiag {
    uint64_t peer = 0;
    int shutdown = 0;
    uint32_t rqueue = 0;
};
std::map<uint64_t, UnixSocketDiag> unix_socket_diag(int netns_fd);

// TCP for the remote page server (pages/remote.h). An address is "HOST:PORT" (IPv4 or a name
// getaddrinfo resolves; "[V6]:PORT" for IPv6); port 0 on listen picks a free one.
struct TcpAddress {
    std::string host;
    uint16_t port = 0;
    std::string str() const;
};
TcpAddress parse_tcp_address(const std::string& text);  // throws Error naming the text
// A TCP socket listening on `addr` (SO_REUSEADDR, close-on-exec, non-blocking accept).
UniqueFd listen_tcp(const TcpAddress& addr, int backlog = 64);
// The port a bound socket got.
uint16_t local_port(int sock);
// Connects to `addr` within `timeout` (TCP_NODELAY, close-on-exec, blocking afterwards); throws
// SysError naming the address (ETIMEDOUT when the time ran out).
UniqueFd connect_tcp(const TcpAddress& addr, std::chrono::milliseconds timeout);
// Writes or reads exactly `len` bytes on a stream socket before `deadline` (poll between partial
// transfers). Throw SysError: ETIMEDOUT when the deadline passed, EPIPE/ECONNRESET as the kernel says,
// and reads throw with ECONNRESET's text "closed by peer" on end of stream mid-read.
void send_all_by(int sock, const void* data, size_t len, std::chrono::steady_clock::time_point deadline);
void receive_all_by(int sock, void* data, size_t len, std::chrono::steady_clock::time_point deadline);
// Reads up to `len` bytes, waiting at most until `deadline`; returns 0 on end of stream, throws on
// errors and ETIMEDOUT. For a server reading a client's next request.
size_t receive_some_by(int sock, void* data, size_t len, std::chrono::steady_clock::time_point deadline);
// Accepts a connection on a non-blocking listener (close-on-exec, TCP_NODELAY); empty when none is
// waiting. `peer` gets the client's address.
UniqueFd accept_tcp(int listener, std::string& peer);
// An eventfd (close-on-exec, non-blocking) and a write that makes it readable for good.
UniqueFd event_fd();
void notify(int event_fd);
// Waits until one of `fds` is readable (or hung up) or `timeout` passes (negative: forever); returns
// the index of the first such fd, or -1 on timeout.
int wait_readable(std::span<const int> fds, std::chrono::milliseconds timeout);

// Brings the loopback interface of the current network namespace up.
void set_loopback_up();

}  // namespace initless::sys
