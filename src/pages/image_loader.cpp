#include "initless/pages/image_loader.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/inspect.h"
#include "initless/sys/process.h"

namespace initless::pages {

ImageLoader& ImageLoader::shared() {
    static ImageLoader loader;
    return loader;
}

ImageLoader::~ImageLoader() {
    std::thread t;
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
        queue_.clear();
        t = std::move(thread_);
    }
    if (t.joinable()) t.join();
}

void ImageLoader::load(int fd) {
    if (sys::in_memory_file(fd)) return;  // nothing to read
    struct stat st = sys::stat_fd(fd);
    Job job{sys::reopen(fd, O_RDONLY | O_CLOEXEC), static_cast<uint64_t>(st.st_size),
            static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    std::lock_guard lock(mutex_);
    if (stop_) return;
    bool queued = std::any_of(queue_.begin(), queue_.end(),
                              [&](const Job& j) { return j.dev == job.dev && j.ino == job.ino; });
    if (queued || (current_dev_ == job.dev && current_ino_ == job.ino)) {
        ++counters_.duplicates;
        return;
    }
    queue_.push_back(std::move(job));
    if (!running_) {
        if (thread_.joinable()) thread_.join();  // the last thread ended (running_ false): returns at once
        running_ = true;
        thread_ = std::thread([this] { run(); });
    }
}

bool ImageLoader::wait_idle(std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex_);
    return idle_cv_.wait_for(lock, limit, [&] { return !running_; });
}

ImageLoader::Counters ImageLoader::counters() const {
    std::lock_guard lock(mutex_);
    return counters_;
}

bool ImageLoader::thread_running() const {
    std::lock_guard lock(mutex_);
    return running_;
}

bool ImageLoader::stopping() const {
    std::lock_guard lock(mutex_);
    return stop_;
}

void ImageLoader::run() {
    for (;;) {
        Job job;
        {
            std::lock_guard lock(mutex_);
            if (queue_.empty() || stop_) {
                current_dev_ = current_ino_ = 0;
                running_ = false;
                idle_cv_.notify_all();
                return;
            }
            job = std::move(queue_.front());
            queue_.pop_front();
            current_dev_ = job.dev;
            current_ino_ = job.ino;
        }
        try {
            pass(job);
        } catch (const Error& e) {
            // Advice only: a restore never depends on the loader (its faults read what is missing).
            spdlog::warn("event=image-load-failed error=\"{}\"", e.what());
        }
    }
}

// A chunk is asked for (WILLNEED) while the oldest in flight is waited for: the device has work, and
// never more of ours queued than the current step allows. The pass starts gently (one small chunk at
// a time) and ramps up after kRampAfter: a short request just after a restore finds the device
// nearly free (the gentle phase's I/O is in the idle class: it waits while the restore's own reads
// are queued); a request that reads all of memory gets the device's full rate soon after (best
// effort class: idle I/O starves behind a function that faults page after page).
void ImageLoader::pass(const Job& job) {
    auto started = std::chrono::steady_clock::now();
    uint64_t read = 0, resident = 0;
    std::deque<std::pair<uint64_t, uint64_t>> in_flight;  // offset, length
    sys::set_this_thread_background(true);
    bool was_ramped = false;
    for (uint64_t at = 0; at < job.size || !in_flight.empty();) {
        if (stopping()) return;
        bool ramped = std::chrono::steady_clock::now() - started >= kRampAfter;
        if (ramped && !was_ramped) sys::set_this_thread_background(false);
        was_ramped = ramped;
        uint64_t chunk = ramped ? kChunk : kFirstChunk;
        size_t depth = ramped ? kChunksInFlight : 1;
        if (at < job.size && in_flight.size() < depth) {
            uint64_t len = std::min(chunk, job.size - at);
            if (sys::in_page_cache(job.file.get(), at, len)) {
                ++resident;
            } else {
                sys::read_ahead(job.file.get(), at, len);
                in_flight.emplace_back(at, len);
                ++read;
            }
            at += len;
            continue;
        }
        // Its last page: a chunk's reads complete about in order, and pacing needs no more.
        sys::wait_page_read(job.file.get(), in_flight.front().first + in_flight.front().second - 1);
        in_flight.pop_front();
    }
    spdlog::debug(
        "event=image-loaded size_mb={} read_chunks={} resident_chunks={} ms={:.1f}", job.size >> 20, read,
        resident,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
    std::lock_guard lock(mutex_);
    ++counters_.passes;
    counters_.chunks_read += read;
    counters_.chunks_resident += resident;
}

}  // namespace initless::pages
