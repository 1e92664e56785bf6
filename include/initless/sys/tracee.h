// Tracee: one thread held under ptrace (PTRACE_SEIZE), detached or killed-with-us on destruction.
// Gives registers (general and xstate), the signal mask, the rseq configuration, and syscall
// injection through a known `syscall` instruction (20-50 us each: keep it off hot paths).
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <string>
#include <vector>

namespace initless::sys {

struct RseqConfig {
    uint64_t address = 0;
    uint32_t length = 0;
    uint32_t flags = 0;
    uint32_t signature = 0;
};

class Tracee {
public:
    Tracee() = default;
    // Seizes and interrupts `tid`, then waits until it is stopped. `options` are PTRACE_O_* flags.
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

    // Runs one syscall in the tracee at `syscall_insn` (address of a 0f 05 instruction), restoring
    // its registers afterwards. Returns the raw result (negative errno on failure).
    long inject_syscall(uint64_t syscall_insn, long nr, std::initializer_list<uint64_t> args);

    // Resumes and waits for the next stop; returns the waitpid status.
    int cont_and_wait(int signal = 0);
    int wait_stop();
    // Resumes without waiting (several tracees can then run at once).
    void resume();
    // One instruction, then the stop after it; returns the waitpid status.
    int single_step_and_wait();
    // The waitpid status of the next event, whatever it is (a stop, or the end: then the tracee
    // is forgotten and the status says how it ended).
    int wait_event();
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

// Finds a `syscall` instruction (0f 05) in the process's [vdso], reading it through /proc/PID/mem.
uint64_t find_syscall_instruction(pid_t pid);

}  // namespace initless::sys
