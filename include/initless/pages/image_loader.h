// The image loader: reads whole images' pages.img into the page cache in the background, in file
// order, after a restore's working set (FaaSnap's concurrent loading, with the page cache as the
// destination). Why: under `prefetch` the restored process faults image pages in through its
// MAP_PRIVATE mappings, which are told MADV_RANDOM (a fault on a cold page would otherwise read the
// device's whole read-around window, 8 MiB here, for one page of a random lookup); without a loader
// a request that touches all of memory would then read it 4 KiB at a time. The loader reads ahead
// of such a request at the device's sequential rate, and its reads yield to the function's own.
//
// Guarantees and limits:
// - Reads only: no process's memory changes; a pass over a file already in the page cache costs a
//   cachestat per chunk (12 ms for the 1.1 GB dict image, measured) and reads nothing.
// - Its reads yield to the restore's and the function's: for the first kRampAfter of a pass, one
//   chunk of kFirstChunk at a time in the idle I/O class (a restore's own reads, queued meanwhile, go
//   first; measured: a cold GET / on the 1.3 GB dict as fast as with no loader); then kChunksInFlight
//   chunks of kChunk at the lowest best-effort level (the idle class starves behind a function that
//   faults page after page). The thread runs at nice 10.
// - The page cache it fills is charged to the memory cgroup of the process that owns the loader (the
//   daemon's or the CLI's), not to a function's: instances share it, as they share the image.
// - A file queued or being read (same device and inode) is not queued twice.
// Threads: any thread may call `load`; one loader thread runs while there is work, and ends when
// the queue is empty (started again by the next `load`). The destructor stops the pass in progress
// and joins the thread; `shared()`'s instance does so at exit.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

#include "initless/sys/unique_fd.h"

namespace initless::pages {

class ImageLoader {
  public:
    static constexpr uint64_t kFirstChunk = 256 << 10;  // one at a time until kRampAfter
    static constexpr std::chrono::milliseconds kRampAfter{100};
    static constexpr uint64_t kChunk = 2 << 20;  // kChunksInFlight at a time after
    static constexpr int kChunksInFlight = 4;

    struct Counters {
        uint64_t passes = 0;           // passes completed
        uint64_t duplicates = 0;       // loads not queued: the file was queued or being read
        uint64_t chunks_read = 0;      // chunks that were not all in the page cache
        uint64_t chunks_resident = 0;  // chunks found in the page cache
    };

    static ImageLoader& shared();

    // Queues a pass over the whole file open at `fd` (reopened read-only: the caller keeps its fd; the
    // loader holds its own until the pass ends). Returns at once; throws only if `fd` cannot be reopened.
    void load(int fd);
    // Waits until nothing is queued or being read; false after `limit`.
    bool wait_idle(std::chrono::milliseconds limit);
    Counters counters() const;
    bool thread_running() const;

    ImageLoader() = default;
    ~ImageLoader();
    ImageLoader(const ImageLoader&) = delete;
    ImageLoader& operator=(const ImageLoader&) = delete;

  private:
    struct Job {
        sys::UniqueFd file;
        uint64_t size = 0;
        uint64_t dev = 0, ino = 0;
    };
    void run();
    void pass(const Job& job);
    bool stopping() const;

    mutable std::mutex mutex_;
    std::condition_variable idle_cv_;
    std::deque<Job> queue_;
    uint64_t current_dev_ = 0, current_ino_ = 0;  // the file being read (0, 0: none)
    bool running_ = false, stop_ = false;
    Counters counters_;
    std::thread thread_;
};

}  // namespace initless::pages
