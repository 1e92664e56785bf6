// Remote pages: the page-server side and the restore side (include/initless/pages/remote.h).
#include "initless/pages/remote.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <deque>

#include <fmt/format.h>

#include <spdlog/spdlog.h>

#include "initless/image/auth.h"
#include "initless/pages/page_server.h"
#include "initless/sys/error.h"

namespace initless::pages {

using namespace remote;
using image::kPageSize;
using image::kPageSumBlock;
using image::kPageSumSize;
using Clock = std::chrono::steady_clock;

namespace {
// How long the server waits for the rest of a request once its first byte came, and for a client
// to take a response.
constexpr auto kServerIo = std::chrono::seconds(30);
constexpr size_t kHelloSize = 8 + 8 + 64;
// A page server's refusal because it serves as many clients as it may (status kBusy).
class ServerBusy : public Error {
  public:
    using Error::Error;
};
// How long a reconnection waits before it asks a server that refused again.
constexpr auto kReconnectPause = std::chrono::milliseconds(100);
// Requests of one pipelined batch: few enough that the requests fit in the socket buffers while the
// client is not reading yet (24 bytes each).
constexpr size_t kBatch = 256;
}  // namespace

// ---- The server -------------------------------------------------------------------------------------

struct RemotePageServer::Client {
    sys::UniqueFd sock;  // closed only once the thread is joined (an eviction may shut it down meanwhile)
    std::string peer;
    std::thread thread;
    std::atomic<bool> done{false};
    std::atomic<bool> evicted{false};
    // When the client last had a request answered (or connected); kBusy while one is being served.
    static constexpr Clock::rep kBusy = 0;
    std::atomic<Clock::rep> idle_since{Clock::now().time_since_epoch().count()};
};

RemotePageServer::RemotePageServer(const image::Image& img, const sys::TcpAddress& listen,
                                   ClientLimits limits)
    : pages_(img.open_pages()),
      size_(img.manifest.pages_file_size),
      digest_(img.digests.at("pages.img")),
      limits_(limits),
      stopping_(sys::event_fd()) {
    struct stat st {};
    sys::check(::fstat(pages_.get(), &st), "page-server: stat pages.img");
    if (static_cast<uint64_t>(st.st_size) != size_)
        throw Error(fmt::format("page-server: {} has {} bytes, its manifest says {}",
                                img.pages_path().string(), st.st_size, size_));
    mapped_.emplace(pages_.get(), static_cast<size_t>(size_));
    listener_ = sys::listen_tcp(listen);
}

RemotePageServer::~RemotePageServer() {
    sys::notify(stopping_.get());
    std::lock_guard lock(mutex_);
    for (auto& c : clients_)
        if (c->thread.joinable()) c->thread.join();
}

uint16_t RemotePageServer::port() const {
    return sys::local_port(listener_.get());
}

void RemotePageServer::run(int stop_fd) {
    spdlog::info("page-server: serving {} bytes of pages on port {}", size_, port());
    const int fds[] = {listener_.get(), stop_fd};
    for (;;) {
        int ready = sys::wait_readable(fds, std::chrono::seconds(1));
        {
            std::lock_guard lock(mutex_);
            std::erase_if(clients_, [](const std::unique_ptr<Client>& c) {
                if (!c->done) return false;
                c->thread.join();
                return true;
            });
        }
        if (ready == 1) break;
        if (ready != 0) continue;
        std::string peer;
        sys::UniqueFd sock;
        try {
            sock = sys::accept_tcp(listener_.get(), peer);
        } catch (const Error& e) {
            spdlog::warn("page-server: {}", e.what());
            continue;
        }
        if (!sock) continue;
        std::lock_guard lock(mutex_);
        if (clients_.size() >= kMaxClients && !evict_one_idle(peer)) {
            spdlog::warn("page-server: refusing {}: {} clients already", peer, kMaxClients);
            std::string why = fmt::format("page-server: too many clients ({})", kMaxClients);
            ResponseHeader h{kResponseMagic, kBusy, why.size()};
            try {
                auto deadline = Clock::now() + std::chrono::seconds(1);
                sys::send_all_by(sock.get(), &h, sizeof h, deadline);
                sys::send_all_by(sock.get(), why.data(), why.size(), deadline);
            } catch (const Error&) {
            }
            continue;
        }
        auto c = std::make_unique<Client>();
        c->sock = std::move(sock);
        c->peer = peer;
        spdlog::info("page-server: client {} connected", peer);
        Client* raw = c.get();
        c->thread = std::thread([this, raw] {
            try {
                serve(*raw);
            } catch (const std::exception& e) {
                if (raw->evicted)
                    spdlog::info("page-server: client {} evicted", raw->peer);
                else
                    spdlog::info("page-server: client {}: {}", raw->peer, e.what());
            }
            raw->done = true;
        });
        clients_.push_back(std::move(c));
    }
    spdlog::info("page-server: stopping");
    listener_.reset();
    sys::notify(stopping_.get());
    std::lock_guard lock(mutex_);
    for (auto& c : clients_) c->thread.join();
    clients_.clear();
    spdlog::info("page-server: stopped");
}

bool RemotePageServer::evict_one_idle(const std::string& for_peer) {
    Client* longest = nullptr;
    Clock::rep since = 0;
    for (auto& c : clients_) {
        Clock::rep s = c->idle_since;
        if (c->done || c->evicted || s == Client::kBusy) continue;
        if (!longest || s < since) {
            longest = c.get();
            since = s;
        }
    }
    if (!longest) return false;
    auto idle = Clock::now() - Clock::time_point(Clock::duration(since));
    if (idle < limits_.evict_idle) return false;
    spdlog::warn("page-server: {} clients already: ending client {} (idle {} ms) for {}", kMaxClients,
                 longest->peer, std::chrono::duration_cast<std::chrono::milliseconds>(idle).count(),
                 for_peer);
    longest->evicted = true;
    // Its thread, waiting for a request, sees the end of the stream; the fd stays open until the join.
    ::shutdown(longest->sock.get(), SHUT_RDWR);
    return true;
}

void RemotePageServer::serve(Client& c) {
    const int fds[] = {c.sock.get(), stopping_.get()};
    uint64_t served = 0, requests = 0;
    auto answer = [&](uint32_t status, const void* data, uint64_t len) {
        ResponseHeader h{kResponseMagic, status, len};
        auto deadline = Clock::now() + kServerIo;
        sys::send_all_by(c.sock.get(), &h, sizeof h, deadline);
        if (len) sys::send_all_by(c.sock.get(), data, len, deadline);
    };
    for (;;) {
        c.idle_since = Clock::now().time_since_epoch().count();
        int ready = sys::wait_readable(fds, limits_.idle);
        if (ready == 1) return;  // stopping
        if (ready < 0) {
            // Ended now, not when the thread is reaped (up to a second later): a request sent meanwhile
            // would wait for that, then meet a reset.
            ::shutdown(c.sock.get(), SHUT_RDWR);
            spdlog::info("page-server: client {} closed: no request for {} ms ({} requests, {} bytes)",
                         c.peer, limits_.idle.count(), requests, served);
            return;
        }
        c.idle_since = Client::kBusy;
        if (c.evicted) {
            spdlog::info("page-server: client {} evicted after {} requests ({} bytes)", c.peer, requests,
                         served);
            return;
        }
        Request r;
        auto deadline = Clock::now() + kServerIo;
        size_t got = sys::receive_some_by(c.sock.get(), &r, sizeof r, deadline);
        if (got == 0) {
            spdlog::info("page-server: client {} closed after {} requests ({} bytes)", c.peer, requests,
                         served);
            return;
        }
        if (got < sizeof r)
            sys::receive_all_by(c.sock.get(), reinterpret_cast<char*>(&r) + got, sizeof r - got, deadline);
        ++requests;
        if (r.magic != kRequestMagic || (r.kind != kHello && r.kind != kRange)) {
            std::string why = fmt::format(
                "malformed request (magic {:#x}, kind {}): not the initless page protocol "
                "version {}; closing",
                r.magic, r.kind, kVersion);
            spdlog::warn("page-server: client {}: {}", c.peer, why);
            answer(kMalformed, why.data(), why.size());
            return;
        }
        if (r.kind == kHello) {
            char hello[kHelloSize] = {};
            uint64_t version = kVersion;
            std::memcpy(hello, &version, 8);
            std::memcpy(hello + 8, &size_, 8);
            std::memcpy(hello + 16, digest_.data(), std::min<size_t>(64, digest_.size()));
            answer(kOk, hello, sizeof hello);
            continue;
        }
        if (r.length == 0 || r.length > kMaxRange || r.offset > size_ || r.length > size_ - r.offset) {
            std::string why =
                fmt::format("bad range [{:#x}, +{:#x}): pages.img has {:#x} bytes, a range at most {:#x}",
                            r.offset, r.length, size_, kMaxRange);
            spdlog::warn("page-server: client {}: {}", c.peer, why);
            answer(kBadRange, why.data(), why.size());
            continue;
        }
        answer(kOk, mapped_->data() + r.offset, r.length);
        served += r.length;
    }
}

// ---- The restore side -------------------------------------------------------------------------------

namespace {
uint64_t blocks_of(uint64_t size) {
    return (size + kPageSumBlock - 1) / kPageSumBlock;
}
}  // namespace

RemotePageSource::RemotePageSource(const sys::TcpAddress& server, const image::Image& img,
                                   std::chrono::milliseconds timeout)
    : server_(server.str()),
      address_(server),
      pages_digest_(img.digests.at("pages.img")),
      timeout_(timeout),
      sums_(img.page_sums),
      size_(img.manifest.pages_file_size),
      holds_data_(blocks_of(size_), 0),
      cache_("initless-remote-pages", size_),
      stop_ahead_(sys::event_fd()),
      state_(blocks_of(size_), kAbsent) {
    if (sums_.size() != blocks_of(size_) * kPageSumSize)
        throw Error(
            fmt::format("image {} has no usable pages.sums: its pages cannot be verified from a page server",
                        img.dir.string()));
    for (const auto& r : img.runs) {
        if (r.pages == 0) continue;
        uint64_t last = std::min(r.file_offset + r.pages * kPageSize, size_) - 1;
        for (uint64_t b = r.file_offset / kPageSumBlock; b <= last / kPageSumBlock; ++b) holds_data_[b] = 1;
    }
    try {
        sock_ = connect_and_check();
    } catch (const Error& e) {
        throw image::PageSourceFailed(fmt::format("page server {}: {}", server_, e.what()));
    }
}

RemotePageSource::~RemotePageSource() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    arrived_.notify_all();
    sys::notify(stop_ahead_.get());
    if (ahead_.joinable()) ahead_.join();
}

sys::UniqueFd RemotePageSource::connect_and_check() {
    sys::UniqueFd sock = sys::connect_tcp(address_, timeout_);
    Request hello{kRequestMagic, kHello, 0, 0};
    auto deadline = Clock::now() + timeout_;
    sys::send_all_by(sock.get(), &hello, sizeof hello, deadline);
    ResponseHeader h;
    sys::receive_all_by(sock.get(), &h, sizeof h, deadline);
    if (h.magic == kResponseMagic && h.status != kOk) {
        // A page server that refuses (too many clients) says why in the body.
        std::string why(std::min<uint64_t>(h.length, 1024), '\0');
        try {
            sys::receive_all_by(sock.get(), why.data(), why.size(), deadline);
        } catch (const Error&) {
            why = "no reason given";
        }
        if (h.status == kBusy) throw ServerBusy(fmt::format("it refused the connection: {}", why));
        throw Error(fmt::format("it refused the connection: {}", why));
    }
    if (h.magic != kResponseMagic || h.length != kHelloSize)
        throw Error(fmt::format("it does not speak the initless page protocol version {}", kVersion));
    char body[kHelloSize];
    sys::receive_all_by(sock.get(), body, sizeof body, deadline);
    uint64_t version = 0, size = 0;
    std::memcpy(&version, body, 8);
    std::memcpy(&size, body + 8, 8);
    std::string digest(body + 16, 64);
    if (version != kVersion)
        throw Error(fmt::format("it speaks protocol version {}, not {}", version, kVersion));
    if (size != size_ || !image::same_digest(digest, pages_digest_))
        throw Error(
            fmt::format("it serves another image (pages.img of {} bytes, digest {}...; this image's has {} "
                        "bytes, digest {}...)",
                        size, digest.substr(0, 12), size_, pages_digest_.substr(0, 12)));
    return sock;
}

std::string RemotePageSource::describe() const {
    return "page server " + server_;
}

sys::UniqueFd RemotePageSource::cache_file() const {
    return sys::reopen(cache_.fd(), O_RDONLY);
}

std::string RemotePageSource::set_failure(const std::string& why) {
    std::string failure;
    {
        std::lock_guard lock(mutex_);
        if (failure_.empty()) failure_ = fmt::format("page server {}: {}", server_, why);
        failure = failure_;
    }
    arrived_.notify_all();
    sys::notify(stop_ahead_.get());
    return failure;
}

void RemotePageSource::fail(const std::string& why) {
    throw image::PageSourceFailed(set_failure(why));
}

std::string RemotePageSource::io_failure(const sys::SysError& e) const {
    return e.code() == ETIMEDOUT ? fmt::format("no answer within {} ms ({})", timeout_.count(), e.what())
                                 : e.what();
}

const uint8_t* RemotePageSource::read(uint64_t offset, uint64_t len) {
    std::lock_guard caller(caller_mutex_);
    if (len == 0 || offset > size_ || len > size_ - offset)
        fail(fmt::format("read [{:#x}, +{:#x}) past pages.img's {:#x} bytes", offset, len, size_));
    uint64_t first = offset / kPageSumBlock, last = (offset + len - 1) / kPageSumBlock;
    std::vector<uint64_t> mine;  // neither present nor in flight: fetched here, now
    bool in_flight = false, began = false;
    {
        std::lock_guard lock(mutex_);
        if (!failure_.empty()) throw image::PageSourceFailed(failure_);
        for (uint64_t b = first; b <= last; ++b) {
            if (!holds_data_[b] || state_[b] == kPresent) continue;
            if (state_[b] == kFetching) {
                in_flight = true;
                continue;
            }
            state_[b] = kFetching;
            mine.push_back(b);
        }
        // A miss: a fault or the fill began (the restore is done), so the read-ahead goes on past
        // the restore set.
        began = (!mine.empty() || in_flight) && !fill_began_;
        if (began) fill_began_ = true;
    }
    if (began) arrived_.notify_all();
    if (mine.empty() && !in_flight) return cache_.data() + offset;  // fetched already, or zeros
    if (!mine.empty()) {
        fetch_blocks(mine);
        counters_.blocks_on_demand += mine.size();
    }
    if (in_flight) {
        // The read-ahead's: it receives them, or fails the source, each response within the
        // timeout of being due; kAheadDepth of them at most are ahead of ours.
        ++counters_.reads_waited;
        std::unique_lock lock(mutex_);
        auto here = [&] {
            if (!failure_.empty()) return true;
            for (uint64_t b = first; b <= last; ++b)
                if (holds_data_[b] && state_[b] != kPresent) return false;
            return true;
        };
        if (!arrived_.wait_for(lock, timeout_ * static_cast<long>(kAheadDepth + 1), here)) {
            lock.unlock();
            fail(fmt::format("no answer within {} ms (the read-ahead's range)", timeout_.count()));
        }
        if (!failure_.empty()) throw image::PageSourceFailed(failure_);
    }
    return cache_.data() + offset;
}

void RemotePageSource::receive_range(int sock, const Request& q, Clock::time_point deadline, int stop_fd) {
    // Reads on `sock` by `deadline`, returning early (ReadAheadStopped) when `stop_fd` is readable.
    auto receive = [&](void* into, size_t len) {
        if (stop_fd < 0) return sys::receive_all_by(sock, into, len, deadline);
        const int fds[] = {stop_fd, sock};  // the stop first: it wins over data that keeps coming
        auto* p = static_cast<uint8_t*>(into);
        while (len > 0) {
            auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
            int ready = sys::wait_readable(fds, std::max(left, std::chrono::milliseconds(0)));
            if (ready == 0) throw ReadAheadStopped{};
            if (ready < 0) throw sys::SysError("receive", ETIMEDOUT);
            size_t n = sys::receive_some_by(sock, p, len, deadline);
            if (n == 0) throw sys::SysError("receive (the peer closed the connection)", ECONNRESET);
            p += n;
            len -= n;
        }
    };
    ResponseHeader h;
    receive(&h, sizeof h);
    if (h.magic != kResponseMagic) fail("a response without the protocol's magic");
    if (h.status != kOk) {
        std::string why(std::min<uint64_t>(h.length, 1024), '\0');
        receive(why.data(), why.size());
        fail(fmt::format("refused [{:#x}, +{:#x}): {}", q.offset, q.length, why));
    }
    if (h.length != q.length) fail(fmt::format("answered {} bytes for a range of {}", h.length, q.length));
    // Straight into the cache, a block at a time, each verified while it is warm in the CPU's
    // cache; a block is marked present only once its digest matches.
    for (uint64_t off = 0; off < q.length; off += kPageSumBlock) {
        uint64_t b = (q.offset + off) / kPageSumBlock, n = std::min(kPageSumBlock, q.length - off);
        uint8_t* into = cache_.data() + q.offset + off;
        receive(into, n);
        image::Sha256 sha;
        sha.update(into, n);
        if (!image::same_digest(sha.bytes(), std::string_view(sums_).substr(b * kPageSumSize, kPageSumSize)))
            fail(fmt::format(
                "block {} (offset {:#x}) of pages.img does not match pages.sums (changed, corrupted, or "
                "another image)",
                b, b * kPageSumBlock));
        {
            std::lock_guard lock(mutex_);
            state_[b] = kPresent;
        }
        arrived_.notify_all();
        ++counters_.blocks_fetched;
        counters_.bytes_fetched += n;
    }
}

void RemotePageSource::reconnect(sys::UniqueFd& sock, const char* which, int stop_fd) {
    sock.reset();
    // Refused, it is asked again until the timeout: a server restarting (ECONNREFUSED), or one serving
    // as many clients as it may with none idle long enough to make room for this one (busy).
    auto deadline = Clock::now() + timeout_;
    auto wait_or_fail = [&](const Error& e) {
        if (Clock::now() + kReconnectPause >= deadline)
            fail(fmt::format("{} connection ended, and reconnecting failed for {} ms: {}", which,
                             timeout_.count(), e.what()));
        if (stop_fd < 0) {
            std::this_thread::sleep_for(kReconnectPause);
        } else {
            const int fds[] = {stop_fd};
            if (sys::wait_readable(fds, kReconnectPause) == 0) throw ReadAheadStopped{};
        }
    };
    for (;;) {
        try {
            sock = connect_and_check();
            break;
        } catch (const ServerBusy& e) {
            wait_or_fail(e);
        } catch (const sys::SysError& e) {
            if (e.code() != ECONNREFUSED)
                fail(fmt::format("{} connection ended, and reconnecting failed: {}", which, e.what()));
            wait_or_fail(e);
        } catch (const Error& e) {
            fail(fmt::format("{} connection ended, and reconnecting failed: {}", which, e.what()));
        }
    }
    ++counters_.reconnects;
    spdlog::info("page source: reconnected the {} connection to page server {}", which, server_);
}

bool RemotePageSource::reconnect_if_ended(sys::UniqueFd& sock, const char* which, int stop_fd) {
    if (sock && sys::peek_stream(sock.get()) != sys::StreamPeek::Closed) return false;
    reconnect(sock, which, stop_fd);
    return true;
}

void RemotePageSource::fetch_blocks(const std::vector<uint64_t>& blocks) {
    // Adjacent blocks go as one range; ranges are pipelined kBatch at a time.
    std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [first block, last block]
    for (uint64_t b : blocks) {
        if (!ranges.empty() && ranges.back().second + 1 == b &&
            (b - ranges.back().first + 1) * kPageSumBlock <= kMaxRange)
            ranges.back().second = b;
        else
            ranges.push_back({b, b});
    }
    for (size_t at = 0; at < ranges.size(); at += kBatch) {
        size_t end = std::min(ranges.size(), at + kBatch);
        std::vector<Request> requests;
        for (size_t i = at; i < end; ++i) {
            uint64_t offset = ranges[i].first * kPageSumBlock;
            uint64_t stop = std::min(size_, (ranges[i].second + 1) * kPageSumBlock);
            requests.push_back({kRequestMagic, kRange, offset, stop - offset});
        }
        // A connection the server ended (it closes clients idle too long, or makes room by ending the
        // one idle longest: the function may fault long after its last fetch) is made again, and a
        // batch it ended is asked again once (the requests are reads); a server that does not answer
        // in time is not asked again.
        for (bool again = false;; again = true) {
            try {
                reconnect_if_ended(sock_, "first");
                sys::send_all_by(sock_.get(), requests.data(), requests.size() * sizeof(Request),
                                 Clock::now() + timeout_);
                counters_.requests += requests.size();
                // Each response is due within the timeout of the one before it.
                for (const auto& q : requests) receive_range(sock_.get(), q, Clock::now() + timeout_, -1);
                break;
            } catch (const image::PageSourceFailed&) {
                throw;
            } catch (const sys::SysError& e) {
                if (again || e.code() == ETIMEDOUT) fail(io_failure(e));
                sock_.reset();
            }
        }
    }
}

void RemotePageSource::fetch_for_restore(const image::Image& img) {
    std::lock_guard caller(caller_mutex_);
    std::vector<uint64_t> restore_set;  // blocks, working set first
    std::vector<uint8_t> queued(state_.size(), 0);
    {
        std::lock_guard lock(mutex_);
        if (!failure_.empty()) throw image::PageSourceFailed(failure_);
        auto want = [&](uint64_t offset, uint64_t len) {
            if (len == 0) return;
            for (uint64_t b = offset / kPageSumBlock;
                 b <= (offset + len - 1) / kPageSumBlock && b < state_.size(); ++b)
                if (!queued[b] && state_[b] == kAbsent && holds_data_[b]) {
                    queued[b] = 1;
                    restore_set.push_back(b);
                }
        };
        for (auto [start, end] : img.working_set_file_ranges()) want(start, end - start);
        for (const auto& p : img.manifest.processes)
            for (const auto& v : p.vmas)
                if (v.saved_pages > 0 && !served_lazily(v))
                    for (const auto& r : img.runs_of(v)) want(r.file_offset, r.pages * kPageSize);
    }
    counters_.blocks_for_restore += restore_set.size();

    if (!ahead_.joinable()) {
        // The read-ahead's order: the restore set (it helps with it: two connections and two
        // threads verifying), then the page server's fill after the working set (page_server.cpp's
        // fill_order): per process, its lazily served VMAs in address order, the processes taking
        // turns a fill step (256 KiB) at a time.
        constexpr size_t kTurn = (256 << 10) / kPageSumBlock;
        ahead_order_ = restore_set;
        restore_part_ = restore_set.size();
        std::vector<std::vector<uint64_t>> per_process;
        for (const auto& p : img.manifest.processes) {
            auto& blocks = per_process.emplace_back();
            for (const auto& v : p.vmas) {
                if (!served_lazily(v)) continue;
                for (const auto& r : img.runs_of(v)) {
                    if (r.pages == 0) continue;
                    uint64_t last = std::min(r.file_offset + r.pages * kPageSize, size_) - 1;
                    for (uint64_t b = r.file_offset / kPageSumBlock; b <= last / kPageSumBlock; ++b)
                        if (!queued[b]) {
                            queued[b] = 1;
                            blocks.push_back(b);
                        }
                }
            }
        }
        std::vector<size_t> next(per_process.size(), 0);
        for (bool more = true; more;) {
            more = false;
            for (size_t i = 0; i < per_process.size(); ++i) {
                size_t end = std::min(per_process[i].size(), next[i] + kTurn);
                ahead_order_.insert(ahead_order_.end(), per_process[i].begin() + static_cast<long>(next[i]),
                                    per_process[i].begin() + static_cast<long>(end));
                next[i] = end;
                more |= end < per_process[i].size();
            }
        }
        ahead_ = std::thread([this] { read_ahead(); });
    }

    // The restore set, in the order asked for (the working set first), a batch of kRestoreBatch
    // blocks at a time (fetch_blocks merges adjacent ones) while the read-ahead takes ranges of
    // it too; then what the read-ahead took is waited for.
    constexpr size_t kRestoreBatch = (1 << 20) / kPageSumBlock;
    for (size_t cursor = 0;;) {
        std::vector<uint64_t> mine;
        {
            std::lock_guard lock(mutex_);
            if (!failure_.empty()) throw image::PageSourceFailed(failure_);
            for (; cursor < restore_set.size() && mine.size() < kRestoreBatch; ++cursor)
                if (state_[restore_set[cursor]] == kAbsent) {
                    state_[restore_set[cursor]] = kFetching;
                    mine.push_back(restore_set[cursor]);
                }
        }
        if (mine.empty()) break;
        fetch_blocks(mine);
    }
    std::unique_lock lock(mutex_);
    auto all_here = [&] {
        if (!failure_.empty()) return true;
        return std::all_of(restore_set.begin(), restore_set.end(),
                           [&](uint64_t b) { return state_[b] == kPresent; });
    };
    if (!arrived_.wait_for(lock, timeout_ * static_cast<long>(kAheadDepth + 1), all_here)) {
        lock.unlock();
        fail(fmt::format("no answer within {} ms (the read-ahead's range)", timeout_.count()));
    }
    if (!failure_.empty()) throw image::PageSourceFailed(failure_);
}

void RemotePageSource::read_ahead() {
    try {
        sys::UniqueFd sock;
        try {
            sock = connect_and_check();
        } catch (const sys::SysError&) {
            // The first connection may have fetched the whole restore set before this thread ran,
            // and the server gone (restarted) since: as for a connection it ended.
            reconnect(sock, "read-ahead", stop_ahead_.get());
        }
        std::deque<Request> in_flight;
        size_t cursor = 0;   // into ahead_order_
        bool again = false;  // the connection was made again since the last range received
        for (;;) {
            try {
                // Keeps kAheadDepth ranges in flight: the next blocks of the order neither present nor
                // claimed by `read`, adjacent ones (in the order and in the file) as one range. Past the
                // restore set only once `read` missed a block (the fill or a fault began: the restore
                // is done), so that the restore does not share the CPU with the read-ahead.
                while (in_flight.size() < kAheadDepth) {
                    uint64_t first = 0, count = 0;
                    {
                        std::unique_lock lock(mutex_);
                        if (in_flight.empty())
                            arrived_.wait(lock, [&] {
                                return fill_began_ || stopping_ || !failure_.empty() ||
                                       cursor < restore_part_;
                            });
                        if (!failure_.empty() || stopping_) return;
                        size_t limit = fill_began_ ? ahead_order_.size() : restore_part_;
                        while (cursor < limit && state_[ahead_order_[cursor]] != kAbsent) ++cursor;
                        while (cursor < limit && count * kPageSumBlock < kAheadRange) {
                            uint64_t b = ahead_order_[cursor];
                            if (state_[b] != kAbsent || (count > 0 && b != first + count)) break;
                            if (count == 0) first = b;
                            state_[b] = kFetching;
                            ++count;
                            ++cursor;
                        }
                        if (count == 0 && in_flight.empty() && cursor >= ahead_order_.size())
                            return;  // all in
                    }
                    if (count == 0) break;
                    uint64_t offset = first * kPageSumBlock,
                             stop = std::min(size_, (first + count) * kPageSumBlock);
                    // Waiting for the fill to begin may have taken longer than the server keeps an idle
                    // client.
                    if (in_flight.empty() && reconnect_if_ended(sock, "read-ahead", stop_ahead_.get()))
                        again = true;
                    Request q{kRequestMagic, kRange, offset, stop - offset};
                    in_flight.push_back(q);
                    sys::send_all_by(sock.get(), &q, sizeof q, Clock::now() + timeout_);
                    ++counters_.requests;
                }
                if (in_flight.empty()) continue;  // the restore set is in: waits for the fill to begin
                Request q = in_flight.front();
                receive_range(sock.get(), q, Clock::now() + timeout_, stop_ahead_.get());
                counters_.blocks_read_ahead += (q.length + kPageSumBlock - 1) / kPageSumBlock;
                in_flight.pop_front();
                again = false;
            } catch (const sys::SysError& e) {
                // As in fetch_blocks: the server ended the connection (not a silence): once again, with
                // the ranges in flight asked again.
                if (again || e.code() == ETIMEDOUT) throw;
                reconnect(sock, "read-ahead", stop_ahead_.get());
                again = true;
                for (const auto& q : in_flight)
                    sys::send_all_by(sock.get(), &q, sizeof q, Clock::now() + timeout_);
            }
        }
    } catch (const ReadAheadStopped&) {
        // The source is being dropped, or failed: nothing to say.
    } catch (const image::PageSourceFailed&) {
        // Kept in failure_: `read` throws it.
    } catch (const sys::SysError& e) {
        set_failure("read-ahead: " + io_failure(e));
    } catch (const std::exception& e) {
        set_failure(fmt::format("read-ahead: {}", e.what()));
    }
}

}  // namespace initless::pages
