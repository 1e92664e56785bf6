// Remote pages: the page-server side and the restore side (include/initless/pages/remote.h).
#include "initless/pages/remote.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

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
// Requests of one pipelined batch: few enough that the requests fit in the socket buffers while the
// client is not reading yet (24 bytes each).
constexpr size_t kBatch = 256;
}  // namespace

// ---- The server -------------------------------------------------------------------------------------

struct RemotePageServer::Client {
    sys::UniqueFd sock;
    std::string peer;
    std::thread thread;
    std::atomic<bool> done{false};
};

RemotePageServer::RemotePageServer(const image::Image& img, const sys::TcpAddress& listen)
    : pages_(img.open_pages()), size_(img.manifest.pages_file_size), digest_(img.digests.at("pages.img")),
      stopping_(sys::event_fd()) {
    struct stat st {};
    sys::check(::fstat(pages_.get(), &st), "page-server: stat pages.img");
    if (static_cast<uint64_t>(st.st_size) != size_)
        throw Error(fmt::format("page-server: {} has {} bytes, its manifest says {}", img.pages_path().string(),
                                st.st_size, size_));
    mapped_.emplace(pages_.get(), static_cast<size_t>(size_));
    listener_ = sys::listen_tcp(listen);
}

RemotePageServer::~RemotePageServer() {
    sys::notify(stopping_.get());
    std::lock_guard lock(mutex_);
    for (auto& c : clients_)
        if (c->thread.joinable()) c->thread.join();
}

uint16_t RemotePageServer::port() const { return sys::local_port(listener_.get()); }

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
        if (clients_.size() >= kMaxClients) {
            spdlog::warn("page-server: refusing {}: {} clients already", peer, kMaxClients);
            std::string why = fmt::format("page-server: too many clients ({})", kMaxClients);
            ResponseHeader h{kResponseMagic, kMalformed, why.size()};
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
                spdlog::info("page-server: client {}: {}", raw->peer, e.what());
            }
            raw->sock.reset();
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
        if (sys::wait_readable(fds, std::chrono::milliseconds(-1)) != 0) return;  // stopping
        Request r;
        auto deadline = Clock::now() + kServerIo;
        size_t got = sys::receive_some_by(c.sock.get(), &r, sizeof r, deadline);
        if (got == 0) {
            spdlog::info("page-server: client {} closed after {} requests ({} bytes)", c.peer, requests, served);
            return;
        }
        if (got < sizeof r) sys::receive_all_by(c.sock.get(), reinterpret_cast<char*>(&r) + got, sizeof r - got, deadline);
        ++requests;
        if (r.magic != kRequestMagic || (r.kind != kHello && r.kind != kRange)) {
            std::string why = fmt::format("malformed request (magic {:#x}, kind {}): not the initless page protocol "
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
            std::string why = fmt::format("bad range [{:#x}, +{:#x}): pages.img has {:#x} bytes, a range at most {:#x}",
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
uint64_t blocks_of(uint64_t size) { return (size + kPageSumBlock - 1) / kPageSumBlock; }
}  // namespace

RemotePageSource::RemotePageSource(const sys::TcpAddress& server, const image::Image& img,
                                   std::chrono::milliseconds timeout)
    : server_(server.str()), timeout_(timeout), sums_(img.page_sums), size_(img.manifest.pages_file_size),
      holds_data_(blocks_of(size_), 0), present_(blocks_of(size_), 0), cache_("initless-remote-pages", size_) {
    if (sums_.size() != blocks_of(size_) * kPageSumSize)
        throw Error(fmt::format("image {} has no usable pages.sums: its pages cannot be verified from a page server",
                                img.dir.string()));
    for (const auto& r : img.runs) {
        if (r.pages == 0) continue;
        uint64_t last = std::min(r.file_offset + r.pages * kPageSize, size_) - 1;
        for (uint64_t b = r.file_offset / kPageSumBlock; b <= last / kPageSumBlock; ++b) holds_data_[b] = 1;
    }
    try {
        sock_ = sys::connect_tcp(server, timeout);
        Request hello{kRequestMagic, kHello, 0, 0};
        auto deadline = Clock::now() + timeout_;
        sys::send_all_by(sock_.get(), &hello, sizeof hello, deadline);
        ResponseHeader h;
        sys::receive_all_by(sock_.get(), &h, sizeof h, deadline);
        if (h.magic != kResponseMagic || h.status != kOk || h.length != kHelloSize)
            throw Error(fmt::format("it does not speak the initless page protocol version {}", kVersion));
        char body[kHelloSize];
        sys::receive_all_by(sock_.get(), body, sizeof body, deadline);
        uint64_t version = 0, size = 0;
        std::memcpy(&version, body, 8);
        std::memcpy(&size, body + 8, 8);
        std::string digest(body + 16, 64);
        if (version != kVersion) throw Error(fmt::format("it speaks protocol version {}, not {}", version, kVersion));
        if (size != size_ || !image::same_digest(digest, img.digests.at("pages.img")))
            throw Error(fmt::format("it serves another image (pages.img of {} bytes, digest {}...; this image's has {} "
                                    "bytes, digest {}...)",
                                    size, digest.substr(0, 12), size_, img.digests.at("pages.img").substr(0, 12)));
    } catch (const Error& e) {
        throw image::PageSourceFailed(fmt::format("page server {}: {}", server_, e.what()));
    }
}

RemotePageSource::~RemotePageSource() = default;

std::string RemotePageSource::describe() const { return "page server " + server_; }

sys::UniqueFd RemotePageSource::cache_file() const { return sys::reopen(cache_.fd(), O_RDONLY); }

void RemotePageSource::fail(const std::string& why) {
    if (failure_.empty()) {
        failure_ = fmt::format("page server {}: {}", server_, why);
        sock_.reset();
    }
    throw image::PageSourceFailed(failure_);
}

const uint8_t* RemotePageSource::read(uint64_t offset, uint64_t len) {
    std::lock_guard lock(mutex_);
    if (!failure_.empty()) throw image::PageSourceFailed(failure_);
    if (len == 0 || offset > size_ || len > size_ - offset)
        fail(fmt::format("read [{:#x}, +{:#x}) past pages.img's {:#x} bytes", offset, len, size_));
    uint64_t first = offset / kPageSumBlock, last = (offset + len - 1) / kPageSumBlock;
    std::vector<uint64_t> missing;
    for (uint64_t b = first; b <= last; ++b)
        if (holds_data_[b] && !present_[b]) missing.push_back(b);
    if (missing.empty()) return cache_.data() + offset;  // fetched for the restore, or zeros
    // Not in the cache: fetched into a scratch buffer, not kept. The page server copies it into the
    // process at once, and the cache's pages would be fresh memory (a first touch costs ~30 us per
    // page on this VM kind: it doubled the cost of every page served); the buffer's stay warm.
    // Blocks the previous read fetched (a chunk or fill step rarely ends on a block boundary, and the
    // next one starts where it ended) are kept, not fetched again.
    std::vector<uint8_t> kept;
    uint64_t kept_first = std::max(first, scratch_first_), kept_last = std::min(last, scratch_last_);
    bool have_kept = scratch_valid_ && kept_first <= kept_last;
    if (have_kept)
        kept.assign(scratch_.begin() + static_cast<long>((kept_first - scratch_first_) * kPageSumBlock),
                    scratch_.begin() + static_cast<long>((kept_last - scratch_first_ + 1) * kPageSumBlock));
    scratch_valid_ = false;
    scratch_.resize((last - first + 1) * kPageSumBlock);
    uint64_t base = first * kPageSumBlock;
    std::vector<uint64_t> fetch;
    size_t next = 0;
    for (uint64_t b = first; b <= last; ++b) {
        uint64_t at = b * kPageSumBlock, n = std::min(kPageSumBlock, size_ - at);
        bool is_missing = next < missing.size() && missing[next] == b;
        if (is_missing) ++next;
        if (is_missing && have_kept && b >= kept_first && b <= kept_last)
            std::memcpy(scratch_.data() + (at - base), kept.data() + (b - kept_first) * kPageSumBlock, n);
        else if (is_missing)
            fetch.push_back(b);
        else
            std::memcpy(scratch_.data() + (at - base), cache_.data() + at, n);  // verified, or zeros
    }
    fetch_blocks(fetch, [&](uint64_t at) { return scratch_.data() + (at - base); }, false);
    scratch_first_ = first;
    scratch_last_ = last;
    scratch_valid_ = true;
    return scratch_.data() + (offset - base);
}

void RemotePageSource::fetch_blocks(const std::vector<uint64_t>& blocks, const std::function<uint8_t*(uint64_t)>& into_for,
                                    bool keep) {
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
        auto deadline = Clock::now() + timeout_;
        try {
            std::vector<Request> requests;
            for (size_t i = at; i < end; ++i) {
                uint64_t offset = ranges[i].first * kPageSumBlock;
                uint64_t stop = std::min(size_, (ranges[i].second + 1) * kPageSumBlock);
                requests.push_back({kRequestMagic, kRange, offset, stop - offset});
            }
            sys::send_all_by(sock_.get(), requests.data(), requests.size() * sizeof(Request), deadline);
            counters_.requests += requests.size();
            for (const auto& q : requests) {
                ResponseHeader h;
                sys::receive_all_by(sock_.get(), &h, sizeof h, deadline);
                if (h.magic != kResponseMagic) fail("a response without the protocol's magic");
                if (h.status != kOk) {
                    std::string why(std::min<uint64_t>(h.length, 1024), '\0');
                    sys::receive_all_by(sock_.get(), why.data(), why.size(), deadline);
                    fail(fmt::format("refused [{:#x}, +{:#x}): {}", q.offset, q.length, why));
                }
                if (h.length != q.length)
                    fail(fmt::format("answered {} bytes for a range of {}", h.length, q.length));
                // Straight into place; a cached block is marked present only once its digest matches.
                uint8_t* into = into_for(q.offset);
                sys::receive_all_by(sock_.get(), into, q.length, deadline);
                for (uint64_t off = 0; off < q.length; off += kPageSumBlock) {
                    uint64_t b = (q.offset + off) / kPageSumBlock;
                    image::Sha256 sha;
                    sha.update(into + off, std::min(kPageSumBlock, q.length - off));
                    if (!image::same_digest(sha.bytes(), std::string_view(sums_).substr(b * kPageSumSize, kPageSumSize)))
                        fail(fmt::format("block {} (offset {:#x}) of pages.img does not match pages.sums (changed, "
                                         "corrupted, or another image)",
                                         b, b * kPageSumBlock));
                    if (keep) present_[b] = 1;
                }
                counters_.bytes_fetched += q.length;
                counters_.blocks_fetched += (q.length + kPageSumBlock - 1) / kPageSumBlock;
            }
        } catch (const image::PageSourceFailed&) {
            throw;
        } catch (const sys::SysError& e) {
            fail(e.code() == ETIMEDOUT ? fmt::format("no answer within {} ms ({})", timeout_.count(), e.what())
                                       : e.what());
        }
    }
}

void RemotePageSource::fetch_for_restore(const image::Image& img) {
    std::lock_guard lock(mutex_);
    if (!failure_.empty()) throw image::PageSourceFailed(failure_);
    std::vector<uint64_t> order;  // blocks, working set first
    std::vector<uint8_t> queued(present_.size(), 0);
    auto want = [&](uint64_t offset, uint64_t len) {
        if (len == 0) return;
        for (uint64_t b = offset / kPageSumBlock; b <= (offset + len - 1) / kPageSumBlock && b < queued.size(); ++b)
            if (!queued[b] && !present_[b] && holds_data_[b]) {
                queued[b] = 1;
                order.push_back(b);
            }
    };
    for (auto [start, end] : img.working_set_file_ranges()) want(start, end - start);
    for (const auto& p : img.manifest.processes)
        for (const auto& v : p.vmas)
            if (v.saved_pages > 0 && !served_lazily(v))
                for (const auto& r : img.runs_of(v)) want(r.file_offset, r.pages * kPageSize);
    counters_.blocks_for_restore += order.size();
    // In the order asked for (the working set first); fetch_blocks merges only adjacent blocks.
    fetch_blocks(order, [this](uint64_t at) { return cache_.data() + at; }, true);
}

}  // namespace initless::pages
