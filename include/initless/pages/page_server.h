// The page server of the lazy memory strategy: serves restored processes' private anonymous memory
// through their userfaultfds, from an image's pages.img.
//
// What it owns: one thread of the initless process (never of a restored function) with one epoll
// over every served process's userfaultfd and pidfd, started when the first process is added and
// ended, with its epoll and every fd it held, when the last one is gone. A served process is gone
// when it exits (its pidfd), when its memory is complete (every page of the image is in: the
// userfaultfd is closed and its VMAs become ordinary memory), or when its restore failed.
//
// How pages arrive: a fault is answered with UFFDIO_COPY of the image's pages (UFFDIO_ZEROPAGE for
// pages the image never saved) in chunks that grow from 64 KiB to 4 MiB while faults stay
// sequential; beside the faults, a background fill copies every page in, the recorded working set
// first (in its recorded order), then every registered VMA in address order. Faults are read
// between fill steps of at most 256 KiB, so they overtake the fill. The fill starts 50 ms after
// `start_fill`, or as soon as faults have brought in 4 MiB: a first request that needs little beyond
// its working set does not share the machine with it (page_server.cpp says what was measured). Events keep
// the pages right: MADV_DONTNEED (REMOVE) drops a range (later faults get zeros), munmap (UNMAP) forgets it,
// mremap (REMAP) moves what is still to come with it, and fork (FORK) serves the child too.
//
// Where pages come from: an image::PageSource (page_source.h), the local pages.img or a remote page
// server (remote.h); the server does not branch on which. A source that fails (a remote server
// that died or did not answer within its timeout, a page failing its digest) cannot be served
// around: a fault left unanswered would hang the function, and answering zeros would corrupt it.
// So every process of that restore is killed (SIGKILL through its pidfd; a child it forked dies
// with the sandbox, whose init ends when the function's first process does) and the reason is kept
// in its ServedMemory (`stats().failure`). While a remote read is outstanding the server thread
// waits for it (at most the source's timeout), and so do the other processes it serves.
//
// Threads: every member may be called from any thread; `add` returns once the server thread will
// read the new userfaultfd (faults are answered from then on).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "initless/image/image.h"
#include "initless/image/page_source.h"
#include "initless/sys/file.h"
#include "initless/sys/uffd.h"
#include "initless/sys/unique_fd.h"

namespace initless::pages {

// What the server needs of an image to serve one restore: its pages file and, per process, the
// VMAs the restore registers (private anonymous ones holding saved pages) with which pages are saved.
struct LazySource {
    struct Area {
        uint64_t start = 0, end = 0;
        uint64_t image_offset = 0;  // of `start` in pages.img
        std::vector<bool> saved;    // per page: in pages.img (else never saved: zero)
    };
    // pages.img's bytes: locally a read-only mapping of the file load verified (UFFDIO_COPY copies
    // from the page cache through it: one copy per page), or a remote page server's verified cache.
    // Read by the server thread only.
    std::shared_ptr<image::PageSource> pages;
    std::vector<std::vector<Area>> areas;           // per process, in address order
    std::vector<image::WorkingSetRun> working_set;  // filled first, in this order

    // Built from a loaded image (its pages_source(): a new open file description of its verified
    // pages.img, or its remote source).
    static std::shared_ptr<const LazySource> of(const image::Image& img);
};

struct ServeStats {
    uint64_t processes = 0;         // served, forks included
    uint64_t faults = 0;            // page faults answered
    uint64_t pages_copied = 0;      // UFFDIO_COPY
    uint64_t pages_zeroed = 0;      // UFFDIO_ZEROPAGE
    uint64_t pages_prefetched = 0;  // of those, installed by the background fill
    uint64_t bytes_read = 0;        // from pages.img
    uint64_t events = 0;            // fork, remap, remove, unmap
    bool complete = false;          // every served process is complete or gone
    double complete_ms = 0;         // from the first add to completion
    std::string failure;  // why the restore's page source failed (the function was killed); empty if not
};

// One restore's served memory (every process of its tree and their forks). Kept by the caller for
// figures; dropping it does not stop the serving.
class ServedMemory {
  public:
    ServeStats stats() const;
    // Waits until every process is complete or gone; false on timeout.
    bool wait_complete(std::chrono::milliseconds timeout) const;

    // The server's side.
    struct Counters {
        std::atomic<uint64_t> processes{0}, faults{0}, pages_copied{0}, pages_zeroed{0}, pages_prefetched{0},
            bytes_read{0}, events{0};
    };
    Counters counters;
    void process_started();
    void process_finished();
    void failed(const std::string& why);  // keeps the first reason

  private:
    mutable std::mutex mutex_;
    mutable std::condition_variable cv_;
    int live_ = 0;
    bool ever_ = false;
    std::chrono::steady_clock::time_point first_{};
    double complete_ms_ = 0;
    std::string failure_;
};

class PageServer {
  public:
    // The process-wide server.
    static PageServer& shared();

    // Serves process `process` of `source`'s image through `uffd` (UFFDIO_API done). `pidfd` tells
    // the process's end. Faults are answered at once; the background fill starts after `start_fill`
    // (above: delayed a little, unless faults show the function going through its memory).
    // Returns an id for start_fill / remove.
    uint64_t add(sys::Userfaultfd uffd, sys::UniqueFd pidfd, std::shared_ptr<const LazySource> source,
                 size_t process, std::shared_ptr<ServedMemory> served);
    void start_fill(uint64_t id);
    // Copies the process's recorded working set in now and returns when it is in (throws what the
    // server thread met). For a process stopped at a pause of its restore table, after its VMAs are
    // registered: the first request after the restore then finds those pages present instead of
    // paying a fault round trip (and a wake-up on a busy machine) for each chunk of them.
    void install_working_set(uint64_t id);
    // Stops serving (a failed restore): closes the process's userfaultfd (its VMAs become ordinary).
    void remove(uint64_t id);

    // For tests: processes served now, and whether the server thread runs.
    size_t served_count() const;
    bool thread_running() const;

    PageServer();
    ~PageServer();
    PageServer(const PageServer&) = delete;
    PageServer& operator=(const PageServer&) = delete;

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

// The VMAs the lazy strategy registers and serves: private anonymous ones holding saved pages (a VMA
// the image saved nothing of is ordinary zero-fill memory; file mappings cannot be registered), but
// for MADV_WIPEONFORK ones (copied in: see page_server.cpp).
bool served_lazily(const image::Vma& v);

// The features the lazy strategy asks of a userfaultfd.
uint64_t lazy_uffd_features();

}  // namespace initless::pages
