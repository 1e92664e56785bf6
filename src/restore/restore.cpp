#include "initless/restore/restore.h"

#include <elf.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "initless/restore/stub_abi.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "initless/sys/tracee.h"

extern "C" const uint8_t initless_stub_begin[];
extern "C" const uint8_t initless_stub_end[];

namespace initless::restore {

namespace {

using image::kPageSize;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point& t) {
    auto now = Clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - t).count();
    t = now;
    return ms;
}

uint64_t page_up(uint64_t v) { return (v + kPageSize - 1) & ~(kPageSize - 1); }

constexpr uint64_t kMainStack = 64 * 1024;
constexpr uint64_t kMaxFill = 1ULL << 30;
// Under cow, a run of dirty file-mapping pages at least this long is mapped from the image rather
// than copied: an mmap costs about what copying 4 pages does, and each adds at most two VMAs.
constexpr uint64_t kCowRunPages = 8;
// Linux 5.14+; Debian 12's headers may lack them.
constexpr uint64_t kMadvPopulateRead = 22;
constexpr uint64_t kMadvPopulateWrite = 23;
constexpr uint64_t kThreadStack = 16 * 1024;

// Slots of the main table.
enum Slot : int { kTmp = 0, kImg = 1, kLog = 2, kFile = 3, kPipeR = 4, kPipeW = 5, kExe = 6, kTgid = 7, kSelfTid = 8 };
constexpr int kShmFirst = 16;

// The stub region's contents, built on our side: code, then tables and data, then stacks.
class Region {
public:
    Region(uint64_t base, size_t code_size) : base_(base), code_size_(page_up(code_size)) {}

    // Reserves `len` bytes of data, returns its address in the target.
    uint64_t put(const void* data, size_t len, size_t align = 8) {
        size_t off = (data_.size() + align - 1) & ~(align - 1);
        data_.resize(off + len);
        if (data) std::memcpy(data_.data() + off, data, len);
        return base_ + code_size_ + off;
    }
    template <typename T>
    uint64_t put(const T& v) {
        return put(&v, sizeof v);
    }
    uint64_t put_string(const std::string& s) { return put(s.c_str(), s.size() + 1, 1); }
    uint64_t data_size() const { return data_.size(); }
    std::vector<uint8_t>& data() { return data_; }
    uint64_t code_size() const { return code_size_; }

private:
    uint64_t base_;
    uint64_t code_size_;
    std::vector<uint8_t> data_;
};

// A table of ops under construction (lives inside the region once finished).
class Table {
public:
    void op(long nr, std::initializer_list<uint64_t> args, int result_slot = -1, uint32_t flags = 0,
            std::initializer_list<std::pair<int, int>> from_slots = {}, std::string what = {}) {
        stub_op o{};
        o.nr = static_cast<uint64_t>(nr);
        size_t i = 0;
        for (uint64_t a : args) o.args[i++] = a;
        for (auto [arg, slot] : from_slots) o.arg_slot |= static_cast<uint64_t>(slot + 1) << (8 * arg);
        o.result_slot = result_slot;
        o.flags = flags;
        ops_.push_back(o);
        what_.push_back(what.empty() ? fmt::format("syscall {}", nr) : std::move(what));
    }
    // Moves the fd in `slot` to its number with its close-on-exec flag and status flags.
    void move_fd(int slot, const image::Fd& f) {
        op(0, {0, static_cast<uint64_t>(f.fd), f.cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0}, -1, STUB_OP_MOVE_FD,
           {{0, slot}}, fmt::format("move fd to {}", f.fd));
        op(SYS_fcntl, {static_cast<uint64_t>(f.fd), F_SETFL, static_cast<uint64_t>(f.flags)}, -1, STUB_OP_ALLOW_FAIL, {},
           fmt::format("fd {} status flags", f.fd));
    }
    // Writes the table into the region; returns its address.
    uint64_t place(Region& r) const {
        std::vector<uint8_t> buf(sizeof(stub_table) + ops_.size() * sizeof(stub_op));
        auto* t = reinterpret_cast<stub_table*>(buf.data());
        t->count = ops_.size();
        std::memcpy(t->ops, ops_.data(), ops_.size() * sizeof(stub_op));
        return r.put(buf.data(), buf.size(), 64);
    }
    size_t size() const { return ops_.size(); }
    const std::string& what(size_t i) const { return what_.at(i); }

private:
    std::vector<stub_op> ops_;
    std::vector<std::string> what_;
};

struct PrctlMmMap {
    uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
    uint64_t arg_start, arg_end, env_start, env_end;
    uint64_t auxv;
    uint32_t auxv_size;
    uint32_t exe_fd;
};

struct KernelSigaction {
    uint64_t handler, flags, restorer, mask;
};

void add_thread_ops(Table& t, Region& r, const image::Thread& th, const image::Credentials& creds) {
    t.op(SYS_getpid, {}, kTgid, 0, {}, "getpid");
    t.op(SYS_gettid, {}, kSelfTid, 0, {}, "gettid");
    if (!th.comm.empty()) t.op(SYS_prctl, {PR_SET_NAME, r.put_string(th.comm)}, -1, STUB_OP_ALLOW_FAIL, {}, "thread name");
    if (th.rseq.length)
        t.op(SYS_rseq, {th.rseq.address, th.rseq.length, 0, th.rseq.signature}, -1, 0, {}, "rseq register");
    if (th.robust_list) t.op(SYS_set_robust_list, {th.robust_list, th.robust_list_len}, -1, 0, {}, "set_robust_list");
    t.op(SYS_set_tid_address, {th.clear_child_tid}, -1, STUB_OP_ALLOW_FAIL, {}, "set_tid_address");
    if (!(th.altstack_flags & SS_DISABLE)) {
        stack_t ss{};
        ss.ss_sp = reinterpret_cast<void*>(th.altstack_sp);
        ss.ss_size = th.altstack_size;
        ss.ss_flags = th.altstack_flags & ~SS_ONSTACK;
        t.op(SYS_sigaltstack, {r.put(ss), 0}, -1, 0, {}, "sigaltstack");
    }
    // Credentials are per thread: each drops to the checkpointed set itself.
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (!(creds.cap_bounding & (1ULL << cap)))
            t.op(SYS_prctl, {PR_CAPBSET_DROP, static_cast<uint64_t>(cap)}, -1, STUB_OP_ALLOW_FAIL, {}, "capbset drop");
    if (creds.no_new_privs) t.op(SYS_prctl, {PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0}, -1, 0, {}, "no_new_privs");
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    data[0] = {static_cast<uint32_t>(creds.cap_effective), static_cast<uint32_t>(creds.cap_permitted),
               static_cast<uint32_t>(creds.cap_inheritable)};
    data[1] = {static_cast<uint32_t>(creds.cap_effective >> 32), static_cast<uint32_t>(creds.cap_permitted >> 32),
               static_cast<uint32_t>(creds.cap_inheritable >> 32)};
    uint64_t h = r.put(header);
    uint64_t d = r.put(data, sizeof data);
    t.op(SYS_capset, {h, d}, -1, 0, {}, "capset");
}

// A thread queues its own pending signals (any si_code is allowed when the target is oneself).
void add_queued_signal_ops(Table& t, Region& r, const image::Thread& th) {
    for (const auto& info : th.pending) {
        int sig = 0;
        std::memcpy(&sig, info.data(), sizeof sig);
        t.op(SYS_rt_tgsigqueueinfo, {0, 0, static_cast<uint64_t>(sig), r.put(info.data(), info.size())}, -1, 0,
             {{0, kTgid}, {1, kSelfTid}}, fmt::format("queue thread signal {}", sig));
    }
}

// Kills `pid` if not dismissed (destroyed) within `limit`.
class Watchdog {
public:
    Watchdog(pid_t pid, std::chrono::milliseconds limit)
        : thread_([this, pid, limit] {
              std::unique_lock lock(mutex_);
              if (!cv_.wait_for(lock, limit, [this] { return done_; })) ::kill(pid, SIGKILL);
          }) {}
    ~Watchdog() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;  // last: starts once the rest is built
};

// Chooses the stub's address: a hole no VMA of the image uses.
std::vector<uint64_t> stub_candidates(const image::Process& p, uint64_t size) {
    std::vector<uint64_t> out;
    for (uint64_t base = 0x10000000000ULL; base < 0x7f0000000000ULL && out.size() < 6; base += 0x13000000000ULL) {
        bool clash = false;
        for (const auto& v : p.vmas)
            if (v.start < base + size + (1 << 20) && v.end + (1 << 20) > base) clash = true;
        if (!clash) out.push_back(base);
    }
    if (out.empty()) throw Error("no free address range for the restorer stub");
    return out;
}

struct VdsoBlock {
    uint64_t start = 0, end = 0;
    std::vector<std::pair<uint64_t, uint64_t>> parts;  // in address order
};

VdsoBlock vdso_block(const std::vector<std::pair<uint64_t, uint64_t>>& parts) {
    VdsoBlock b;
    b.parts = parts;
    std::sort(b.parts.begin(), b.parts.end());
    if (!b.parts.empty()) {
        b.start = b.parts.front().first;
        b.end = b.parts.back().second;
    }
    return b;
}

bool is_special(image::VmaKind k) {
    return k == image::VmaKind::Vdso || k == image::VmaKind::Vvar || k == image::VmaKind::VvarVclock ||
           k == image::VmaKind::Vsyscall;
}

void fix_syscall_restart(user_regs_struct& r) {
    auto rax = static_cast<long>(r.rax);
    auto orig = static_cast<long>(r.orig_rax);
    if (orig >= 0) {
        if (rax == -512 || rax == -513 || rax == -514) {  // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
            r.rax = r.orig_rax;
            r.rip -= 2;
        } else if (rax == -516) {  // ERESTART_RESTARTBLOCK: its kernel state is gone
            r.rax = static_cast<uint64_t>(-EINTR);
        }
    }
    r.orig_rax = static_cast<uint64_t>(-1);
}

std::string describe_stop(pid_t tid, int status) {
    if (WIFSTOPPED(status)) {
        user_regs_struct r{};
        iovec iov{&r, sizeof r};
        ::ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_PRSTATUS), &iov);
        return fmt::format("stopped by signal {} ({}) at rip {:#x}", WSTOPSIG(status), strsignal(WSTOPSIG(status)), r.rip);
    }
    if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
    return fmt::format("exited with status {}", WEXITSTATUS(status));
}

// With INITLESS_RESTORE_PROFILE set, prints the slowest ops of a table (TSC cycles) to stderr.
void profile_table(pid_t pid, uint64_t addr, const Table& t) {
    if (!::getenv("INITLESS_RESTORE_PROFILE")) return;
    std::vector<uint8_t> buf(sizeof(stub_table) + t.size() * sizeof(stub_op));
    sys::read_process_memory(pid, addr, buf.data(), buf.size());
    const auto* table = reinterpret_cast<const stub_table*>(buf.data());
    std::vector<std::pair<uint64_t, size_t>> order;
    uint64_t total = 0;
    for (size_t i = 0; i < t.size(); ++i) {
        order.push_back({table->ops[i].cycles, i});
        total += table->ops[i].cycles;
    }
    std::sort(order.rbegin(), order.rend());
    std::fprintf(stderr, "restore profile: %zu ops, %.2f Mcycles in all\n", t.size(), total / 1e6);
    for (size_t k = 0; k < std::min<size_t>(order.size(), 12); ++k)
        std::fprintf(stderr, "  %8.3f Mcycles  %s\n", order[k].first / 1e6, t.what(order[k].second).c_str());
}

void check_table(pid_t pid, uint64_t addr, const Table& t, const char* which) {
    stub_table head{};
    sys::read_process_memory(pid, addr, &head, sizeof head);
    if (head.done != t.size())
        throw Error(fmt::format("{} table failed at op {} of {} ({}): {}", which, head.failed_op, t.size(),
                                t.what(head.failed_op),
                                head.failed_result < 0 && head.failed_result > -4096
                                    ? std::strerror(static_cast<int>(-head.failed_result))
                                    : fmt::format("unexpected result {:#x}", head.failed_result)));
}

// A library or executable that changed since the checkpoint would corrupt the process silently:
// compare each mapped file, as the sandbox sees it, with what the checkpoint recorded.
void verify_mapped_files(pid_t init_pid, const image::Process& p) {
    std::set<std::string> seen;
    for (const auto& v : p.vmas) {
        if (v.kind != image::VmaKind::File || !seen.insert(v.name).second) continue;
        struct stat st {};
        std::string path = fmt::format("/proc/{}/root{}", init_pid, v.name);
        if (::stat(path.c_str(), &st) != 0)
            throw Error(fmt::format("mapped file {} is missing in the sandbox: {}", v.name, std::strerror(errno)));
        int64_t mtime = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        if (static_cast<uint64_t>(st.st_size) != v.file_size || mtime != v.file_mtime_ns)
            throw Error(fmt::format("mapped file {} changed since the snapshot (size {} -> {}, mtime changed: {})",
                                    v.name, v.file_size, st.st_size, mtime != v.file_mtime_ns ? "yes" : "no"));
    }
}

}  // namespace

Strategy parse_strategy(const std::string& name) {
    if (name == "eager") return Strategy::Eager;
    if (name == "cow") return Strategy::Cow;
    if (name == "prefetch" || name == "auto") return Strategy::Prefetch;
    throw Error(fmt::format("unknown restore strategy '{}' (known: eager, cow, prefetch, auto)", name));
}

const char* strategy_name(Strategy s) {
    switch (s) {
        case Strategy::Eager: return "eager";
        case Strategy::Cow: return "cow";
        case Strategy::Prefetch: return "prefetch";
    }
    return "?";
}

std::vector<image::WorkingSetRun> record_working_set(pid_t host_pid, const image::Process& process) {
    std::vector<image::WorkingSetRun> out;
    sys::UniqueFd pagemap = sys::open_file(fmt::format("/proc/{}/pagemap", host_pid), O_RDONLY);
    std::vector<uint64_t> entries;
    for (const auto& v : process.vmas) {
        if (is_special(v.kind) || (v.shared && v.kind != image::VmaKind::SharedMemory)) continue;
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
            out.push_back({v.start + i * kPageSize, j - i, w ? 1u : 0u});
            i = j;
        }
    }
    return out;
}

struct RestorePlan::State {
    sandbox::Sandbox* sandbox = nullptr;
    const image::Image* image = nullptr;
    sandbox::ProcessHandle helper;
    sys::Tracee main;
    uint64_t base = 0, region_size = 0, main_table = 0, stacks = 0, vdso_start = 0, vdso_syscall_offset = 0;
    Table table;
    std::vector<Table> per_thread;
    std::vector<uint64_t> thread_tables;
    Timings timings;
    bool executed = false;
};

RestorePlan::RestorePlan(std::unique_ptr<State> s) : s_(std::move(s)) {}
RestorePlan::RestorePlan(RestorePlan&&) noexcept = default;
RestorePlan& RestorePlan::operator=(RestorePlan&&) noexcept = default;
RestorePlan::~RestorePlan() {
    // A plan never executed leaves a half-built process: kill it (init reaps it).
    if (s_ && !s_->executed && s_->helper.host_pid > 0) {
        ::kill(s_->helper.host_pid, SIGKILL);
        // We trace it: collect its death so that init can reap it.
        s_->main.release();
        ::waitpid(s_->helper.host_pid, nullptr, __WALL);
    }
}

RestorePlan RestorePlan::prepare(sandbox::Sandbox& sb, const image::Image& img, Strategy strategy) {
    auto st = std::make_unique<State>();
    st->sandbox = &sb;
    st->image = &img;
    auto lap = Clock::now();
    Timings& tm = st->timings;
    if (img.manifest.processes.size() != 1) throw Error("only single-process images can be restored");
    const image::Process& p = img.manifest.processes[0];
    const auto& leader = p.threads.at(0);

    size_t code_size = static_cast<size_t>(initless_stub_end - initless_stub_begin);
    // Size the region generously: ops for every VMA, run (a run over 1 GiB takes several), fd,
    // signal and thread, the data they point at (paths, pipe contents, siginfo), plus stacks.
    uint64_t est_ops = 64 + p.vmas.size() * 8 + img.runs.size() + img.working_set.size() + p.fds.size() * 16 +
                       p.actions.size() + p.rlimits.size() + p.pending_shared.size() +
                       p.threads.size() * (CAP_LAST_CAP + 24);
    uint64_t est_data = 65536 + p.threads.size() * 4096 + p.mm.auxv.size() + p.pending_shared.size() * 128;
    for (const auto& v : p.vmas) est_data += v.name.size() + 1 + (v.saved_pages * kPageSize >> 30) * sizeof(stub_op);
    for (const auto& f : p.fds) est_data += f.path.size() + f.address.size() + f.pipe_data.size() + 64 * f.targets.size() + 64;
    for (const auto& th : p.threads) est_data += th.pending.size() * 128 + th.comm.size() + 1;
    uint64_t region_size = page_up(code_size) + page_up(est_ops * sizeof(stub_op) + est_data) + kMainStack +
                           p.threads.size() * kThreadStack;
    region_size = page_up(region_size);

    for (const auto& [inside, saved] : image::kTmpfsDirs)
        if (std::filesystem::exists(img.dir / saved))
            sys::copy_tree(img.dir / saved, fmt::format("/proc/{}/root{}", sb.init_pid(), inside));
    verify_mapped_files(sb.init_pid(), p);
    sys::UniqueFd pages = sys::open_file(img.pages_path(), O_RDONLY);
    sandbox::ProcessHandle& helper = st->helper;
    uint64_t base = 0;
    std::string spawn_errors;
    // The pages the working set will write come from a reserve the restorer touches now (stage 1):
    // on this machine kind a first touch of fresh memory costs ~30 us, a reused page much less.
    uint64_t reserve = 0;
    if (strategy != Strategy::Eager && !::getenv("INITLESS_NO_RESERVE"))
        for (const auto& w : img.working_set) reserve += w.written ? w.pages * kPageSize : 0;
    reserve = std::min<uint64_t>(reserve + (4 << 20), 1ULL << 30);
    for (uint64_t candidate : stub_candidates(p, region_size)) {
        try {
            helper = sb.spawn_restorer(p.pid, candidate, region_size, pages.get(), reserve);
            base = candidate;
            break;
        } catch (const Error& e) {
            spawn_errors += std::string(e.what()) + "; ";
        }
    }
    if (!base) throw Error("cannot start the restorer: " + spawn_errors);
    pid_t hpid = helper.host_pid;
    st->main = sys::Tracee::seize(hpid, PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL);
    sys::Tracee& main = st->main;
    tm.spawn_ms = ms_since(lap);

    // What the helper holds that must go: every mapping but the stub and the vDSO block.
    std::vector<std::pair<uint64_t, uint64_t>> helper_unmap, helper_vdso, target_vdso;
    for (const auto& m : sys::read_maps(hpid)) {
        if (m.start == base) continue;
        if (m.path == "[vvar]" || m.path == "[vvar_vclock]" || m.path == "[vdso]")
            helper_vdso.push_back({m.start, m.end});
        else if (m.path != "[vsyscall]")
            helper_unmap.push_back({m.start, m.end});
    }
    for (const auto& v : p.vmas)
        if (v.kind == image::VmaKind::Vdso || v.kind == image::VmaKind::Vvar || v.kind == image::VmaKind::VvarVclock)
            target_vdso.push_back({v.start, v.end});
    VdsoBlock hv = vdso_block(helper_vdso), tv = vdso_block(target_vdso);
    if (hv.end - hv.start != tv.end - tv.start || hv.parts.size() != tv.parts.size())
        throw Error("the vDSO of this kernel differs from the image's");
    uint64_t vdso_syscall_offset = sys::find_syscall_instruction(hpid) - hv.start;
    auto helper_rseq = main.rseq();

    Region region(base, code_size);
    Table& t = st->table;
    int max_fd = 2;
    for (const auto& f : p.fds) max_fd = std::max(max_fd, f.fd);
    // 1. Take the helper apart. Every signal stays blocked until ptrace sets the final masks, so
    // nothing is delivered to a half-built process (threads inherit this mask).
    uint64_t all_signals = ~uint64_t{0};
    t.op(SYS_rt_sigprocmask, {SIG_SETMASK, region.put(all_signals), 0, 8}, -1, 0, {}, "block signals");
    t.op(SYS_getpid, {}, kTgid, 0, {}, "getpid");
    if (helper_rseq.length)
        t.op(SYS_rseq, {helper_rseq.address, helper_rseq.length, 1 /* RSEQ_FLAG_UNREGISTER */, helper_rseq.signature}, -1,
             0, {}, "rseq unregister");
    t.op(SYS_fcntl, {static_cast<uint64_t>(sandbox::Sandbox::kRestorerPagesFd), F_DUPFD_CLOEXEC,
                     static_cast<uint64_t>(max_fd + 1)},
         kImg, 0, {}, "move image fd");
    t.op(SYS_fcntl, {1, F_DUPFD_CLOEXEC, static_cast<uint64_t>(max_fd + 1)}, kLog, 0, {}, "keep log fd");
    for (int fd : {0, 1, 2, sandbox::Sandbox::kRestorerPagesFd})
        t.op(SYS_close, {static_cast<uint64_t>(fd)}, -1, STUB_OP_ALLOW_FAIL, {}, "close helper fd");
    for (auto [s, e] : helper_unmap) t.op(SYS_munmap, {s, e - s}, -1, 0, {}, fmt::format("munmap helper {:#x}", s));
    // 2. The vDSO block moves as one, through a parking spot if old and new overlap.
    if (hv.start != tv.start) {
        bool overlap = hv.start < tv.end && tv.start < hv.end;
        uint64_t park = base + region_size + (1 << 20);
        auto move_block = [&](const VdsoBlock& from, uint64_t to) {
            for (auto [s, e] : from.parts)
                t.op(SYS_mremap, {s, e - s, e - s, MREMAP_MAYMOVE | MREMAP_FIXED, to + (s - from.start)}, -1,
                     0, {}, fmt::format("mremap vdso part {:#x}", s));
        };
        if (overlap) {
            move_block(hv, park);
            VdsoBlock parked = hv;
            for (auto& [s, e] : parked.parts) {
                s = park + (s - hv.start);
                e = park + (e - hv.start);
            }
            parked.start = park;
            move_block(parked, tv.start);
        } else {
            move_block(hv, tv.start);
        }
    }
    // 3. Memory.
    std::vector<std::tuple<uint64_t, uint64_t, int>> final_prot;
    std::map<uint64_t, int> shm_slots;  // shared memory object (inode) -> slot of its memfd
    size_t run = 0;
    for (const auto& v : p.vmas) {
        if (is_special(v.kind)) continue;
        while (run < img.runs.size() && img.runs[run].vaddr < v.start) ++run;
        bool has_pages = v.saved_pages > 0;
        bool shmem = v.kind == image::VmaKind::SharedMemory;
        // The kernel reads /proc/PID/cmdline and environ only from anonymous memory: the VMA that
        // holds them (the initial stack) is always copied, never mapped from the image.
        bool holds_args = v.start <= p.mm.arg_start && p.mm.arg_start < v.end;
        bool cow_map = strategy != Strategy::Eager && v.kind == image::VmaKind::Anonymous && has_pages && !holds_args;
        // Runs of dirty pages in a file mapping: with cow, long runs map their image range over
        // the file (a few VMAs more, no copying); short runs and eager copy them in.
        std::vector<const image::PageRun*> copy_runs, map_runs;
        if (has_pages && !cow_map)
            for (size_t k = run; k < img.runs.size() && img.runs[k].vaddr < v.end; ++k)
                (strategy != Strategy::Eager && !shmem && img.runs[k].pages >= kCowRunPages ? map_runs : copy_runs)
                    .push_back(&img.runs[k]);
        bool fill = !copy_runs.empty();
        int prot = v.prot | (fill ? PROT_WRITE : 0);
        uint64_t len = v.length();
        std::string what = fmt::format("map {:#x}-{:#x} {}", v.start, v.end, v.name);
        if (shmem) {
            auto [it, fresh] = shm_slots.try_emplace(v.file_inode, kShmFirst + static_cast<int>(shm_slots.size()));
            if (it->second >= STUB_SLOTS) throw Error("too many shared memory objects to restore");
            if (fresh) {
                std::string name = v.name.rfind("/memfd:", 0) == 0 ? v.name.substr(7, v.name.find(" (deleted)") - 7)
                                                                    : std::string("initless-shared-anon");
                t.op(SYS_memfd_create, {region.put_string(name), MFD_CLOEXEC}, it->second, 0, {}, "memfd " + name);
                t.op(SYS_ftruncate, {0, v.file_size}, -1, 0, {{0, it->second}}, "size memfd " + name);
            }
            t.op(SYS_mmap, {v.start, len, static_cast<uint64_t>(prot), MAP_SHARED | MAP_FIXED, 0, v.file_offset}, -1,
                 STUB_OP_EXPECT_ARG0, {{4, it->second}}, what);
        } else if (v.kind == image::VmaKind::Anonymous) {
            if (cow_map) {
                t.op(SYS_mmap, {v.start, len, static_cast<uint64_t>(prot), MAP_PRIVATE | MAP_FIXED, 0, v.image_offset},
                     -1, STUB_OP_EXPECT_ARG0, {{4, kImg}}, what);
            } else {
                uint64_t flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (v.growsdown ? MAP_GROWSDOWN : 0);
                t.op(SYS_mmap, {v.start, len, static_cast<uint64_t>(prot), flags, static_cast<uint64_t>(-1), 0}, -1,
                     STUB_OP_EXPECT_ARG0, {}, what);
            }
        } else {
            int oflags = v.shared && (v.prot & PROT_WRITE) ? O_RDWR : O_RDONLY;
            t.op(SYS_open, {region.put_string(v.name), static_cast<uint64_t>(oflags | O_CLOEXEC)}, kFile, 0, {},
                 "open " + v.name);
            t.op(SYS_mmap, {v.start, len, static_cast<uint64_t>(prot), static_cast<uint64_t>(v.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, 0,
                            v.file_offset},
                 -1, STUB_OP_EXPECT_ARG0, {{4, kFile}}, what);
            t.op(SYS_close, {0}, -1, 0, {{0, kFile}}, "close " + v.name);
        }
        // One pread moves at most 0x7ffff000 bytes: larger runs go in 1 GiB pieces.
        for (const auto* r : copy_runs)
            for (uint64_t off = 0; off < r->pages * kPageSize; off += kMaxFill) {
                uint64_t len = std::min(kMaxFill, r->pages * kPageSize - off);
                t.op(SYS_pread64, {0, r->vaddr + off, len, r->file_offset + off}, -1, STUB_OP_EXPECT_ARG2, {{0, kImg}},
                     fmt::format("fill {:#x} ({} pages)", r->vaddr + off, len / kPageSize));
            }
        for (const auto* r : map_runs)
            t.op(SYS_mmap, {r->vaddr, r->pages * kPageSize, static_cast<uint64_t>(v.prot), MAP_PRIVATE | MAP_FIXED, 0,
                            r->file_offset},
                 -1, STUB_OP_EXPECT_ARG0, {{4, kImg}}, fmt::format("map dirty run {:#x} ({} pages)", r->vaddr, r->pages));
        if (prot != v.prot) final_prot.emplace_back(v.start, len, v.prot);
    }
    for (const auto& [inode, slot] : shm_slots) t.op(SYS_close, {0}, -1, 0, {{0, slot}}, "close memfd");
    for (auto [s, len, prot] : final_prot)
        t.op(SYS_mprotect, {s, len, static_cast<uint64_t>(prot)}, -1, 0, {}, fmt::format("mprotect {:#x}", s));
    if (strategy == Strategy::Prefetch)
        for (const auto& w : img.working_set)
            t.op(SYS_madvise, {w.vaddr, w.pages * kPageSize, w.written ? kMadvPopulateWrite : kMadvPopulateRead}, -1,
                 STUB_OP_ALLOW_FAIL, {}, fmt::format("populate {:#x} ({} pages{})", w.vaddr, w.pages, w.written ? ", write" : ""));

    // 4. File descriptors, each created then moved to its number.
    std::set<int> present;
    for (const auto& f : p.fds) present.insert(f.fd);
    std::map<uint64_t, std::pair<const image::Fd*, const image::Fd*>> pipes;
    for (const auto& f : p.fds) {
        uint64_t nonblock = (f.flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
        std::string what = fmt::format("fd {}", f.fd);
        if (f.dup_of >= 0) continue;  // made after its original, below
        switch (f.kind) {
            case image::FdKind::Log:
                t.op(SYS_dup3, {0, static_cast<uint64_t>(f.fd), f.cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0}, -1, 0,
                     {{0, kLog}}, what + " (log)");
                continue;
            case image::FdKind::File:
            case image::FdKind::CharDevice:
                t.op(SYS_open, {region.put_string(f.path), static_cast<uint64_t>(f.flags & ~(O_CREAT | O_TRUNC | O_EXCL))},
                     kTmp, 0, {}, what + " open " + f.path);
                if (f.position)
                    t.op(SYS_lseek, {0, f.position, SEEK_SET}, -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " seek");
                break;
            case image::FdKind::TcpListen:
            case image::FdKind::UnixListen: {
                if (f.kind == image::FdKind::UnixListen && !f.path.empty())
                    t.op(SYS_unlink, {region.put_string(f.path)}, -1, STUB_OP_ALLOW_FAIL, {}, what + " unlink");
                t.op(SYS_socket, {static_cast<uint64_t>(f.domain), static_cast<uint64_t>(f.type) | nonblock, 0}, kTmp, 0,
                     {}, what + " socket");
                for (const auto& [key, value] : f.options) {
                    int v = value;
                    t.op(SYS_setsockopt, {0, static_cast<uint64_t>(key.first), static_cast<uint64_t>(key.second),
                                          region.put(v), sizeof(int)},
                         -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " setsockopt");
                }
                t.op(SYS_bind, {0, region.put(f.address.data(), f.address.size()), f.address.size()}, -1, 0, {{0, kTmp}},
                     what + " bind");
                t.op(SYS_listen, {0, static_cast<uint64_t>(f.backlog > 0 ? f.backlog : 4096)}, -1, 0, {{0, kTmp}},
                     what + " listen");
                break;
            }
            case image::FdKind::Epoll:
                t.op(SYS_epoll_create1, {0}, kTmp, 0, {}, what + " epoll_create1");
                break;
            case image::FdKind::UnixOrphan: {
                uint64_t pair = region.put(nullptr, 8);
                t.op(SYS_socketpair, {AF_UNIX, SOCK_STREAM | nonblock, 0, pair}, -1, 0, {}, what + " socketpair");
                t.op(0, {pair}, kTmp, STUB_OP_LOAD32, {}, "socketpair end");
                t.op(0, {pair + 4}, kPipeW, STUB_OP_LOAD32, {}, "socketpair peer");
                t.op(SYS_close, {0}, -1, 0, {{0, kPipeW}}, what + " close the peer");
                break;
            }
            case image::FdKind::EventFd:
                t.op(SYS_eventfd2, {f.counter, (f.semaphore ? uint64_t{EFD_SEMAPHORE} : 0) | (f.flags & O_NONBLOCK ? uint64_t{EFD_NONBLOCK} : 0)},
                     kTmp, 0, {}, what + " eventfd");
                break;
            case image::FdKind::TimerFd: {
                t.op(SYS_timerfd_create, {static_cast<uint64_t>(f.clock), nonblock}, kTmp, 0, {}, what + " timerfd");
                // Unread expirations make the kernel show it_value 0 even for a running periodic timer:
                // such a timer is re-armed to expire at once (its count restarts at 1), then periodic.
                uint64_t value = f.counter ? 1 : (f.value_ns ? f.value_ns : f.interval_ns);
                if (value) {
                    itimerspec its{};
                    its.it_value = {static_cast<time_t>(value / 1000000000), static_cast<long>(value % 1000000000)};
                    its.it_interval = {static_cast<time_t>(f.interval_ns / 1000000000),
                                       static_cast<long>(f.interval_ns % 1000000000)};
                    t.op(SYS_timerfd_settime, {0, 0, region.put(its), 0}, -1, 0, {{0, kTmp}}, what + " timerfd_settime");
                }
                break;
            }
            case image::FdKind::SignalFd: {
                uint64_t mask = f.sigmask;
                t.op(SYS_signalfd4, {static_cast<uint64_t>(-1), region.put(mask), 8, nonblock}, kTmp, 0, {},
                     what + " signalfd");
                break;
            }
            case image::FdKind::PipeRead:
            case image::FdKind::PipeWrite: {
                auto& ends = pipes[f.pipe_id];
                (f.kind == image::FdKind::PipeRead ? ends.first : ends.second) = &f;
                if (!ends.first || !ends.second) continue;  // both ends are made when the second is seen
                uint64_t pair = region.put(nullptr, 8);
                t.op(SYS_pipe2, {pair, 0}, -1, 0, {}, what + " pipe2");
                t.op(0, {pair}, kTmp, STUB_OP_LOAD32, {}, "pipe read end");
                t.op(0, {pair + 4}, kPipeW, STUB_OP_LOAD32, {}, "pipe write end");
                // Two fresh fds at once: either may sit on the other's target number, so both are
                // lifted above every target before they are placed.
                for (auto [from, to] : {std::pair{kTmp, kPipeR}, std::pair{kPipeW, kTmp}}) {
                    t.op(SYS_fcntl, {0, F_DUPFD_CLOEXEC, static_cast<uint64_t>(max_fd + 1)}, to, 0, {{0, from}},
                         what + " lift pipe end");
                    t.op(SYS_close, {0}, -1, 0, {{0, from}}, what + " close low pipe end");
                }
                // Now the read end is in kPipeR and the write end in kTmp.
                if (ends.first->pipe_size)
                    t.op(SYS_fcntl, {0, F_SETPIPE_SZ, ends.first->pipe_size}, -1, 0, {{0, kTmp}}, what + " pipe size");
                if (!ends.first->pipe_data.empty())
                    t.op(SYS_write, {0, region.put(ends.first->pipe_data.data(), ends.first->pipe_data.size(), 1),
                                     ends.first->pipe_data.size()},
                         -1, STUB_OP_EXPECT_ARG2, {{0, kTmp}}, what + " refill pipe");
                t.move_fd(kPipeR, *ends.first);
                t.move_fd(kTmp, *ends.second);
                continue;
            }
        }
        t.move_fd(kTmp, f);
    }
    for (const auto& f : p.fds)
        if (f.dup_of >= 0)
            t.op(SYS_dup3, {static_cast<uint64_t>(f.dup_of), static_cast<uint64_t>(f.fd),
                            f.cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0},
                 -1, 0, {}, fmt::format("fd {} (dup of {})", f.fd, f.dup_of));
    for (const auto& f : p.fds) {
        if (f.kind != image::FdKind::Epoll) continue;
        for (const auto& target : f.targets) {
            if (!present.count(target.fd)) continue;  // registered, then closed: the kernel dropped it too
            epoll_event ev{};
            ev.events = target.events;
            ev.data.u64 = target.data;
            t.op(SYS_epoll_ctl, {static_cast<uint64_t>(f.fd), EPOLL_CTL_ADD, static_cast<uint64_t>(target.fd),
                                 region.put(&ev, sizeof ev)},
                 -1, 0, {}, fmt::format("epoll {} add {}", f.fd, target.fd));
        }
    }
    t.op(SYS_close, {0}, -1, 0, {{0, kLog}}, "close log copy");

    // 5. Process-wide state. Limits: a hard limit above the sandbox's cannot be restored without
    // CAP_SYS_RESOURCE, so such a resource keeps the sandbox's (the soft limit alone is not split out).
    for (size_t res = 0; res < p.rlimits.size(); ++res) {
        rlimit64 lim{p.rlimits[res].first, p.rlimits[res].second};
        t.op(SYS_prlimit64, {0, res, region.put(lim), 0}, -1, STUB_OP_ALLOW_FAIL, {}, fmt::format("rlimit {}", res));
    }
    t.op(SYS_chdir, {region.put_string(p.cwd)}, -1, 0, {}, "chdir " + p.cwd);
    t.op(SYS_umask, {p.umask}, -1, 0, {}, "umask");
    for (size_t which = 0; which < p.itimers.size(); ++which) {
        auto [interval, value] = p.itimers[which];
        // Just fired, its SIGALRM still queued: the kernel re-arms only on dequeue, so value reads 0.
        if (!value) value = interval;
        if (!value) continue;
        itimerval it{};
        it.it_interval = {static_cast<time_t>(interval / 1000000), static_cast<suseconds_t>(interval % 1000000)};
        it.it_value = {static_cast<time_t>(value / 1000000), static_cast<suseconds_t>(value % 1000000)};
        t.op(SYS_setitimer, {which, region.put(it), 0}, -1, 0, {}, fmt::format("setitimer {}", which));
    }
    for (const auto& a : p.actions) {
        KernelSigaction ksa{a.handler, a.flags, a.restorer, a.mask};
        t.op(SYS_rt_sigaction, {static_cast<uint64_t>(a.signal), region.put(ksa), 0, 8}, -1, 0, {},
             fmt::format("sigaction {}", a.signal));
    }
    PrctlMmMap mm{p.mm.start_code, p.mm.end_code, p.mm.start_data, p.mm.end_data, p.mm.start_brk, p.mm.brk,
                  p.mm.start_stack, p.mm.arg_start, p.mm.arg_end, p.mm.env_start, p.mm.env_end, 0,
                  static_cast<uint32_t>(p.mm.auxv.size()), static_cast<uint32_t>(-1)};
    mm.auxv = region.put(p.mm.auxv.data(), p.mm.auxv.size());
    uint64_t mm_addr = region.put(mm);
    t.op(SYS_open, {region.put_string(p.exe), O_RDONLY | O_CLOEXEC}, kExe, 0, {}, "open exe " + p.exe);
    t.op(0, {mm_addr + offsetof(PrctlMmMap, exe_fd), 0}, -1, STUB_OP_STORE32, {{1, kExe}}, "exe fd into mm map");
    t.op(SYS_prctl, {PR_SET_MM, PR_SET_MM_MAP, mm_addr, sizeof(PrctlMmMap), 0}, -1, 0, {}, "prctl PR_SET_MM_MAP");
    t.op(SYS_close, {0}, -1, 0, {{0, kExe}}, "close exe");
    t.op(SYS_close, {0}, -1, 0, {{0, kImg}}, "close image");

    // Queued signals go back with their siginfo; a process may queue anything to itself.
    for (const auto& info : p.pending_shared) {
        int sig = 0;
        std::memcpy(&sig, info.data(), sizeof sig);
        t.op(SYS_rt_sigqueueinfo, {0, static_cast<uint64_t>(sig), region.put(info.data(), info.size())}, -1, 0,
             {{0, kTgid}}, fmt::format("queue signal {}", sig));
    }

    // 6. Threads, created with their tids; each then runs its own table.
    uint64_t stacks = base + region_size - kMainStack - (p.threads.size() - 1) * kThreadStack;
    std::vector<uint64_t>& thread_tables = st->thread_tables;
    for (size_t i = 1; i < p.threads.size(); ++i) {
        pid_t tid = p.threads[i].tid;
        uint64_t tid_addr = region.put(tid);
        clone_args ca{};
        ca.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
        ca.stack = stacks + (i - 1) * kThreadStack;
        ca.stack_size = kThreadStack;
        ca.set_tid = tid_addr;
        ca.set_tid_size = 1;
        t.op(SYS_clone3, {region.put(ca), sizeof ca}, -1, 0, {}, fmt::format("clone3 thread {}", tid));
    }
    add_thread_ops(t, region, leader, p.creds);
    add_queued_signal_ops(t, region, leader);
    uint64_t main_table = t.place(region);
    std::vector<Table>& per_thread = st->per_thread;
    per_thread.resize(p.threads.size());
    for (size_t i = 1; i < p.threads.size(); ++i) {
        add_thread_ops(per_thread[i], region, p.threads[i], p.creds);
        add_queued_signal_ops(per_thread[i], region, p.threads[i]);
        thread_tables.push_back(per_thread[i].place(region));
    }
    if (page_up(code_size) + region.data_size() > region_size - kMainStack - (p.threads.size() - 1) * kThreadStack)
        throw Error(fmt::format("restore plan needs {} bytes, more than the stub region holds", region.data_size()));

    sys::write_process_memory(hpid, base, initless_stub_begin, code_size);
    sys::write_process_memory(hpid, base + region.code_size(), region.data().data(), region.data_size());
    tm.ops = t.size();
    tm.plan_ms = ms_since(lap);

    st->base = base;
    st->region_size = region_size;
    st->main_table = main_table;
    st->stacks = stacks;
    st->vdso_start = tv.start;
    st->vdso_syscall_offset = vdso_syscall_offset;
    return RestorePlan(std::move(st));
}

Restored RestorePlan::execute() {
    State& st = *s_;
    if (st.executed) throw Error("a restore plan runs once");
    st.executed = true;
    // A stub blocked in a syscall (it should never be) must not hang the controller: past the
    // function's timeout the restorer is killed, every wait below returns, and the restore fails.
    Watchdog watchdog(st.helper.host_pid, std::chrono::seconds(st.sandbox->spec().timeout_s));
    auto t0 = Clock::now();
    auto lap = t0;
    Timings& tm = st.timings;
    sandbox::Sandbox& sb = *st.sandbox;
    const image::Process& p = st.image->manifest.processes[0];
    const auto& leader = p.threads.at(0);
    pid_t hpid = st.helper.host_pid;
    sys::Tracee& main = st.main;
    const uint64_t base = st.base, region_size = st.region_size, main_table = st.main_table, stacks = st.stacks;
    const Table& t = st.table;
    const std::vector<Table>& per_thread = st.per_thread;
    const std::vector<uint64_t>& thread_tables = st.thread_tables;
    // Run the main table. New threads stop at birth (auto-attached); the main thread traps at the end.
    user_regs_struct r = main.regs();
    r.rip = base;
    r.rdi = main_table;
    r.rsp = base + region_size - 64;
    r.orig_rax = static_cast<uint64_t>(-1);
    main.set_regs(r);
    main.resume();
    // Waits only on our own tracees: the controller may have other children (other sandboxes' inits).
    std::map<pid_t, sys::Tracee> threads;  // host tid -> tracee, for threads the table created
    std::vector<pid_t> born;               // host tids in creation order
    for (;;) {
        int status = main.wait_event();
        if (!WIFSTOPPED(status))
            throw Error("the restorer " + describe_stop(hpid, status) + "; log: " + sb.log_tail(500));
        if ((status >> 8) == (SIGTRAP | (PTRACE_EVENT_CLONE << 8))) {
            auto tid = static_cast<pid_t>(main.event_message());
            auto [it, inserted] = threads.emplace(tid, sys::Tracee::adopt(tid));
            // An auto-attached thread starts in a stop before running any instruction.
            if (!WIFSTOPPED(it->second.wait_event())) throw Error(fmt::format("new thread {} did not stop at birth", tid));
            born.push_back(tid);
            main.resume();
            continue;
        }
        if (WSTOPSIG(status) == SIGTRAP) break;
        throw Error("the restorer " + describe_stop(hpid, status) + " while running its table");
    }
    check_table(hpid, main_table, t, "main");
    profile_table(hpid, main_table, t);
    tm.layout_ms = ms_since(lap);

    // Per-thread tables, all started, then all collected. The table created the threads in order,
    // so the i-th clone event is thread i.
    if (born.size() != p.threads.size() - 1)
        throw Error(fmt::format("{} of {} threads were created", born.size(), p.threads.size() - 1));
    for (size_t i = 1; i < p.threads.size(); ++i) {
        sys::Tracee& th = threads.at(born[i - 1]);
        user_regs_struct tr = th.regs();
        tr.rip = base;
        tr.rdi = thread_tables[i - 1];
        tr.rsp = stacks + i * kThreadStack - 64;
        tr.orig_rax = static_cast<uint64_t>(-1);
        th.set_regs(tr);
        th.resume();
    }
    for (size_t i = 1; i < p.threads.size(); ++i) {
        sys::Tracee& th = threads.at(born[i - 1]);
        int status = th.wait_stop();
        if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
            throw Error(fmt::format("thread {}: {}", p.threads[i].tid, describe_stop(born[i - 1], status)));
        check_table(hpid, thread_tables[i - 1], per_thread[i], "thread");
        user_regs_struct fr = p.threads[i].regs;
        fix_syscall_restart(fr);
        th.set_regs(fr);
        th.set_xstate(p.threads[i].xstate);
        th.set_signal_mask(p.threads[i].sigmask);
    }
    tm.threads_ms = ms_since(lap);

    // Drop the stub through a syscall instruction of the restored vDSO, then the leader's state.
    user_regs_struct g = main.regs();
    g.rip = st.vdso_start + st.vdso_syscall_offset;
    g.rax = SYS_munmap;
    g.rdi = base;
    g.rsi = region_size;
    g.orig_rax = static_cast<uint64_t>(-1);
    main.set_regs(g);
    main.single_step_and_wait();
    if (static_cast<long>(main.regs().rax) != 0) throw Error("unmapping the restorer stub failed");
    user_regs_struct fr = leader.regs;
    fix_syscall_restart(fr);
    main.set_regs(fr);
    main.set_xstate(leader.xstate);
    main.set_signal_mask(leader.sigmask);
    for (auto& [tid, th] : threads) th.detach();
    main.detach();
    // The opt-in post-restore notice: pending before any request is forwarded to the process.
    if (int sig = sb.spec().restore_signal) ::kill(hpid, sig);
    tm.finish_ms = ms_since(lap);
    tm.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    return {std::move(st.helper), tm};
}

Restored restore_into(sandbox::Sandbox& sb, const image::Image& img, Strategy strategy) {
    auto plan = RestorePlan::prepare(sb, img, strategy);
    Restored r = plan.execute();
    r.timings.total_ms += r.timings.spawn_ms + r.timings.plan_ms;
    return r;
}

}  // namespace initless::restore
