#include "initless/checkpoint/checkpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "initless/image/image.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"
#include "initless/sys/tracee.h"

namespace initless::checkpoint {

namespace fs = std::filesystem;
using image::kPageSize;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

uint64_t hex_u64(const std::string& s) {
    return std::stoull(s, nullptr, 16);
}

// Threads of `pid`, seized until the set is stable (a thread may be created while we seize).
std::vector<sys::Tracee> seize_all(pid_t pid) {
    std::vector<sys::Tracee> out;
    std::set<pid_t> seized;
    for (bool grew = true; grew;) {
        grew = false;
        for (pid_t tid : sys::proc_tasks(pid)) {
            if (seized.count(tid)) continue;
            out.push_back(sys::Tracee::seize(tid));
            seized.insert(tid);
            grew = true;
        }
    }
    // Leader first: restore builds the others from it.
    std::stable_partition(out.begin(), out.end(), [&](const sys::Tracee& t) { return t.tid() == pid; });
    return out;
}

pid_t ns_id(const std::string& status_value) {
    // "NSpid: 1234 2": the last column is the id in the innermost namespace.
    std::istringstream in(status_value);
    pid_t v = 0, last = 0;
    while (in >> v) last = v;
    return last;
}

class MemoryReader {
  public:
    explicit MemoryReader(pid_t pid) : mem_(sys::open_file(fmt::format("/proc/{}/mem", pid), O_RDONLY)) {}
    void read(uint64_t addr, void* out, size_t len) {
        sys::read_exact(mem_.get(), out, len, static_cast<off_t>(addr));
    }
    template <typename T>
    T read(uint64_t addr) {
        T v{};
        read(addr, &v, sizeof v);
        return v;
    }

  private:
    sys::UniqueFd mem_;
};

// Where an injected syscall may write its output: below the thread's stack pointer and red zone,
// memory the thread does not use while stopped.
uint64_t scratch_below_stack(const user_regs_struct& regs) {
    return (regs.rsp - 512) & ~uint64_t{15};
}

struct Injector {
    sys::Tracee& t;
    uint64_t gadget;
    uint64_t scratch;  // below the red zone of the thread's stack
    long call(long nr, std::initializer_list<uint64_t> args) { return t.inject_syscall(gadget, nr, args); }
};

// Queued signals with their siginfo (value, sender ...), read without dequeuing them.
std::vector<std::vector<uint8_t>> queued_signals(const sys::Tracee& t, bool shared) {
    auto out = t.queued_signals(shared);
    if (out.size() == 64)
        throw ContractError(
            fmt::format("thread {} has 64 or more queued signals; rule: none pile up when ready", t.tid()));
    return out;
}

void read_thread(sys::Tracee& t, uint64_t gadget, MemoryReader& mem, image::Thread& th) {
    // The tid as the sandbox sees it (glibc caches it in the thread's struct pthread).
    th.tid = ns_id(sys::read_status(t.tid()).at("NSpid"));
    th.comm = sys::read_file(fmt::format("/proc/{}/comm", t.tid()));
    th.pending = queued_signals(t, false);
    if (!th.comm.empty() && th.comm.back() == '\n') th.comm.pop_back();
    th.regs = t.regs();
    th.xstate = t.xstate();
    th.sigmask = t.signal_mask();
    auto rseq = t.rseq();
    th.rseq = {rseq.address, rseq.length, rseq.signature};
    auto robust = t.robust_list();
    th.robust_list = robust.head;
    th.robust_list_len = robust.length;

    Injector inj{t, gadget, scratch_below_stack(th.regs)};
    long r = inj.call(SYS_prctl, {PR_GET_TID_ADDRESS, inj.scratch});
    if (r != 0)
        throw Error(fmt::format("prctl(PR_GET_TID_ADDRESS) in tid {}: {}", t.tid(),
                                std::strerror(static_cast<int>(-r))));
    th.clear_child_tid = mem.read<uint64_t>(inj.scratch);
    r = inj.call(SYS_sigaltstack, {0, inj.scratch});
    if (r != 0)
        throw Error(fmt::format("sigaltstack in tid {}: {}", t.tid(), std::strerror(static_cast<int>(-r))));
    stack_t ss = mem.read<stack_t>(inj.scratch);
    th.altstack_sp = reinterpret_cast<uint64_t>(ss.ss_sp);
    th.altstack_size = ss.ss_size;
    th.altstack_flags = ss.ss_flags;
}

struct KernelSigaction {
    uint64_t handler, flags, restorer, mask;
};

void read_process_wide(sys::Tracee& leader, uint64_t gadget, MemoryReader& mem, image::Process& p) {
    uint64_t scratch = scratch_below_stack(leader.regs());
    for (int sig = 1; sig <= 64; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        long r = leader.inject_syscall(gadget, SYS_rt_sigaction, {static_cast<uint64_t>(sig), 0, scratch, 8});
        if (r != 0) continue;  // 32, 33: reserved by glibc, EINVAL
        auto a = mem.read<KernelSigaction>(scratch);
        if (a.handler == 0 && a.flags == 0 && a.mask == 0) continue;
        p.actions.push_back({sig, a.handler, a.flags, a.restorer, a.mask});
    }
    p.mm.brk = static_cast<uint64_t>(leader.inject_syscall(gadget, SYS_brk, {0}));
    p.pending_shared = queued_signals(leader, true);
    for (int which : {ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF}) {
        long r = leader.inject_syscall(gadget, SYS_getitimer, {static_cast<uint64_t>(which), scratch});
        if (r != 0)
            throw Error(fmt::format("getitimer in process {}: {}", leader.tid(),
                                    std::strerror(static_cast<int>(-r))));
        auto it = mem.read<itimerval>(scratch);
        auto us = [](const timeval& tv) {
            return static_cast<uint64_t>(tv.tv_sec) * 1000000 + static_cast<uint64_t>(tv.tv_usec);
        };
        p.itimers.push_back({us(it.it_interval), us(it.it_value)});
    }
    // POSIX timers (timer_create) keep kernel ids the engine cannot choose at restore.
    std::string timers = sys::read_file(fmt::format("/proc/{}/timers", leader.tid()));
    if (!timers.empty())
        throw ContractError(
            fmt::format("process {} has POSIX timers (timer_create): they cannot be restored yet; rule: "
                        "use timerfd or setitimer",
                        leader.tid()));
}

// Before seizing: a process someone else traces, a zombie or a stopped process cannot be restored
// as it is.
void check_freezable(pid_t pid) {
    auto status = sys::read_status(pid);
    if (status.count("TracerPid") && status["TracerPid"] != "0")
        throw ContractError(
            fmt::format("process {} is already being traced (TracerPid {}): a traced process cannot be "
                        "snapshotted",
                        pid, status["TracerPid"]));
    std::string state = status.count("State") ? status["State"] : "";
    if (!state.empty() && state[0] == 'Z')
        throw ContractError(
            fmt::format("process {} has exited but was not waited for (a zombie); rule: reap child "
                        "processes before ready",
                        pid));
    if (!state.empty() && state[0] == 'T')
        throw ContractError(
            fmt::format("process {} is stopped (job control); rule: every process runs when ready", pid));
}

void read_ids_and_mm(pid_t pid, image::Process& p) {
    auto status = sys::read_status(pid);
    p.pid = ns_id(status.at("NSpid"));
    p.pgid = ns_id(status.at("NSpgid"));
    p.sid = ns_id(status.at("NSsid"));
    p.creds.cap_inheritable = hex_u64(status.at("CapInh"));
    p.creds.cap_permitted = hex_u64(status.at("CapPrm"));
    p.creds.cap_effective = hex_u64(status.at("CapEff"));
    p.creds.cap_bounding = hex_u64(status.at("CapBnd"));
    p.creds.no_new_privs = status.count("NoNewPrivs") && status["NoNewPrivs"] == "1";
    p.umask = static_cast<uint32_t>(std::stoul(status.at("Umask"), nullptr, 8));
    for (int res = 0; res < RLIM_NLIMITS; ++res) {
        rlimit64 lim{};
        if (::prlimit64(pid, static_cast<__rlimit_resource>(res), nullptr, &lim) != 0)
            throw sys::SysError(fmt::format("prlimit of process {}", pid), errno);
        p.rlimits.push_back({lim.rlim_cur, lim.rlim_max});
    }
    auto f = sys::proc_stat_fields(pid);
    auto u = [&](int i) { return std::stoull(f.at(static_cast<size_t>(i))); };
    p.mm.start_code = u(26);
    p.mm.end_code = u(27);
    p.mm.start_stack = u(28);
    p.mm.start_data = u(45);
    p.mm.end_data = u(46);
    p.mm.start_brk = u(47);
    p.mm.arg_start = u(48);
    p.mm.arg_end = u(49);
    p.mm.env_start = u(50);
    p.mm.env_end = u(51);
    std::string auxv = sys::read_file(fmt::format("/proc/{}/auxv", pid));
    p.mm.auxv.assign(auxv.begin(), auxv.end());
    p.exe = sys::read_link(fmt::format("/proc/{}/exe", pid));
    p.cwd = sys::read_link(fmt::format("/proc/{}/cwd", pid));
}

int prot_of(const std::string& perms) {
    return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
           (perms[2] == 'x' ? PROT_EXEC : 0);
}

// Size, inode and mtime of the object behind a mapping, through /proc/PID/map_files (which reaches
// it whatever the process's mount namespace).
void record_mapped_file(pid_t pid, const sys::MapsEntry& m, image::Vma& v) {
    struct stat st {};
    auto file = fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, m.start, m.end);
    if (::stat(file.c_str(), &st) != 0) throw sys::SysError("stat " + file, errno);
    v.file_size = static_cast<uint64_t>(st.st_size);
    v.file_inode = st.st_ino;
    v.file_mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

std::vector<image::Vma> read_vmas(pid_t pid) {
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
        } else if (m.path.rfind("/memfd:", 0) == 0 || m.path.find("(deleted)") != std::string::npos ||
                   m.path.rfind("/SYSV", 0) == 0 || m.path[0] != '/') {
            throw ContractError(
                where +
                ": private mappings of memfds, and mappings of deleted files and SysV shared "
                "memory, cannot be restored (rule: map only files that exist in the sandbox)");
        } else {
            v.kind = image::VmaKind::File;
            record_mapped_file(pid, m, v);
        }
        out.push_back(std::move(v));
    }
    return out;
}

bool is_zero(const uint8_t* p) {
    const auto* w = reinterpret_cast<const uint64_t*>(p);
    for (size_t i = 0; i < kPageSize / 8; ++i)
        if (w[i]) return false;
    return true;
}

// Saves the private dirty pages of every VMA into pages.img (one file range per VMA with pages).
// Processes append to one pages.img: `cursor` is where the next VMA's range starts.
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
        uint64_t i = 0;
        while (i < npages) {
            auto wanted = [&](uint64_t k) {
                uint64_t e = entries[k];
                bool present = (e >> 63) & 1, swapped = (e >> 62) & 1, file_page = (e >> 61) & 1;
                // Shared memory is read whole: its pages may be resident without being mapped here.
                if (shmem) return true;
                if (!(present || swapped)) return false;
                // In a private file mapping only copied-on-write (anonymous) pages differ from the file.
                return v.kind == image::VmaKind::Anonymous || !file_page;
            };
            if (!wanted(i)) {
                ++i;
                continue;
            }
            uint64_t j = i;
            while (j < npages && wanted(j) && j - i < 2048) ++j;
            buf.resize((j - i) * kPageSize);
            mem.read(v.start + i * kPageSize, buf.data(), buf.size());
            // Split the chunk into runs of non-zero pages: zero pages are never written.
            uint64_t k = 0;
            while (k < j - i) {
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
                ssize_t w = ::pwrite(out_fd, data, len, static_cast<off_t>(file_off));
                if (w != static_cast<ssize_t>(len))
                    throw sys::SysError("write pages.img", w < 0 ? errno : ENOSPC);
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

template <typename T>
T sockopt(int fd, int level, int name) {
    T v{};
    socklen_t len = sizeof v;
    if (::getsockopt(fd, level, name, &v, &len) != 0)
        throw sys::SysError(fmt::format("getsockopt {}/{}", level, name), errno);
    return v;
}

// What is queued for a socket pair end to receive; the running function keeps every byte.
// Datagrams keep their boundaries; fds in flight break the rule.
void read_queued_messages(int sock, const std::string& where, image::Fd& f) {
    auto queued = sys::peek_queued(sock, f.type == SOCK_STREAM);
    if (!queued.complete)
        throw ContractError(where +
                            ": file descriptors or oversized messages are queued in it; rule: nothing in "
                            "flight when ready");
    for (const auto& m : queued.messages) {
        f.pipe_data.insert(f.pipe_data.end(), m.begin(), m.end());
        if (f.type != SOCK_STREAM) f.message_sizes.push_back(static_cast<uint32_t>(m.size()));
    }
}

void read_socket(pid_t pid, int pidfd, const std::map<uint64_t, uint64_t>& unix_peers, image::Fd& f) {
    auto where = fmt::format("process {} fd {}", pid, f.fd);
    sys::UniqueFd s = sys::pidfd_getfd(pidfd, f.fd);
    f.domain = sockopt<int>(s.get(), SOL_SOCKET, SO_DOMAIN);
    f.type = sockopt<int>(s.get(), SOL_SOCKET, SO_TYPE);
    bool listening = sockopt<int>(s.get(), SOL_SOCKET, SO_ACCEPTCONN) != 0;
    sockaddr_storage addr{};
    socklen_t alen = sizeof addr;
    sys::check(::getsockname(s.get(), reinterpret_cast<sockaddr*>(&addr), &alen), where + ": getsockname");
    f.address.assign(reinterpret_cast<uint8_t*>(&addr), reinterpret_cast<uint8_t*>(&addr) + alen);
    if ((f.domain == AF_INET || f.domain == AF_INET6) && f.type == SOCK_STREAM) {
        if (!listening)
            throw ContractError(where +
                                ": a TCP socket that is not listening (an established or half-open "
                                "connection); rule: hold no connections when ready, reconnect after restore");
        f.kind = image::FdKind::TcpListen;
        // For a listener the kernel reports its backlog limit in tcpi_sacked.
        tcp_info ti{};
        socklen_t tlen = sizeof ti;
        f.backlog = ::getsockopt(s.get(), IPPROTO_TCP, TCP_INFO, &ti, &tlen) == 0
                        ? static_cast<int>(ti.tcpi_sacked)
                        : 0;
        for (auto [level, name] : {std::pair{SOL_SOCKET, SO_REUSEADDR},
                                   {SOL_SOCKET, SO_REUSEPORT},
                                   {SOL_SOCKET, SO_KEEPALIVE},
                                   {IPPROTO_TCP, TCP_NODELAY},
                                   {IPPROTO_TCP, TCP_DEFER_ACCEPT}})
            f.options.push_back({{level, name}, sockopt<int>(s.get(), level, name)});
        if (f.domain == AF_INET6)
            f.options.push_back(
                {{IPPROTO_IPV6, IPV6_V6ONLY}, sockopt<int>(s.get(), IPPROTO_IPV6, IPV6_V6ONLY)});
        return;
    }
    if (f.domain == AF_UNIX && listening) {
        f.kind = image::FdKind::UnixListen;
        auto* un = reinterpret_cast<sockaddr_un*>(&addr);
        f.path = un->sun_path[0] ? std::string(un->sun_path) : std::string();
        return;
    }
    if (f.domain == AF_UNIX) {
        bool named = alen > sizeof(sa_family_t);
        struct stat st {};
        sys::check(::fstat(s.get(), &st), where + ": fstat");
        auto peer = unix_peers.find(st.st_ino);
        if (!named && peer != unix_peers.end()) {
            sockaddr_storage peer_addr{};
            socklen_t plen = sizeof peer_addr;
            if (::getpeername(s.get(), reinterpret_cast<sockaddr*>(&peer_addr), &plen) == 0 &&
                plen <= sizeof(sa_family_t)) {
                // One end of a socketpair: paired with its peer across the tree later.
                f.kind = image::FdKind::UnixPair;
                f.pipe_id = std::min<uint64_t>(st.st_ino, peer->second);
                f.pair_end = st.st_ino < peer->second ? 0 : 1;
                for (auto [level, name] : {std::pair{SOL_SOCKET, SO_SNDBUF}, {SOL_SOCKET, SO_RCVBUF}})
                    f.options.push_back({{level, name}, sockopt<int>(s.get(), level, name)});
                read_queued_messages(s.get(), where, f);
                return;
            }
        }
        if (!named && peer == unix_peers.end() && f.type == SOCK_STREAM) {
            // A peer that is gone reads as EOF; pending data as > 0.
            char byte;
            if (::recv(s.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
                f.kind = image::FdKind::UnixOrphan;
                return;
            }
        }
    }
    throw ContractError(
        fmt::format("{}: a socket (domain {}, type {}) that is neither listening nor one end of a "
                    "socketpair; rule: hold no connections when ready",
                    where, f.domain, f.type));
}

std::vector<image::Fd> read_fds(pid_t pid, int pidfd, const Target& target,
                                const std::map<uint64_t, uint64_t>& unix_peers) {
    struct stat log_st {};
    sys::check(::stat(target.log_path.c_str(), &log_st), "stat log");
    std::vector<image::Fd> out;
    for (int fd : sys::list_fds(pid)) {
        auto link = fmt::format("/proc/{}/fd/{}", pid, fd);
        std::string dest = sys::read_link(link);
        auto info = sys::read_fdinfo(pid, fd);
        image::Fd f;
        f.fd = fd;
        int flags = static_cast<int>(std::stoul(info.fields.at("flags"), nullptr, 8));
        f.cloexec = flags & O_CLOEXEC;
        f.flags = flags & ~O_CLOEXEC;
        f.position = info.fields.count("pos") ? std::stoull(info.fields["pos"]) : 0;
        auto where = fmt::format("process {} fd {} ({})", pid, fd, dest);
        struct stat st {};
        if (::stat(link.c_str(), &st) != 0) throw sys::SysError("stat " + link, errno);
        if (st.st_dev == log_st.st_dev && st.st_ino == log_st.st_ino) {
            f.kind = image::FdKind::Log;
        } else if (S_ISREG(st.st_mode)) {
            if ((flags & O_ACCMODE) != O_RDONLY)
                throw ContractError(where +
                                    ": a regular file open for writing; rule: no files open for writing when "
                                    "ready");
            if (dest.find("(deleted)") != std::string::npos || dest.empty() || dest[0] != '/')
                throw ContractError(where +
                                    ": a deleted or unreachable file; rule: open files must stay in place");
            f.kind = image::FdKind::File;
            f.path = dest;
        } else if (S_ISDIR(st.st_mode)) {
            f.kind = image::FdKind::File;
            f.path = dest;
        } else if (S_ISCHR(st.st_mode)) {
            f.kind = image::FdKind::CharDevice;
            f.path = dest;
        } else if (S_ISFIFO(st.st_mode)) {
            f.kind = (flags & O_ACCMODE) == O_RDONLY ? image::FdKind::PipeRead : image::FdKind::PipeWrite;
            f.pipe_id = st.st_ino;
        } else if (S_ISSOCK(st.st_mode)) {
            read_socket(pid, pidfd, unix_peers, f);
        } else if (dest == "anon_inode:[eventpoll]") {
            f.kind = image::FdKind::Epoll;
            for (const auto& line : info.lines) {
                if (line.rfind("tfd:", 0) != 0) continue;
                image::EpollTarget t;
                char data_hex[32] = {};
                unsigned events = 0;
                if (std::sscanf(line.c_str(), "tfd: %d events: %x data: %31s", &t.fd, &events, data_hex) != 3)
                    throw Error(where + ": cannot parse epoll registration: " + line);
                t.events = events;
                t.data = std::stoull(data_hex, nullptr, 16);
                f.targets.push_back(t);
            }
        } else if (dest == "anon_inode:[eventfd]") {
            f.kind = image::FdKind::EventFd;
            f.counter = hex_u64(info.fields.at("eventfd-count"));
            f.semaphore = info.fields.count("eventfd-semaphore") && info.fields["eventfd-semaphore"] == "1";
        } else if (dest == "anon_inode:[timerfd]") {
            f.kind = image::FdKind::TimerFd;
            f.clock = std::stoi(info.fields.at("clockid"));
            long long vs = 0, vn = 0, is = 0, in = 0;
            std::sscanf(info.fields.at("it_value").c_str(), "(%lld, %lld)", &vs, &vn);
            std::sscanf(info.fields.at("it_interval").c_str(), "(%lld, %lld)", &is, &in);
            f.value_ns = static_cast<uint64_t>(vs * 1000000000LL + vn);
            f.counter =
                info.fields.count("ticks") ? std::stoull(info.fields["ticks"]) : 0;  // unread expirations
            f.interval_ns = static_cast<uint64_t>(is * 1000000000LL + in);
        } else if (dest == "anon_inode:[signalfd]") {
            f.kind = image::FdKind::SignalFd;
            f.sigmask = hex_u64(info.fields.at("sigmask"));
        } else {
            throw ContractError(where +
                                ": this kind of fd cannot be recreated by initless (rule: only files open "
                                "for reading, listening sockets, pipes, epoll, eventfd, timerfd, signalfd)");
        }
        out.push_back(std::move(f));
    }
    // dup'd fds share one open file description (offset, flags): found with kcmp, restored by dup.
    for (size_t i = 0; i < out.size(); ++i)
        for (size_t j = 0; j < i; ++j)
            if (out[j].dup_of < 0 && out[i].kind == out[j].kind &&
                sys::same_open_file(pid, out[j].fd, out[i].fd)) {
                out[i].dup_of = out[j].fd;
                break;
            }
    return out;
}

// One process of the function's tree while it is frozen.
struct Member {
    pid_t host = 0;
    sys::UniqueFd pidfd;
    std::vector<sys::Tracee> threads;
    image::Process p;
};

// The function's processes: every descendant of init, parents before children; init's own children
// first, oldest first (the one init started leads: restore spawns it and builds the rest from it).
std::vector<pid_t> process_tree(pid_t init) {
    std::vector<pid_t> out = sys::proc_children(init);
    std::vector<std::pair<uint64_t, pid_t>> by_age;
    for (pid_t pid : out) by_age.push_back({sys::proc_start_time(pid), pid});
    std::sort(by_age.begin(), by_age.end());
    for (size_t i = 0; i < out.size(); ++i) out[i] = by_age[i].second;
    for (size_t i = 0; i < out.size(); ++i)
        for (pid_t child : sys::proc_children(out[i])) out.push_back(child);
    return out;
}

// Seizes every thread of every process, walking the tree again until it stops changing: a process
// not yet frozen may fork or spawn a thread meanwhile, a frozen one cannot.
std::vector<Member> freeze_tree(pid_t init) {
    std::map<pid_t, Member> frozen;
    for (bool grew = true; grew;) {
        grew = false;
        for (pid_t pid : process_tree(init)) {
            if (frozen.count(pid)) continue;
            check_freezable(pid);
            Member m;
            m.host = pid;
            m.pidfd = sys::pidfd_open(pid);
            m.threads = seize_all(pid);
            frozen.emplace(pid, std::move(m));
            grew = true;
        }
    }
    std::vector<Member> out;
    for (pid_t pid : process_tree(init)) out.push_back(std::move(frozen.at(pid)));
    return out;
}

// Session and process group of each process, as restore can rebuild them: each process is forked by
// its parent (a child of init by the first process, with CLONE_PARENT) and then may call setsid or
// setpgid, so a process is in its own session or its forker's, and in its own group, its forker's,
// or that of a group leader restored before it in the same session.
void check_sessions(const std::vector<Member>& ms) {
    std::map<pid_t, size_t> index;
    for (size_t i = 0; i < ms.size(); ++i) index[ms[i].p.pid] = i;
    for (size_t i = 0; i < ms.size(); ++i) {
        const image::Process& p = ms[i].p;
        auto fail = [&](const std::string& why) {
            throw ContractError(
                fmt::format("process {} (pid {} in the sandbox, session {}, group {}): {}; rule: "
                            "sessions and process groups stay within the function's live processes",
                            ms[i].host, p.pid, p.sid, p.pgid, why));
        };
        if (i == 0) {
            if (p.sid != p.pid || p.pgid != p.pid)
                fail("the first process is not the leader of its own session");
            continue;
        }
        const image::Process& forker = ms[p.ppid == 1 ? 0 : index.at(p.ppid)].p;
        if (p.sid != p.pid && p.sid != forker.sid) fail("its session's leader is gone or unrelated");
        if (p.pgid == p.pid || p.pgid == forker.pgid) continue;
        auto leader = index.find(p.pgid);
        if (leader == index.end() || leader->second > i || ms[leader->second].p.sid != p.sid)
            fail("its process group's leader is gone or restored after it");
    }
}

// Fds of different processes that are one open file description (inherited through fork) get one
// `shared_id`; so do both ends of a pipe or socket pair whose ends are in more than one process.
// Pipes are paired across the tree, their unread data taken out, recorded and put back.
void link_descriptions(std::vector<Member>& ms) {
    uint64_t next_id = 1;
    for (size_t i = 0; i < ms.size(); ++i)
        for (auto& f : ms[i].p.fds) {
            if (f.dup_of >= 0 || f.kind == image::FdKind::Log) continue;
            for (size_t j = 0; j < i && !f.shared_id; ++j)
                for (auto& g : ms[j].p.fds) {
                    if (g.dup_of >= 0 || g.kind != f.kind ||
                        !sys::same_open_file(ms[i].host, f.fd, ms[j].host, g.fd))
                        continue;
                    if (!g.shared_id) g.shared_id = next_id++;
                    f.shared_id = g.shared_id;
                    break;
                }
            if (f.shared_id && (f.kind == image::FdKind::Epoll || f.kind == image::FdKind::TimerFd ||
                                f.kind == image::FdKind::SignalFd || f.kind == image::FdKind::UnixOrphan))
                throw ContractError(
                    fmt::format("process {} fd {}: an epoll, timerfd, signalfd or orphaned socket shared "
                                "by several processes cannot be restored; rule: create these after fork",
                                ms[i].host, f.fd));
        }

    struct End {
        size_t member;
        image::Fd* fd;
    };
    // pipe id -> the records of end 0 (pipe read end, pair end 0) and end 1.
    std::map<uint64_t, std::array<std::vector<End>, 2>> pairs;
    for (size_t i = 0; i < ms.size(); ++i)
        for (auto& f : ms[i].p.fds) {
            if (f.dup_of >= 0) continue;
            if (f.kind == image::FdKind::PipeRead || f.kind == image::FdKind::PipeWrite)
                pairs[f.pipe_id][f.kind == image::FdKind::PipeRead ? 0 : 1].push_back({i, &f});
            else if (f.kind == image::FdKind::UnixPair)
                pairs[f.pipe_id][f.pair_end].push_back({i, &f});
        }
    for (auto& [id, ends] : pairs) {
        for (int e = 0; e < 2; ++e)
            if (ends[e].empty()) {
                const End& other = ends[1 - e].front();
                throw ContractError(
                    fmt::format("process {} fd {}: a {} whose other end is outside the function; rule: "
                                "pipes and socket pairs only between processes of the snapshot",
                                ms[other.member].host, other.fd->fd,
                                other.fd->kind == image::FdKind::UnixPair ? "socket pair" : "pipe"));
            }
        std::set<size_t> holders;
        for (const auto& end : ends)
            for (const End& r : end) holders.insert(r.member);
        if (holders.size() > 1)
            for (auto& end : ends) {
                uint64_t sid = 0;
                for (End& r : end) sid = std::max(sid, r.fd->shared_id);
                if (!sid) sid = next_id++;
                for (End& r : end) r.fd->shared_id = sid;
            }
        if (ends[0].front().fd->kind == image::FdKind::UnixPair) continue;  // queues were peeked per end
        const End& rd = ends[0].front();
        const End& wr = ends[1].front();
        sys::UniqueFd r = sys::pidfd_getfd(ms[rd.member].pidfd.get(), rd.fd->fd);
        int size = ::fcntl(r.get(), F_GETPIPE_SZ);
        std::vector<uint8_t> data;
        int pending = 0;
        ::ioctl(r.get(), FIONREAD, &pending);
        if (pending > 0) {
            data.resize(static_cast<size_t>(pending));
            ssize_t n = ::read(r.get(), data.data(), data.size());
            data.resize(n > 0 ? static_cast<size_t>(n) : 0);
            sys::UniqueFd w = sys::pidfd_getfd(ms[wr.member].pidfd.get(), wr.fd->fd);
            sys::write_all(w.get(), data.data(), data.size());
        }
        for (auto& end : ends)
            for (End& x : end) {
                x.fd->pipe_size = size > 0 ? static_cast<uint64_t>(size) : 0;
                if (x.fd->kind == image::FdKind::PipeRead) x.fd->pipe_data = data;
            }
    }
}

}  // namespace

Stats checkpoint(const Target& target, const fs::path& image_dir,
                 const std::function<void(const fs::path& staging)>& before_publish) {
    auto t0 = Clock::now();
    Stats stats;
    if (sys::proc_children(target.init_host_pid).empty())
        throw Error("the sandbox has no function process to snapshot");
    image::Manifest manifest;
    manifest.function = target.function;
    manifest.function_dir = target.function_dir.string();
    manifest.port = target.port;
    manifest.kernel = image::kernel_release();
    manifest.vdso_size = image::current_vdso_size();
    manifest.created = std::to_string(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()));

    image::ImageWriter writer(image_dir);
    std::vector<Member> members = freeze_tree(target.init_host_pid);
    // The function was booted in the host's time namespace: its clocks are ours.
    auto now_ns = [](clockid_t clock) {
        timespec ts{};
        ::clock_gettime(clock, &ts);
        return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    };
    manifest.monotonic_ns = now_ns(CLOCK_MONOTONIC);
    manifest.boottime_ns = now_ns(CLOCK_BOOTTIME);
    stats.freeze_ms = ms_since(t0);
    {
        sys::UniqueFd netns = sys::open_file(fmt::format("/proc/{}/ns/net", target.init_host_pid), O_RDONLY);
        auto unix_peers = sys::unix_socket_peers(netns.get());
        std::map<pid_t, pid_t> ns_pid;  // host pid -> pid in the sandbox
        ns_pid[target.init_host_pid] = 1;
        for (auto& m : members) {
            image::Process& p = m.p;
            read_ids_and_mm(m.host, p);
            ns_pid[m.host] = p.pid;
            uint64_t gadget = sys::find_syscall_instruction(m.host);
            MemoryReader mem(m.host);
            for (auto& t : m.threads) {
                image::Thread th;
                read_thread(t, gadget, mem, th);
                p.threads.push_back(std::move(th));
            }
            read_process_wide(m.threads.front(), gadget, mem, p);
            p.vmas = read_vmas(m.host);
            p.fds = read_fds(m.host, m.pidfd.get(), target, unix_peers);
        }
        for (auto& m : members) {
            auto parent = ns_pid.find(static_cast<pid_t>(std::stol(sys::read_status(m.host).at("PPid"))));
            if (parent == ns_pid.end())
                throw Error(fmt::format("process {}: its parent is outside the sandbox", m.host));
            m.p.ppid = parent->second;
        }
        check_sessions(members);
        link_descriptions(members);
        std::vector<image::PageRun> runs;
        {
            sys::UniqueFd out = sys::open_file(writer.pages_path(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            uint64_t cursor = 0;
            for (auto& m : members) dump_pages(m.host, m.p.vmas, out.get(), cursor, manifest, runs);
            sys::check(::ftruncate(out.get(), static_cast<off_t>(cursor)), "truncate pages.img");
            manifest.pages_file_size = cursor;
        }
        for (auto& m : members) {
            ++stats.processes;
            stats.threads += m.p.threads.size();
            stats.vmas += m.p.vmas.size();
            stats.fds += m.p.fds.size();
        }
        pid_t first = members.front().host;
        for (auto& m : members) manifest.processes.push_back(std::move(m.p));
        // The function goes on running as it was: the layer copy needs no freeze.
        members.clear();
        sys::copy_tree(target.upper_dir, writer.staging() / "rootfs-upper");
        // /tmp and /dev/shm are tmpfs of the sandbox, outside the writable layer: kept beside it.
        for (const auto& [inside, saved] : image::kTmpfsDirs)
            sys::copy_tree(fmt::format("/proc/{}/root{}", first, inside), writer.staging() / saved);
        writer.publish(manifest, runs, before_publish);
    }
    stats.pages_written = manifest.pages_written;
    stats.zero_pages_skipped = manifest.zero_pages_skipped;
    struct stat st {};
    if (::stat((image_dir / "pages.img").c_str(), &st) == 0)
        stats.image_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    stats.total_ms = ms_since(t0);
    stats.dump_ms = stats.total_ms - stats.freeze_ms;
    return stats;
}

}  // namespace initless::checkpoint
