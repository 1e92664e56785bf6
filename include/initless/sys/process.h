// Process primitives: clone3 as a fork (with new namespaces, chosen pids, a pidfd), pidfds,
// stealing fds from another process, and small /proc readers.
#pragma once

#include <sys/types.h>
#include <initializer_list>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "initless/sys/unique_fd.h"

namespace initless::sys {

struct ForkResult {
    pid_t pid = 0;   // 0 in the child
    UniqueFd pidfd;  // parent side only
};

// clone3 without a new stack (fork semantics). `flags` may add CLONE_NEW*; `set_tid` chooses the
// pid in each pid namespace level (innermost first). Throws SysError in the parent on failure.
// The child of a multi-threaded caller (the daemon) holds copies of locks other threads may have
// held: until it execs it makes raw syscalls only (no malloc, no logging, no glibc set*id, which
// waits on the other threads' futexes).
ForkResult fork_process(uint64_t flags, std::span<const pid_t> set_tid = {});

UniqueFd pidfd_open(pid_t pid);
// Whether two fds of process `pid` share one open file description (kcmp KCMP_FILE).
bool same_open_file(pid_t pid, int fd1, int fd2);
// The same across two processes (fds inherited through fork share their description).
bool same_open_file(pid_t pid1, int fd1, pid_t pid2, int fd2);
// Whether two processes share one address space (kcmp KCMP_VM): a vfork in progress, or a clone
// with CLONE_VM but not CLONE_THREAD. False if either is gone.
bool same_address_space(pid_t pid1, pid_t pid2);
// The child whose vfork thread `tid` is waiting for (asleep until that child execs or exits, never
// stopping for ptrace), or 0: a child sharing its address space (vfork, CLONE_VM|CLONE_VFORK), or,
// for clone(CLONE_VFORK) without CLONE_VM, its newest child while it sleeps in the kernel's clone
// (the only sleep there: the wait for the vfork to complete). 0 too if the thread is gone.
pid_t vfork_child_of(pid_t tid);
// Whether two processes share one per-process table (kcmp): made by clone without CLONE_THREAD but
// with CLONE_FILES or CLONE_FS. False if either is gone.
enum class SharedTable { Files = 2 /* KCMP_FILES */, Fs = 3 /* KCMP_FS */ };
bool same_table(pid_t pid1, pid_t pid2, SharedTable which);
// Whether fd `fd` of `pid` is the file registered in its epoll `epfd` under target fd `tfd` (the
// `nth` registration under that number, counting from 0) (kcmp KCMP_EPOLL_TFD).
bool is_epoll_target(pid_t pid, int epfd, int tfd, int nth, int fd);
// kill(2): false when the process is gone (ESRCH); throws SysError for any other failure.
bool send_signal(pid_t pid, int sig);
// Blocks `signals` in the calling thread (threads it starts afterwards inherit the mask) and
// returns a signalfd (close-on-exec) that becomes readable when one of them arrives.
UniqueFd signal_fd(std::initializer_list<int> signals);
// pidfd_send_signal(2): false when the process is gone (ESRCH); throws SysError otherwise.
bool pidfd_send_signal(int pidfd, int sig);

// For the calling thread only: files it creates are owned by (uid, gid), and the kernel lets it create
// them on a filesystem of a user namespace that maps those ids but not ours (a sandbox's tmpfs). Its
// capabilities stay effective (setfsuid drops the file ones; they are raised again from the permitted
// set). Undone when dropped. A no-op for (0, 0).
class FsIdentity {
  public:
    FsIdentity(uid_t uid, gid_t gid);
    ~FsIdentity();
    FsIdentity(const FsIdentity&) = delete;
    FsIdentity& operator=(const FsIdentity&) = delete;

  private:
    bool active_ = false;
};

// Reads or writes another process's memory (process_vm_readv/writev); all or nothing, or throws.
void read_process_memory(pid_t pid, uint64_t addr, void* data, size_t len);
void write_process_memory(pid_t pid, uint64_t addr, const void* data, size_t len);
// Duplicates `target_fd` of the process behind `pidfd` into this process.
UniqueFd pidfd_getfd(int pidfd, int target_fd);
// The pid, in this process's pid namespace, of the process a pidfd refers to (-1 once it is gone).
pid_t pid_of_pidfd(int pidfd);

// Fields of /proc/PID/stat after the command name, indexed from 3 (state) as in proc(5).
std::vector<std::string> proc_stat_fields(pid_t pid);
uint64_t proc_start_time(pid_t pid);  // field 22; distinguishes a reused pid
bool process_alive(pid_t pid);
// Raises this process's soft RLIMIT_NOFILE to its hard limit (a daemon holding many connections);
// returns the new soft limit.
uint64_t raise_fd_limit();
// Makes the calling thread background work: nice 10, and its I/O in the idle class (`idle_io`: its
// reads wait while anyone else's are queued, honoured by the mq-deadline and bfq schedulers) or the
// lowest best-effort level (it shares the device; idle I/O can starve behind a busy reader). For
// reading ahead that must not delay a request. Best effort: false if the kernel refused either.
bool set_this_thread_background(bool idle_io);
// Threads of a process, and the children listed in /proc/PID/task/*/children (a thread that ends
// meanwhile is skipped; a process that is gone throws).
std::vector<pid_t> proc_tasks(pid_t pid);
std::vector<pid_t> proc_children(pid_t pid);

}  // namespace initless::sys
