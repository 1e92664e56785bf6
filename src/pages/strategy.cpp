#include "pages/strategy.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "initless/pages/image_loader.h"
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

// Reads the ranges into the page cache in one ordered pass: sorted, merged across small gaps, all
// queued, then waited for.
void read_ranges(int fd, std::vector<std::pair<uint64_t, uint64_t>> ranges) {  // [offset, end)
    if (sys::in_memory_file(fd)) return;  // the tmpfs image tier, a remote restore's cache
    constexpr uint64_t kGap = 256 << 10;
    std::sort(ranges.begin(), ranges.end());
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    for (size_t i = 0; i < ranges.size();) {
        auto [start, end] = ranges[i];
        size_t j = i + 1;
        while (j < ranges.size() && ranges[j].first <= end + kGap) end = std::max(end, ranges[j++].second);
        merged.emplace_back(start, end);
        i = j;
    }
    for (auto [start, end] : merged) sys::read_ahead(fd, start, end - start);
    for (auto [start, end] : merged) sys::read_into_page_cache(fd, start, end - start);
}

// What a restore and its first request read, read into the page cache in stage 1 (prefetch, lazy):
// the working set's pages.img ranges, the runs the tables copy or map over files, and the working
// set's pages of the files the image maps (shared libraries' code and data the first request ran
// through), from those files. A restore from a cold page cache then finds them there instead of
// reading them page by page on the request path (measured in docs/bench/README.md, cold tier).
void read_restore_set(const MemoryStrategy& strategy, const image::Image& img, int pages_fd,
                      const MemoryStrategy::MappedFileOpener& open_mapped) {
    std::vector<std::pair<uint64_t, uint64_t>> ranges = img.working_set_file_ranges();
    std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> file_ranges;
    for (const auto& p : img.manifest.processes)
        for (const auto& v : p.vmas) {
            VmaFill f = strategy.fill(img, v, false);
            for (const auto* runs : {&f.copy_runs, &f.map_runs})
                for (const auto* r : *runs)
                    ranges.emplace_back(r->file_offset, r->file_offset + r->pages * kPageSize);
        }
    img.for_each_working_set_part([&](const image::Vma& v, uint64_t s, uint64_t e) {
        if (v.kind == image::VmaKind::File && !v.shared)
            file_ranges[v.name].emplace_back(v.file_offset + (s - v.start), v.file_offset + (e - v.start));
    });
    read_ranges(pages_fd, std::move(ranges));
    for (auto& [path, r] : file_ranges) {
        try {
            read_ranges(open_mapped(path).get(), std::move(r));
        } catch (const Error&) {
            // Advice only: the restore itself checks the mapped files and says what is wrong.
        }
    }
}

class Prefetch : public Cow {
  public:
    const char* name() const override { return "prefetch"; }
    // The pages the restore and the first request read are read now; the rest of the image follows in the
    // background (ImageLoader), so that a later fault outside the working set finds its page in the cache.
    void prepare_pages(const image::Image& img, int pages_fd,
                       const MappedFileOpener& open_mapped) const override {
        read_restore_set(*this, img, pages_fd, open_mapped);
        ImageLoader::shared().load(pages_fd);
    }
    // A fault outside the working set on a page not in the cache reads that page, not the device's
    // read-around window (8 MiB here, ~18 ms cold, for one random lookup): the image loader, not
    // read-around, brings the rest. The function sees the advice in its smaps ("rr").
    void after_map(state::Table& t, state::Region&, const image::Vma& v) const override {
        if (v.kind == image::VmaKind::Anonymous && v.saved_pages > 0)
            t.op(SYS_madvise, {v.start, v.length(), MADV_RANDOM}, -1, STUB_OP_ALLOW_FAIL, {},
                 fmt::format("advise random {:#x}-{:#x}", v.start, v.end));
    }
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
        if (auto it = served_.find(index); it != served_.end())
            return PageServer::shared().install_working_set(it->second);
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
    void prepare_pages(const image::Image& img, int pages_fd,
                       const MappedFileOpener& open_mapped) const override {
        read_restore_set(*this, img, pages_fd, open_mapped);
    }
    VmaFill fill(const image::Image& img, const image::Vma& v, bool must_copy) const override {
        if (served_lazily(v)) return {};  // an empty anonymous VMA, registered by after_map
        return Cow::fill(img, v, must_copy);
    }
    // The userfaultfd must belong to the process's own mm, so the table makes it (after its forks)
    // and pauses for us to take it: its faults are answered from then on, while the table lays out.
    void before_layout(state::Table& t, state::Region&, const image::Image& img,
                       size_t index) const override {
        if (!any_served(img.manifest.processes.at(index))) return;
        t.op(SYS_ioctl, {0, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK}, state::kUffd, 0,
             {{0, state::kUffdDevice}}, "userfaultfd (USERFAULTFD_IOC_NEW)");
        t.op(0, {}, -1, STUB_OP_PAUSE, {}, "pause: the page server takes the userfaultfd");
    }
    void after_map(state::Table& t, state::Region& region, const image::Vma& v) const override {
        if (!served_lazily(v)) return;
        uffdio_register reg{};
        reg.range.start = v.start;
        reg.range.len = v.length();
        reg.mode = UFFDIO_REGISTER_MODE_MISSING;
        t.op(SYS_ioctl, {0, static_cast<uint64_t>(UFFDIO_REGISTER), region.put(reg)}, -1, 0,
             {{0, state::kUffd}}, fmt::format("userfaultfd register {:#x}-{:#x}", v.start, v.end));
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
