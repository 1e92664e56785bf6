#include "pages/strategy.h"

#include <sys/syscall.h>

#include <fmt/format.h>

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

class Prefetch : public Cow {
  public:
    const char* name() const override { return "prefetch"; }
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

}  // namespace

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
