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
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

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

uint64_t page_up(uint64_t v) {
    return (v + kPageSize - 1) & ~(kPageSize - 1);
}

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
enum Slot : int {
    kTmp = 0,
    kImg = 1,
    kLog = 2,
    kFile = 3,
    kPipeR = 4,
    kPipeW = 5,
    kExe = 6,
    kTgid = 7,
    kSelfTid = 8
};
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
        op(0, {0, static_cast<uint64_t>(f.fd), f.cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0}, -1,
           STUB_OP_MOVE_FD, {{0, slot}}, fmt::format("move fd to {}", f.fd));
        op(SYS_fcntl, {static_cast<uint64_t>(f.fd), F_SETFL, static_cast<uint64_t>(f.flags)}, -1,
           STUB_OP_ALLOW_FAIL, {}, fmt::format("fd {} status flags", f.fd));
    }
    // A slot's value when the table starts (an fd number the process inherits).
    void preset(int slot, uint64_t value) { presets_.push_back({slot, value}); }
    // Writes the table into the region; returns its address.
    uint64_t place(Region& r) const {
        std::vector<uint8_t> buf(sizeof(stub_table) + ops_.size() * sizeof(stub_op));
        auto* t = reinterpret_cast<stub_table*>(buf.data());
        t->count = ops_.size();
        for (auto [slot, value] : presets_) t->slots[slot] = value;
        std::memcpy(t->ops, ops_.data(), ops_.size() * sizeof(stub_op));
        return r.put(buf.data(), buf.size(), 64);
    }
    size_t size() const { return ops_.size(); }
    const std::string& what(size_t i) const { return what_.at(i); }

  private:
    std::vector<stub_op> ops_;
    std::vector<std::string> what_;
    std::vector<std::pair<int, uint64_t>> presets_;
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

// The capability bounding set and no_new_privs are per thread but inherited by clone: a process's
// leader sets them once before creating its threads (about 40 prctl calls that every thread's
// table used to repeat).
void add_inherited_cred_ops(Table& t, const image::Credentials& creds) {
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (!(creds.cap_bounding & (1ULL << cap)))
            t.op(SYS_prctl, {PR_CAPBSET_DROP, static_cast<uint64_t>(cap)}, -1, STUB_OP_ALLOW_FAIL, {},
                 "capbset drop");
    if (creds.no_new_privs) t.op(SYS_prctl, {PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0}, -1, 0, {}, "no_new_privs");
}

void add_thread_ops(Table& t, Region& r, const image::Thread& th, const image::Credentials& creds) {
    t.op(SYS_getpid, {}, kTgid, 0, {}, "getpid");
    t.op(SYS_gettid, {}, kSelfTid, 0, {}, "gettid");
    if (!th.comm.empty())
        t.op(SYS_prctl, {PR_SET_NAME, r.put_string(th.comm)}, -1, STUB_OP_ALLOW_FAIL, {}, "thread name");
    if (th.rseq.length)
        t.op(SYS_rseq, {th.rseq.address, th.rseq.length, 0, th.rseq.signature}, -1, 0, {}, "rseq register");
    if (th.robust_list)
        t.op(SYS_set_robust_list, {th.robust_list, th.robust_list_len}, -1, 0, {}, "set_robust_list");
    t.op(SYS_set_tid_address, {th.clear_child_tid}, -1, STUB_OP_ALLOW_FAIL, {}, "set_tid_address");
    if (!(th.altstack_flags & SS_DISABLE)) {
        stack_t ss{};
        ss.ss_sp = reinterpret_cast<void*>(th.altstack_sp);
        ss.ss_size = th.altstack_size;
        ss.ss_flags = th.altstack_flags & ~SS_ONSTACK;
        t.op(SYS_sigaltstack, {r.put(ss), 0}, -1, 0, {}, "sigaltstack");
    }
    // Capabilities are per thread: each sets the checkpointed sets itself (after the leader's
    // clone3 calls, which need CAP_SYS_ADMIN). The bounding set comes from add_inherited_cred_ops.
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    data[0] = {static_cast<uint32_t>(creds.cap_effective), static_cast<uint32_t>(creds.cap_permitted),
               static_cast<uint32_t>(creds.cap_inheritable)};
    data[1] = {static_cast<uint32_t>(creds.cap_effective >> 32),
               static_cast<uint32_t>(creds.cap_permitted >> 32),
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
        t.op(SYS_rt_tgsigqueueinfo, {0, 0, static_cast<uint64_t>(sig), r.put(info.data(), info.size())}, -1,
             0, {{0, kTgid}, {1, kSelfTid}}, fmt::format("queue thread signal {}", sig));
    }
}

// Kills the watched processes if not dismissed (destroyed) within `limit`.
class Watchdog {
  public:
    Watchdog(pid_t pid, std::chrono::milliseconds limit)
        : pids_{pid}, thread_([this, limit] {
              std::unique_lock lock(mutex_);
              if (!cv_.wait_for(lock, limit, [this] { return done_; }))
                  for (pid_t p : pids_) ::kill(p, SIGKILL);
          }) {}
    void watch(pid_t pid) {
        std::lock_guard lock(mutex_);
        pids_.push_back(pid);
    }
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
    std::vector<pid_t> pids_;
    std::thread thread_;  // last: starts once the rest is built
};

// Chooses the stub's address: a hole no VMA of any process of the image uses.
std::vector<uint64_t> stub_candidates(const std::vector<image::Process>& procs, uint64_t size) {
    std::vector<uint64_t> out;
    for (uint64_t base = 0x10000000000ULL; base < 0x7f0000000000ULL && out.size() < 6;
         base += 0x13000000000ULL) {
        bool clash = false;
        for (const auto& p : procs)
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
        return fmt::format("stopped by signal {} ({}) at rip {:#x}", WSTOPSIG(status),
                           strsignal(WSTOPSIG(status)), r.rip);
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
            throw Error(
                fmt::format("mapped file {} is missing in the sandbox: {}", v.name, std::strerror(errno)));
        int64_t mtime = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        if (static_cast<uint64_t>(st.st_size) != v.file_size || mtime != v.file_mtime_ns)
            throw Error(
                fmt::format("mapped file {} changed since the snapshot (size {} -> {}, mtime changed: {})",
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
        case Strategy::Eager:
            return "eager";
        case Strategy::Cow:
            return "cow";
        case Strategy::Prefetch:
            return "prefetch";
    }
    return "?";
}

std::vector<image::WorkingSetRun> record_working_set(pid_t host_pid, const image::Process& process,
                                                     uint64_t process_index) {
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
            out.push_back({v.start + i * kPageSize, j - i, w ? 1u : 0u, process_index});
            i = j;
        }
    }
    return out;
}

namespace {

// Fd numbers every process of the tree inherits from the first one, above every fd any process
// restores: the image, the log, then objects several processes share (made once, before the forks).
struct FdLayout {
    int max_fd = 2;  // highest fd any process restores
    int img = 0, log = 0;
    std::map<uint64_t, int> shared;  // Fd::shared_id -> its temporary fd
    std::map<uint64_t, int> shm;     // shared memory object (inode) held by several processes -> temp fd
    int lift = 0;                    // fresh fds are lifted to at least this before being placed
};

FdLayout fd_layout(const std::vector<image::Process>& procs) {
    FdLayout l;
    for (const auto& p : procs)
        for (const auto& f : p.fds) l.max_fd = std::max(l.max_fd, f.fd);
    l.img = l.max_fd + 1;
    l.log = l.max_fd + 2;
    int next = l.max_fd + 3;
    for (const auto& p : procs)
        for (const auto& f : p.fds)
            if (f.shared_id && !l.shared.count(f.shared_id)) l.shared[f.shared_id] = next++;
    std::map<uint64_t, std::set<size_t>> holders;
    for (size_t i = 0; i < procs.size(); ++i)
        for (const auto& v : procs[i].vmas)
            if (v.kind == image::VmaKind::SharedMemory) holders[v.file_inode].insert(i);
    for (const auto& [inode, who] : holders)
        if (who.size() > 1) l.shm[inode] = next++;
    l.lift = next;
    return l;
}

// Creates the object of `f` (not a pipe, socket pair or log) into slot kTmp.
void create_object(Table& t, Region& region, const image::Fd& f) {
    uint64_t nonblock = (f.flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
    std::string what = fmt::format("fd {}", f.fd);
    switch (f.kind) {
        case image::FdKind::File:
        case image::FdKind::CharDevice:
            t.op(SYS_open,
                 {region.put_string(f.path), static_cast<uint64_t>(f.flags & ~(O_CREAT | O_TRUNC | O_EXCL))},
                 kTmp, 0, {}, what + " open " + f.path);
            if (f.position)
                t.op(SYS_lseek, {0, f.position, SEEK_SET}, -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}},
                     what + " seek");
            return;
        case image::FdKind::TcpListen:
        case image::FdKind::UnixListen: {
            if (f.kind == image::FdKind::UnixListen && !f.path.empty())
                t.op(SYS_unlink, {region.put_string(f.path)}, -1, STUB_OP_ALLOW_FAIL, {}, what + " unlink");
            t.op(SYS_socket, {static_cast<uint64_t>(f.domain), static_cast<uint64_t>(f.type) | nonblock, 0},
                 kTmp, 0, {}, what + " socket");
            for (const auto& [key, value] : f.options) {
                int v = value;
                t.op(SYS_setsockopt,
                     {0, static_cast<uint64_t>(key.first), static_cast<uint64_t>(key.second), region.put(v),
                      sizeof(int)},
                     -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " setsockopt");
            }
            t.op(SYS_bind, {0, region.put(f.address.data(), f.address.size()), f.address.size()}, -1, 0,
                 {{0, kTmp}}, what + " bind");
            t.op(SYS_listen, {0, static_cast<uint64_t>(f.backlog > 0 ? f.backlog : 4096)}, -1, 0, {{0, kTmp}},
                 what + " listen");
            return;
        }
        case image::FdKind::Epoll:
            t.op(SYS_epoll_create1, {0}, kTmp, 0, {}, what + " epoll_create1");
            return;
        case image::FdKind::UnixOrphan: {
            uint64_t pair = region.put(nullptr, 8);
            t.op(SYS_socketpair, {AF_UNIX, SOCK_STREAM | nonblock, 0, pair}, -1, 0, {}, what + " socketpair");
            t.op(0, {pair}, kTmp, STUB_OP_LOAD32, {}, "socketpair end");
            t.op(0, {pair + 4}, kPipeW, STUB_OP_LOAD32, {}, "socketpair peer");
            t.op(SYS_close, {0}, -1, 0, {{0, kPipeW}}, what + " close the peer");
            return;
        }
        case image::FdKind::EventFd:
            t.op(SYS_eventfd2,
                 {f.counter, (f.semaphore ? uint64_t{EFD_SEMAPHORE} : 0) |
                                 (f.flags & O_NONBLOCK ? uint64_t{EFD_NONBLOCK} : 0)},
                 kTmp, 0, {}, what + " eventfd");
            return;
        case image::FdKind::TimerFd: {
            t.op(SYS_timerfd_create, {static_cast<uint64_t>(f.clock), nonblock}, kTmp, 0, {},
                 what + " timerfd");
            // Unread expirations make the kernel show it_value 0 even for a running periodic timer:
            // such a timer is re-armed to expire at once (its count restarts at 1), then periodic.
            uint64_t value = f.counter ? 1 : (f.value_ns ? f.value_ns : f.interval_ns);
            if (value) {
                itimerspec its{};
                its.it_value = {static_cast<time_t>(value / 1000000000),
                                static_cast<long>(value % 1000000000)};
                its.it_interval = {static_cast<time_t>(f.interval_ns / 1000000000),
                                   static_cast<long>(f.interval_ns % 1000000000)};
                t.op(SYS_timerfd_settime, {0, 0, region.put(its), 0}, -1, 0, {{0, kTmp}},
                     what + " timerfd_settime");
            }
            return;
        }
        case image::FdKind::SignalFd: {
            uint64_t mask = f.sigmask;
            t.op(SYS_signalfd4, {static_cast<uint64_t>(-1), region.put(mask), 8, nonblock}, kTmp, 0, {},
                 what + " signalfd");
            return;
        }
        case image::FdKind::Log:
        case image::FdKind::PipeRead:
        case image::FdKind::PipeWrite:
        case image::FdKind::UnixPair:
            break;
    }
    throw Error(fmt::format("fd {}: not a single object", f.fd));
}

// Creates a pipe (end 0 reads) or socket pair with what was queued in it; leaves end 0 in slot
// kPipeR and end 1 in kTmp, both at or above `lift` so neither sits on a number still to be placed.
void create_pair(Table& t, Region& region, const image::Fd& end0, const image::Fd& end1, int lift) {
    bool socket = end0.kind == image::FdKind::UnixPair;
    std::string what = fmt::format("fd {} and {}", end0.fd, end1.fd);
    uint64_t pair = region.put(nullptr, 8);
    if (socket)
        t.op(SYS_socketpair, {AF_UNIX, static_cast<uint64_t>(end0.type), 0, pair}, -1, 0, {},
             what + " socketpair");
    else
        t.op(SYS_pipe2, {pair, 0}, -1, 0, {}, what + " pipe2");
    t.op(0, {pair}, kTmp, STUB_OP_LOAD32, {}, "end 0");
    t.op(0, {pair + 4}, kPipeW, STUB_OP_LOAD32, {}, "end 1");
    for (auto [from, to] : {std::pair{kTmp, kPipeR}, std::pair{kPipeW, kTmp}}) {
        t.op(SYS_fcntl, {0, F_DUPFD_CLOEXEC, static_cast<uint64_t>(lift)}, to, 0, {{0, from}},
             what + " lift end");
        t.op(SYS_close, {0}, -1, 0, {{0, from}}, what + " close low end");
    }
    if (!socket) {
        if (end0.pipe_size)
            t.op(SYS_fcntl, {0, F_SETPIPE_SZ, end0.pipe_size}, -1, 0, {{0, kTmp}}, what + " pipe size");
        if (!end0.pipe_data.empty())
            t.op(SYS_write,
                 {0, region.put(end0.pipe_data.data(), end0.pipe_data.size(), 1), end0.pipe_data.size()}, -1,
                 STUB_OP_EXPECT_ARG2, {{0, kTmp}}, what + " refill pipe");
        return;
    }
    for (auto [end, slot] : {std::pair{&end0, kPipeR}, std::pair{&end1, kTmp}})
        for (const auto& [key, value] : end->options) {
            int v = value / 2;  // the kernel doubles what is set, and reports the doubled value
            t.op(SYS_setsockopt,
                 {0, static_cast<uint64_t>(key.first), static_cast<uint64_t>(key.second), region.put(v),
                  sizeof(int)},
                 -1, STUB_OP_ALLOW_FAIL, {{0, slot}}, what + " buffer size");
        }
    // What end X had queued to receive is sent again through its peer, message by message.
    for (auto [end, via] : {std::pair{&end0, kTmp}, std::pair{&end1, kPipeR}}) {
        if (end->pipe_data.empty()) continue;
        uint64_t data = region.put(end->pipe_data.data(), end->pipe_data.size(), 1);
        std::vector<uint32_t> sizes = end->message_sizes;
        if (sizes.empty()) sizes.push_back(static_cast<uint32_t>(end->pipe_data.size()));
        for (uint32_t size : sizes) {
            t.op(SYS_sendto, {0, data, size, MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0}, -1, STUB_OP_EXPECT_ARG2,
                 {{0, via}}, what + " requeue data");
            data += size;
        }
    }
}

// Moves a fresh fd out of `slot` to a fixed number, close-on-exec, with the description's flags.
void place_at(Table& t, int slot, int fd, int flags) {
    image::Fd target;
    target.fd = fd;
    target.cloexec = true;
    target.flags = flags;
    t.move_fd(slot, target);
}

bool is_pair(image::FdKind k) {
    return k == image::FdKind::PipeRead || k == image::FdKind::PipeWrite || k == image::FdKind::UnixPair;
}
int pair_end(const image::Fd& f) {
    return f.kind == image::FdKind::UnixPair ? f.pair_end : f.kind == image::FdKind::PipeRead ? 0 : 1;
}

}  // namespace

namespace {
// What one process of the tree runs: its main table, and one table per further thread.
struct ProcessPlan {
    Table table;
    uint64_t table_addr = 0;
    std::vector<Table> per_thread;  // [0] unused: the leader runs the main table
    std::vector<uint64_t> thread_tables;
    uint64_t vdso_start = 0;
    std::vector<size_t> forks;  // processes its table creates, in order
};
}  // namespace

struct RestorePlan::State {
    sandbox::Sandbox* sandbox = nullptr;
    const image::Image* image = nullptr;
    sandbox::ProcessHandle helper;
    sys::Tracee main;
    uint64_t base = 0, region_size = 0, stacks = 0, vdso_syscall_offset = 0;
    std::vector<ProcessPlan> procs;
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

namespace {

struct PlanContext {
    const image::Image& img;
    Strategy strategy;
    const FdLayout& fds;
    Region& region;
    uint64_t base, region_size, stacks;
    const VdsoBlock& helper_vdso;
};

// A memfd for the shared memory object behind `v` (as big as the object, named as the checkpoint
// saw it) into `slot`.
void add_memfd_ops(Table& t, Region& region, const image::Vma& v, int slot) {
    std::string name = v.name.rfind("/memfd:", 0) == 0 ? v.name.substr(7, v.name.find(" (deleted)") - 7)
                                                       : std::string("initless-shared-anon");
    t.op(SYS_memfd_create, {region.put_string(name), MFD_CLOEXEC}, slot, 0, {}, "memfd " + name);
    t.op(SYS_ftruncate, {0, v.file_size}, -1, 0, {{0, slot}}, "size memfd " + name);
}

// The main table of process `index`. It starts in a process holding only the stub region, the
// helper's vDSO block and the fds of `FdLayout`, with every signal blocked: the first process once
// its table has taken the helper apart, every other one as its forker's copy.
void build_process_table(PlanContext& cx, size_t index, size_t forker_index, ProcessPlan& plan,
                         const std::vector<size_t>& forks) {
    const auto& procs = cx.img.manifest.processes;
    const image::Process& p = procs[index];
    const auto& leader = p.threads.at(0);
    Table& t = plan.table;
    Region& region = cx.region;
    const FdLayout& L = cx.fds;
    const uint64_t base = cx.base, region_size = cx.region_size;
    const Strategy strategy = cx.strategy;
    const image::Image& img = cx.img;

    // Session and group before any child is forked, so the children inherit them.
    if (index > 0) {
        const image::Process& forker = procs[forker_index];
        if (p.sid == p.pid)
            t.op(SYS_setsid, {}, -1, 0, {}, "setsid");
        else if (p.pgid == p.pid)
            t.op(SYS_setpgid, {0, 0}, -1, 0, {}, "setpgid own group");
        else if (p.pgid != forker.pgid)
            t.op(SYS_setpgid, {0, static_cast<uint64_t>(p.pgid)}, -1, 0, {},
                 fmt::format("setpgid {}", p.pgid));
    }
    for (size_t child : forks) {
        clone_args ca{};
        bool top_level = procs[child].ppid == 1;
        // A child of init is created beside us (CLONE_PARENT), which requires exit_signal 0 (the
        // kernel then gives it ours, SIGCHLD).
        ca.flags = top_level ? CLONE_PARENT : 0;
        ca.exit_signal = top_level ? 0 : SIGCHLD;
        ca.set_tid = region.put(procs[child].pid);
        ca.set_tid_size = 1;
        t.op(SYS_clone3, {region.put(ca), sizeof ca}, -1, 0, {},
             fmt::format("clone3 process {}", procs[child].pid));
    }

    // The vDSO block moves as one, through a parking spot if old and new overlap.
    std::vector<std::pair<uint64_t, uint64_t>> target_vdso;
    for (const auto& v : p.vmas)
        if (v.kind == image::VmaKind::Vdso || v.kind == image::VmaKind::Vvar ||
            v.kind == image::VmaKind::VvarVclock)
            target_vdso.push_back({v.start, v.end});
    VdsoBlock tv = vdso_block(target_vdso);
    const VdsoBlock& hv = cx.helper_vdso;
    if (hv.end - hv.start != tv.end - tv.start || hv.parts.size() != tv.parts.size())
        throw Error("the vDSO of this kernel differs from the image's");
    plan.vdso_start = tv.start;
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

    // Memory.
    std::vector<std::tuple<uint64_t, uint64_t, int>> final_prot;
    std::map<uint64_t, int> shm_slots;  // shared memory object (inode) -> slot of its memfd
    for (const auto& v : p.vmas) {
        if (is_special(v.kind)) continue;
        bool has_pages = v.saved_pages > 0;
        bool shmem = v.kind == image::VmaKind::SharedMemory;
        // The kernel reads /proc/PID/cmdline and environ only from anonymous memory: the VMA that
        // holds them (the initial stack) is always copied, never mapped from the image.
        bool holds_args = v.start <= p.mm.arg_start && p.mm.arg_start < v.end;
        bool cow_map =
            strategy != Strategy::Eager && v.kind == image::VmaKind::Anonymous && has_pages && !holds_args;
        // Runs of dirty pages in a file mapping: with cow, long runs map their image range over
        // the file (a few VMAs more, no copying); short runs and eager copy them in.
        std::vector<const image::PageRun*> copy_runs, map_runs;
        if (has_pages && !cow_map)
            for (const auto& r : img.runs_of(v))
                (strategy != Strategy::Eager && !shmem && r.pages >= kCowRunPages ? map_runs : copy_runs)
                    .push_back(&r);
        bool fill = !copy_runs.empty();
        int prot = v.prot | (fill ? PROT_WRITE : 0);
        uint64_t len = v.length();
        std::string what = fmt::format("map {:#x}-{:#x} {}", v.start, v.end, v.name);
        if (shmem) {
            auto [it, fresh] =
                shm_slots.try_emplace(v.file_inode, kShmFirst + static_cast<int>(shm_slots.size()));
            if (it->second >= STUB_SLOTS) throw Error("too many shared memory objects to restore");
            if (fresh) {
                if (auto shared = L.shm.find(v.file_inode); shared != L.shm.end()) {
                    t.preset(it->second, static_cast<uint64_t>(shared->second));  // made before the forks
                } else {
                    add_memfd_ops(t, region, v, it->second);
                }
            }
            t.op(SYS_mmap,
                 {v.start, len, static_cast<uint64_t>(prot), MAP_SHARED | MAP_FIXED, 0, v.file_offset}, -1,
                 STUB_OP_EXPECT_ARG0, {{4, it->second}}, what);
        } else if (v.kind == image::VmaKind::Anonymous) {
            if (cow_map) {
                t.op(SYS_mmap,
                     {v.start, len, static_cast<uint64_t>(prot), MAP_PRIVATE | MAP_FIXED, 0, v.image_offset},
                     -1, STUB_OP_EXPECT_ARG0, {{4, kImg}}, what);
            } else {
                uint64_t flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (v.growsdown ? MAP_GROWSDOWN : 0);
                t.op(SYS_mmap,
                     {v.start, len, static_cast<uint64_t>(prot), flags, static_cast<uint64_t>(-1), 0}, -1,
                     STUB_OP_EXPECT_ARG0, {}, what);
            }
        } else {
            int oflags = v.shared && (v.prot & PROT_WRITE) ? O_RDWR : O_RDONLY;
            t.op(SYS_open, {region.put_string(v.name), static_cast<uint64_t>(oflags | O_CLOEXEC)}, kFile, 0,
                 {}, "open " + v.name);
            t.op(SYS_mmap,
                 {v.start, len, static_cast<uint64_t>(prot),
                  static_cast<uint64_t>(v.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, 0, v.file_offset},
                 -1, STUB_OP_EXPECT_ARG0, {{4, kFile}}, what);
            t.op(SYS_close, {0}, -1, 0, {{0, kFile}}, "close " + v.name);
        }
        // One pread moves at most 0x7ffff000 bytes: larger runs go in 1 GiB pieces.
        for (const auto* r : copy_runs)
            for (uint64_t off = 0; off < r->pages * kPageSize; off += kMaxFill) {
                uint64_t n = std::min(kMaxFill, r->pages * kPageSize - off);
                t.op(SYS_pread64, {0, r->vaddr + off, n, r->file_offset + off}, -1, STUB_OP_EXPECT_ARG2,
                     {{0, kImg}}, fmt::format("fill {:#x} ({} pages)", r->vaddr + off, n / kPageSize));
            }
        for (const auto* r : map_runs)
            t.op(SYS_mmap,
                 {r->vaddr, r->pages * kPageSize, static_cast<uint64_t>(v.prot), MAP_PRIVATE | MAP_FIXED, 0,
                  r->file_offset},
                 -1, STUB_OP_EXPECT_ARG0, {{4, kImg}},
                 fmt::format("map dirty run {:#x} ({} pages)", r->vaddr, r->pages));
        if (prot != v.prot) final_prot.emplace_back(v.start, len, v.prot);
    }
    for (const auto& [inode, slot] : shm_slots) t.op(SYS_close, {0}, -1, 0, {{0, slot}}, "close memfd");
    for (auto [s, len, prot] : final_prot)
        t.op(SYS_mprotect, {s, len, static_cast<uint64_t>(prot)}, -1, 0, {},
             fmt::format("mprotect {:#x}", s));
    if (strategy == Strategy::Prefetch)
        for (const auto& w : img.working_set)
            if (w.process == index)
                t.op(
                    SYS_madvise,
                    {w.vaddr, w.pages * kPageSize, w.written ? kMadvPopulateWrite : kMadvPopulateRead}, -1,
                    STUB_OP_ALLOW_FAIL, {},
                    fmt::format("populate {:#x} ({} pages{})", w.vaddr, w.pages, w.written ? ", write" : ""));

    // File descriptors, each created then moved to its number; shared ones come from their
    // temporary fds, made before the forks.
    std::set<int> present;
    for (const auto& f : p.fds) present.insert(f.fd);
    std::map<uint64_t, std::array<const image::Fd*, 2>> pairs;
    for (const auto& f : p.fds) {
        if (f.dup_of >= 0) continue;  // made after its original, below
        if (f.shared_id) {
            t.op(SYS_dup3,
                 {static_cast<uint64_t>(L.shared.at(f.shared_id)), static_cast<uint64_t>(f.fd),
                  f.cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0},
                 -1, 0, {}, fmt::format("fd {} (shared)", f.fd));
            continue;
        }
        if (f.kind == image::FdKind::Log) {
            t.op(SYS_dup3, {0, static_cast<uint64_t>(f.fd), f.cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0},
                 -1, 0, {{0, kLog}}, fmt::format("fd {} (log)", f.fd));
            continue;
        }
        if (is_pair(f.kind)) {
            auto& ends = pairs[f.pipe_id];
            ends[pair_end(f)] = &f;
            if (!ends[0] || !ends[1]) continue;  // both ends are made when the second is seen
            create_pair(t, region, *ends[0], *ends[1], L.lift);
            t.move_fd(kPipeR, *ends[0]);
            t.move_fd(kTmp, *ends[1]);
            continue;
        }
        create_object(t, region, f);
        t.move_fd(kTmp, f);
    }
    for (const auto& f : p.fds)
        if (f.dup_of >= 0)
            t.op(SYS_dup3,
                 {static_cast<uint64_t>(f.dup_of), static_cast<uint64_t>(f.fd),
                  f.cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0},
                 -1, 0, {}, fmt::format("fd {} (dup of {})", f.fd, f.dup_of));
    for (const auto& f : p.fds) {
        if (f.kind != image::FdKind::Epoll) continue;
        for (const auto& target : f.targets) {
            if (!present.count(target.fd)) continue;  // registered, then closed: the kernel dropped it too
            epoll_event ev{};
            ev.events = target.events;
            ev.data.u64 = target.data;
            t.op(SYS_epoll_ctl,
                 {static_cast<uint64_t>(f.fd), EPOLL_CTL_ADD, static_cast<uint64_t>(target.fd),
                  region.put(&ev, sizeof ev)},
                 -1, 0, {}, fmt::format("epoll {} add {}", f.fd, target.fd));
        }
    }
    t.op(SYS_close, {0}, -1, 0, {{0, kLog}}, "close log copy");
    // Shared memory temps may be closed already (as this process's memfd slots).
    for (const auto& [id, fd] : L.shared)
        t.op(SYS_close, {static_cast<uint64_t>(fd)}, -1, 0, {}, "close shared fd");
    for (const auto& [inode, fd] : L.shm)
        t.op(SYS_close, {static_cast<uint64_t>(fd)}, -1, STUB_OP_ALLOW_FAIL, {}, "close shared memory fd");

    // Process-wide state. Limits: a hard limit above the sandbox's cannot be restored without
    // CAP_SYS_RESOURCE, so such a resource keeps the sandbox's (the soft limit alone is not split out).
    for (size_t res = 0; res < p.rlimits.size(); ++res) {
        rlimit64 lim{p.rlimits[res].first, p.rlimits[res].second};
        t.op(SYS_prlimit64, {0, res, region.put(lim), 0}, -1, STUB_OP_ALLOW_FAIL, {},
             fmt::format("rlimit {}", res));
    }
    t.op(SYS_chdir, {region.put_string(p.cwd)}, -1, 0, {}, "chdir " + p.cwd);
    t.op(SYS_umask, {p.umask}, -1, 0, {}, "umask");
    for (size_t which = 0; which < p.itimers.size(); ++which) {
        auto [interval, value] = p.itimers[which];
        // Just fired, its SIGALRM still queued: the kernel re-arms only on dequeue, so value reads 0.
        if (!value) value = interval;
        if (!value) continue;
        itimerval it{};
        it.it_interval = {static_cast<time_t>(interval / 1000000),
                          static_cast<suseconds_t>(interval % 1000000)};
        it.it_value = {static_cast<time_t>(value / 1000000), static_cast<suseconds_t>(value % 1000000)};
        t.op(SYS_setitimer, {which, region.put(it), 0}, -1, 0, {}, fmt::format("setitimer {}", which));
    }
    for (const auto& a : p.actions) {
        KernelSigaction ksa{a.handler, a.flags, a.restorer, a.mask};
        t.op(SYS_rt_sigaction, {static_cast<uint64_t>(a.signal), region.put(ksa), 0, 8}, -1, 0, {},
             fmt::format("sigaction {}", a.signal));
    }
    PrctlMmMap mm{p.mm.start_code,
                  p.mm.end_code,
                  p.mm.start_data,
                  p.mm.end_data,
                  p.mm.start_brk,
                  p.mm.brk,
                  p.mm.start_stack,
                  p.mm.arg_start,
                  p.mm.arg_end,
                  p.mm.env_start,
                  p.mm.env_end,
                  0,
                  static_cast<uint32_t>(p.mm.auxv.size()),
                  static_cast<uint32_t>(-1)};
    mm.auxv = region.put(p.mm.auxv.data(), p.mm.auxv.size());
    uint64_t mm_addr = region.put(mm);
    t.op(SYS_open, {region.put_string(p.exe), O_RDONLY | O_CLOEXEC}, kExe, 0, {}, "open exe " + p.exe);
    t.op(0, {mm_addr + offsetof(PrctlMmMap, exe_fd), 0}, -1, STUB_OP_STORE32, {{1, kExe}},
         "exe fd into mm map");
    t.op(SYS_prctl, {PR_SET_MM, PR_SET_MM_MAP, mm_addr, sizeof(PrctlMmMap), 0}, -1, 0, {},
         "prctl PR_SET_MM_MAP");
    t.op(SYS_close, {0}, -1, 0, {{0, kExe}}, "close exe");
    t.op(SYS_close, {0}, -1, 0, {{0, kImg}}, "close image");

    // Queued signals go back with their siginfo; a process may queue anything to itself.
    for (const auto& info : p.pending_shared) {
        int sig = 0;
        std::memcpy(&sig, info.data(), sizeof sig);
        t.op(SYS_rt_sigqueueinfo, {0, static_cast<uint64_t>(sig), region.put(info.data(), info.size())}, -1,
             0, {{0, kTgid}}, fmt::format("queue signal {}", sig));
    }

    // Threads, created with their tids; each then runs its own table.
    add_inherited_cred_ops(t, p.creds);
    for (size_t i = 1; i < p.threads.size(); ++i) {
        clone_args ca{};
        ca.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
        ca.stack = cx.stacks + (i - 1) * kThreadStack;
        ca.stack_size = kThreadStack;
        ca.set_tid = region.put(p.threads[i].tid);
        ca.set_tid_size = 1;
        t.op(SYS_clone3, {region.put(ca), sizeof ca}, -1, 0, {},
             fmt::format("clone3 thread {}", p.threads[i].tid));
    }
    add_thread_ops(t, region, leader, p.creds);
    add_queued_signal_ops(t, region, leader);
    plan.table_addr = t.place(region);
    plan.per_thread.resize(p.threads.size());
    for (size_t i = 1; i < p.threads.size(); ++i) {
        add_thread_ops(plan.per_thread[i], region, p.threads[i], p.creds);
        add_queued_signal_ops(plan.per_thread[i], region, p.threads[i]);
        plan.thread_tables.push_back(plan.per_thread[i].place(region));
    }
}

// The first process's own start: it takes the helper apart, then makes what several processes
// share at the fixed numbers of `FdLayout`.
void add_helper_teardown_and_shared(Table& t, Region& region, const image::Image& img, const FdLayout& L,
                                    const std::vector<std::pair<uint64_t, uint64_t>>& helper_unmap,
                                    const sys::RseqConfig& helper_rseq) {
    // Every signal stays blocked until ptrace sets the final masks, so nothing is delivered to a
    // half-built process (threads and forked processes inherit this mask).
    uint64_t all_signals = ~uint64_t{0};
    t.op(SYS_rt_sigprocmask, {SIG_SETMASK, region.put(all_signals), 0, 8}, -1, 0, {}, "block signals");
    if (helper_rseq.length)
        t.op(SYS_rseq,
             {helper_rseq.address, helper_rseq.length, 1 /* RSEQ_FLAG_UNREGISTER */, helper_rseq.signature},
             -1, 0, {}, "rseq unregister");
    t.op(SYS_dup3,
         {static_cast<uint64_t>(sandbox::Sandbox::kRestorerPagesFd), static_cast<uint64_t>(L.img), O_CLOEXEC},
         kImg, 0, {}, "move image fd");
    t.op(SYS_dup3, {1, static_cast<uint64_t>(L.log), O_CLOEXEC}, kLog, 0, {}, "keep log fd");
    for (int fd : {0, 1, 2, sandbox::Sandbox::kRestorerPagesFd})
        t.op(SYS_close, {static_cast<uint64_t>(fd)}, -1, STUB_OP_ALLOW_FAIL, {}, "close helper fd");
    for (auto [s, e] : helper_unmap)
        t.op(SYS_munmap, {s, e - s}, -1, 0, {}, fmt::format("munmap helper {:#x}", s));

    const auto& procs = img.manifest.processes;
    std::map<uint64_t, const image::Fd*> first;  // shared id -> its first record
    std::map<uint64_t, std::array<const image::Fd*, 2>> pairs;
    for (const auto& p : procs)
        for (const auto& f : p.fds) {
            if (!f.shared_id || f.dup_of >= 0) continue;
            first.try_emplace(f.shared_id, &f);
            if (is_pair(f.kind) && !pairs[f.pipe_id][pair_end(f)]) pairs[f.pipe_id][pair_end(f)] = &f;
        }
    std::set<uint64_t> made_pairs;
    for (const auto& [id, f] : first) {
        if (is_pair(f->kind)) {
            if (!made_pairs.insert(f->pipe_id).second) continue;
            auto ends = pairs.at(f->pipe_id);
            if (!ends[0] || !ends[1])
                throw Error(fmt::format("shared pipe {} lacks an end in the image", f->pipe_id));
            create_pair(t, region, *ends[0], *ends[1], L.lift);
            place_at(t, kPipeR, L.shared.at(ends[0]->shared_id), ends[0]->flags);
            place_at(t, kTmp, L.shared.at(ends[1]->shared_id), ends[1]->flags);
            continue;
        }
        create_object(t, region, *f);
        place_at(t, kTmp, L.shared.at(id), f->flags);
    }
    for (const auto& [inode, fd] : L.shm) {
        const image::Vma* object = nullptr;  // any VMA of it: they share its name and size
        for (const auto& p : procs)
            for (const auto& v : p.vmas)
                if (!object && v.kind == image::VmaKind::SharedMemory && v.file_inode == inode) object = &v;
        add_memfd_ops(t, region, *object, kTmp);
        place_at(t, kTmp, fd, O_RDWR);
    }
}

}  // namespace

RestorePlan RestorePlan::prepare(sandbox::Sandbox& sb, const image::Image& img, Strategy strategy) {
    auto st = std::make_unique<State>();
    st->sandbox = &sb;
    st->image = &img;
    auto lap = Clock::now();
    Timings& tm = st->timings;
    const auto& procs = img.manifest.processes;
    if (procs.empty()) throw Error("the image holds no process");

    size_t code_size = static_cast<size_t>(initless_stub_end - initless_stub_begin);
    // Size the region generously: ops for every VMA, run (a run over 1 GiB takes several), fd,
    // signal and thread, the data they point at (paths, pipe contents, siginfo), plus stacks.
    uint64_t est_ops = 64, est_data = 65536;
    size_t max_threads = 1;
    for (const auto& p : procs) {
        max_threads = std::max(max_threads, p.threads.size());
        est_ops += 64 + p.vmas.size() * 8 + p.fds.size() * 16 + p.actions.size() + p.rlimits.size() +
                   p.pending_shared.size() + p.threads.size() * (CAP_LAST_CAP + 24) + procs.size() * 2;
        est_data += 4096 + p.threads.size() * 4096 + p.mm.auxv.size() + p.pending_shared.size() * 128;
        for (const auto& v : p.vmas)
            est_data += v.name.size() + 1 + (v.saved_pages * kPageSize >> 30) * sizeof(stub_op);
        for (const auto& f : p.fds)
            est_data += f.path.size() + f.address.size() + 2 * f.pipe_data.size() + 64 * f.targets.size() +
                        8 * f.message_sizes.size() + 64;
        for (const auto& th : p.threads) est_data += th.pending.size() * 128 + th.comm.size() + 1;
    }
    est_ops += img.runs.size() + img.working_set.size();
    uint64_t region_size = page_up(code_size) + page_up(est_ops * sizeof(stub_op) + est_data) + kMainStack +
                           max_threads * kThreadStack;
    region_size = page_up(region_size);

    for (const auto& [inside, saved] : image::kTmpfsDirs)
        if (std::filesystem::exists(img.dir / saved))
            sys::copy_tree(img.dir / saved, fmt::format("/proc/{}/root{}", sb.init_pid(), inside));
    for (const auto& p : procs) verify_mapped_files(sb.init_pid(), p);
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
    // The restored processes' CLOCK_MONOTONIC and CLOCK_BOOTTIME continue from the checkpoint (a
    // time namespace, as CRIU does): otherwise every timed wait a runtime had pending expires at
    // once on the first request (a JVM's periodic tasks then compete with it for the CPU). The
    // offsets are fixed now, so the time a prepared sandbox waits in its pool passes for it too.
    sandbox::ClockOffsets clocks;
    if (img.manifest.monotonic_ns) {
        timespec mono{}, boot{};
        ::clock_gettime(CLOCK_MONOTONIC, &mono);
        ::clock_gettime(CLOCK_BOOTTIME, &boot);
        clocks.monotonic_ns = img.manifest.monotonic_ns - (mono.tv_sec * 1000000000LL + mono.tv_nsec);
        clocks.boottime_ns = img.manifest.boottime_ns - (boot.tv_sec * 1000000000LL + boot.tv_nsec);
    }
    for (uint64_t candidate : stub_candidates(procs, region_size)) {
        try {
            helper = sb.spawn_restorer(procs[0].pid, candidate, region_size, pages.get(), reserve, clocks);
            base = candidate;
            break;
        } catch (const Error& e) {
            spawn_errors += std::string(e.what()) + "; ";
        }
    }
    if (!base) throw Error("cannot start the restorer: " + spawn_errors);
    pid_t hpid = helper.host_pid;
    st->main = sys::Tracee::seize(hpid, PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_EXITKILL);
    tm.spawn_ms = ms_since(lap);

    // What the helper holds that must go: every mapping but the stub and the vDSO block.
    std::vector<std::pair<uint64_t, uint64_t>> helper_unmap, helper_vdso;
    for (const auto& m : sys::read_maps(hpid)) {
        if (m.start == base) continue;
        if (m.path == "[vvar]" || m.path == "[vvar_vclock]" || m.path == "[vdso]")
            helper_vdso.push_back({m.start, m.end});
        else if (m.path != "[vsyscall]")
            helper_unmap.push_back({m.start, m.end});
    }
    VdsoBlock hv = vdso_block(helper_vdso);
    uint64_t vdso_syscall_offset = sys::find_syscall_instruction(hpid) - hv.start;

    Region region(base, code_size);
    FdLayout layout = fd_layout(procs);
    uint64_t stacks = base + region_size - kMainStack - (max_threads - 1) * kThreadStack;
    PlanContext cx{img, strategy, layout, region, base, region_size, stacks, hv};
    st->procs.resize(procs.size());
    // Who forks whom: a process its parent; a further child of init the first process.
    std::vector<std::vector<size_t>> forks(procs.size());
    std::vector<size_t> forker_of(procs.size(), 0);
    for (size_t i = 1; i < procs.size(); ++i) {
        size_t& forker = forker_of[i];
        if (procs[i].ppid != 1) {
            auto parent = std::find_if(procs.begin(), procs.begin() + static_cast<long>(i),
                                       [&](const image::Process& q) { return q.pid == procs[i].ppid; });
            if (parent == procs.begin() + static_cast<long>(i))
                throw Error(fmt::format("process {}: its parent {} is not listed before it", procs[i].pid,
                                        procs[i].ppid));
            forker = static_cast<size_t>(parent - procs.begin());
        }
        forks[forker].push_back(i);
    }
    add_helper_teardown_and_shared(st->procs[0].table, region, img, layout, helper_unmap, st->main.rseq());
    for (size_t i = 0; i < procs.size(); ++i) {
        Table& t = st->procs[i].table;
        if (i > 0) {
            t.preset(kImg, static_cast<uint64_t>(layout.img));
            t.preset(kLog, static_cast<uint64_t>(layout.log));
        }
        t.op(SYS_getpid, {}, kTgid, 0, {}, "getpid");
        st->procs[i].forks = forks[i];
        build_process_table(cx, i, forker_of[i], st->procs[i], forks[i]);
        tm.ops += t.size();
    }
    if (page_up(code_size) + region.data_size() > region_size - kMainStack - (max_threads - 1) * kThreadStack)
        throw Error(
            fmt::format("restore plan needs {} bytes, more than the stub region holds", region.data_size()));

    sys::write_process_memory(hpid, base, initless_stub_begin, code_size);
    sys::write_process_memory(hpid, base + region.code_size(), region.data().data(), region.data_size());
    tm.plan_ms = ms_since(lap);

    st->base = base;
    st->region_size = region_size;
    st->stacks = stacks;
    st->vdso_syscall_offset = vdso_syscall_offset;
    return RestorePlan(std::move(st));
}

namespace {

// Points a stopped thread at the stub with a table to run.
void start_table(sys::Tracee& t, uint64_t base, uint64_t table, uint64_t stack_top) {
    user_regs_struct r = t.regs();
    r.rip = base;
    r.rdi = table;
    r.rsp = stack_top;
    r.orig_rax = static_cast<uint64_t>(-1);
    t.set_regs(r);
    t.resume();
}

}  // namespace

Restored RestorePlan::execute() {
    State& st = *s_;
    if (st.executed) throw Error("a restore plan runs once");
    st.executed = true;
    // A stub blocked in a syscall (it should never be) must not hang the controller: past the
    // function's timeout the restored processes are killed, every wait below returns, and the
    // restore fails.
    Watchdog watchdog(st.helper.host_pid, std::chrono::seconds(st.sandbox->spec().timeout_s));
    auto t0 = Clock::now();
    auto lap = t0;
    Timings& tm = st.timings;
    sandbox::Sandbox& sb = *st.sandbox;
    const auto& procs = st.image->manifest.processes;
    const uint64_t base = st.base, region_size = st.region_size, stacks = st.stacks;
    const size_t n = procs.size();

    std::vector<sys::Tracee> leaders(n);
    std::vector<pid_t> host(n, 0);
    leaders[0] = std::move(st.main);
    host[0] = st.helper.host_pid;
    std::map<pid_t, sys::Tracee> threads;     // host tid -> tracee, for threads the tables created
    std::vector<std::vector<pid_t>> born(n);  // per process: host tids in creation order
    try {
        // Main tables, one process after the other: a process exists once its forker's table has
        // run. Waits only on our own tracees: the controller may have other children.
        for (size_t i = 0; i < n; ++i) {
            const auto& plan = st.procs[i];
            sys::Tracee& leader = leaders[i];
            start_table(leader, base, plan.table_addr, base + region_size - 64);
            size_t created = 0;
            for (;;) {
                int status = leader.wait_event();
                if (!WIFSTOPPED(status))
                    throw Error(fmt::format("restored process {}: {}; log: {}", procs[i].pid,
                                            describe_stop(host[i], status), sb.log_tail(500)));
                int event = status >> 16;
                if (WSTOPSIG(status) == SIGTRAP &&
                    (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK)) {
                    // The table forks its processes first, then creates its threads.
                    auto id = static_cast<pid_t>(leader.event_message());
                    sys::Tracee child = sys::Tracee::adopt(id);
                    watchdog.watch(id);
                    // An auto-attached child starts in a stop before running any instruction.
                    if (!WIFSTOPPED(child.wait_event()))
                        throw Error(fmt::format("new task {} did not stop at birth", id));
                    if (created < plan.forks.size()) {
                        size_t k = plan.forks[created];
                        host[k] = id;
                        leaders[k] = std::move(child);
                    } else {
                        threads.emplace(id, std::move(child));
                        born[i].push_back(id);
                    }
                    ++created;
                    leader.resume();
                    continue;
                }
                if (WSTOPSIG(status) == SIGTRAP) break;
                throw Error(fmt::format("restored process {} {} while running its table", procs[i].pid,
                                        describe_stop(host[i], status)));
            }
            check_table(host[i], plan.table_addr, plan.table, "main");
            profile_table(host[i], plan.table_addr, plan.table);
            if (born[i].size() != procs[i].threads.size() - 1)
                throw Error(fmt::format("process {}: {} of {} threads were created", procs[i].pid,
                                        born[i].size(), procs[i].threads.size() - 1));
        }
        tm.layout_ms = ms_since(lap);

        // Per-thread tables of every process, all started, then all collected. A table created
        // its threads in order, so the k-th clone event is thread k.
        for (size_t i = 0; i < n; ++i)
            for (size_t k = 1; k < procs[i].threads.size(); ++k)
                start_table(threads.at(born[i][k - 1]), base, st.procs[i].thread_tables[k - 1],
                            stacks + k * kThreadStack - 64);
        for (size_t i = 0; i < n; ++i)
            for (size_t k = 1; k < procs[i].threads.size(); ++k) {
                sys::Tracee& th = threads.at(born[i][k - 1]);
                int status = th.wait_stop();
                if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
                    throw Error(fmt::format("thread {}: {}", procs[i].threads[k].tid,
                                            describe_stop(th.tid(), status)));
                check_table(host[i], st.procs[i].thread_tables[k - 1], st.procs[i].per_thread[k], "thread");
                user_regs_struct fr = procs[i].threads[k].regs;
                fix_syscall_restart(fr);
                th.set_regs(fr);
                th.set_xstate(procs[i].threads[k].xstate);
                th.set_signal_mask(procs[i].threads[k].sigmask);
            }
        tm.threads_ms = ms_since(lap);

        // Each process drops its stub through a syscall instruction of its restored vDSO, then
        // its leader gets its state back.
        for (size_t i = 0; i < n; ++i) {
            sys::Tracee& leader = leaders[i];
            user_regs_struct g = leader.regs();
            g.rip = st.procs[i].vdso_start + st.vdso_syscall_offset;
            g.rax = SYS_munmap;
            g.rdi = base;
            g.rsi = region_size;
            g.orig_rax = static_cast<uint64_t>(-1);
            leader.set_regs(g);
            leader.single_step_and_wait();
            if (static_cast<long>(leader.regs().rax) != 0)
                throw Error(fmt::format("unmapping the restorer stub of process {} failed", procs[i].pid));
            const auto& lt = procs[i].threads.at(0);
            user_regs_struct fr = lt.regs;
            fix_syscall_restart(fr);
            leader.set_regs(fr);
            leader.set_xstate(lt.xstate);
            leader.set_signal_mask(lt.sigmask);
        }
    } catch (...) {
        // A half-built process must never run: every process of the tree dies with the restore.
        for (pid_t pid : host)
            if (pid > 0) ::kill(pid, SIGKILL);
        throw;
    }
    for (auto& [tid, th] : threads) th.detach();
    for (auto& leader : leaders) leader.detach();
    // The opt-in post-restore notice, to the first process: pending before any request is forwarded.
    if (int sig = sb.spec().restore_signal) ::kill(host[0], sig);
    tm.finish_ms = ms_since(lap);
    tm.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    Restored out{std::move(st.helper), tm, host};
    return out;
}

Restored restore_into(sandbox::Sandbox& sb, const image::Image& img, Strategy strategy) {
    auto plan = RestorePlan::prepare(sb, img, strategy);
    Restored r = plan.execute();
    r.timings.total_ms += r.timings.spawn_ms + r.timings.plan_ms;
    return r;
}

}  // namespace initless::restore
