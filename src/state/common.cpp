// What the kinds share: reading a frozen process, and hex for the manifest's binary blobs.
#include <fcntl.h>

#include <sstream>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "state/kinds.h"

namespace initless::state {

MemoryReader::MemoryReader(pid_t pid) : mem_(sys::open_file(fmt::format("/proc/{}/mem", pid), O_RDONLY)) {}

void MemoryReader::read(uint64_t addr, void* out, size_t len) {
    sys::read_exact(mem_.get(), out, len, static_cast<off_t>(addr));
}

uint64_t scratch_below_stack(const user_regs_struct& regs) {
    return (regs.rsp - 512) & ~uint64_t{15};
}

pid_t ns_id(const std::string& status_value) {
    std::istringstream in(status_value);
    pid_t v = 0, last = 0;
    while (in >> v) last = v;
    return last;
}

uint64_t hex_u64(const std::string& s) {
    return std::stoull(s, nullptr, 16);
}

}  // namespace initless::state
