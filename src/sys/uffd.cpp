#include "initless/sys/uffd.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "initless/sys/error.h"

namespace initless::sys {

namespace {

UffdFill fill_result(long rc, int64_t done, int err) {
    UffdFill r;
    r.bytes = done > 0 ? static_cast<uint64_t>(done) : 0;
    if (rc == 0) return r;
    switch (err) {
        case EEXIST:
            r.status = UffdFill::Exists;
            return r;
        case EAGAIN:
            r.status = UffdFill::Again;
            return r;
        case ESRCH:
            r.status = UffdFill::Exited;
            return r;
        case ENOENT:
        case EINVAL:  // the range is no longer one registered VMA (unmapped, remapped over)
            r.status = UffdFill::Gone;
            return r;
        default:
            throw SysError(fmt::format("userfaultfd fill ({} bytes done)", r.bytes), err);
    }
}

}  // namespace

void Userfaultfd::handshake(uint64_t features) {
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = features;
    if (::ioctl(fd_.get(), UFFDIO_API, &api) != 0) {
        throw SysError(fmt::format("UFFDIO_API asking for features {:#x}", features), errno);
    }
}

UffdFill Userfaultfd::copy(uint64_t dst, const void* src, uint64_t len) {
    uffdio_copy c{};
    c.dst = dst;
    c.src = reinterpret_cast<uint64_t>(src);
    c.len = len;
    long rc = ::ioctl(fd_.get(), UFFDIO_COPY, &c);
    return fill_result(rc, c.copy, errno);
}

UffdFill Userfaultfd::zero(uint64_t dst, uint64_t len) {
    uffdio_zeropage z{};
    z.range.start = dst;
    z.range.len = len;
    long rc = ::ioctl(fd_.get(), UFFDIO_ZEROPAGE, &z);
    return fill_result(rc, z.zeropage, errno);
}

void Userfaultfd::wake(uint64_t start, uint64_t len) {
    uffdio_range r{start, len};
    if (::ioctl(fd_.get(), UFFDIO_WAKE, &r) != 0 && errno != ESRCH && errno != ENOENT && errno != EINVAL)
        throw SysError("UFFDIO_WAKE", errno);
}

size_t Userfaultfd::read_messages(uffd_msg* out, size_t max) {
    ssize_t n = retry_eintr([&] { return ::read(fd_.get(), out, max * sizeof(uffd_msg)); });
    if (n < 0) {
        if (errno == EAGAIN) return 0;
        throw SysError("read userfaultfd", errno);
    }
    return static_cast<size_t>(n) / sizeof(uffd_msg);
}

}  // namespace initless::sys
