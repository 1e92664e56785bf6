#include "initless/sys/unique_fd.h"

#include <unistd.h>

namespace initless::sys {

void UniqueFd::reset(int fd) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

}  // namespace initless::sys
