// The working-set recorder: which pages of a restored process are present after its first request
// (restore.h's record_working_set; the prefetch strategy installs them at later restores).
#include <fcntl.h>
#include <sys/mman.h>

#include <fmt/format.h>

#include "initless/restore/restore.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"

namespace initless::restore {

using image::kPageSize;

namespace {
std::vector<image::WorkingSetRun> read_working_set(pid_t host_pid, const image::Process& process,
                                                   uint64_t process_index) {
    std::vector<image::WorkingSetRun> out;
    sys::UniqueFd pagemap = sys::open_file(fmt::format("/proc/{}/pagemap", host_pid), O_RDONLY);
    std::vector<uint64_t> entries;
    for (const auto& v : process.vmas) {
        if (v.kind == image::VmaKind::Vdso || v.kind == image::VmaKind::Vvar ||
            v.kind == image::VmaKind::VvarVclock || v.kind == image::VmaKind::Vsyscall ||
            (v.shared && v.kind != image::VmaKind::SharedMemory))
            continue;
        uint64_t n = v.length() / kPageSize;
        entries.resize(n);
        sys::read_exact(pagemap.get(), entries.data(), n * 8, static_cast<off_t>(v.start / kPageSize * 8));
        for (uint64_t i = 0; i < n;) {
            if (!(entries[i] >> 63 & 1)) {
                ++i;
                continue;
            }
            // Written: now a private copy (not a file page) in a writable VMA.
            auto written = [&](uint64_t k) { return (v.prot & PROT_WRITE) && !(entries[k] >> 61 & 1); };
            uint64_t j = i;
            bool w = written(i);
            while (j < n && (entries[j] >> 63 & 1) && written(j) == w) ++j;
            out.push_back({v.start + i * kPageSize, j - i, w ? 1u : 0u, process_index});
            i = j;
        }
    }
    return out;
}

}  // namespace

std::vector<image::WorkingSetRun> record_working_set(pid_t host_pid, const image::Process& process,
                                                     uint64_t process_index) {
    // A process of the function may end soon after its restore (a short-lived child: fork, exec
    // /bin/true, exit): it has no working set, and the others' are still worth keeping.
    auto ended = [&] {
        try {
            std::string state = sys::read_status(host_pid)["State"];
            return state.rfind("Z", 0) == 0 || state.rfind("X", 0) == 0;
        } catch (const Error&) {
            return true;
        }
    };
    try {
        return read_working_set(host_pid, process, process_index);
    } catch (const Error&) {
        if (ended()) return {};
        throw;
    }
}

}  // namespace initless::restore
