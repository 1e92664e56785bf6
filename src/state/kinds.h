// The list of kinds of state. Each kind has one file, src/state/<kind>.cpp, holding the three things
// the engine does with it: how it is read from a frozen process at checkpoint (`read`), how it is
// stored in the manifest (`store`/`load`, JSON), and which ops rebuild it at restore (`plan...`,
// appended to a process's Table). The drivers (src/checkpoint, src/restore) only call them in order.
// Adding a kind: its file, its declarations here, and (for an fd kind) its type in image.h's
// FdObject and its reader in fds.cpp's list.
//
// Checkpoint-side functions run on the thread that froze the tree (they inject syscalls through its
// ptrace attachments); restore-side `plan` functions only build tables and may run anywhere.
#pragma once

#include <linux/filter.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "initless/image/image.h"
#include "initless/oci/spec.h"
#include "initless/sys/hex.h"
#include "initless/sys/proc.h"
#include "initless/sys/socket.h"
#include "initless/sys/tracee.h"
#include "initless/sys/unique_fd.h"
#include "state/table.h"

namespace initless::pages {
class MemoryStrategy;
}

namespace initless::state {

using json = nlohmann::json;

// ---- Checkpoint side ----------------------------------------------------------------------------

// One process of the function's tree while it is frozen.
struct Frozen {
    pid_t host = 0;
    sys::UniqueFd pidfd;
    std::vector<sys::Tracee> threads;           // threads[0] is the leader
    std::map<std::string, std::string> status;  // /proc/PID/status, read once frozen
    uint64_t gadget = 0;                        // a `syscall` instruction of its vDSO, for injections
    std::vector<int> seccomp_modes;             // per thread, as threads[] (credentials::read_seccomp)
    image::Process p;
};

// Reads a frozen process's memory through /proc/PID/mem.
class MemoryReader {
  public:
    explicit MemoryReader(pid_t pid);
    void read(uint64_t addr, void* out, size_t len);
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
uint64_t scratch_below_stack(const user_regs_struct& regs);
// "NSpid: 1234 2": the id in the innermost (the sandbox's) namespace.
pid_t ns_id(const std::string& status_value);
uint64_t hex_u64(const std::string& s);

// What a checkpoint was asked, and what it tells its caller about state it restores differently
// (a connection restored reset, datagrams dropped): one line each, shown in the snapshot's output.
struct CheckpointContext {
    bool refuse_tcp_connections = false;
    uint16_t port = 0;  // the function's port: connections on it are requests still open
    std::vector<std::string> notes;
    std::set<uint64_t> fifos_read;  // FIFOs (by inode) whose unread data one fd already carries
    // An OCI container's stdin and stderr (the shim's, or our relay's), by identity: fds on them are
    // LogFd streams 0 and 2 (stdout is `log`, stream 1). st_ino 0: none.
    struct stat stdio_in {
    }, stdio_err{};
    // An OCI container's root (checkpoint::Target::upper_dir empty): its writable layer is not in the
    // image, so of the files on the root overlay only those below these dirs are the instance's own
    // (RW_DIRS and /tmp: the image keeps a copy of each, every restored container gets it). Unset:
    // the sandbox's writable layer, which the image keeps whole.
    std::optional<std::vector<std::string>> root_kept_dirs;
};

// What the checkpoint knows of one fd before its kind is known.
struct FdSource {
    pid_t pid = 0;
    int pidfd = -1;
    int fd = 0;
    std::string dest;  // readlink of /proc/PID/fd/N
    struct stat st {};
    sys::FdInfo info;
    int flags = 0;       // open flags, O_CLOEXEC included
    std::string where;   // "process P fd N (dest)", for messages
    struct stat log {};  // the instance's log
    const std::map<uint64_t, sys::UnixSocketDiag>* unix_sockets = nullptr;  // by socket inode
    CheckpointContext* context = nullptr;
};

// ---- Restore side -------------------------------------------------------------------------------

// Fd numbers every process of the tree inherits from the first one, above every fd any process
// restores: the image, the log, then objects several processes share (made once, before the forks).
struct FdLayout {
    int max_fd = 2;  // highest fd any process restores
    int img = 0, log = 0;
    int log_in = 0, log_err = 0;     // copies of the restorer's fds 0 and 2 (LogFd streams 0 and 2)
    int uffd_device = 0;             // /dev/userfaultfd while the tables run (lazy restores only), else 0
    std::map<uint64_t, int> shared;  // Fd::shared_id -> its temporary fd
    std::map<uint64_t, int> shm;     // shared memory object (inode) held by several processes -> temp fd
    int lift = 0;                    // fresh fds are lifted to at least this before being placed
};

// The [vvar]/[vvar_vclock]/[vdso] block, moved as one.
struct VdsoBlock {
    uint64_t start = 0, end = 0;
    std::vector<std::pair<uint64_t, uint64_t>> parts;  // in address order
};

// A thread's state set through ptrace when its table has run (syscall restart already fixed).
struct FinalThread {
    pid_t tid = 0;
    user_regs_struct regs{};
    std::vector<uint8_t> xstate;
    uint64_t sigmask = 0;
};

// ---- The kinds ----------------------------------------------------------------------------------

// The process tree, sessions and groups (process_tree.cpp).
namespace tree {
// Seizes every thread of every process below `init`, parents first (init's children oldest first).
std::vector<Frozen> freeze(pid_t init);
void read(Frozen& f);  // pid, pgid, sid
// Parents inside the sandbox, and sessions and groups restore can rebuild (else ContractError).
void link(std::vector<Frozen>& tree, pid_t init);
void store(json& j, const image::Process& p);
void load(const json& j, image::Process& p);
// Who forks whom at restore: a process its parent, a further child of init the first process.
std::vector<size_t> forkers(const std::vector<image::Process>& procs);
// Session and group, then the clone3 of each process in `forks` (in that order).
void plan(Table& t, Region& region, const std::vector<image::Process>& procs, size_t index, size_t forker,
          const std::vector<size_t>& forks);
}  // namespace tree

// Credentials, resource limits and the seccomp filter (credentials.cpp).
namespace credentials {
void read(Frozen& f);
// Before anything injects a syscall (a filter of the function's own may block it): each thread's
// seccomp mode into f.seccomp_modes; a filter other than `sandbox_filter` (alone) is refused
// (ContractError naming the thread and the rule).
void read_seccomp(Frozen& f, const std::vector<sock_filter>& sandbox_filter);
void store_filter(json& j, const image::Manifest& m);  // the manifest's filter
void load_filter(const json& j, image::Manifest& m);
void store(json& j, const image::Process& p);
void load(const json& j, image::Process& p);
void plan_limits(Table& t, Region& region, const image::Process& p);
// Bounding set and no_new_privs, once per process before its threads are cloned (they inherit them).
void plan_inherited(Table& t, const image::Credentials& creds);
// Capabilities, in each thread's own table.
void plan_thread(Table& t, Region& region, const image::Credentials& creds);
// Throws unless the process asks for no more than `spec` allows: its ids are the spec's user, its
// capabilities within the spec's bounding set, no_new_privs on if the spec sets it.
void check_allowed(const image::Process& p, const oci::RuntimeSpec& spec);
}  // namespace credentials

// Clocks (clocks.cpp): CLOCK_MONOTONIC and CLOCK_BOOTTIME continue from the freeze.
namespace clocks {
void read(image::Manifest& m);
void store(json& j, const image::Manifest& m);
void load(const json& j, image::Manifest& m);
// Shifts for the restorer's time namespace, fixed when it is made (stage 1).
std::pair<int64_t, int64_t> offsets(const image::Manifest& m);
}  // namespace clocks

// Sysctls of the function's network namespace that it changed (net_sysctls.cpp).
namespace net_sysctls {
void read(image::Manifest& m, pid_t init);
void store(json& j, const image::Manifest& m);
void load(const json& j, image::Manifest& m);
void plan(Table& t, Region& region, const image::Manifest& m);  // in the first process's table
}  // namespace net_sysctls

// Threads and registers (threads.cpp).
namespace threads {
void read(Frozen& f, MemoryReader& mem);
void store(json& j, const image::Process& p);
void load(const json& j, image::Process& p);
// The leader's clone3 of every further thread with its tid, on the stacks at `stacks`.
void plan_clones(Table& t, Region& region, const image::Process& p, uint64_t stacks, uint64_t stack_size);
// A thread's own state: name, rseq, robust list, clear-tid address, sigaltstack.
void plan_thread(Table& t, Region& region, const image::Thread& th);
FinalThread final_state(const image::Thread& th);
void set_final_state(sys::Tracee& t, const FinalThread& f);
}  // namespace threads

// Signals: actions, queued signals (masks are in threads' final state) (signals.cpp).
namespace signals {
void read(Frozen& f, MemoryReader& mem);
void store(json& j, const image::Process& p);
void load(const json& j, image::Process& p);
void plan_block_all(Table& t, Region& region);
void plan_actions(Table& t, Region& region, const image::Process& p);
void plan_process_queue(Table& t, Region& region, const image::Process& p);
void plan_thread_queue(Table& t, Region& region, const image::Thread& th);
}  // namespace signals

// Timers (timers.cpp): setitimer and POSIX timers.
namespace timers {
void read(Frozen& f, MemoryReader& mem);
void store(json& j, const image::Process& p);
void load(const json& j, image::Process& p);
void plan(Table& t, Region& region, const image::Process& p);  // setitimer
// POSIX timers, with their ids, once the process's threads exist (one may be a timer's target).
void plan_posix(Table& t, Region& region, const image::Process& p);
}  // namespace timers

// The mm fields, the executable and the vDSO block (mm.cpp).
namespace mm {
void read(Frozen& f);
void store(json& j, const image::Process& p);
void load(const json& j, image::Process& p);
VdsoBlock vdso_block(std::vector<std::pair<uint64_t, uint64_t>> parts);
// Moves the helper's vDSO block to where `p` had its own; returns where it starts.
uint64_t plan_vdso(Table& t, const image::Process& p, const VdsoBlock& helper, uint64_t park);
void plan(Table& t, Region& region, const image::Process& p);  // PR_SET_MM_MAP with the exe
}  // namespace mm

// Process and thread attributes: prctl state, oom_score_adj, membarrier, scheduling (attributes.cpp).
namespace attributes {
void read(Frozen& f, MemoryReader& mem, pid_t init);  // init: the sandbox's, for what is inherited
void store(json& j, const image::Process& p);         // after threads: per-thread parts go beside them
void load(const json& j, image::Process& p);
void plan_before_forks(Table& t, const image::Process& p);             // child subreaper
void plan_process(Table& t, Region& region, const image::Process& p);  // after the memory layout
void plan_last(Table& t, const image::Process& p);                     // MDWE, before the clones
void plan_thread(Table& t, Region& region, const image::Thread& th);   // before capabilities
void plan_thread_last(Table& t, const image::Thread& th);              // TSC: a table's last op
}  // namespace attributes

// SysV IPC objects of the sandbox's ipc namespace: refused (ipc.cpp).
namespace ipc {
void check(Frozen& first, MemoryReader& mem);  // through the first process, once its gadget is known
}  // namespace ipc

// Memory: VMAs and their pages (memory.cpp); how pages arrive is a pages::MemoryStrategy.
namespace memory {
std::vector<image::Vma> read(pid_t pid);
// Saves the private dirty pages of `vmas` into pages.img from `cursor` on (one range per VMA).
void dump_pages(pid_t pid, std::vector<image::Vma>& vmas, int out_fd, uint64_t& cursor,
                image::Manifest& manifest, std::vector<image::PageRun>& runs);
void store(json& j, const image::Process& p);
void load(const json& j, image::Process& p);
bool is_special(image::VmaKind k);  // vDSO, vvar, vsyscall: the kernel's, never laid out
// A changed library or executable fails the restore loudly.
void verify_mapped_files(pid_t init_pid, const image::Process& p);
// Shared memory objects held by several processes (made once, before the forks).
std::set<uint64_t> shared_objects(const std::vector<image::Process>& procs);
// A memfd for the shared memory object behind `v` into `slot`.
void plan_memfd(Table& t, Region& region, const image::Vma& v, int slot);
void plan(Table& t, Region& region, const image::Image& img, size_t index, const FdLayout& fds,
          const pages::MemoryStrategy& strategy);
}  // namespace memory

// The fd table (fds.cpp): reads each fd through the kinds' readers, finds dups and descriptions
// shared across the tree, stores the common fields, and places every fd at its number.
namespace fds {
std::vector<image::Fd> read(const Frozen& f, const struct stat& log,
                            const std::map<uint64_t, sys::UnixSocketDiag>& unix_sockets,
                            CheckpointContext& context);
void link(std::vector<Frozen>& tree);
void store(json& j, const image::Process& p);
void load(const json& j, image::Process& p);
FdLayout layout(const std::vector<image::Process>& procs);
// In the first process, before the forks: what several processes share, at FdLayout's numbers.
void plan_shared(Table& t, Region& region, const std::vector<image::Process>& procs, const FdLayout& L);
void plan(Table& t, Region& region, const image::Process& p, const FdLayout& L);
// Pairs (pipes, socket pairs): the ends just made at `pair` (two ints) into kPipeR (end 0) and
// kTmp (end 1), both lifted to at least `lift`.
void plan_lift_ends(Table& t, uint64_t pair, int lift, const std::string& what);
}  // namespace fds

// Files, devices and the log; the working directory and umask (files.cpp).
namespace files {
std::optional<image::FdObject> read(const FdSource& s);
void read_process(Frozen& f);  // cwd, umask
// Refuses an fd of /proc/<pid> (or below it) whose pid is no process or thread of the snapshot.
void check_proc_paths(const std::vector<Frozen>& ms);
void store_process(json& j, const image::Process& p);
void load_process(const json& j, image::Process& p);
void store(json& j, const image::LogFd& f);
void load(const json& j, image::LogFd& f);
void store(json& j, const image::FileFd& f);
void load(const json& j, image::FileFd& f);
void store(json& j, const image::CharDeviceFd& f);
void load(const json& j, image::CharDeviceFd& f);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::FileFd& o);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::CharDeviceFd& o);
void plan_process(Table& t, Region& region, const image::Process& p);  // chdir, umask
// POSIX record locks, once every fd of the process is at its number (closing any fd of a file drops them).
void plan_posix_locks(Table& t, Region& region, const image::Process& p);
}  // namespace files

// Pipes and named pipes (FIFOs) (pipes.cpp).
namespace pipes {
std::optional<image::FdObject> read(const FdSource& s);
// Unread data of each pipe in the tree, taken out and put back while frozen.
void drain(std::vector<Frozen>& tree);
void store(json& j, const image::PipeFd& f);
void load(const json& j, image::PipeFd& f);
void store(json& j, const image::FifoFd& f);
void load(const json& j, image::FifoFd& f);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::FifoFd& o);
// Both ends with the unread data: end 0 in kPipeR, end 1 in kTmp.
void plan_pair(Table& t, Region& region, const image::PipeFd& end0, const image::PipeFd& end1, int lift,
               const std::string& what);
}  // namespace pipes

// Unix sockets: listeners, socket pairs, orphaned ends (unix_sockets.cpp).
namespace unix_sockets {
std::optional<image::FdObject> read(const FdSource& s);
void store(json& j, const image::UnixListenFd& f);
void load(const json& j, image::UnixListenFd& f);
void store(json& j, const image::UnixPairFd& f);
void load(const json& j, image::UnixPairFd& f);
void store(json& j, const image::UnixOrphanFd& f);
void load(const json& j, image::UnixOrphanFd& f);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::UnixListenFd& o);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::UnixOrphanFd& o);
void plan_pair(Table& t, Region& region, const image::UnixPairFd& end0, const image::UnixPairFd& end1,
               int lift, const std::string& what);
}  // namespace unix_sockets

// TCP sockets: listeners, connections (restored reset), unconnected sockets (tcp.cpp).
namespace tcp {
std::optional<image::FdObject> read(const FdSource& s);
void store(json& j, const image::TcpListenFd& f);
void load(const json& j, image::TcpListenFd& f);
void store(json& j, const image::TcpConnectionFd& f);
void load(const json& j, image::TcpConnectionFd& f);
void store(json& j, const image::TcpUnconnectedFd& f);
void load(const json& j, image::TcpUnconnectedFd& f);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::TcpListenFd& o);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::TcpConnectionFd& o);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::TcpUnconnectedFd& o);
}  // namespace tcp

// UDP sockets (udp.cpp).
namespace udp {
std::optional<image::FdObject> read(const FdSource& s);
void store(json& j, const image::UdpFd& f);
void load(const json& j, image::UdpFd& f);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::UdpFd& o);
}  // namespace udp

// eventfd, timerfd, signalfd (event_fds.cpp).
namespace event_fds {
std::optional<image::FdObject> read(const FdSource& s);
void store(json& j, const image::EventFd& f);
void load(const json& j, image::EventFd& f);
void store(json& j, const image::TimerFd& f);
void load(const json& j, image::TimerFd& f);
void store(json& j, const image::SignalFd& f);
void load(const json& j, image::SignalFd& f);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::EventFd& o);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::TimerFd& o);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::SignalFd& o);
}  // namespace event_fds

// inotify instances and their watches, re-added by path (inotify.cpp).
namespace inotify {
std::optional<image::FdObject> read(const FdSource& s);
void store(json& j, const image::InotifyFd& f);
void load(const json& j, image::InotifyFd& f);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::InotifyFd& o);
}  // namespace inotify

// epoll instances and their registrations (epoll.cpp).
namespace epoll {
std::optional<image::FdObject> read(const FdSource& s);
void store(json& j, const image::EpollFd& f);
void load(const json& j, image::EpollFd& f);
void plan_create(Table& t, Region& region, const image::Fd& f, const image::EpollFd& o);
// Registrations, once every fd of the process is in place (`present`: fd -> close-on-exec); fds
// moved aside for a moment go to at least `lift`.
void plan_targets(Table& t, Region& region, const image::Fd& f, const image::EpollFd& o,
                  const std::map<int, bool>& present, int lift);
}  // namespace epoll

// A process's record in the manifest: every kind stores its part (process.cpp holds the list).
json store_process(const image::Process& p);
image::Process load_process(const json& j);

// The helpers the kinds share for JSON.
using sys::hex;
// A JSON string converts to std::string, not to sys::unhex's string_view.
inline std::vector<uint8_t> unhex(const std::string& s) {
    return sys::unhex(s);
}

}  // namespace initless::state
