// The lazy strategy's page server (see include/initless/pages/page_server.h for the contract).
// Everything below `Impl::run` belongs to the server thread; other threads only queue commands.
#include "initless/pages/page_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include <spdlog/spdlog.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/process.h"

namespace initless::pages {

using image::kPageSize;

namespace {

constexpr uint64_t kFirstChunk = 64 << 10;  // a fault's first chunk ...
constexpr uint64_t kMaxChunk = 4 << 20;     // ... doubling up to this while faults stay sequential
constexpr uint64_t kFillStep = 256 << 10;   // background fill between two looks at the faults
// The background fill waits this long after the restore, or until faults have brought in
// kFillAtOnce: a first request that needs little beyond its working set (installed at the restore)
// then runs without a fill beside it taking a core and the page allocator (measured on this 2-core
// VM, 1.3 GB dict, GET /: restore + first response 16.3 -> 12.0 ms). A request going through its
// memory reaches kFillAtOnce within its first milliseconds, and the fill (0.6-1.5 s for 1 GiB) then
// runs at once; GET /checksum's first request after the restore stayed at 1.03-1.09x a warm one.
constexpr auto kFillDelay = std::chrono::milliseconds(50);
// Userfaultfd messages of one process handled before the server turns to the others (read_messages).
constexpr size_t kMessagesPerTurn = 256;
constexpr uint64_t kFillAtOnce = 4 << 20;
// How far past its step the fill asks a local pages.img to be read (PageSource::will_read).
constexpr uint64_t kFillReadAhead = 2 << 20;
// A working set at least this large is installed by two threads (install_in_parallel).
constexpr uint64_t kParallelInstall = 1 << 20;

enum PageState : uint8_t { kPending = 0, kDone = 1, kDropped = 2 };

// A range of a served process's memory as it is now, and where its pages come from: `origin` is
// the address of `start` in the image (they differ once the process moved it with mremap).
struct Segment {
    uint64_t start = 0, end = 0, origin = 0;
    const LazySource::Area* area = nullptr;
    std::vector<uint8_t> state;  // per page
    uint64_t pending = 0;

    uint64_t pages() const { return (end - start) / kPageSize; }
    // The part of the image's range [a, b) in this segment, in its addresses now; from == to when
    // none is.
    std::pair<uint64_t, uint64_t> part_of(uint64_t a, uint64_t b) const {
        uint64_t o_end = origin + (end - start);
        if (o_end <= a || origin >= b) return {start, start};
        return {start + (std::max(origin, a) - origin), start + (std::min(o_end, b) - origin)};
    }
    // Page `page`'s index in its area's `saved`.
    uint64_t origin_page(uint64_t page) const { return (origin + (page - start) - area->start) / kPageSize; }
    // The first run [a, b) of pending pages at or after `page` and before `to` that are all saved or
    // all never saved, at most kMaxChunk long: what one copy or zero-fill takes; a == to when none.
    std::pair<uint64_t, uint64_t> next_run(uint64_t page, uint64_t to) const {
        while (page < to && state[(page - start) / kPageSize] != kPending) page += kPageSize;
        if (page >= to) return {to, to};
        size_t k = (page - start) / kPageSize;
        uint64_t o = origin_page(page);
        bool saved = area->saved[o];
        uint64_t end = page;
        for (size_t j = k;
             end < to && state[j] == kPending && area->saved[o + (j - k)] == saved && end - page < kMaxChunk;
             ++j)
            end += kPageSize;
        return {page, end};
    }
    // The part [a, b) (inside this segment) as a segment of its own.
    Segment slice(uint64_t a, uint64_t b) const {
        Segment s;
        s.start = a;
        s.end = b;
        s.origin = origin + (a - start);
        s.area = area;
        s.state.assign(state.begin() + static_cast<long>((a - start) / kPageSize),
                       state.begin() + static_cast<long>((b - start) / kPageSize));
        s.pending = static_cast<uint64_t>(std::count(s.state.begin(), s.state.end(), kPending));
        return s;
    }
};

struct FillItem {
    uint64_t origin_start = 0, origin_end = 0;
};

// One served process (server thread only).
struct Served {
    uint64_t id = 0;
    sys::Userfaultfd uffd;
    sys::UniqueFd pidfd;  // empty for a child the process forked (its end shows as ESRCH)
    std::shared_ptr<const LazySource> source;
    size_t process = 0;
    std::shared_ptr<ServedMemory> memory;
    std::vector<Segment> segments;                      // by start
    bool filling = false;                               // start_fill was called
    std::chrono::steady_clock::time_point fill_from{};  // the fill runs from then on
    uint64_t faulted = 0;                               // bytes faults brought in, while waiting
    uint64_t asked_from = 0, asked_until = 0;           // the pages.img range the fill asked to be read
    std::vector<FillItem> order;
    size_t cursor = 0;       // index into order
    uint64_t cursor_at = 0;  // origin address reached inside order[cursor]
    uint64_t next_sequential = 0, chunk = kFirstChunk;
    std::vector<uint64_t> deferred;  // fault addresses to answer once the mm is stable again
    bool exited = false;
};

std::vector<Segment> initial_segments(const LazySource& src, size_t process) {
    std::vector<Segment> out;
    if (process >= src.areas.size()) return out;
    for (const auto& a : src.areas[process]) {
        Segment s;
        s.start = s.origin = a.start;
        s.end = a.end;
        s.area = &a;
        s.state.assign((a.end - a.start) / kPageSize, kPending);
        s.pending = s.state.size();
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<FillItem> fill_order(const LazySource& src, size_t process) {
    std::vector<FillItem> out;
    for (const auto& w : src.working_set)
        if (w.process == process) out.push_back({w.vaddr, w.vaddr + w.pages * kPageSize});
    if (process < src.areas.size())
        for (const auto& a : src.areas[process]) out.push_back({a.start, a.end});
    return out;
}

}  // namespace

// ---- ServedMemory ---------------------------------------------------------------------------------

ServeStats ServedMemory::stats() const {
    ServeStats s;
    s.processes = counters.processes;
    s.faults = counters.faults;
    s.pages_copied = counters.pages_copied;
    s.pages_zeroed = counters.pages_zeroed;
    s.pages_prefetched = counters.pages_prefetched;
    s.bytes_read = counters.bytes_read;
    s.events = counters.events;
    std::lock_guard lock(mutex_);
    s.complete = ever_ && live_ == 0 && failure_.empty();
    s.complete_ms = complete_ms_;
    s.failure = failure_;
    return s;
}

bool ServedMemory::wait_complete(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [this] { return ever_ && live_ == 0; });
}

void ServedMemory::process_started() {
    std::lock_guard lock(mutex_);
    if (!ever_) first_ = std::chrono::steady_clock::now();
    ever_ = true;
    ++live_;
    ++counters.processes;
}

void ServedMemory::process_finished() {
    std::lock_guard lock(mutex_);
    if (--live_ == 0) {
        complete_ms_ =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first_).count();
        cv_.notify_all();
    }
}

void ServedMemory::failed(const std::string& why) {
    std::lock_guard lock(mutex_);
    if (failure_.empty()) failure_ = why;
}

// ---- LazySource ---------------------------------------------------------------------------------

std::shared_ptr<const LazySource> LazySource::of(const image::Image& img) {
    auto src = std::make_shared<LazySource>();
    src->pages = img.pages_source();
    for (const auto& p : img.manifest.processes) {
        auto& areas = src->areas.emplace_back();
        for (const auto& v : p.vmas) {
            if (!served_lazily(v)) continue;
            Area a;
            a.start = v.start;
            a.end = v.end;
            a.image_offset = v.image_offset;
            a.saved.assign(v.length() / kPageSize, false);
            for (const auto& r : img.runs_of(v))
                for (uint64_t k = 0; k < r.pages; ++k) a.saved[(r.vaddr - v.start) / kPageSize + k] = true;
            areas.push_back(std::move(a));
        }
    }
    src->working_set = img.working_set;
    return src;
}

bool served_lazily(const image::Vma& v) {
    // A MADV_WIPEONFORK VMA is copied in by the table: served, a child forked before the fill ended
    // would be sent the image's pages where the kernel wiped its copy (it must read zeros).
    return v.kind == image::VmaKind::Anonymous && !v.shared && v.saved_pages > 0 &&
           std::find(v.flags.begin(), v.flags.end(), "wf") == v.flags.end();
}

uint64_t lazy_uffd_features() {
    return UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
           UFFD_FEATURE_EVENT_UNMAP;
}

// ---- The server ---------------------------------------------------------------------------------

struct PageServer::Impl {
    struct Command {
        enum Kind { Add, StartFill, InstallWorkingSet, Remove, Stop } kind = Add;
        uint64_t id = 0;
        std::unique_ptr<Served> served;
        std::promise<void>* done = nullptr;  // InstallWorkingSet: set when the pages are in
    };

    mutable std::mutex mutex;
    std::deque<Command> commands;
    bool running = false;
    uint64_t next_id = 1;
    size_t count = 0;  // served processes (for tests), kept under `mutex`
    std::thread thread;
    int wake_fd = -1;  // the running thread's eventfd (valid while running)

    // Server thread only.
    std::map<uint64_t, std::unique_ptr<Served>> served;
    uint64_t round_robin = 0;
    int epoll = -1;

    void post(Command c) {
        std::lock_guard lock(mutex);
        if (!running) {
            if (c.kind != Command::Add) {  // nothing served: nothing to do
                if (c.done) c.done->set_value();
                return;
            }
            if (thread.joinable()) thread.join();
            sys::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
            if (!ep) throw sys::SysError("page server epoll_create1", errno);
            sys::UniqueFd ev(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
            if (!ev) throw sys::SysError("page server eventfd", errno);
            epoll_event e{};
            e.events = EPOLLIN;
            e.data.u64 = 0;
            sys::check(::epoll_ctl(ep.get(), EPOLL_CTL_ADD, ev.get(), &e), "page server epoll_ctl");
            epoll = ep.release();
            wake_fd = ev.release();
            running = true;
            thread = std::thread([this] { run(); });
        }
        commands.push_back(std::move(c));
        uint64_t one = 1;
        (void)!::write(wake_fd, &one, sizeof one);
    }

    // ---- server thread ----

    void run() {
        std::vector<epoll_event> events(64);
        for (;;) {
            int n = ::epoll_wait(epoll, events.data(), static_cast<int>(events.size()), wait_timeout());
            if (n < 0 && errno != EINTR) {
                spdlog::error("page server: epoll_wait: {}", std::strerror(errno));
                n = 0;
            }
            bool stop = false;
            for (int i = 0; i < n; ++i) {
                uint64_t tag = events[static_cast<size_t>(i)].data.u64;
                if (tag == 0) {
                    stop |= take_commands();
                    continue;
                }
                auto it = served.find(tag >> 1);
                if (it == served.end()) continue;
                if (tag & 1) {
                    finish(*it->second, "exited");
                } else {
                    Served& s = *it->second;
                    guarded(s, [&] { read_messages(s); });
                }
            }
            for (auto& [id, s] : served) guarded(*s, [&] { retry_deferred(*s); });
            fill_one();
            reap();
            std::lock_guard lock(mutex);
            if (stop || (served.empty() && commands.empty())) {
                // Nothing served: the thread ends and takes its fds with it (a later add starts anew).
                for (auto& [id, s] : served) finish(*s, "server stopped");
                served.clear();
                ::close(epoll);
                ::close(wake_fd);
                epoll = wake_fd = -1;
                running = false;
                count = 0;
                return;
            }
        }
    }

    // How long epoll_wait may block: not at all while a fill runs or a fault waits for the mm to
    // settle, until the earliest fill is due, or until something happens.
    int wait_timeout() const {
        auto now = std::chrono::steady_clock::now();
        std::optional<std::chrono::steady_clock::time_point> due;
        for (const auto& [id, s] : served) {
            if (!s->deferred.empty()) return 0;
            if (!s->filling) continue;
            if (s->fill_from <= now) return 0;
            due = due ? std::min(*due, s->fill_from) : s->fill_from;
        }
        if (!due) return -1;
        return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*due - now).count());
    }

    // Returns true on Stop.
    bool take_commands() {
        uint64_t v;
        (void)!::read(wake_fd, &v, sizeof v);
        std::deque<Command> todo;
        {
            std::lock_guard lock(mutex);
            todo.swap(commands);
        }
        bool stop = false;
        for (auto& c : todo) {
            switch (c.kind) {
                case Command::Add: {
                    Served& s = *c.served;
                    watch(s);
                    served.emplace(s.id, std::move(c.served));
                    break;
                }
                case Command::StartFill:
                    if (auto it = served.find(c.id); it != served.end()) {
                        it->second->filling = true;
                        it->second->fill_from = std::chrono::steady_clock::now() + kFillDelay;
                    }
                    break;
                case Command::InstallWorkingSet:
                    try {
                        if (auto it = served.find(c.id); it != served.end()) {
                            try {
                                install_working_set(*it->second);
                            } catch (const image::PageSourceFailed& e) {
                                source_failed(*it->second, e.what());
                                throw;
                            }
                        }
                        c.done->set_value();
                    } catch (...) {
                        c.done->set_exception(std::current_exception());
                    }
                    break;
                case Command::Remove:
                    if (auto it = served.find(c.id); it != served.end()) finish(*it->second, "removed");
                    break;
                case Command::Stop:
                    stop = true;
                    break;
            }
        }
        return stop;
    }

    void watch(Served& s) {
        epoll_event e{};
        e.events = EPOLLIN;
        e.data.u64 = s.id << 1;
        sys::check(::epoll_ctl(epoll, EPOLL_CTL_ADD, s.uffd.fd(), &e), "page server: watch userfaultfd");
        if (s.pidfd) {
            e.data.u64 = s.id << 1 | 1;
            sys::check(::epoll_ctl(epoll, EPOLL_CTL_ADD, s.pidfd.get(), &e), "page server: watch pidfd");
        }
    }

    // Ends the serving of `s` (marked; `reap` drops it after this loop round).
    void finish(Served& s, const char*) {
        if (s.exited) return;
        s.exited = true;
        s.filling = false;
        s.deferred.clear();
        if (s.uffd) ::epoll_ctl(epoll, EPOLL_CTL_DEL, s.uffd.fd(), nullptr);
        if (s.pidfd) ::epoll_ctl(epoll, EPOLL_CTL_DEL, s.pidfd.get(), nullptr);
        s.uffd = sys::Userfaultfd();
        s.pidfd.reset();
        s.segments.clear();
        s.memory->process_finished();
    }

    void reap() {
        size_t before = served.size();
        std::erase_if(served, [](const auto& kv) { return kv.second->exited; });
        if (served.size() != before) {
            std::lock_guard lock(mutex);
            count = served.size() + std::count_if(commands.begin(), commands.end(),
                                                  [](const Command& c) { return c.kind == Command::Add; });
        }
    }

    Segment* find(Served& s, uint64_t addr) {
        auto it = std::upper_bound(s.segments.begin(), s.segments.end(), addr,
                                   [](uint64_t a, const Segment& g) { return a < g.start; });
        if (it == s.segments.begin()) return nullptr;
        --it;
        return addr < it->end ? &*it : nullptr;
    }

    // Fills the pending pages of [from, to) (inside `g`); returns the last fill status that was
    // not Done (Again: stop and retry after the events; Exited: the process is gone).
    sys::UffdFill::Status fill(Served& s, Segment& g, uint64_t from, uint64_t to, bool prefetch) {
        const LazySource::Area& area = *g.area;
        for (uint64_t next = from;;) {
            auto [page, end] = g.next_run(next, to);
            if (page >= to) break;
            size_t k = (page - g.start) / kPageSize;
            uint64_t origin_page = g.origin_page(page);
            bool saved = area.saved[origin_page];
            uint64_t len = end - page;
            sys::UffdFill r;
            if (saved) {
                uint64_t offset = area.image_offset + origin_page * kPageSize;
                ask_to_read(s, offset, len, prefetch);
                r = s.uffd.copy(page, image_pages(s, offset, len), len);
                s.memory->counters.bytes_read += r.bytes;
            } else {
                r = s.uffd.zero(page, len);
            }
            uint64_t filled = r.bytes / kPageSize;
            (saved ? s.memory->counters.pages_copied : s.memory->counters.pages_zeroed) += filled;
            if (prefetch) s.memory->counters.pages_prefetched += filled;
            for (uint64_t q = 0; q < filled; ++q) g.state[k + q] = kDone;
            g.pending -= filled;
            next = page + filled * kPageSize;
            switch (r.status) {
                case sys::UffdFill::Done:
                    break;
                case sys::UffdFill::Exists:  // present already (a forked child's copy): nothing to do
                    g.state[(next - g.start) / kPageSize] = kDone;
                    --g.pending;
                    next += kPageSize;
                    break;
                case sys::UffdFill::Gone:  // not mapped any more: the unmap event is on its way
                    for (uint64_t q = next; q < end; q += kPageSize) {
                        g.state[(q - g.start) / kPageSize] = kDropped;
                        --g.pending;
                    }
                    next = end;
                    break;
                case sys::UffdFill::Again:
                case sys::UffdFill::Exited:
                    return r.status;
            }
        }
        return sys::UffdFill::Done;
    }

    // For a cold page cache: one read for a fault's chunk, and for the fill the next stretch of
    // pages.img as well (it goes on in file order), instead of a read per page copied. The fill asks
    // only for what it has not asked for yet: a WILLNEED over cached pages still costs a page cache
    // lookup per page (20 us for 2.25 MiB here, against ~90 us to copy a 256 KiB step).
    void ask_to_read(Served& s, uint64_t offset, uint64_t len, bool fill) {
        if (!fill) return s.source->pages->will_read(offset, len);
        uint64_t want_end = offset + len + kFillReadAhead;
        uint64_t from = offset >= s.asked_from && offset <= s.asked_until ? s.asked_until : offset;
        if (want_end <= from) return;
        s.source->pages->will_read(from, want_end - from);
        if (from == offset) s.asked_from = offset;
        s.asked_until = want_end;
    }

    // `len` bytes of pages.img at `offset`, from the source (throws image::PageSourceFailed).
    const uint8_t* image_pages(Served& s, uint64_t offset, uint64_t len) {
        return s.source->pages->read(offset, len);
    }

    // The source of `s`'s restore failed: every process of that restore is killed (a fault we
    // cannot answer would wait forever; zeros would be wrong memory) and stops being served.
    void source_failed(Served& s, const std::string& why) {
        auto memory = s.memory;
        memory->failed(why);
        spdlog::error("page server: {}: killing the restored function", why);
        for (auto& [id, other] : served) {
            if (other->memory != memory || other->exited) continue;
            if (other->pidfd) {
                try {
                    sys::pidfd_send_signal(other->pidfd.get(), SIGKILL);
                } catch (const Error& e) {
                    spdlog::warn("page server: {}", e.what());
                }
            }
            finish(*other, "page source failed");
        }
    }

    // Runs `step` for `s`; a failed page source ends its restore (above).
    template <typename F>
    void guarded(Served& s, F&& step) {
        try {
            step();
        } catch (const image::PageSourceFailed& e) {
            source_failed(s, e.what());
        }
    }

    // One page, whatever we believed of it: zeros if dropped or unknown, else the image's page.
    void serve_single(Served& s, Segment* g, uint64_t page) {
        sys::UffdFill r;
        bool from_image = false;
        if (g && g->state[(page - g->start) / kPageSize] != kDropped) {
            uint64_t origin_page = g->origin_page(page);
            from_image = g->area->saved[origin_page];
            if (from_image) {
                r = s.uffd.copy(page,
                                image_pages(s, g->area->image_offset + origin_page * kPageSize, kPageSize),
                                kPageSize);
                s.memory->counters.bytes_read += kPageSize;
            }
        }
        if (!from_image) r = s.uffd.zero(page, kPageSize);
        if (r.status == sys::UffdFill::Again) {
            s.deferred.push_back(page);
            return;
        }
        if (r.status == sys::UffdFill::Exited) return finish(s, "exited");
        if (r.status == sys::UffdFill::Done)
            ++(from_image ? s.memory->counters.pages_copied : s.memory->counters.pages_zeroed);
        if (g) {
            auto& st = g->state[(page - g->start) / kPageSize];
            if (st == kPending) --g->pending;
            st = kDone;
        }
        s.uffd.wake(page, kPageSize);
    }

    void serve_fault(Served& s, uint64_t addr) {
        uint64_t page = addr & ~(kPageSize - 1);
        Segment* g = find(s, page);
        if (!g || g->state[(page - g->start) / kPageSize] != kPending) return serve_single(s, g, page);
        s.chunk = page == s.next_sequential ? std::min(s.chunk * 2, kMaxChunk) : kFirstChunk;
        uint64_t to = std::min(g->end, page + s.chunk);
        auto status = fill(s, *g, page, to, false);
        if (status == sys::UffdFill::Again) {
            s.deferred.push_back(page);
            return;
        }
        if (status == sys::UffdFill::Exited) return finish(s, "exited");
        s.next_sequential = to;
        s.uffd.wake(page, kPageSize);  // in case its page was there already
        if (s.filling && (s.faulted += to - page) >= kFillAtOnce)
            s.fill_from = std::min(s.fill_from, std::chrono::steady_clock::now());
    }

    void retry_deferred(Served& s) {
        if (s.exited || s.deferred.empty()) return;
        std::vector<uint64_t> again;
        again.swap(s.deferred);
        for (uint64_t a : again) {
            if (s.exited) return;
            serve_fault(s, a);
        }
    }

    // Removes [a, b) from the segments; returns the removed parts.
    std::vector<Segment> cut(Served& s, uint64_t a, uint64_t b) {
        std::vector<Segment> kept, removed;
        for (auto& g : s.segments) {
            if (g.end <= a || g.start >= b) {
                kept.push_back(std::move(g));
                continue;
            }
            if (g.start < a) kept.push_back(g.slice(g.start, a));
            removed.push_back(g.slice(std::max(g.start, a), std::min(g.end, b)));
            if (g.end > b) kept.push_back(g.slice(b, g.end));
        }
        s.segments = std::move(kept);
        return removed;
    }

    void sort_segments(Served& s) {
        std::sort(s.segments.begin(), s.segments.end(),
                  [](const Segment& x, const Segment& y) { return x.start < y.start; });
    }

    void on_fork(Served& parent, int fd) {
        auto child = std::make_unique<Served>();
        {
            std::lock_guard lock(mutex);
            child->id = next_id++;
            ++count;
        }
        child->uffd = sys::Userfaultfd(sys::UniqueFd(fd));
        child->source = parent.source;
        child->process = parent.process;
        child->memory = parent.memory;
        // The child has the pages the parent had when it forked; which of ours those were is not
        // known here (the fill may have gone on meanwhile), so every page not dropped is pending
        // again and a present one answers EEXIST.
        child->segments = parent.segments;
        for (auto& g : child->segments) {
            for (auto& st : g.state)
                if (st == kDone) st = kPending;
            g.pending = static_cast<uint64_t>(std::count(g.state.begin(), g.state.end(), kPending));
        }
        child->order = fill_order(*child->source, child->process);
        child->filling = true;  // at once: the restore is long done
        child->fill_from = std::chrono::steady_clock::now();
        child->memory->process_started();
        watch(*child);
        served.emplace(child->id, std::move(child));
    }

    void read_messages(Served& s) {
        // At most kMessagesPerTurn per turn: a process whose threads make events as fast as they are
        // answered would otherwise keep this loop going, and the other processes' faults, the fill
        // and the commands (another restore's working set) would wait behind it. The userfaultfd is
        // level-triggered in the epoll: what is left is read on the next turn.
        uffd_msg msgs[64];
        for (size_t taken = 0; taken < kMessagesPerTurn;) {
            if (s.exited) return;
            size_t n = 0;
            try {
                n = s.uffd.read_messages(msgs, 64);
            } catch (const Error& e) {
                spdlog::warn("page server: {}", e.what());
                return finish(s, "read failed");
            }
            if (n == 0) return;
            taken += n;
            for (size_t i = 0; i < n && !s.exited; ++i) handle(s, msgs[i]);
        }
    }

    void handle(Served& s, const uffd_msg& m) {
        switch (m.event) {
            case UFFD_EVENT_PAGEFAULT:
                ++s.memory->counters.faults;
                serve_fault(s, m.arg.pagefault.address);
                break;
            case UFFD_EVENT_FORK:
                ++s.memory->counters.events;
                on_fork(s, static_cast<int>(m.arg.fork.ufd));
                break;
            case UFFD_EVENT_REMAP: {
                ++s.memory->counters.events;
                uint64_t from = m.arg.remap.from, to = m.arg.remap.to, len = m.arg.remap.len;
                std::vector<Segment> moved = cut(s, from, from + len);
                cut(s, to, to + len);
                for (auto& g : moved) {
                    g.start = g.start - from + to;
                    g.end = g.end - from + to;
                    s.segments.push_back(std::move(g));
                }
                sort_segments(s);
                break;
            }
            case UFFD_EVENT_REMOVE:
                ++s.memory->counters.events;
                for (auto& g : s.segments) {
                    uint64_t a = std::max(g.start, static_cast<uint64_t>(m.arg.remove.start));
                    uint64_t b = std::min(g.end, static_cast<uint64_t>(m.arg.remove.end));
                    for (uint64_t p = a; p < b; p += kPageSize) {
                        auto& st = g.state[(p - g.start) / kPageSize];
                        if (st == kPending) --g.pending;
                        st = kDropped;
                    }
                }
                break;
            case UFFD_EVENT_UNMAP:
                ++s.memory->counters.events;
                cut(s, m.arg.remove.start, m.arg.remove.end);
                break;
            default:
                break;
        }
    }

    // One UFFDIO_COPY (src set) or UFFDIO_ZEROPAGE of a working-set install, and how it ended.
    struct InstallCopy {
        Segment* g = nullptr;
        uint64_t dst = 0, len = 0;
        const uint8_t* src = nullptr;  // null: pages never saved (zeros)
        sys::UffdFill result;
    };

    // The working set's copies, planned from the segments' pending pages (marked done as planned),
    // each with its source bytes in memory that any thread may read; empty when the source has no
    // such memory (a remote one), for the sequential install below.
    std::vector<InstallCopy> plan_install(Served& s, size_t items) {
        std::vector<InstallCopy> out;
        for (size_t i = 0; i < items && i < s.order.size(); ++i) {
            const FillItem& item = s.order[i];
            for (auto& g : s.segments) {
                if (g.pending == 0) continue;
                auto [from, to] = g.part_of(item.origin_start, item.origin_end);
                for (auto [page, end] = g.next_run(from, to); page < to;
                     std::tie(page, end) = g.next_run(end, to)) {
                    size_t k = (page - g.start) / kPageSize;
                    uint64_t origin_page = g.origin_page(page);
                    InstallCopy c{&g, page, end - page, nullptr, {}};
                    if (g.area->saved[origin_page]) {
                        c.src =
                            s.source->pages->mapped(g.area->image_offset + origin_page * kPageSize, c.len);
                        if (!c.src) {
                            undo_install(out);
                            return {};
                        }
                    }
                    for (uint64_t q = 0; q < c.len / kPageSize; ++q) g.state[k + q] = kDone;
                    g.pending -= c.len / kPageSize;
                    out.push_back(c);
                }
            }
        }
        return out;
    }

    // What `plan_install` marked done and no copy filled is pending again.
    void undo_install(std::vector<InstallCopy>& copies) {
        for (auto& c : copies) {
            Segment& g = *c.g;
            for (uint64_t a = c.dst + c.result.bytes; a < c.dst + c.len; a += kPageSize) {
                auto& st = g.state[(a - g.start) / kPageSize];
                if (st == kDone) {
                    st = kPending;
                    ++g.pending;
                }
            }
        }
    }

    static void run_copies(sys::Userfaultfd& uffd, InstallCopy* first, InstallCopy* last) {
        for (InstallCopy* c = first; c != last; ++c) {
            c->result = c->src ? uffd.copy(c->dst, c->src, c->len) : uffd.zero(c->dst, c->len);
            if (c->result.status != sys::UffdFill::Done) return;  // the rest stays undone (bytes 0)
        }
    }

    // The planned copies on two threads, this one and a helper: the process is stopped, its tracer
    // waits, and copying is what the restore waits for (4348 pages of the 1.3 GB dict: 6.0-6.6 ms on
    // one thread; two took a fifth less, medians of 10 interleaved: the copies share the page
    // allocator and the memory cgroup's charging). Copies into one mm take its mmap lock shared.
    // Then the counts; whatever did not go in (an event was pending, a page was there) is pending
    // again, for the sequential install. Returns whether everything went in.
    bool install_in_parallel(Served& s, std::vector<InstallCopy>& copies) {
        uint64_t total = 0;
        for (const auto& c : copies) total += c.len;
        size_t split = 0;
        if (total >= kParallelInstall)
            for (uint64_t half = 0; split < copies.size() && half < total / 2; ++split)
                half += copies[split].len;
        {
            std::optional<std::thread> helper;
            if (split > 0) {
                try {
                    helper.emplace(run_copies, std::ref(s.uffd), copies.data(), copies.data() + split);
                } catch (const std::system_error&) {
                    split = 0;  // no thread to be had: all on this one
                }
            }
            run_copies(s.uffd, copies.data() + split, copies.data() + copies.size());
            if (helper) helper->join();
        }
        bool all = true;
        for (const auto& c : copies) {
            uint64_t filled = c.result.bytes / kPageSize;
            (c.src ? s.memory->counters.pages_copied : s.memory->counters.pages_zeroed) += filled;
            s.memory->counters.pages_prefetched += filled;
            if (c.src) s.memory->counters.bytes_read += c.result.bytes;
            all &= c.result.status == sys::UffdFill::Done;
        }
        if (!all) undo_install(copies);
        return all;
    }

    // The working set's items of s.order (they come first), filled at once; the process is stopped,
    // so nothing but events it queued before (the table's own munmaps) makes a copy wait.
    void install_working_set(Served& s) {
        size_t items = 0;
        for (const auto& w : s.source->working_set) items += w.process == s.process ? 1 : 0;
        if (std::vector<InstallCopy> copies = plan_install(s, items);
            !copies.empty() && install_in_parallel(s, copies)) {
            s.cursor = std::max(s.cursor, std::min(items, s.order.size()));
            s.cursor_at = 0;
            return;
        }
        for (size_t i = 0; i < items && i < s.order.size() && !s.exited; ++i) {
            const FillItem& item = s.order[i];
            for (int attempt = 0;; ++attempt) {
                sys::UffdFill::Status status = sys::UffdFill::Done;
                for (auto& g : s.segments) {
                    auto [from, to] = g.part_of(item.origin_start, item.origin_end);
                    if (g.pending == 0 || from == to) continue;
                    status = fill(s, g, from, to, true);
                    if (status != sys::UffdFill::Done) break;
                }
                if (status == sys::UffdFill::Exited) return finish(s, "exited");
                if (status == sys::UffdFill::Done) break;
                if (attempt >= 8)
                    throw Error("page server: the working set's copy kept meeting pending events");
                read_messages(s);  // Again: the queued events first
            }
        }
        if (!s.exited) {
            s.cursor = std::max(s.cursor, std::min(items, s.order.size()));
            s.cursor_at = 0;
        }
    }

    // One step of the background fill of the next filling process (round robin).
    void fill_one() {
        std::vector<Served*> filling;
        auto now = std::chrono::steady_clock::now();
        for (auto& [id, s] : served)
            if (s->filling && !s->exited && s->fill_from <= now) filling.push_back(s.get());
        if (filling.empty()) return;
        Served& s = *filling[round_robin++ % filling.size()];
        guarded(s, [&] { fill_step(s); });
    }

    void fill_step(Served& s) {
        uint64_t budget = kFillStep;
        while (budget > 0 && s.cursor < s.order.size()) {
            const FillItem& item = s.order[s.cursor];
            uint64_t at = std::max(s.cursor_at, item.origin_start);
            // The earliest (in the image's addresses) segment part of [at, item end) still here.
            Segment* best = nullptr;
            uint64_t best_origin = item.origin_end;
            for (auto& g : s.segments) {
                uint64_t g_origin_end = g.origin + (g.end - g.start);
                if (g_origin_end <= at || g.origin >= item.origin_end || g.pending == 0) continue;
                uint64_t o = std::max(g.origin, at);
                if (o < best_origin) {
                    best_origin = o;
                    best = &g;
                }
            }
            if (!best) {
                ++s.cursor;
                s.cursor_at = 0;
                continue;
            }
            uint64_t origin_end =
                std::min({item.origin_end, best->origin + (best->end - best->start), best_origin + budget});
            uint64_t from = best->start + (best_origin - best->origin);
            uint64_t to = best->start + (origin_end - best->origin);
            uint64_t pending_before = best->pending;
            auto status = fill(s, *best, from, to, true);
            if (status == sys::UffdFill::Exited) return finish(s, "exited");
            if (status == sys::UffdFill::Again) return;  // events first
            // Pages already in cost a sixteenth of a copy (the scan); the budget stays whole pages.
            // Each piece costs at least four pages (its read and ioctls), so many small working-set
            // runs cannot make one step long.
            uint64_t cost = std::max<uint64_t>({(pending_before - best->pending) * kPageSize,
                                                (to - from) / 16 & ~(kPageSize - 1), 4 * kPageSize});
            budget -= std::min(budget, cost);
            s.cursor_at = origin_end;
        }
        if (s.cursor >= s.order.size()) {
            // Every page is in (or dropped): the userfaultfd has nothing left to do. Closing it
            // unregisters the VMAs, so pages dropped later read as zeros, as for any memory.
            bool all = std::all_of(s.segments.begin(), s.segments.end(),
                                   [](const Segment& g) { return g.pending == 0; });
            if (all) {
                finish(s, "complete");
            } else {
                s.cursor = 0;
                s.cursor_at = 0;
            }
        }
    }
};

PageServer::PageServer() : impl_(std::make_unique<Impl>()) {}

PageServer::~PageServer() {
    impl_->post({Impl::Command::Stop, 0, nullptr});
    std::thread t;
    {
        std::lock_guard lock(impl_->mutex);
        t = std::move(impl_->thread);
    }
    if (t.joinable()) t.join();
}

PageServer& PageServer::shared() {
    static PageServer server;
    return server;
}

uint64_t PageServer::add(sys::Userfaultfd uffd, sys::UniqueFd pidfd, std::shared_ptr<const LazySource> source,
                         size_t process, std::shared_ptr<ServedMemory> served) {
    auto s = std::make_unique<Served>();
    uint64_t id;
    {
        std::lock_guard lock(impl_->mutex);
        id = impl_->next_id++;
        ++impl_->count;
    }
    s->id = id;
    s->uffd = std::move(uffd);
    s->pidfd = std::move(pidfd);
    s->segments = initial_segments(*source, process);
    s->order = fill_order(*source, process);
    s->source = std::move(source);
    s->process = process;
    s->memory = std::move(served);
    s->memory->process_started();
    impl_->post({Impl::Command::Add, id, std::move(s)});
    return id;
}

void PageServer::start_fill(uint64_t id) {
    impl_->post({Impl::Command::StartFill, id, nullptr});
}

void PageServer::install_working_set(uint64_t id) {
    std::promise<void> done;
    std::future<void> installed = done.get_future();
    Impl::Command c{Impl::Command::InstallWorkingSet, id, nullptr};
    c.done = &done;
    impl_->post(std::move(c));
    installed.get();
}

void PageServer::remove(uint64_t id) {
    impl_->post({Impl::Command::Remove, id, nullptr});
}

size_t PageServer::served_count() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->running ? impl_->count : 0;
}

bool PageServer::thread_running() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->running;
}

}  // namespace initless::pages
