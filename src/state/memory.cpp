// Memory: VMAs and their pages. Checkpoint reads the VMAs from /proc/PID/smaps (file identity through
// map_files), refuses what cannot be mapped again by name (private memfd mappings, deleted files,
// SysV shm), and saves the private dirty non-zero pages (pagemap) into pages.img, one file range per
// VMA with holes; shared anonymous memory, memfds and shared mappings of deleted files (POSIX
// semaphores) are saved whole and come back as one memfd per object. Restore lays every VMA out at
// its address; how the saved pages arrive is the pages::MemoryStrategy's choice.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/inspect.h"
#include "pages/strategy.h"
#include "state/kinds.h"

namespace initless::state::memory {

namespace {

using image::kPageSize;
constexpr uint64_t kMaxFill = 1ULL << 30;  // one pread moves at most 0x7ffff000 bytes

int prot_of(const std::string& perms) {
    return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
           (perms[2] == 'x' ? PROT_EXEC : 0);
}

// Size, inode and mtime of the object behind a mapping, through /proc/PID/map_files (which reaches
// it whatever the process's mount namespace).
void record_mapped_file(pid_t pid, const sys::MapsEntry& m, image::Vma& v) {
    struct stat st = sys::stat_path(fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, m.start, m.end));
    v.file_size = static_cast<uint64_t>(st.st_size);
    v.file_inode = st.st_ino;
    v.file_mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

// VmFlags (smaps) a VMA keeps through restore: the madvise advice that sets it, or 0 when restore
// sets it another way (mw: opened read-write; nr: MAP_NORESERVE; lo/lf: mlock2; sl: mseal).
struct KeptFlag {
    const char* name;
    int advice;
};
constexpr KeptFlag kKeptFlags[] = {{"wf", MADV_WIPEONFORK},
                                   {"dc", MADV_DONTFORK},
                                   {"dd", MADV_DONTDUMP},
                                   {"hg", MADV_HUGEPAGE},
                                   {"nh", MADV_NOHUGEPAGE},
                                   {"mg", MADV_MERGEABLE},
                                   {"sr", MADV_SEQUENTIAL},
                                   {"rr", MADV_RANDOM},
                                   {"mw", 0},
                                   {"nr", 0},
                                   {"lo", 0},
                                   {"lf", 0},
                                   {"sl", 0}};

// VmFlags no restore can give back: the rule each one breaks.
struct RefusedFlag {
    const char* name;
    const char* what;
};
constexpr RefusedFlag kRefusedFlags[] = {{"um", "registered with a userfaultfd for missing pages"},
                                         {"uw", "registered with a userfaultfd for write protection"},
                                         {"ui", "registered with a userfaultfd for minor faults"},
                                         {"ss", "a shadow stack"},
                                         {"dp", "droppable (MAP_DROPPABLE)"}};

bool has_flag(const image::Vma& v, const char* name) {
    return std::find(v.flags.begin(), v.flags.end(), name) != v.flags.end();
}

bool is_zero(const uint8_t* p) {
    const auto* w = reinterpret_cast<const uint64_t*>(p);
    for (size_t i = 0; i < kPageSize / 8; ++i)
        if (w[i]) return false;
    return true;
}

const char* kind_name(image::VmaKind k) {
    switch (k) {
        case image::VmaKind::Anonymous:
            return "anon";
        case image::VmaKind::File:
            return "file";
        case image::VmaKind::Vdso:
            return "vdso";
        case image::VmaKind::Vvar:
            return "vvar";
        case image::VmaKind::VvarVclock:
            return "vvar_vclock";
        case image::VmaKind::Vsyscall:
            return "vsyscall";
        case image::VmaKind::SharedMemory:
            return "shmem";
    }
    return "?";
}

image::VmaKind vma_kind(const std::string& s) {
    using K = image::VmaKind;
    for (auto k : {K::Anonymous, K::File, K::Vdso, K::Vvar, K::VvarVclock, K::Vsyscall, K::SharedMemory})
        if (s == kind_name(k)) return k;
    throw Error("manifest: unknown VMA kind " + s);
}

}  // namespace

bool is_special(image::VmaKind k) {
    return k == image::VmaKind::Vdso || k == image::VmaKind::Vvar || k == image::VmaKind::VvarVclock ||
           k == image::VmaKind::Vsyscall;
}

std::vector<image::Vma> read(pid_t pid) {
    std::vector<image::Vma> out;
    for (const auto& m : sys::read_maps(pid, true)) {
        image::Vma v;
        v.start = m.start;
        v.end = m.end;
        v.prot = prot_of(m.perms);
        v.shared = m.perms[3] == 's';
        v.growsdown = std::find(m.vm_flags.begin(), m.vm_flags.end(), "gd") != m.vm_flags.end();
        v.name = m.path;
        v.file_offset = m.offset;
        auto where = fmt::format("process {} mapping {:#x}-{:#x} {}", pid, m.start, m.end, m.path);
        for (const auto& flag : m.vm_flags) {
            for (const auto& k : kKeptFlags)
                if (flag == k.name && (flag != "mw" || v.shared)) v.flags.push_back(flag);
            for (const auto& r : kRefusedFlags)
                if (flag == r.name)
                    throw ContractError(fmt::format(
                        "{} is {} (VmFlags {}); rule: no memory restore cannot lay out as it was "
                        "(userfaultfd registrations, shadow stacks and droppable memory are not restored)",
                        where, r.what, r.name));
        }
        if (m.path == "/[aio] (deleted)")
            throw ContractError(where +
                                ": the ring of a Linux AIO context (io_setup); rule: no AIO context when "
                                "ready (its requests and ring cannot be recreated): io_destroy it first");
        if (m.path == "[vdso]") {
            v.kind = image::VmaKind::Vdso;
        } else if (m.path == "[vvar]") {
            v.kind = image::VmaKind::Vvar;
        } else if (m.path == "[vvar_vclock]") {
            v.kind = image::VmaKind::VvarVclock;
        } else if (m.path == "[vsyscall]") {
            v.kind = image::VmaKind::Vsyscall;
        } else if (m.path.empty() || m.path == "[heap]" || m.path == "[stack]" ||
                   m.path.rfind("[anon:", 0) == 0) {
            v.kind = image::VmaKind::Anonymous;
        } else if (v.shared &&
                   (m.path == "/dev/zero (deleted)" || m.path.rfind("/memfd:", 0) == 0 ||

                    (m.path[0] == '/' && m.path.ends_with(" (deleted)") && m.path.rfind("/SYSV", 0) != 0))) {
            // Shared anonymous memory, memfds and shared mappings of deleted files (POSIX semaphores:
            // sem_open maps /dev/shm/sem.* and unlinks it): nobody can open them by name any more, so
            // they are saved whole and recreated as a memfd per object.
            v.kind = image::VmaKind::SharedMemory;
            record_mapped_file(pid, m, v);
        } else if (m.path.rfind("[anon_shmem:", 0) == 0) {
            throw ContractError(where +
                                ": named shared anonymous memory (PR_SET_VMA_ANON_NAME); rule: shared "
                                "memory comes back as a memfd, which cannot carry an anonymous name");
        } else if (m.path.rfind("/memfd:", 0) == 0 || m.path.find("(deleted)") != std::string::npos ||
                   m.path.rfind("/SYSV", 0) == 0 || m.path[0] != '/') {
            throw ContractError(where +
                                ": private mappings of memfds, and mappings of deleted files and SysV "
                                "shared memory, cannot be restored (rule: map only files that exist in "
                                "the sandbox)");
        } else {
            v.kind = image::VmaKind::File;
            record_mapped_file(pid, m, v);
        }
        out.push_back(std::move(v));
    }
    return out;
}

void dump_pages(pid_t pid, std::vector<image::Vma>& vmas, int out_fd, uint64_t& cursor,
                image::Manifest& manifest, std::vector<image::PageRun>& runs) {
    sys::UniqueFd pagemap = sys::open_file(fmt::format("/proc/{}/pagemap", pid), O_RDONLY);
    MemoryReader mem(pid);
    std::vector<uint64_t> entries;
    std::vector<uint8_t> buf;
    for (auto& v : vmas) {
        bool shmem = v.kind == image::VmaKind::SharedMemory;
        if (v.kind != image::VmaKind::Anonymous && v.kind != image::VmaKind::File && !shmem) continue;
        if (v.shared && !shmem) continue;  // shared file mappings live in the file itself
        uint64_t npages = v.length() / kPageSize;
        entries.resize(npages);
        sys::read_exact(pagemap.get(), entries.data(), npages * 8,
                        static_cast<off_t>(v.start / kPageSize * 8));
        v.image_offset = cursor;
        const size_t first_run = runs.size();  // runs never span two VMAs
        uint32_t crc = 0;
        auto wanted = [&](uint64_t k) {
            uint64_t e = entries[k];
            bool present = (e >> 63) & 1, swapped = (e >> 62) & 1, file_page = (e >> 61) & 1;
            // Shared memory is read whole: its pages may be resident without being mapped here.
            if (shmem) return true;
            if (!(present || swapped)) return false;
            // In a private file mapping only copied-on-write (anonymous) pages differ from the file.
            return v.kind == image::VmaKind::Anonymous || !file_page;
        };
        for (uint64_t i = 0; i < npages;) {
            if (!wanted(i)) {
                ++i;
                continue;
            }
            uint64_t j = i;
            while (j < npages && wanted(j) && j - i < 2048) ++j;
            buf.resize((j - i) * kPageSize);
            mem.read(v.start + i * kPageSize, buf.data(), buf.size());
            // Split the chunk into runs of non-zero pages: zero pages are never written.
            for (uint64_t k = 0; k < j - i;) {
                if (is_zero(buf.data() + k * kPageSize)) {
                    ++manifest.zero_pages_skipped;
                    ++k;
                    continue;
                }
                uint64_t s = k;
                while (k < j - i && !is_zero(buf.data() + k * kPageSize)) ++k;
                uint64_t vaddr = v.start + (i + s) * kPageSize;
                uint64_t file_off = cursor + (vaddr - v.start);
                const uint8_t* data = buf.data() + s * kPageSize;
                size_t len = (k - s) * kPageSize;
                sys::write_at(out_fd, data, len, file_off);
                crc = image::crc32c(crc, data, len);
                if (runs.size() > first_run && runs.back().vaddr + runs.back().pages * kPageSize == vaddr)
                    runs.back().pages += k - s;
                else
                    runs.push_back({vaddr, k - s, file_off});
                v.saved_pages += k - s;
                manifest.pages_written += k - s;
            }
            i = j;
        }
        v.pages_crc = crc;
        if (v.saved_pages) cursor += v.length();
    }
}

void store(json& j, const image::Process& p) {
    json vmas = json::array();
    for (const auto& v : p.vmas)
        vmas.push_back({{"start", v.start},
                        {"end", v.end},
                        {"prot", v.prot},
                        {"shared", v.shared},
                        {"growsdown", v.growsdown},
                        {"kind", kind_name(v.kind)},
                        {"name", v.name},
                        {"file_offset", v.file_offset},
                        {"file", {v.file_size, v.file_inode, v.file_mtime_ns}},
                        {"image_offset", v.image_offset},
                        {"saved_pages", v.saved_pages},
                        {"pages_crc", v.pages_crc},
                        {"flags", v.flags}});
    j["vmas"] = std::move(vmas);
}

void load(const json& j, image::Process& p) {
    for (const auto& v : j.at("vmas")) {
        image::Vma m;
        m.start = v.at("start");
        m.end = v.at("end");
        m.prot = v.at("prot");
        m.shared = v.at("shared");
        m.growsdown = v.at("growsdown");
        m.kind = vma_kind(v.at("kind"));
        m.name = v.at("name");
        m.file_offset = v.at("file_offset");
        m.file_size = v.at("file")[0];
        m.file_inode = v.at("file")[1];
        m.file_mtime_ns = v.at("file")[2];
        m.image_offset = v.at("image_offset");
        m.saved_pages = v.at("saved_pages");
        m.pages_crc = v.at("pages_crc");
        m.flags = v.at("flags").get<std::vector<std::string>>();
        p.vmas.push_back(std::move(m));
    }
}

void verify_mapped_files(pid_t init_pid, const image::Process& p) {
    std::set<std::string> seen;
    for (const auto& v : p.vmas) {
        if (v.kind != image::VmaKind::File || !seen.insert(v.name).second) continue;
        struct stat st {};
        try {
            st = sys::stat_path(fmt::format("/proc/{}/root{}", init_pid, v.name));
        } catch (const sys::SysError& e) {
            throw Error(
                fmt::format("mapped file {} is missing in the sandbox: {}", v.name, std::strerror(e.code())));
        }
        int64_t mtime = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        if (static_cast<uint64_t>(st.st_size) != v.file_size || mtime != v.file_mtime_ns)
            throw Error(
                fmt::format("mapped file {} changed since the snapshot (size {} -> {}, mtime changed: {})",
                            v.name, v.file_size, st.st_size, mtime != v.file_mtime_ns ? "yes" : "no"));
    }
}

std::set<uint64_t> shared_objects(const std::vector<image::Process>& procs) {
    std::map<uint64_t, std::set<size_t>> holders;
    for (size_t i = 0; i < procs.size(); ++i)
        for (const auto& v : procs[i].vmas)
            if (v.kind == image::VmaKind::SharedMemory) holders[v.file_inode].insert(i);
    std::set<uint64_t> out;
    for (const auto& [inode, who] : holders)
        if (who.size() > 1) out.insert(inode);
    return out;
}

// As big as the object, named as the checkpoint saw it.
void plan_memfd(Table& t, Region& region, const image::Vma& v, int slot) {
    std::string name = v.name.rfind("/memfd:", 0) == 0 ? v.name.substr(7, v.name.find(" (deleted)") - 7)
                                                       : std::string("initless-shared-anon");
    t.op(SYS_memfd_create, {region.put_string(name), MFD_CLOEXEC}, slot, 0, {}, "memfd " + name);
    t.op(SYS_ftruncate, {0, v.file_size}, -1, 0, {{0, slot}}, "size memfd " + name);
}

namespace {

// Names, madvise advice, locks and seals, once the pages are in (a lock faults them in; a seal
// forbids any later change).
void plan_flags(Table& t, Region& region, const std::vector<const image::Vma*>& vmas) {
    for (const auto* v : vmas) {
        uint64_t len = v->length();
        if (v->name.rfind("[anon:", 0) == 0) {
            std::string name = v->name.substr(6, v->name.size() - 7);
            t.op(SYS_prctl, {PR_SET_VMA, PR_SET_VMA_ANON_NAME, v->start, len, region.put_string(name)}, -1, 0,
                 {}, fmt::format("name {:#x} {}", v->start, name));
        }
        for (const auto& k : kKeptFlags)
            if (k.advice && has_flag(*v, k.name))
                t.op(SYS_madvise, {v->start, len, static_cast<uint64_t>(k.advice)}, -1, 0, {},
                     fmt::format("madvise {:#x} {}", v->start, k.name));
        if (has_flag(*v, "lo") || has_flag(*v, "lf"))
            t.op(SYS_mlock2, {v->start, len, has_flag(*v, "lf") ? 1u /* MLOCK_ONFAULT */ : 0u}, -1, 0, {},
                 fmt::format("mlock {:#x}", v->start));
    }
    for (const auto* v : vmas)
        if (has_flag(*v, "sl"))
            t.op(462 /* mseal */, {v->start, v->length(), 0}, -1, 0, {},
                 fmt::format("mseal {:#x}", v->start));
}

}  // namespace

void plan(Table& t, Region& region, const image::Image& img, size_t index, const FdLayout& L,
          const pages::MemoryStrategy& strategy) {
    const image::Process& p = img.manifest.processes.at(index);
    std::vector<std::tuple<uint64_t, uint64_t, int>> final_prot;
    std::vector<const image::Vma*> flagged;  // VMAs with VmFlags or a name to set once laid out
    std::map<uint64_t, int> shm_slots;       // shared memory object (inode) -> slot of its memfd
    strategy.before_layout(t, region, img, index);
    for (const auto& v : p.vmas) {
        if (is_special(v.kind)) continue;
        bool shmem = v.kind == image::VmaKind::SharedMemory;
        bool holds_args = v.start <= p.mm.arg_start && p.mm.arg_start < v.end;
        pages::VmaFill fill;
        if (has_flag(v, "wf")) {
            // MADV_WIPEONFORK takes only anonymous memory: never mapped from the image, whatever
            // the strategy.
            for (const auto& r : img.runs_of(v)) fill.copy_runs.push_back(&r);
        } else {
            fill = strategy.fill(img, v, holds_args);
        }
        int prot = v.prot | (fill.copy_runs.empty() ? 0 : PROT_WRITE);
        uint64_t len = v.length();
        std::string what = fmt::format("map {:#x}-{:#x} {}", v.start, v.end, v.name);
        if (shmem) {
            auto [it, fresh] =
                shm_slots.try_emplace(v.file_inode, kShmFirst + static_cast<int>(shm_slots.size()));
            if (it->second >= STUB_SLOTS) throw Error("too many shared memory objects to restore");
            if (fresh) {
                if (auto shared = L.shm.find(v.file_inode); shared != L.shm.end())
                    t.preset(it->second, static_cast<uint64_t>(shared->second));  // made before the forks
                else
                    plan_memfd(t, region, v, it->second);
            }
            t.op(SYS_mmap,
                 {v.start, len, static_cast<uint64_t>(prot), MAP_SHARED | MAP_FIXED, 0, v.file_offset}, -1,
                 STUB_OP_EXPECT_ARG0, {{4, it->second}}, what);
        } else if (v.kind == image::VmaKind::Anonymous) {
            if (fill.map_whole) {
                uint64_t flags = MAP_PRIVATE | MAP_FIXED | (has_flag(v, "nr") ? MAP_NORESERVE : 0);
                t.op(SYS_mmap, {v.start, len, static_cast<uint64_t>(prot), flags, 0, v.image_offset}, -1,
                     STUB_OP_EXPECT_ARG0, {{4, kImg}}, what);
            } else {
                uint64_t flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (v.growsdown ? MAP_GROWSDOWN : 0) |
                                 (has_flag(v, "nr") ? MAP_NORESERVE : 0);
                t.op(SYS_mmap,
                     {v.start, len, static_cast<uint64_t>(prot), flags, static_cast<uint64_t>(-1), 0}, -1,
                     STUB_OP_EXPECT_ARG0, {}, what);
            }
        } else {
            // A shared mapping may be made writable later (mprotect) only if its file was opened
            // read-write: VM_MAYWRITE ("mw") says it was.
            int oflags = v.shared && ((v.prot & PROT_WRITE) || has_flag(v, "mw")) ? O_RDWR : O_RDONLY;
            t.op(SYS_open, {region.put_string(v.name), static_cast<uint64_t>(oflags | O_CLOEXEC)}, kFile, 0,
                 {}, "open " + v.name);
            t.op(SYS_mmap,
                 {v.start, len, static_cast<uint64_t>(prot),
                  static_cast<uint64_t>(v.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, 0, v.file_offset},
                 -1, STUB_OP_EXPECT_ARG0, {{4, kFile}}, what);
            t.op(SYS_close, {0}, -1, 0, {{0, kFile}}, "close " + v.name);
        }
        strategy.after_map(t, region, v);
        for (const auto* r : fill.copy_runs)
            for (uint64_t off = 0; off < r->pages * kPageSize; off += kMaxFill) {
                uint64_t n = std::min(kMaxFill, r->pages * kPageSize - off);
                t.op(SYS_pread64, {0, r->vaddr + off, n, r->file_offset + off}, -1, STUB_OP_EXPECT_ARG2,
                     {{0, kImg}}, fmt::format("fill {:#x} ({} pages)", r->vaddr + off, n / kPageSize));
            }
        for (const auto* r : fill.map_runs)
            t.op(SYS_mmap,
                 {r->vaddr, r->pages * kPageSize, static_cast<uint64_t>(v.prot), MAP_PRIVATE | MAP_FIXED, 0,
                  r->file_offset},
                 -1, STUB_OP_EXPECT_ARG0, {{4, kImg}},
                 fmt::format("map dirty run {:#x} ({} pages)", r->vaddr, r->pages));
        if (prot != v.prot) final_prot.emplace_back(v.start, len, v.prot);
        if (!v.flags.empty() || v.name.rfind("[anon:", 0) == 0) flagged.push_back(&v);
    }
    for (const auto& [inode, slot] : shm_slots) t.op(SYS_close, {0}, -1, 0, {{0, slot}}, "close memfd");
    for (auto [s, len, prot] : final_prot)
        t.op(SYS_mprotect, {s, len, static_cast<uint64_t>(prot)}, -1, 0, {},
             fmt::format("mprotect {:#x}", s));
    strategy.after_layout(t, img, index);
    plan_flags(t, region, flagged);
}

}  // namespace initless::state::memory
