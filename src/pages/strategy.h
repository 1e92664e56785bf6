// Memory strategies: how a restored process's saved pages arrive. The memory kind
// (src/state/memory.cpp) lays every VMA out at its address and asks the strategy how each VMA gets
// its contents; a strategy may add ops after the layout and ask for a warm page reserve in stage 1.
// All strategies must give the same process. Stateless: one instance of each, any thread.
//   eager:    every saved page is copied in (pread from pages.img inside the process).
//   cow:      anonymous VMAs with saved pages map their pages.img range MAP_PRIVATE (cost
//             independent of size; instances share the page cache); long runs of dirty pages in
//             private file mappings are mapped from the image over the file, short ones copied.
//   prefetch: cow, then the image's working set installed in bulk (MADV_POPULATE_{WRITE,READ}).
// A new strategy (lazy: userfaultfd and a fault server; remote: pages from another node) is a new
// MemoryStrategy; what it needs beyond these hooks (a fault server beside execute) goes here first.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "initless/image/image.h"
#include "state/table.h"

namespace initless::pages {

// How one VMA gets its saved pages.
struct VmaFill {
    bool map_whole = false;                        // an anonymous VMA mapped from its pages.img range
    std::vector<const image::PageRun*> copy_runs;  // copied in (pread) after the VMA is made
    std::vector<const image::PageRun*> map_runs;   // mapped from pages.img over the VMA (file mappings)
};

class MemoryStrategy {
  public:
    virtual ~MemoryStrategy() = default;
    virtual const char* name() const = 0;
    // `must_copy`: the VMA's contents must be anonymous memory (the kernel reads /proc/PID/cmdline
    // and environ only from anonymous memory, so the VMA holding them is never mapped from the image).
    virtual VmaFill fill(const image::Image& img, const image::Vma& v, bool must_copy) const = 0;
    // Ops once every VMA of process `index` is laid out and protected.
    virtual void after_layout(state::Table&, const image::Image&, size_t /*index*/) const {}
    // Anonymous memory the restorer touches in stage 1 for the restore to reuse warm.
    virtual uint64_t warm_reserve(const image::Image&) const { return 0; }
};

const MemoryStrategy& eager();
const MemoryStrategy& cow();
const MemoryStrategy& prefetch();

}  // namespace initless::pages
