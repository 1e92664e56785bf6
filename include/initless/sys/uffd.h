// userfaultfd: a small RAII wrapper over one userfaultfd (owned fd) for a page server. The fd is
// created inside the process whose memory it serves (a uffd is bound to its creator's mm) and
// taken from there with pidfd_getfd; every ioctl here acts on that mm from whichever process holds
// the fd. `copy` and `zero` may run on several threads at once (one ioctl each, no state of
// ours); the rest one thread at a time. Never blocks (O_NONBLOCK).
#pragma once

#include <linux/userfaultfd.h>

#include <cstddef>
#include <cstdint>

#include "initless/sys/unique_fd.h"

namespace initless::sys {

// How a fill ioctl (UFFDIO_COPY, UFFDIO_ZEROPAGE) ended.
struct UffdFill {
    enum Status {
        Done,    // the whole range was filled
        Exists,  // stopped at a page already present (`bytes` were filled before it)
        Again,   // the mm is changing (a fork, mremap or munmap event is unread): read events, retry
        Gone,    // the range is no longer mapped or registered (unmapped, mapped over)
        Exited   // the mm has exited
    };
    Status status = Done;
    uint64_t bytes = 0;
};

class Userfaultfd {
  public:
    Userfaultfd() = default;
    explicit Userfaultfd(UniqueFd fd) : fd_(std::move(fd)) {}
    int fd() const { return fd_.get(); }
    explicit operator bool() const { return static_cast<bool>(fd_); }

    // UFFDIO_API: asks for `features`; throws naming the ones the kernel lacks. Once per uffd (a
    // uffd made by UFFD_EVENT_FORK comes initialised).
    void handshake(uint64_t features);
    // UFFDIO_COPY of `len` bytes at `src` (our memory) to `dst` (the served mm); wakes waiters.
    UffdFill copy(uint64_t dst, const void* src, uint64_t len);
    // UFFDIO_ZEROPAGE: maps the zero page over [dst, dst+len); wakes waiters.
    UffdFill zero(uint64_t dst, uint64_t len);
    // UFFDIO_WAKE: wakes threads waiting on [start, start+len) (their page arrived otherwise).
    void wake(uint64_t start, uint64_t len);
    // Reads up to `max` queued messages; 0 when none is queued.
    size_t read_messages(uffd_msg* out, size_t max);

  private:
    UniqueFd fd_;
};

}  // namespace initless::sys
