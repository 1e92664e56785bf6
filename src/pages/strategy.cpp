#include "pages/strategy.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "initless/sys/file.h"
#include "initless/sys/process.h"
#include "initless/sys/uffd.h"

namespace initless::pages {

namespace {

using image::kPageSize;

// Under cow, a run of dirty file-mapping pages at least this long is mapped from the image rather
// than copied: an mmap costs about what copying 4 pages does, and each adds at most two VMAs.
constexpr uint64_t kCowRunPages = 8;
// Linux 5.14+; Debian 12's headers may lack them.
constexpr uint64_t kMadvPopulateRead = 22;
constexpr uint64_t kMadvPopulateWrite = 23;

class Eager : public MemoryStrategy {
  public:
    const char* name() const override { return "eager"; }
    VmaFill fill(const image::Image& img, const image::Vma& v, bool) const override {
        VmaFill f;
        for (const auto& r : img.runs_of(v)) f.copy_runs.push_back(&r);
        return f;
    }
};

class Cow : public MemoryStrategy {
  public:
    const char* name() const override { return "cow"; }
    VmaFill fill(const image::Image& img, const image::Vma& v, bool must_copy) const override {
        VmaFill f;
        if (v.kind == image::VmaKind::Anonymous && v.saved_pages > 0 && !must_copy) {
            f.map_whole = true;
            return f;
        }
        bool shmem = v.kind == image::VmaKind::SharedMemory;
        for (const auto& r : img.runs_of(v))
            (!shmem && r.pages >= kCowRunPages ? f.map_runs : f.copy_runs).push_back(&r);
        return f;
    }
    // The pages the working set will write come from a reserve the restorer touches in stage 1: on
    // this machine kind a first touch of fresh memory costs ~30 us, a reused page much less.
    uint64_t warm_reserve(const image::Image& img) const override {
        uint64_t bytes = 0;
        for (const auto& w : img.working_set) bytes += w.written ? w.pages * kPageSize : 0;
        return bytes;
    }
};

// The working set's pages.img ranges, in file order and merged across small gaps, read ahead in one
// pass: a cold page cache then costs one ordered sweep instead of a random read per page.
void read_ahead_working_set(const image::Image& img, int pages_fd) {
    constexpr uint64_t kGap = 256 << 10;
    std::vector<std::pair<uint64_t, uint64_t>> ranges = img.working_set_file_ranges();  // [offset, end)
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 0; i < ranges.size();) {
        auto [start, end] = ranges[i];
        size_t j = i + 1;
        while (j < ranges.size() && ranges[j].first <= end + kGap) end = std::max(end, ranges[j++].second);
        sys::read_ahead(pages_fd, start, end - start);
        i = j;
    }
}

class Prefetch : public Cow {
  public:
    const char* name() const override { return "prefetch"; }
    void prepare_pages(const image::Image& img, int pages_fd) const override { read_ahead_working_set(img, pages_fd); }
    // The working set (the pages the first request after a restore touched) in bulk, instead of
    // one ~15 us fault per page.
    void after_layout(state::Table& t, const image::Image& img, size_t index) const override {
        for (const auto& w : img.working_set)
            if (w.process == index)
                t.op(
                    SYS_madvise,
                    {w.vaddr, w.pages * kPageSize, w.written ? kMadvPopulateWrite : kMadvPopulateRead}, -1,
                    STUB_OP_ALLOW_FAIL, {},
                    fmt::format("populate {:#x} ({} pages{})", w.vaddr, w.pages, w.written ? ", write" : ""));
    }
};

// The page server's side of one lazy restore: takes each process's userfaultfd at its table's pause.
class LazyAttachment : public Attachment {
  public:
    explicit LazyAttachment(std::shared_ptr<const LazySource> source) : source_(std::move(source)) {}
    ~LazyAttachment() override {
        if (!kept_)
            for (uint64_t id : ids_) PageServer::shared().remove(id);
    }
    void on_pause(size_t index, pid_t host_pid, const uint64_t* slots) override {
        // A process's second pause: its VMAs are registered, its working set goes in now.
        if (auto it = served_.find(index); it != served_.end()) return PageServer::shared().install_working_set(it->second);
        sys::UniqueFd pidfd = sys::pidfd_open(host_pid);
        sys::Userfaultfd uffd(sys::pidfd_getfd(pidfd.get(), static_cast<int>(slots[state::kUffd])));
        uffd.handshake(lazy_uffd_features());
        ids_.push_back(PageServer::shared().add(std::move(uffd), std::move(pidfd), source_, index, memory_));
        served_[index] = ids_.back();
    }
    void on_restored() override {
        for (uint64_t id : ids_) PageServer::shared().start_fill(id);
    }
    std::shared_ptr<ServedMemory> release() override {
        kept_ = true;
        return memory_;
    }

  private:
    std::shared_ptr<const LazySource> source_;
    std::shared_ptr<ServedMemory> memory_ = std::make_shared<ServedMemory>();
    std::vector<uint64_t> ids_;
    std::map<size_t, uint64_t> served_;  // process index -> its id, from its first pause on
    bool kept_ = false;
};

bool any_served(const image::Process& p) {
    return std::any_of(p.vmas.begin(), p.vmas.end(), [](const image::Vma& v) { return served_lazily(v); });
}

class Lazy : public Cow {
  public:
    const char* name() const override { return "lazy"; }
    void prepare_pages(const image::Image& img, int pages_fd) const override { read_ahead_working_set(img, pages_fd); }
    VmaFill fill(const image::Image& img, const image::Vma& v, bool must_copy) const override {
        if (served_lazily(v)) return {};  // an empty anonymous VMA, registered by after_map
        return Cow::fill(img, v, must_copy);
    }
    // The userfaultfd must belong to the process's own mm, so the table makes it (after its forks)
    // and pauses for us to take it: its faults are answered from then on, while the table lays out.
    void before_layout(state::Table& t, state::Region&, const image::Image& img, size_t index) const override {
        if (!any_served(img.manifest.processes.at(index))) return;
        t.op(SYS_ioctl, {0, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK}, state::kUffd, 0, {{0, state::kUffdDevice}},
             "userfaultfd (USERFAULTFD_IOC_NEW)");
        t.op(0, {}, -1, STUB_OP_PAUSE, {}, "pause: the page server takes the userfaultfd");
    }
    void after_map(state::Table& t, state::Region& region, const image::Vma& v) const override {
        if (!served_lazily(v)) return;
        uffdio_register reg{};
        reg.range.start = v.start;
        reg.range.len = v.length();
        reg.mode = UFFDIO_REGISTER_MODE_MISSING;
        t.op(SYS_ioctl, {0, static_cast<uint64_t>(UFFDIO_REGISTER), region.put(reg)}, -1, 0, {{0, state::kUffd}},
             fmt::format("userfaultfd register {:#x}-{:#x}", v.start, v.end));
    }
    // The working set goes in while the process is still stopped (a second pause), as prefetch's
    // does; then the process's own copy of its userfaultfd goes (the server holds the same file).
    void after_layout(state::Table& t, const image::Image& img, size_t index) const override {
        if (!any_served(img.manifest.processes.at(index))) return;
        if (std::any_of(img.working_set.begin(), img.working_set.end(),
                        [&](const image::WorkingSetRun& w) { return w.process == index; }))
            t.op(0, {}, -1, STUB_OP_PAUSE, {}, "pause: the page server installs the working set");
        t.op(SYS_close, {0}, -1, 0, {{0, state::kUffd}}, "close userfaultfd");
    }
    bool uses_userfaultfd() const override { return true; }
    std::unique_ptr<Attachment> attach(const image::Image& img) const override {
        return std::make_unique<LazyAttachment>(LazySource::of(img));
    }
};

}  // namespace

const MemoryStrategy& lazy() {
    static const Lazy s;
    return s;
}

const MemoryStrategy& eager() {
    static const Eager s;
    return s;
}
const MemoryStrategy& cow() {
    static const Cow s;
    return s;
}
const MemoryStrategy& prefetch() {
    static const Prefetch s;
    return s;
}

}  // namespace initless::pages
