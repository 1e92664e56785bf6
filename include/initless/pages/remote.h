// Remote pages: a TCP server of one image's pages.img (`initless page-server`), and the page source
// through which a restore on another host reads them (`initless restore DIR --pages-from ADDR`).
//
// The protocol (version 1; little-endian, fixed-size frames, one connection per restoring process):
//   request  {u32 magic "ILPQ", u32 kind, u64 offset, u64 length}                     24 bytes
//   response {u32 magic "ILPR", u32 status, u64 length} then `length` bytes            16 bytes + data
//   kind 1 HELLO  (offset and length 0): status 0 and {u64 version, u64 pages.img size, 64 bytes:
//                 the hex SHA-256 AUTH lists for pages.img}, so that a client finds out at once
//                 that the server serves another image (or another version of it)
//   kind 2 RANGE  [offset, offset + length) of pages.img: status 0 and the bytes; length at most
//                 kMaxRange, inside the file
//   status 1 (bad range: out of the file, empty or longer than kMaxRange) and status 2 (malformed:
//   a bad magic or kind) carry an error message as their data; after status 2 the server closes
//   the connection (it cannot know where the next frame starts).
// Requests may be pipelined: the server answers them in order. The client decides what it fetches
// and in which order (working set first, then faults, then the fill): it holds the authenticated
// manifest and working set, the server holds only pages.img and knows nothing of restores.
//
// What is verified: every byte a client uses is checked against pages.sums (the authenticated
// SHA-256 of each 64 KiB block of pages.img) before it reaches a restored process; a block that
// fails its digest fails the source (PageSourceFailed), as does a server that closes, resets, or
// answers nothing within the timeout.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
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
enum Status : uint32_t { kOk = 0, kBadRange = 1, kMalformed = 2 };
struct Request {
    uint32_t magic = kRequestMagic, kind = 0;
    uint64_t offset = 0, length = 0;
};
struct ResponseHeader {
    uint32_t magic = kResponseMagic, status = 0;
    uint64_t length = 0;
};
static_assert(sizeof(Request) == 24 && sizeof(ResponseHeader) == 16);
}  // namespace remote

// `initless page-server`: serves one loaded image's pages.img to any number of clients, a thread
// each (at most kMaxClients; more are answered with an error and closed). Logs with spdlog.
// Threads: `run` blocks the calling thread until `stop_fd` (e.g. a signalfd for SIGTERM) is
// readable, then closes the listener, ends every client's connection and joins their threads.
class RemotePageServer {
  public:
    static constexpr size_t kMaxClients = 64;
    RemotePageServer(const image::Image& img, const sys::TcpAddress& listen);
    ~RemotePageServer();
    uint16_t port() const;  // the port listened on (useful when asked for port 0)
    void run(int stop_fd);

  private:
    struct Client;
    void serve(Client& c);
    sys::UniqueFd listener_;
    sys::UniqueFd pages_;
    std::optional<sys::FileMapping> mapped_;
    uint64_t size_ = 0;
    std::string digest_;
    sys::UniqueFd stopping_;  // an eventfd the client threads watch
    std::mutex mutex_;
    std::vector<std::unique_ptr<Client>> clients_;
};

// The page source of a remote restore: a connection to a RemotePageServer, and a local cache (a
// sparse memfd of pages.img's size) of what the restore needs before it runs (`fetch_for_restore`:
// the working set, and the pages of file mappings and shared memory, which the restore tables read
// themselves from the image's pages_file, which the cache becomes). The page server reads the rest
// through `read` as faults and the fill need it: fetched into a scratch buffer, not cached (each
// instance of a run fetches its own). Every block is verified against the image's pages.sums first.
//
// A request batch that does not complete within `timeout` (or a closed connection, a server error,
// a block failing its digest) fails the source for good: PageSourceFailed with the reason. The
// page server then kills the restored function (include/initless/pages/page_server.h).
// Threads: any, one at a time (an internal lock).
class RemotePageSource : public image::PageSource {
  public:
    struct Counters {
        std::atomic<uint64_t> requests{0}, blocks_fetched{0}, bytes_fetched{0}, blocks_for_restore{0};
    };
    // Connects, says HELLO and checks that the server serves `img`'s pages.img (its size and
    // authenticated digest). `img` must come from image::load_without_pages (it has pages.sums).
    RemotePageSource(const sys::TcpAddress& server, const image::Image& img, std::chrono::milliseconds timeout);
    ~RemotePageSource() override;

    const uint8_t* read(uint64_t offset, uint64_t len) override;
    std::string describe() const override;

    // Fetches what a restore of `img` needs before its tables run: the working set (in its
    // recorded order) and every saved page the tables read themselves (VMAs not served lazily).
    void fetch_for_restore(const image::Image& img);
    // A new read-only open file description of the cache, to be the image's pages_file.
    sys::UniqueFd cache_file() const;
    const Counters& counters() const { return counters_; }

  private:
    // Fetches `blocks` (adjacent ones as one range, pipelined), each verified, to into_for(its
    // offset); `keep`: they are in the cache now.
    void fetch_blocks(const std::vector<uint64_t>& blocks, const std::function<uint8_t*(uint64_t)>& into_for, bool keep);
    [[noreturn]] void fail(const std::string& why);

    std::string server_;
    std::chrono::milliseconds timeout_;
    std::string sums_;
    uint64_t size_ = 0;
    std::vector<uint8_t> holds_data_;  // per block: some saved page lies in it (else zeros: never fetched)
    std::vector<uint8_t> present_;     // per block: in the cache, verified
    sys::MemoryFile cache_;
    std::vector<uint8_t> scratch_;  // what `read` fetched last (not cached): blocks [first, last]
    uint64_t scratch_first_ = 0, scratch_last_ = 0;
    bool scratch_valid_ = false;
    sys::UniqueFd sock_;
    std::mutex mutex_;
    std::string failure_;
    Counters counters_;
};

}  // namespace initless::pages
