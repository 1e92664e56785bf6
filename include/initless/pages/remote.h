// Remote pages: a TCP server of one image's pages.img (`initless page-server`), and the page source
// through which a restore on another host reads them (`initless restore DIR --pages-from ADDR`).
//
// The protocol (version 1; little-endian, fixed-size frames; a restoring process holds two connections,
// one for what it needs now and one for its read-ahead):
//   request  {u32 magic "ILPQ", u32 kind, u64 offset, u64 length}                     24 bytes
//   response {u32 magic "ILPR", u32 status, u64 length} then `length` bytes            16 bytes + data
//   kind 1 HELLO  (offset and length 0): status 0 and {u64 version, u64 pages.img size, 64 bytes:
//                 the hex SHA-256 AUTH lists for pages.img}, so that a client finds out at once
//                 that the server serves another image (or another version of it)
//   kind 2 RANGE  [offset, offset + length) of pages.img: status 0 and the bytes; length at most
//                 kMaxRange, inside the file
//   status 1 (bad range: out of the file, empty or longer than kMaxRange), status 2 (malformed:
//   a bad magic or kind) and status 3 (busy: as many clients as it serves at once, none idle, sent
//   in place of the HELLO's answer) carry an error message as their data; after status 2 and 3 the
//   server closes the connection (after 2 it cannot know where the next frame starts).
// Requests may be pipelined: the server answers them in order. The client decides what it fetches
// and in which order (the working set first; then faults on one connection, the fill's order read
// ahead on the other): it holds the authenticated manifest and working set, the server holds only
// pages.img and knows nothing of restores.
//
// What is verified: every byte a client uses is checked against pages.sums (the authenticated
// SHA-256 of each 64 KiB block of pages.img) before it reaches a restored process; a block that
// fails its digest fails the source (PageSourceFailed), as does a server that closes, resets, or
// answers nothing within the timeout.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "initless/image/image.h"
#include "initless/image/page_source.h"
#include "initless/sys/file.h"
#include "initless/sys/socket.h"
#include "initless/sys/unique_fd.h"

namespace initless::pages {

namespace remote {
constexpr uint32_t kRequestMagic = 0x5150'4c49;   // "ILPQ"
constexpr uint32_t kResponseMagic = 0x5250'4c49;  // "ILPR"
constexpr uint64_t kVersion = 1;
constexpr uint64_t kMaxRange = 8 << 20;
enum Kind : uint32_t { kHello = 1, kRange = 2 };
enum Status : uint32_t { kOk = 0, kBadRange = 1, kMalformed = 2, kBusy = 3 };
struct Request {
    uint32_t magic = kRequestMagic, kind = 0;
    uint64_t offset = 0, length = 0;
};
struct ResponseHeader {
    uint32_t magic = kResponseMagic, status = 0;
    uint64_t length = 0;
};
static_assert(sizeof(Request) == 24 && sizeof(ResponseHeader) == 16);
// How long a page server keeps a client that asks nothing (RemotePageServer).
struct ClientLimits {
    std::chrono::milliseconds idle{std::chrono::seconds(60)};       // then it is closed
    std::chrono::milliseconds evict_idle{std::chrono::seconds(1)};  // it may make room for another
};
}  // namespace remote

// `initless page-server`: serves one loaded image's pages.img to any number of clients, a thread
// each (at most kMaxClients at once). Logs with spdlog.
// Clients that stop asking do not keep their place: a client with no request for `idle` is closed,
// and when kMaxClients are connected a new one takes the place of the one idle longest, if that one
// has been idle for at least `evict_idle` (else the new one is answered with an error and closed).
// So idle connections, whoever opens them, cannot lock real restores out; a RemotePageSource
// reconnects when it finds its connection closed.
// Threads: `run` blocks the calling thread until `stop_fd` (e.g. a signalfd for SIGTERM) is
// readable, then closes the listener, ends every client's connection and joins their threads.
class RemotePageServer {
  public:
    static constexpr size_t kMaxClients = 64;
    RemotePageServer(const image::Image& img, const sys::TcpAddress& listen,
                     remote::ClientLimits limits = {});
    ~RemotePageServer();
    uint16_t port() const;  // the port listened on (useful when asked for port 0)
    void run(int stop_fd);

  private:
    struct Client;
    void serve(Client& c);
    // Under mutex_ with kMaxClients connected: ends the connection of the client idle longest if it
    // has been idle for at least limits_.evict_idle; whether it did.
    bool evict_one_idle(const std::string& for_peer);
    sys::UniqueFd listener_;
    sys::UniqueFd pages_;
    std::optional<sys::FileMapping> mapped_;
    uint64_t size_ = 0;
    std::string digest_;
    remote::ClientLimits limits_;
    sys::UniqueFd stopping_;  // an eventfd the client threads watch
    std::mutex mutex_;
    std::vector<std::unique_ptr<Client>> clients_;
};

// The page source of a remote restore: connections to a RemotePageServer, and a local cache (a
// sparse memfd of pages.img's size) of the pages.img blocks fetched so far, each verified against
// the image's pages.sums before it is marked present (nothing unverified is ever handed out).
//   - `fetch_for_restore` fetches what the restore needs before it runs: the working set, and the
//     pages of file mappings and shared memory, which the restore tables read themselves from the
//     image's pages_file, which the cache becomes. It starts the read-ahead, which takes ranges of
//     that set too (two connections, two threads verifying), and returns once all of it is in.
//   - The read-ahead: a thread of its own, with a connection of its own, fetches every other block
//     holding saved pages into the cache in the order the page server's background fill will ask
//     for them (per process: its lazily served VMAs in address order; processes taken in turn),
//     kAheadDepth ranges of kAheadRange in flight (pipelined), and verifies them. So the fill and
//     most faults find their blocks in the cache: the page server thread only copies. It goes on
//     past the restore set only once `read` first misses a block (a fault or the fill began: the
//     restore is done), so that the restore does not share the CPU with it (a restore took ~2x
//     as long on a 2-core VM when it did).
//   - `read` (the page server's faults and fill) returns the cache's bytes. A block not there yet
//     and not in flight is fetched at once on the first connection (a fault never queues behind
//     the read-ahead's requests); a block the read-ahead has in flight is waited for (at most
//     kAheadDepth ranges of transfer, on a slow link).
//
// Memory: once the read-ahead is done the cache holds every block of pages.img that holds saved
// pages: about pages.img's size of shared memory (charged to the restoring process's cgroup), for
// as long as the source lives (a restore command: until it ends). That is what the restored
// processes' own memory costs once filled, so a remote restore peaks at about twice its image; it
// buys that the fill never waits on the network, and that every further instance (and fork) of
// the run is served from the cache instead of fetching the image again.
//
// A connection the server ended (a server closes clients idle too long and may end the one idle
// longest to make room; a server restarted) is made again when next needed (a refusal asked again
// until the timeout), and requests it ended are asked again once.
// A response that does not come within `timeout` of being due (or a connection that ends again or
// cannot be made again, a server error, a block failing its digest), on either connection, fails
// the source for good:
// PageSourceFailed with the reason, from every later `read`; the read-ahead then stops. The page
// server then kills the restored function (include/initless/pages/page_server.h).
// Threads: `read` and `fetch_for_restore` from any thread, one at a time (an internal lock); `read`
// blocks at most the timeout per fetch it makes or waits for. The read-ahead thread is internal:
// the destructor stops and joins it (it may run on the page server thread, which drops the source
// with the last process served from it), and it closes its connection when it ends.
class RemotePageSource : public image::PageSource {
  public:
    static constexpr uint64_t kAheadRange = 256 << 10;  // bytes per read-ahead request
    static constexpr size_t kAheadDepth = 4;            // read-ahead requests in flight

    struct Counters {
        std::atomic<uint64_t> requests{0}, blocks_fetched{0}, bytes_fetched{0}, blocks_for_restore{0},
            blocks_read_ahead{0},  // of blocks_fetched, by the read-ahead
            blocks_on_demand{0},   // of blocks_fetched, by `read` (not fetched ahead in time)
            reads_waited{0},       // `read`s that waited for a block the read-ahead had in flight
            reconnects{0};         // connections made again after the server ended them
    };
    // Connects, says HELLO and checks that the server serves `img`'s pages.img (its size and
    // authenticated digest). `img` must come from image::load_without_pages (it has pages.sums).
    RemotePageSource(const sys::TcpAddress& server, const image::Image& img,
                     std::chrono::milliseconds timeout);
    ~RemotePageSource() override;

    const uint8_t* read(uint64_t offset, uint64_t len) override;
    std::string describe() const override;

    // Fetches what a restore of `img` needs before its tables run: the working set (in its
    // recorded order) and every saved page the tables read themselves (VMAs not served lazily),
    // with the read-ahead it starts (which goes on with the rest). Blocks at most the timeout per
    // response.
    void fetch_for_restore(const image::Image& img);
    // A new read-only open file description of the cache, to be the image's pages_file.
    sys::UniqueFd cache_file() const;
    const Counters& counters() const { return counters_; }

  private:
    enum BlockState : uint8_t { kAbsent = 0, kFetching = 1, kPresent = 2 };
    struct ReadAheadStopped {};

    // Fetches `blocks` on the first connection into the cache (adjacent ones as one range,
    // pipelined), verifies each and marks it present. Every one must be kFetching, claimed by the
    // caller.
    void fetch_blocks(const std::vector<uint64_t>& blocks);
    // Makes `sock` ("first" or "read-ahead" connection, for the messages) again and counts it; a
    // refusal (a server restarting) is asked again until the timeout; fails the source if it cannot.
    // With `stop_fd` >= 0 it throws ReadAheadStopped once that is readable.
    void reconnect(sys::UniqueFd& sock, const char* which, int stop_fd = -1);
    // reconnect() if `sock` is gone or the server ended it (one peek); whether it did.
    bool reconnect_if_ended(sys::UniqueFd& sock, const char* which, int stop_fd = -1);
    // Receives `q`'s response into the cache and verifies it, by `deadline` (`stop_fd` >= 0: throws
    // ReadAheadStopped once it is readable).
    void receive_range(int sock, const remote::Request& q, std::chrono::steady_clock::time_point deadline,
                       int stop_fd);
    // Connects and checks the server's HELLO: protocol version, pages.img's size and digest (throws Error).
    sys::UniqueFd connect_and_check();
    void read_ahead();
    // The failure of the source (the first reason is kept), wakes the waiters and stops the
    // read-ahead; the second throws PageSourceFailed with it.
    std::string set_failure(const std::string& why);
    [[noreturn]] void fail(const std::string& why);
    std::string io_failure(const sys::SysError& e) const;

    std::string server_;
    sys::TcpAddress address_;
    std::string pages_digest_;  // pages.img's authenticated digest
    std::chrono::milliseconds timeout_;
    std::string sums_;
    uint64_t size_ = 0;
    std::vector<uint8_t> holds_data_;  // per block: some saved page lies in it (else zeros: never fetched)
    sys::MemoryFile cache_;
    sys::UniqueFd sock_;       // the first connection: fetch_for_restore and `read`'s own fetches
    std::mutex caller_mutex_;  // one caller of read / fetch_for_restore at a time (they use sock_)
    // The read-ahead's order (blocks: the restore set, then the fill's order), set before its
    // thread starts; it goes past the first restore_part_ of them once fill_began_.
    std::vector<uint64_t> ahead_order_;
    size_t restore_part_ = 0;
    bool fill_began_ = false;   // `read` missed a block (a fault or the fill began); under mutex_
    sys::UniqueFd stop_ahead_;  // an eventfd: the read-ahead stops when it is readable
    std::thread ahead_;
    std::mutex mutex_;  // state_ and failure_
    std::condition_variable arrived_;
    std::vector<uint8_t> state_;  // per block: BlockState
    std::string failure_;
    bool stopping_ = false;  // the destructor runs
    Counters counters_;
};

}  // namespace initless::pages
