#include "initless/sys/tracee.h"

#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"

// Debian 12's glibc headers may lack it; the layout is the kernel's uapi one.
struct RseqConfigurationAbi {
    uint64_t rseq_abi_pointer;
    uint32_t rseq_abi_size;
    uint32_t signature;
    uint32_t flags;
    uint32_t pad;
};
constexpr int kPtraceGetRseqConfiguration = 0x420f;

namespace initless::sys {

namespace {
long pt(enum __ptrace_request req, pid_t tid, void* addr, void* data, const char* what) {
    long r = ::ptrace(req, tid, addr, data);
    if (r == -1) throw SysError(fmt::format("ptrace {} tid {}", what, tid), errno);
    return r;
}

using Clock = std::chrono::steady_clock;

// A ptrace stop turns no fd readable (a pidfd only on exit), but it does wake a tracer blocked in
// waitpid. So: waitpid(WNOHANG) while yielding for the first 200 us (most stops come within
// microseconds, and restore waits on them on the request path), then a blocking waitpid that a
// per-thread timer interrupts at the deadline. It polled every 100 us before: a burst that ran 100
// restores at once had 100 tracer threads waking 10,000 times a second each, and a quarter of the
// CPUs went to their sleeps and wake-ups (perf), making every restore of the burst seconds late.
//
// The timer's signal (kWaitSignal, a no-op handler without SA_RESTART, so that waitpid returns
// EINTR) is unblocked only around that waitpid: anywhere else an EINTR would reach code not
// expecting it. A signal that comes between the unblock and the waitpid is handled before the
// waitpid sleeps; the timer repeats every kWaitRearm after the deadline so such a wait still ends.
const int kWaitSignal = SIGRTMIN + 7;
constexpr auto kWaitRearm = std::chrono::milliseconds(5);

void ensure_wait_signal_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_handler = [](int) {};
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        if (::sigaction(kWaitSignal, &sa, nullptr) != 0) throw SysError("sigaction (wait timer)", errno);
    });
}

// The calling thread's timer, made on its first long wait and deleted when the thread ends.
class WaitTimer {
  public:
    WaitTimer() {
        ensure_wait_signal_handler();
        sigevent ev{};
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = kWaitSignal;
        ev._sigev_un._tid = static_cast<pid_t>(::syscall(SYS_gettid));
        if (::timer_create(CLOCK_MONOTONIC, &ev, &timer_) != 0) throw SysError("timer_create (wait)", errno);
    }
    ~WaitTimer() { ::timer_delete(timer_); }
    WaitTimer(const WaitTimer&) = delete;
    WaitTimer& operator=(const WaitTimer&) = delete;
    // Fires in `after` (at least 1 ns), then every kWaitRearm; `after` zero disarms.
    void arm(std::chrono::nanoseconds after) {
        auto ts = [](std::chrono::nanoseconds d) {
            return timespec{static_cast<time_t>(d.count() / 1'000'000'000),
                            static_cast<long>(d.count() % 1'000'000'000)};
        };
        itimerspec it{};
        if (after.count() > 0) {
            it.it_value = ts(after);
            it.it_interval = ts(kWaitRearm);
        }
        if (::timer_settime(timer_, 0, &it, nullptr) != 0) throw SysError("timer_settime (wait)", errno);
    }

  private:
    timer_t timer_{};
};

// One look without waiting: the wait status if `tid` has reported.
std::optional<int> reported(pid_t tid) {
    int status = 0;
    pid_t r = ::waitpid(tid, &status, __WALL | WNOHANG);
    if (r == tid) return status;
    if (r == -1 && errno != EINTR) throw SysError(fmt::format("waitpid tid {}", tid), errno);
    return std::nullopt;
}

// Without a timer: a look every millisecond until the deadline.
std::optional<int> wait_polling(pid_t tid, Clock::time_point deadline) {
    for (;;) {
        if (auto status = reported(tid)) return status;
        if (Clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

// Blocks in waitpid until `tid` reports or `deadline` passes; the signal mask and pending signals are
// as they were on return.
std::optional<int> wait_blocking(pid_t tid, Clock::time_point deadline) {
    // A POSIX timer takes one of its user's pending-signal slots (RLIMIT_SIGPENDING, shared by every
    // process of root): when they are all taken, timer_create says EAGAIN, and the wait polls instead
    // of failing the restore. Seen in a full ctest, whose signal tests queue thousands at once.
    thread_local std::optional<WaitTimer> made;
    if (!made) {
        try {
            made.emplace();
        } catch (const SysError&) {
            return wait_polling(tid, deadline);
        }
    }
    WaitTimer& timer = *made;
    sigset_t wake, before;
    sigemptyset(&wake);
    sigaddset(&wake, kWaitSignal);
    ::pthread_sigmask(SIG_BLOCK, &wake, &before);
    struct Restore {
        WaitTimer& timer;
        sigset_t& wake;
        sigset_t& before;
        ~Restore() {
            try {
                timer.arm(std::chrono::nanoseconds(0));
            } catch (const Error&) {
            }
            timespec zero{0, 0};
            while (::sigtimedwait(&wake, nullptr, &zero) == kWaitSignal) {
            }
            ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
        }
    } restore{timer, wake, before};
    timer.arm(std::max<std::chrono::nanoseconds>(deadline - Clock::now(), std::chrono::nanoseconds(1)));
    for (;;) {
        int status = 0;
        ::pthread_sigmask(SIG_UNBLOCK, &wake, nullptr);
        pid_t r = ::waitpid(tid, &status, __WALL);
        int err = errno;
        ::pthread_sigmask(SIG_BLOCK, &wake, nullptr);
        if (r == tid) return status;
        if (r == -1 && err != EINTR) throw SysError(fmt::format("waitpid tid {}", tid), err);
        if (Clock::now() >= deadline) {
            return reported(tid);  // one last look: the stop may have come with the timer
        }
    }
}

std::optional<int> wait_bounded(pid_t tid, std::chrono::milliseconds limit) {
    auto start = Clock::now();
    auto deadline = start + limit;
    for (;;) {
        if (auto status = reported(tid)) return status;
        auto now = Clock::now();
        if (now >= deadline) return std::nullopt;
        if (now - start >= std::chrono::microseconds(200)) return wait_blocking(tid, deadline);
        ::sched_yield();
    }
}
}  // namespace

std::string describe_thread_state(pid_t tid) {
    std::string out;
    try {
        auto status = read_status(tid);
        out = "state " + (status.count("State") ? status["State"] : std::string("?"));
    } catch (const Error&) {
        return "gone";
    }
    try {
        std::string wchan = read_file(fmt::format("/proc/{}/wchan", tid));
        if (!wchan.empty() && wchan != "0") out += ", in " + wchan;
    } catch (const Error&) {
    }
    return out;
}

std::string describe_processes(const std::vector<pid_t>& pids) {
    constexpr size_t kMaxThreads = 32;
    std::string out;
    size_t named = 0, left = 0;
    for (pid_t pid : pids) {
        std::string comm;
        try {
            comm = read_file(fmt::format("/proc/{}/comm", pid));
        } catch (const Error&) {
            continue;  // gone since it was listed
        }
        while (!comm.empty() && comm.back() == '\n') comm.pop_back();
        std::vector<pid_t> tids;
        try {
            tids = proc_tasks(pid);
        } catch (const std::exception&) {
            continue;  // gone since its name was read
        }
        for (pid_t tid : tids) {
            if (named == kMaxThreads) {
                ++left;
                continue;
            }
            if (!out.empty()) out += "; ";
            out += tid == pid ? fmt::format("pid {} ({}): ", pid, comm)
                              : fmt::format("pid {} ({}) thread {}: ", pid, comm, tid);
            out += describe_thread_state(tid);
            ++named;
        }
    }
    if (left) out += fmt::format("; and {} more threads", left);
    return out.empty() ? "none left" : out;
}

std::vector<pid_t> kill_and_collect(const std::vector<pid_t>& tids, std::chrono::milliseconds limit) {
    for (pid_t tid : tids)
        if (tid > 0) ::kill(tid, SIGKILL);  // any tid names its whole process for SIGKILL
    // Round-robin over every tid: a leader's death is reported only once its other threads are
    // collected, so waiting for the tids one after the other could wait for the leader in vain.
    std::vector<pid_t> left;
    for (pid_t tid : tids)
        if (tid > 0) left.push_back(tid);
    auto deadline = Clock::now() + limit;
    while (!left.empty()) {
        std::vector<pid_t> still;
        for (pid_t tid : left) {
            int status = 0;
            pid_t r = ::waitpid(tid, &status, __WALL | WNOHANG);
            if (r == -1 && errno == EINTR) r = 0;
            if (r == -1) continue;  // ECHILD: not ours (any more), nothing to collect
            if (r == tid && (WIFEXITED(status) || WIFSIGNALED(status))) continue;
            still.push_back(tid);  // not yet, or a stop reported before the kill landed
        }
        left.swap(still);
        if (left.empty() || Clock::now() >= deadline) break;
        timespec pause{0, 200'000};
        ::nanosleep(&pause, nullptr);
    }
    return left;
}

Tracee Tracee::seize(pid_t tid, unsigned long options) {
    pt(PTRACE_SEIZE, tid, nullptr, reinterpret_cast<void*>(options), "SEIZE");
    Tracee t(tid);
    pt(PTRACE_INTERRUPT, tid, nullptr, nullptr, "INTERRUPT");
    std::optional<int> got = wait_bounded(tid, kStopTimeout);
    if (!got) {
        // Attached but never stopped: it cannot be detached, and left attached its death would wait
        // for us to collect it. Say what it was doing while it still exists, then kill and collect it.
        std::string state = describe_thread_state(tid);
        pid_t vfork_child = vfork_child_of(tid);
        t.tid_ = 0;
        std::vector<pid_t> left = kill_and_collect({tid}, std::chrono::milliseconds(2000));
        throw StopTimeout(
            fmt::format("thread {} did not stop within {} ms ({}{}); its process was killed{}", tid,
                        kStopTimeout.count(), state,
                        vfork_child
                            ? fmt::format(", the parent of a vfork in progress: child {}", vfork_child)
                            : std::string(),
                        left.empty() ? "" : " but not yet collected"),
            tid, vfork_child);
    }
    // The first stop is not always the interrupt's PTRACE_EVENT_STOP: a signal being delivered as we
    // interrupted stops the thread first in a signal-delivery-stop (the signal already dequeued), and
    // an event we asked for (a clone) may come first too. The interrupt's stop stays pending behind
    // them: resumed with 0, the thread would drop the signal and take that stop on its way back to
    // user mode, where the first injected syscall's single step would mistake it for its own trap
    // (brk(0) returned 12, its own number, and the restore's PR_SET_MM_MAP failed). So hand a signal
    // back (the kernel sets up its handler frame, or takes its default action, as it would have) and
    // go on until the event stop.
    for (int passed = 0; WIFSTOPPED(*got) && (*got >> 16) != PTRACE_EVENT_STOP; ++passed) {
        if (passed == 16)
            throw Error(
                fmt::format("thread {} kept stopping for signals or events while being seized "
                            "(last wait status {:#x})",
                            tid, *got));
        int sig = (*got >> 16) == 0 ? WSTOPSIG(*got) : 0;
        pt(PTRACE_CONT, tid, nullptr, reinterpret_cast<void*>(static_cast<long>(sig)), "CONT");
        got = wait_bounded(tid, kStopTimeout);
        if (!got)
            throw Error(
                fmt::format("thread {} did not stop again within {} ms after being handed a signal "
                            "or event while seized ({})",
                            tid, kStopTimeout.count(), describe_thread_state(tid)));
    }
    if (WIFEXITED(*got) || WIFSIGNALED(*got)) {
        t.tid_ = 0;
        throw Error(fmt::format("thread {} ended while being seized (wait status {:#x})", tid, *got));
    }
    return t;
}

Tracee Tracee::adopt(pid_t tid) {
    return Tracee(tid);
}

Tracee::Tracee(Tracee&& o) noexcept : tid_(std::exchange(o.tid_, 0)) {}

Tracee& Tracee::operator=(Tracee&& o) noexcept {
    if (this != &o) {
        release_or_reap(tid_);
        tid_ = std::exchange(o.tid_, 0);
    }
    return *this;
}

Tracee::~Tracee() {
    release_or_reap(tid_);
}

void Tracee::release_or_reap(pid_t tid) {
    if (!tid) return;
    if (::ptrace(PTRACE_DETACH, tid, nullptr, nullptr) == 0) return;
    // Not in a stop: dead or dying (killed meanwhile), or running. A dead tracee stays a zombie until
    // its tracer collects it, and only then can its parent (the sandbox's init) reap it: wait a
    // little for whichever comes, and detach if it is a stop.
    try {
        for (int attempt = 0; attempt < 3; ++attempt) {
            std::optional<int> status = wait_bounded(tid, std::chrono::milliseconds(100));
            if (!status || WIFEXITED(*status) || WIFSIGNALED(*status)) return;
            if (::ptrace(PTRACE_DETACH, tid, nullptr, nullptr) == 0) return;
        }
    } catch (const Error&) {
        // ECHILD: already collected.
    }
}

int Tracee::wait_stop(std::chrono::milliseconds limit) {
    std::optional<int> got = wait_bounded(tid_, limit);
    if (!got)
        throw Error(fmt::format("thread {} did not stop within {} ms ({})", tid_, limit.count(),
                                describe_thread_state(tid_)));
    int status = *got;
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
        tid_ = 0;
        throw Error(fmt::format("traced thread ended (wait status {:#x})", status));
    }
    return status;
}

int Tracee::cont_and_wait(int signal) {
    pt(PTRACE_CONT, tid_, nullptr, reinterpret_cast<void*>(static_cast<long>(signal)), "CONT");
    return wait_stop();
}

void Tracee::resume() {
    pt(PTRACE_CONT, tid_, nullptr, nullptr, "CONT");
}

int Tracee::single_step_and_wait() {
    pt(PTRACE_SINGLESTEP, tid_, nullptr, nullptr, "SINGLESTEP");
    return wait_stop();
}

int Tracee::wait_event(std::chrono::milliseconds limit) {
    std::optional<int> got = wait_bounded(tid_, limit);
    if (!got)
        throw Error(fmt::format("thread {} reported no event within {} ms ({})", tid_, limit.count(),
                                describe_thread_state(tid_)));
    int status = *got;
    if (WIFEXITED(status) || WIFSIGNALED(status)) tid_ = 0;
    return status;
}

unsigned long Tracee::event_message() const {
    unsigned long msg = 0;
    pt(PTRACE_GETEVENTMSG, tid_, nullptr, &msg, "GETEVENTMSG");
    return msg;
}

Tracee::RobustList Tracee::robust_list() const {
    void* head = nullptr;
    size_t len = 0;
    if (::syscall(SYS_get_robust_list, tid_, &head, &len) != 0)
        throw SysError(fmt::format("get_robust_list tid {}", tid_), errno);
    return {reinterpret_cast<uint64_t>(head), len};
}

std::vector<std::vector<uint8_t>> Tracee::queued_signals(bool shared, int max) const {
    struct {
        uint64_t off;
        uint32_t flags;
        int32_t nr;
    } args{0, shared ? 1u /* PTRACE_PEEKSIGINFO_SHARED */ : 0u, max};
    std::vector<uint8_t> buf(static_cast<size_t>(max) * 128);
    long n = pt(static_cast<enum __ptrace_request>(0x4209 /* PTRACE_PEEKSIGINFO */), tid_, &args, buf.data(),
                "PEEKSIGINFO");
    std::vector<std::vector<uint8_t>> out;
    for (long i = 0; i < n; ++i) out.emplace_back(buf.begin() + i * 128, buf.begin() + (i + 1) * 128);
    return out;
}

void Tracee::detach() {
    if (tid_) pt(PTRACE_DETACH, tid_, nullptr, nullptr, "DETACH");
    tid_ = 0;
}

user_regs_struct Tracee::regs() const {
    user_regs_struct r{};
    iovec iov{&r, sizeof r};
    pt(PTRACE_GETREGSET, tid_, reinterpret_cast<void*>(NT_PRSTATUS), &iov, "GETREGSET prstatus");
    return r;
}

void Tracee::set_regs(const user_regs_struct& r) {
    user_regs_struct copy = r;
    iovec iov{&copy, sizeof copy};
    pt(PTRACE_SETREGSET, tid_, reinterpret_cast<void*>(NT_PRSTATUS), &iov, "SETREGSET prstatus");
}

std::vector<uint8_t> Tracee::xstate() const {
    std::vector<uint8_t> buf(16384);
    iovec iov{buf.data(), buf.size()};
    pt(PTRACE_GETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov, "GETREGSET xstate");
    buf.resize(iov.iov_len);
    return buf;
}

void Tracee::set_xstate(const std::vector<uint8_t>& x) {
    std::vector<uint8_t> copy = x;
    iovec iov{copy.data(), copy.size()};
    pt(PTRACE_SETREGSET, tid_, reinterpret_cast<void*>(NT_X86_XSTATE), &iov, "SETREGSET xstate");
}

uint64_t Tracee::signal_mask() const {
    uint64_t mask = 0;
    pt(PTRACE_GETSIGMASK, tid_, reinterpret_cast<void*>(sizeof mask), &mask, "GETSIGMASK");
    return mask;
}

void Tracee::set_signal_mask(uint64_t mask) {
    pt(PTRACE_SETSIGMASK, tid_, reinterpret_cast<void*>(sizeof mask), &mask, "SETSIGMASK");
}

RseqConfig Tracee::rseq() const {
    RseqConfigurationAbi c{};
    pt(static_cast<enum __ptrace_request>(kPtraceGetRseqConfiguration), tid_,
       reinterpret_cast<void*>(sizeof c), &c, "GET_RSEQ_CONFIGURATION");
    return {c.rseq_abi_pointer, c.rseq_abi_size, c.flags, c.signature};
}

std::optional<std::vector<sock_filter>> Tracee::seccomp_filter(unsigned long index) const {
    // First the length (the buffer may be null), then the instructions. EINVAL: no filter mode;
    // ENOENT: no filter at this index.
    long n = ::ptrace(PTRACE_SECCOMP_GET_FILTER, tid_, reinterpret_cast<void*>(index), nullptr);
    if (n < 0 && (errno == ENOENT || errno == EINVAL)) return std::nullopt;
    if (n < 0) throw SysError(fmt::format("ptrace SECCOMP_GET_FILTER {} tid {}", index, tid_), errno);
    std::vector<sock_filter> out(static_cast<size_t>(n));
    pt(PTRACE_SECCOMP_GET_FILTER, tid_, reinterpret_cast<void*>(index), out.data(), "SECCOMP_GET_FILTER");
    return out;
}

long Tracee::inject_syscall(uint64_t syscall_insn, long nr, std::initializer_list<uint64_t> args) {
    // With every signal blocked, a signal arriving meanwhile (a timer, say) stays pending instead of
    // stopping the single-step in a signal-delivery-stop (which would dequeue it). All but SIGTRAP:
    // the step's trap is a forced SIGTRAP, and forcing a blocked signal resets its action to SIG_DFL
    // (the function's SIGTRAP handler would be lost). The checkpoint refuses a pending SIGTRAP, so
    // none can be delivered in its place.
    uint64_t saved_mask = signal_mask();
    set_signal_mask(~uint64_t{0} & ~(uint64_t{1} << (SIGTRAP - 1)));
    struct MaskBack {
        Tracee& t;
        uint64_t mask;
        ~MaskBack() {
            try {
                t.set_signal_mask(mask);
            } catch (...) {
            }
        }
    } mask_back{*this, saved_mask};
    user_regs_struct saved = regs();
    user_regs_struct r = saved;
    uint64_t a[6] = {};
    size_t i = 0;
    for (uint64_t v : args) a[i++] = v;
    r.rax = static_cast<uint64_t>(nr);
    r.orig_rax = static_cast<uint64_t>(-1);  // no syscall restart on the way back to user mode
    r.rdi = a[0];
    r.rsi = a[1];
    r.rdx = a[2];
    r.r10 = a[3];
    r.r8 = a[4];
    r.r9 = a[5];
    r.rip = syscall_insn;
    set_regs(r);
    pt(PTRACE_SINGLESTEP, tid_, nullptr, nullptr, "SINGLESTEP");
    int status = wait_stop();
    if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
        throw Error(fmt::format("injected syscall {} in tid {}: unexpected stop {:#x}", nr, tid_, status));
    user_regs_struct after = regs();
    // An event stop (status >> 16: a PTRACE_EVENT_STOP still pending from the seize, say) also reports
    // SIGTRAP, but before the syscall ran: its rax would be taken for the result.
    if ((status >> 16) != 0 || after.rip != syscall_insn + 2)
        throw Error(
            fmt::format("injected syscall {} in tid {}: stopped before it ran (wait status {:#x}, at {:#x})",
                        nr, tid_, status, after.rip));
    long result = static_cast<long>(after.rax);
    set_regs(saved);
    return result;
}

uint64_t find_syscall_instruction(pid_t pid) {
    for (const auto& m : read_maps(pid)) {
        if (m.path != "[vdso]") continue;
        std::vector<uint8_t> code(m.end - m.start);
        UniqueFd mem = open_file(fmt::format("/proc/{}/mem", pid), O_RDONLY);
        read_exact(mem.get(), code.data(), code.size(), static_cast<off_t>(m.start));
        for (size_t i = 0; i + 1 < code.size(); ++i)
            if (code[i] == 0x0f && code[i + 1] == 0x05) return m.start + i;
        throw Error(fmt::format("no syscall instruction in the vdso of {}", pid));
    }
    throw Error(fmt::format("process {} has no [vdso]", pid));
}

uint64_t stopped_instruction_pointer(pid_t tid) {
    user_regs_struct r{};
    iovec iov{&r, sizeof r};
    if (::ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) != 0) return 0;
    return r.rip;
}

}  // namespace initless::sys
