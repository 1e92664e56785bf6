// Memory strategies: how a restored process's saved pages arrive. The memory kind
// (src/state/memory.cpp) lays every VMA out at its address and asks the strategy how each VMA gets
// its contents; a strategy may add ops after the layout and ask for a warm page reserve in stage 1.
// All strategies must give the same process. Stateless: one instance of each, any thread.
//   eager:    every saved page is copied in (pread from pages.img inside the process).
//   cow:      anonymous VMAs with saved pages map their pages.img range MAP_PRIVATE (cost
//             independent of size; instances share the page cache); long runs of dirty pages in
//             private file mappings are mapped from the image over the file, short ones copied.
//   prefetch: cow, with the image's working set read into the page cache in stage 1 and installed in
//             bulk after the layout (MADV_POPULATE_{WRITE,READ}); image-mapped VMAs advised
//             MADV_RANDOM, and the rest of the image read in the background (pages/image_loader.h).
//   lazy:     private anonymous VMAs holding saved pages are made empty and registered with a
//             userfaultfd the process creates in its table (then pauses so that we take it); the
//             page server (include/initless/pages/page_server.h) answers their faults and fills them
//             in the background, working set first; file mappings as under cow.
// A strategy that acts while the tables run or after them (lazy) returns an Attachment.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "initless/image/image.h"
#include "initless/pages/page_server.h"
#include "initless/sys/unique_fd.h"
#include "state/table.h"

namespace initless::pages {

// How one VMA gets its saved pages.
struct VmaFill {
    bool map_whole = false;                        // an anonymous VMA mapped from its pages.img range
    std::vector<const image::PageRun*> copy_runs;  // copied in (pread) after the VMA is made
    std::vector<const image::PageRun*> map_runs;   // mapped from pages.img over the VMA (file mappings)
};

// What a strategy does beside a restore's execution, on the tracer thread (RestorePlan::execute).
// Made at prepare; dropped without `release` (a failed restore), it undoes what it started.
class Attachment {
  public:
    virtual ~Attachment() = default;
    // Process `index`'s main table stopped at a STUB_OP_PAUSE this strategy planned; `slots` are the
    // table's slots (STUB_SLOTS of them) at that moment; `host_pid` its pid on the host.
    virtual void on_pause(size_t index, pid_t host_pid, const uint64_t* slots) = 0;
    // Every table ran and every process is detached: the restore is done.
    virtual void on_restored() = 0;
    // The restore succeeded: what the caller keeps (figures).
    virtual std::shared_ptr<ServedMemory> release() = 0;
};

class MemoryStrategy {
  public:
    virtual ~MemoryStrategy() = default;
    virtual const char* name() const = 0;
    // `must_copy`: the VMA's contents must be anonymous memory (the kernel reads /proc/PID/cmdline
    // and environ only from anonymous memory, so the VMA holding them is never mapped from the image).
    virtual VmaFill fill(const image::Image& img, const image::Vma& v, bool must_copy) const = 0;
    // Ops before the first VMA of process `index` is made (its forks are done).
    virtual void before_layout(state::Table&, state::Region&, const image::Image&, size_t /*index*/) const {}
    // Ops right after VMA `v` is mapped, before its pages are copied in.
    virtual void after_map(state::Table&, state::Region&, const image::Vma& /*v*/) const {}
    // Ops once every VMA of process `index` is laid out and protected.
    virtual void after_layout(state::Table&, const image::Image&, size_t /*index*/) const {}
    // Anonymous memory the restorer touches in stage 1 for the restore to reuse warm.
    virtual uint64_t warm_reserve(const image::Image&) const { return 0; }
    // At prepare (off the request path), with the image's pages.img open: e.g. read the working set
    // ahead into the page cache, so that a restore from a cold cache does not read it page by page.
    // `open_mapped` opens a file the image maps (its path in the function's root), read-only.
    using MappedFileOpener = std::function<sys::UniqueFd(const std::string& path)>;
    virtual void prepare_pages(const image::Image&, int /*pages_fd*/,
                               const MappedFileOpener& /*open_mapped*/) const {}
    // Whether the tables make a userfaultfd (from /dev/userfaultfd, in slot kUffdDevice).
    virtual bool uses_userfaultfd() const { return false; }
    // What runs beside the execution; null when nothing does.
    virtual std::unique_ptr<Attachment> attach(const image::Image&) const { return nullptr; }
};

const MemoryStrategy& eager();
const MemoryStrategy& cow();
const MemoryStrategy& prefetch();
const MemoryStrategy& lazy();

}  // namespace initless::pages
