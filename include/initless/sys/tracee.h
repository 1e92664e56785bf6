// Tracee: one thread held under ptrace (PTRACE_SEIZE), detached or killed-with-us on destruction.
// Gives registers (general and xstate), the signal mask, the rseq configuration, and syscall
// injection through a known `syscall` instruction (20-50 us each: keep it off hot paths).
// Every wait for a stop or an event is bounded: a thread that never stops (the parent of a vfork, in
// uninterruptible sleep until its child execs) ends the wait with an Error naming it and its state.
// Only the thread that seized a tracee may call its methods (ptrace answers the tracer thread only).
#pragma once

#include <linux/filter.h>
#include <sys/types.h>
#include <sys/user.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "initless/sys/error.h"

namespace initless::sys {

struct RseqConfig {
    uint64_t address = 0;
    uint32_t length = 0;
    uint32_t flags = 0;
    uint32_t signature = 0;
};

// How long a thread may take to reach a stop it was asked for (an interrupt, a single step, an
// injected syscall): a running thread stops within microseconds, so 3 s means it never will.
inline constexpr std::chrono::milliseconds kStopTimeout{3000};
// How long wait_event waits by default (callers running a long job in the tracee pass their own).
inline constexpr std::chrono::milliseconds kEventTimeout{30000};

// A thread that was seized but never stopped (Tracee::seize). By the time this is thrown its process
// has been killed and the thread collected: ptrace cannot detach a thread that is not stopped, and a
// traced thread that dies waits for its tracer to collect it, which would keep the sandbox's init
// (the reaper of its pid namespace) from exiting.
class StopTimeout : public Error {
  public:
    StopTimeout(const std::string& what, pid_t tid, pid_t vfork_child)
        : Error(what), tid_(tid), vfork_child_(vfork_child) {}
    pid_t tid() const { return tid_; }
    // The child it was waiting for, when it was the parent of a vfork in progress (asleep until that
    // child execs or exits, sharing its address space); 0 otherwise.
    pid_t vfork_child() const { return vfork_child_; }

  private:
    pid_t tid_;
    pid_t vfork_child_;
};

class Tracee {
  public:
    Tracee() = default;
    // Seizes and interrupts `tid`, then waits until it is stopped. `options` are PTRACE_O_* flags.
    // A thread that does not stop within kStopTimeout is killed with its process and collected, and
    // StopTimeout names it (see there why).
    static Tracee seize(pid_t tid, unsigned long options = 0);
    // Adopts a thread that is already traced by us and stopped (an auto-attached clone child).
    static Tracee adopt(pid_t tid);

    Tracee(Tracee&& o) noexcept;
    Tracee& operator=(Tracee&& o) noexcept;
    Tracee(const Tracee&) = delete;
    ~Tracee();

    pid_t tid() const { return tid_; }

    user_regs_struct regs() const;
    void set_regs(const user_regs_struct& r);
    std::vector<uint8_t> xstate() const;
    void set_xstate(const std::vector<uint8_t>& x);
    uint64_t signal_mask() const;
    void set_signal_mask(uint64_t mask);
    RseqConfig rseq() const;
    // The thread's seccomp filter number `index` (0: the first installed, as the kernel counts) as classic
    // BPF (PTRACE_SECCOMP_GET_FILTER, which needs CAP_SYS_ADMIN: we are root); nothing when the thread has
    // fewer filters, or none.
    std::optional<std::vector<sock_filter>> seccomp_filter(unsigned long index) const;

    // Runs one syscall in the tracee at `syscall_insn` (address of a 0f 05 instruction), restoring
    // its registers afterwards. Returns the raw result (negative errno on failure).
    long inject_syscall(uint64_t syscall_insn, long nr, std::initializer_list<uint64_t> args);

    // Resumes and waits for the next stop; returns the waitpid status.
    int cont_and_wait(int signal = 0);
    // The next stop, within `limit`; an Error naming the thread and its state if it does not come,
    // and if the thread ends instead (then it is forgotten).
    int wait_stop(std::chrono::milliseconds limit = kStopTimeout);
    // Resumes without waiting (several tracees can then run at once).
    void resume();
    // One instruction, then the stop after it; returns the waitpid status.
    int single_step_and_wait();
    // The waitpid status of the next event, whatever it is (a stop, or the end: then the tracee
    // is forgotten and the status says how it ended), within `limit`, else an Error naming it.
    int wait_event(std::chrono::milliseconds limit = kEventTimeout);
    // PTRACE_GETEVENTMSG: after a PTRACE_EVENT_CLONE stop, the new thread's tid.
    unsigned long event_message() const;
    struct RobustList {
        uint64_t head = 0, length = 0;
    };
    RobustList robust_list() const;
    // Signals queued for this thread (`shared`: for its whole process) as raw 128-byte siginfo,
    // read without dequeuing them (PTRACE_PEEKSIGINFO); at most `max`.
    std::vector<std::vector<uint8_t>> queued_signals(bool shared, int max = 64) const;
    void detach();
    void release() { tid_ = 0; }  // forget without detaching (the thread is gone)

  private:
    explicit Tracee(pid_t tid) : tid_(tid) {}
    static void release_or_reap(pid_t tid);
    pid_t tid_ = 0;
};

// Kills the processes of `tids` (threads traced by the calling thread, or its children) and
// collects each thread's death with waitpid(__WALL) on that tid, within `limit` in all: a dead
// tracee stays a zombie its parent (the sandbox's init) cannot reap until its tracer collects it.
// Returns the tids still not collected when `limit` passed (none, normally).
std::vector<pid_t> kill_and_collect(const std::vector<pid_t>& tids, std::chrono::milliseconds limit);
// The instruction pointer of a thread we trace that is stopped (0 if it cannot be read): for messages.
uint64_t stopped_instruction_pointer(pid_t tid);

// "state D (disk sleep), in wait_for_vfork_done": what /proc says a thread is doing, for errors.
std::string describe_thread_state(pid_t tid);
// "pid 812 (child-subreaper): state S (sleeping), in do_wait; ...": every thread of `pids`, for an
// error about processes that stopped answering (at most 32 threads named).
std::string describe_processes(const std::vector<pid_t>& pids);

// Finds a `syscall` instruction (0f 05) in the process's [vdso], reading it through /proc/PID/mem.
uint64_t find_syscall_instruction(pid_t pid);

}  // namespace initless::sys
