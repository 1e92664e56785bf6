// The raw-syscall wrappers of `sys`, each exercised on real processes and namespaces (as root).
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "initless/sys/cgroup.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/hex.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"
#include "initless/sys/tracee.h"

using namespace initless;

namespace {
// A child that sleeps in pause() until killed; reaped by the destructor.
struct SleepingChild {
    pid_t pid;
    SleepingChild() {
        pid = ::fork();
        if (pid == 0) {
            for (;;) ::pause();
        }
        // Wait until it is really inside pause(), so tests see a known syscall.
        for (int i = 0; i < 2000; ++i) {
            std::string nr = sys::read_file("/proc/" + std::to_string(pid) + "/syscall");
            if (nr.rfind(std::to_string(SYS_pause) + " ", 0) == 0) break;
            ::usleep(1000);
        }
    }
    ~SleepingChild() {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
};
}  // namespace

TEST(SysTracee, SeizeReadsRegistersAndInjectsSyscalls) {
    SleepingChild child;
    auto t = sys::Tracee::seize(child.pid);
    auto regs = t.regs();
    EXPECT_NE(regs.rip, 0u);
    EXPECT_EQ(static_cast<long>(regs.orig_rax), SYS_pause);  // stopped inside pause()
    EXPECT_GT(t.xstate().size(), 512u);                      // at least the legacy FXSAVE area
    uint64_t gadget = sys::find_syscall_instruction(child.pid);
    long pid_inside = t.inject_syscall(gadget, SYS_getpid, {});
    EXPECT_EQ(pid_inside, child.pid);
    // Registers are put back exactly after an injection.
    EXPECT_EQ(t.regs().rip, regs.rip);
    t.set_signal_mask(1ULL << (SIGUSR1 - 1));
    EXPECT_EQ(t.signal_mask(), 1ULL << (SIGUSR1 - 1));
    t.detach();
    EXPECT_NE(sys::read_status(child.pid).at("TracerPid"), std::to_string(::getpid()));
}

TEST(SysTracee, DestructorDetaches) {
    SleepingChild child;
    { auto t = sys::Tracee::seize(child.pid); }
    EXPECT_EQ(sys::read_status(child.pid).at("TracerPid"), "0");
}

// A thread that dequeues a signal just after PTRACE_SEIZE stops for that signal before it stops for
// our interrupt. Seize hands the signal back and waits for the interrupt's stop: otherwise the signal
// was dropped and the interrupt's stop, still pending, was taken for an injected syscall's trap
// (getpid "returned" 39, its own number). A flood of queued realtime signals makes that the common
// case; every one must reach the handler, and every injection must run.
TEST(SysTracee, SeizeDuringSignalDeliveryLosesNoSignalAndInjectionsRun) {
    auto* received = static_cast<std::atomic<long>*>(::mmap(
        nullptr, sizeof(std::atomic<long>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(received, MAP_FAILED);
    new (received) std::atomic<long>(0);
    static std::atomic<long>* counter;
    counter = received;
    pid_t pid = ::fork();
    if (pid == 0) {
        struct sigaction sa {};
        sa.sa_handler = [](int) { counter->fetch_add(1); };
        sa.sa_flags = SA_RESTART;
        ::sigaction(SIGRTMIN, &sa, nullptr);
        counter->store(-1);  // ready
        for (;;) ::pause();
    }
    while (received->load() != -1) ::usleep(1000);
    received->store(0);
    std::atomic<bool> stop{false};
    std::atomic<long> sent{0};
    std::thread sender([&] {
        // At most 256 queued at once: RLIMIT_SIGPENDING counts every process of root together, and a
        // full quota made tests running beside this one fail (a wait's timer_create said EAGAIN).
        while (!stop.load()) {
            if (sent.load() - received->load() < 256 && ::sigqueue(pid, SIGRTMIN, sigval{0}) == 0)
                sent.fetch_add(1);
            else
                ::usleep(20);
        }
    });
    int bad_injections = 0;
    std::string first_error;
    uint64_t gadget = sys::find_syscall_instruction(pid);
    // 1000 seizes at least, and on until more than 1000 signals were sent: with at most 256 queued, the
    // flood goes only as fast as the child takes them, which on a loaded machine is slower than the seizes
    // (a clean-clone CI sent 257 during 1000 seizes).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int i = 0; i < 1000 || (sent.load() <= 1000 && std::chrono::steady_clock::now() < deadline); ++i) {
        try {
            auto t = sys::Tracee::seize(pid);
            if (t.inject_syscall(gadget, SYS_getpid, {}) != pid) ++bad_injections;
        } catch (const Error& e) {
            if (first_error.empty()) first_error = e.what();
            ++bad_injections;
        }
    }
    stop.store(true);
    sender.join();
    for (int i = 0; i < 10000 && received->load() < sent.load(); ++i) ::usleep(1000);
    long got = received->load();
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::munmap(received, sizeof(std::atomic<long>));
    EXPECT_EQ(bad_injections, 0) << first_error;
    EXPECT_GT(sent.load(), 1000);
    EXPECT_EQ(got, sent.load()) << "signals lost to the seizes";
}

// A tracer waiting for a stop sleeps: a restore's tracer thread waits through the whole stage 2, and a
// burst runs many restores at once. It polled every 100 us before, and 100 tracers polling took a
// quarter of the CPUs. Waiting 1 s for a stop that never comes costs under 30 ms of the thread's CPU
// (polling: ~10,000 wake-ups), still ends at its deadline, and a stop that comes during the wait ends
// it at once.
namespace {
// Waits `limit` for a stop that does not come: the wait must end with its error; returns how long it took.
std::chrono::steady_clock::duration wait_for_no_stop(sys::Tracee& t, std::chrono::milliseconds limit) {
    auto t0 = std::chrono::steady_clock::now();
    std::string error;
    try {
        t.wait_stop(limit);
    } catch (const Error& e) {
        error = e.what();
    }
    EXPECT_NE(error.find("did not stop within " + std::to_string(limit.count()) + " ms"), std::string::npos)
        << error;
    return std::chrono::steady_clock::now() - t0;
}

// Sends SIGUSR1 to `pid` after 300 ms and expects the wait to end with that signal-delivery-stop soon
// after. The sender is joined whatever the wait does (a thread left joinable would abort the test,
// and its traced child, holding ctest's output pipe, would keep ctest waiting until its timeout).
void expect_stop_during_wait(sys::Tracee& t, pid_t pid) {
    std::thread sender([pid] {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        ::kill(pid, SIGUSR1);
    });
    auto t0 = std::chrono::steady_clock::now();
    int status = 0;
    std::string error;
    try {
        status = t.wait_stop(std::chrono::milliseconds(5000));
    } catch (const Error& e) {
        error = e.what();
    }
    auto took = std::chrono::steady_clock::now() - t0;
    sender.join();
    EXPECT_EQ(error, "");
    EXPECT_TRUE(WIFSTOPPED(status) && WSTOPSIG(status) == SIGUSR1) << status;
    EXPECT_LT(took, std::chrono::milliseconds(600));
}
}  // namespace

TEST(SysTracee, WaitingForAStopSleepsAndEndsAtTheStopOrTheDeadline) {
    SleepingChild child;
    auto t = sys::Tracee::seize(child.pid);
    t.resume();  // back into pause(): no stop will come
    auto thread_cpu = [] {
        timespec ts{};
        ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    };
    auto cpu0 = thread_cpu();
    auto took = wait_for_no_stop(t, std::chrono::milliseconds(1000));
    auto cpu = thread_cpu() - cpu0;
    EXPECT_GE(took, std::chrono::milliseconds(1000));
    EXPECT_LT(took, std::chrono::milliseconds(1300));
    EXPECT_LT(cpu, std::chrono::milliseconds(30))
        << std::chrono::duration_cast<std::chrono::microseconds>(cpu).count() << " us of CPU";
    // A stop during the blocking wait: a signal sent after 300 ms (signal-delivery-stop).
    expect_stop_during_wait(t, child.pid);
    // The wait leaves no signal of its own behind: none pending, the mask as it was.
    sigset_t pending, mask;
    ::sigpending(&pending);
    ::pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    for (int sig = SIGRTMIN; sig <= SIGRTMAX; ++sig) {
        EXPECT_FALSE(sigismember(&pending, sig)) << sig;
        EXPECT_FALSE(sigismember(&mask, sig)) << sig;
    }
}

// The wait's timer takes a pending-signal slot of the user (RLIMIT_SIGPENDING, shared by all of
// root's processes). With none left (here: our limit at 0), the wait still ends at the stop or at
// the deadline, polling, rather than failing.
TEST(SysTracee, WaitingForAStopWithoutATimerStillEndsAtTheStopOrTheDeadline) {
    SleepingChild child;
    auto t = sys::Tracee::seize(child.pid);
    t.resume();
    rlimit before{};
    ASSERT_EQ(::getrlimit(RLIMIT_SIGPENDING, &before), 0);
    rlimit none = before;
    none.rlim_cur = 0;
    ASSERT_EQ(::setrlimit(RLIMIT_SIGPENDING, &none), 0);
    // A new thread: its timer is made on its first long wait, under the limit.
    std::thread waiter([&] {
        timer_t probe;
        sigevent ev{};
        ev.sigev_notify = SIGEV_NONE;
        EXPECT_NE(::timer_create(CLOCK_MONOTONIC, &ev, &probe), 0) << "the limit does not stop a timer";
        auto took = wait_for_no_stop(t, std::chrono::milliseconds(300));
        EXPECT_GE(took, std::chrono::milliseconds(300));
        EXPECT_LT(took, std::chrono::milliseconds(600));
        expect_stop_during_wait(t, child.pid);
    });
    waiter.join();
    ASSERT_EQ(::setrlimit(RLIMIT_SIGPENDING, &before), 0);
}

// The parent of a vfork sleeps uninterruptibly until its child execs or exits: PTRACE_INTERRUPT
// cannot stop it, and the seize must end with a named error instead of waiting forever.
TEST(SysTracee, SeizingAVforkParentFailsWithinTheDeadline) {
    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    pid_t parent = ::fork();
    if (parent == 0) {
        ::close(pipefd[0]);
        pid_t child = ::vfork();
        if (child == 0) {
            // Only raw syscalls in a vfork child: tell the test, then wait to be killed.
            pid_t self = static_cast<pid_t>(::syscall(SYS_getpid));
            ::syscall(SYS_write, pipefd[1], &self, sizeof self);
            for (;;) ::syscall(SYS_pause);
        }
        ::_exit(0);
    }
    ::close(pipefd[1]);
    pid_t vfork_child = 0;
    ASSERT_EQ(::read(pipefd[0], &vfork_child, sizeof vfork_child), static_cast<ssize_t>(sizeof vfork_child));
    ::close(pipefd[0]);
    auto t0 = std::chrono::steady_clock::now();
    std::string error;
    try {
        auto t = sys::Tracee::seize(parent);
    } catch (const Error& e) {
        error = e.what();
    }
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_NE(error.find("did not stop"), std::string::npos) << error;
    EXPECT_NE(error.find(std::to_string(parent)), std::string::npos) << error;
    EXPECT_LT(took, sys::kStopTimeout + std::chrono::seconds(1));
    ::kill(vfork_child, SIGKILL);
    EXPECT_TRUE(sys::kill_and_collect({parent}, std::chrono::seconds(3)).empty());
    EXPECT_FALSE(std::filesystem::exists("/proc/" + std::to_string(parent)));
}

// A killed tracee stays a zombie its parent cannot reap until its tracer collects it:
// kill_and_collect does, so the parent's waitpid returns.
TEST(SysTracee, KillAndCollectLetsTheParentReap) {
    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    pid_t parent = ::fork();
    if (parent == 0) {
        ::close(pipefd[0]);
        pid_t child = ::fork();
        if (child == 0) {
            for (;;) ::pause();
        }
        if (::write(pipefd[1], &child, sizeof child) != sizeof child) ::_exit(2);
        int status = 0;
        ::_exit(::waitpid(child, &status, 0) == child && WIFSIGNALED(status) ? 0 : 1);
    }
    ::close(pipefd[1]);
    pid_t child = 0;
    ASSERT_EQ(::read(pipefd[0], &child, sizeof child), static_cast<ssize_t>(sizeof child));
    ::close(pipefd[0]);
    auto t = sys::Tracee::seize(child);
    EXPECT_TRUE(sys::kill_and_collect({child}, std::chrono::seconds(3)).empty());
    t.release();
    int status = 0;
    ASSERT_EQ(::waitpid(parent, &status, 0), parent);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(SysProcess, ForkWithPidfdAndChosenPid) {
    // A new pid namespace whose first process asks for pid 1 and then forks pid 7 by set_tid.
    auto child = sys::fork_process(CLONE_NEWPID);
    if (child.pid == 0) {
        pid_t want[1] = {7};
        try {
            auto grandchild = sys::fork_process(0, want);
            if (grandchild.pid == 0) ::_exit(::getpid() == 7 ? 0 : 1);
            int status = 0;
            ::waitpid(grandchild.pid, &status, 0);
            ::_exit(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 2);
        } catch (...) {
            ::_exit(3);
        }
    }
    ASSERT_TRUE(child.pidfd);
    EXPECT_EQ(sys::pid_of_pidfd(child.pidfd.get()), child.pid);
    int status = 0;
    ::waitpid(child.pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SysProcess, PidfdGetfdStealsAnOpenFile) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    SleepingChild child;  // inherits the pipe
    auto pidfd = sys::pidfd_open(child.pid);
    auto stolen = sys::pidfd_getfd(pidfd.get(), fds[1]);
    ASSERT_EQ(::write(stolen.get(), "x", 1), 1);
    char c = 0;
    ASSERT_EQ(::read(fds[0], &c, 1), 1);
    EXPECT_EQ(c, 'x');
    ::close(fds[0]);
    ::close(fds[1]);
}

TEST(SysProc, MapsStatusAndFds) {
    auto maps = sys::read_maps(::getpid(), true);
    bool vdso = false, stack_grows_down = false;
    for (const auto& m : maps) {
        vdso |= m.path == "[vdso]";
        if (m.path == "[stack]")
            stack_grows_down = std::find(m.vm_flags.begin(), m.vm_flags.end(), "gd") != m.vm_flags.end();
    }
    EXPECT_TRUE(vdso);
    EXPECT_TRUE(stack_grows_down);
    EXPECT_EQ(sys::read_status(::getpid()).at("Tgid"), std::to_string(::getpid()));
    sys::UniqueFd fd = sys::open_file("/dev/null", O_RDONLY | O_NONBLOCK);
    auto info = sys::read_fdinfo(::getpid(), fd.get());
    EXPECT_TRUE(std::stoul(info.fields.at("flags"), nullptr, 8) & O_NONBLOCK);
    auto fds = sys::list_fds(::getpid());
    EXPECT_NE(std::find(fds.begin(), fds.end(), fd.get()), fds.end());
}

// In a child just made in a new network namespace: brings its loopback up and listens on
// 127.0.0.1:`port` with `backlog`. The socket, or -1.
int listen_on_loopback(uint16_t port, int backlog) {
    sys::set_loopback_up();
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) || ::listen(s, backlog)) return -1;
    return s;
}

TEST(SysSocket, ConnectInsideAnotherNetworkNamespace) {
    // A child in a new network namespace listens on 127.0.0.1:9555; the host has nothing there.
    auto pair = sys::seqpacket_pair();
    auto child = sys::fork_process(CLONE_NEWNET);
    if (child.pid == 0) {
        try {
            int s = listen_on_loopback(9555, 4);
            if (s < 0) ::_exit(2);
            sys::send_message(pair.b.get(), "listening");
            int c = ::accept(s, nullptr, nullptr);
            ::_exit(::write(c, "hi", 2) == 2 ? 0 : 3);
        } catch (...) {
            ::_exit(4);
        }
    }
    std::string msg;
    ASSERT_TRUE(sys::receive_message(pair.a.get(), msg));
    auto netns = sys::open_file("/proc/" + std::to_string(child.pid) + "/ns/net", O_RDONLY);
    auto sock = sys::connect_in_netns(netns.get(), 9555, std::chrono::seconds(5));
    char buf[2];
    ASSERT_EQ(::read(sock.get(), buf, 2), 2);
    EXPECT_EQ(std::string(buf, 2), "hi");
    // This thread is back in its own namespace: the same port is not served here.
    EXPECT_THROW(sys::connect_in_netns(sys::open_file("/proc/self/ns/net", O_RDONLY).get(), 9555,
                                       std::chrono::seconds(5)),
                 sys::SysError);
    int status = 0;
    ::waitpid(child.pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// The gateway's connect (start_connect_in_netns) returns at once even when the listener's accept queue is
// full (the kernel then drops the SYN, and a blocking connect waits for its retries: 1 s and more);
// a refusal shows on the socket. The waiting form (warmups, trial restores, run and restore --request)
// gives up at its timeout.
TEST(SysSocket, ConnectsToAFullAcceptQueueWaitAtMostTheirTimeout) {
    auto pair = sys::seqpacket_pair();
    auto child = sys::fork_process(CLONE_NEWNET);
    if (child.pid == 0) {
        try {
            if (listen_on_loopback(9556, 0) < 0) ::_exit(2);
            sys::send_message(pair.b.get(), "listening");
            std::string done;
            sys::receive_message(pair.b.get(), done);  // never accepts
            ::_exit(0);
        } catch (...) {
            ::_exit(4);
        }
    }
    std::string msg;
    ASSERT_TRUE(sys::receive_message(pair.a.get(), msg));
    auto netns = sys::open_file("/proc/" + std::to_string(child.pid) + "/ns/net", O_RDONLY);
    std::vector<sys::UniqueFd> socks;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 6; ++i) socks.push_back(sys::start_connect_in_netns(netns.get(), 9556));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
    int connecting = 0;
    for (auto& s : socks) {
        pollfd p{s.get(), POLLOUT, 0};
        if (::poll(&p, 1, 0) == 0) connecting++;  // not writable: its SYN went unanswered
    }
    EXPECT_GT(connecting, 0) << "the accept queue (backlog 0) never filled";
    // The waiting form gives up at its timeout, saying so (the kernel's SYN retries go on ~2 minutes).
    t0 = std::chrono::steady_clock::now();
    try {
        sys::connect_in_netns(netns.get(), 9556, std::chrono::milliseconds(300));
        ADD_FAILURE() << "a connect to a full accept queue succeeded";
    } catch (const sys::SysError& e) {
        EXPECT_EQ(e.code(), ETIMEDOUT) << e.what();
        EXPECT_NE(std::string(e.what()).find("not accepted within 300 ms"), std::string::npos) << e.what();
    }
    auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(waited, std::chrono::milliseconds(290));
    EXPECT_LT(waited, std::chrono::milliseconds(900));
    // Nothing listens on 9557: the refusal shows on the socket (its write would fail), not as a wait.
    auto refused = sys::start_connect_in_netns(netns.get(), 9557);
    pollfd p{refused.get(), POLLOUT, 0};
    ASSERT_EQ(::poll(&p, 1, 1000), 1);
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(refused.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    EXPECT_EQ(err, ECONNREFUSED);
    sys::send_message(pair.a.get(), "done");
    int status = 0;
    ::waitpid(child.pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(SysSocket, UnixSocketPeersFindsSocketpairEndsAndForgetsOrphans) {
    int sv[2], lone[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, lone), 0);
    ::close(lone[1]);  // its peer is gone
    auto ino = [](int fd) {
        struct stat st {};
        EXPECT_EQ(::fstat(fd, &st), 0);
        return static_cast<uint64_t>(st.st_ino);
    };
    auto peers = sys::unix_socket_peers(sys::open_file("/proc/self/ns/net", O_RDONLY).get());
    ASSERT_TRUE(peers.count(ino(sv[0])));
    EXPECT_EQ(peers[ino(sv[0])], ino(sv[1]));
    EXPECT_EQ(peers[ino(sv[1])], ino(sv[0]));
    EXPECT_FALSE(peers.count(ino(lone[0])));
    for (int fd : {sv[0], sv[1], lone[0]}) ::close(fd);
}

TEST(SysSocket, PeekQueuedKeepsEveryMessageAndStopsAtFdsInFlight) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    ASSERT_EQ(::send(sv[0], "one", 3, 0), 3);
    ASSERT_EQ(::send(sv[0], "second", 6, 0), 6);
    auto q = sys::peek_queued(sv[1], false);
    EXPECT_TRUE(q.complete);
    ASSERT_EQ(q.messages.size(), 2u);
    EXPECT_EQ(std::string(q.messages[1].begin(), q.messages[1].end()), "second");
    char buf[16];
    ASSERT_EQ(::recv(sv[1], buf, sizeof buf, MSG_DONTWAIT), 3);  // still there, from the start
    EXPECT_EQ(std::string(buf, 3), "one");
    int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    sys::send_message(sv[0], "with an fd", std::span<const int>(&devnull, 1));
    EXPECT_FALSE(sys::peek_queued(sv[1], false).complete);
    for (int fd : {sv[0], sv[1], devnull}) ::close(fd);
}

// A seqpacket socket whose peer shut down reads 0 forever: the peek ends there (it used to spin).
TEST(SysSocket, PeekQueuedEndsAtAShutDownSeqpacketPeer) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    ASSERT_EQ(::send(sv[0], "last", 4, 0), 4);
    ASSERT_EQ(::shutdown(sv[0], SHUT_WR), 0);
    auto q = sys::peek_queued(sv[1], false);
    EXPECT_TRUE(q.complete);
    ASSERT_EQ(q.messages.size(), 1u);
    EXPECT_EQ(std::string(q.messages[0].begin(), q.messages[0].end()), "last");
    // An empty datagram is a message of its own, not the end of the queue: what follows it is read
    // too (SO_PASSCRED tells the two apart).
    int dg[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dg), 0);
    ASSERT_EQ(::send(dg[0], "", 0, 0), 0);
    ASSERT_EQ(::send(dg[0], "after", 5, 0), 5);
    auto d = sys::peek_queued(dg[1], false);
    EXPECT_TRUE(d.complete);
    ASSERT_EQ(d.messages.size(), 2u);
    EXPECT_TRUE(d.messages[0].empty());
    EXPECT_EQ(std::string(d.messages[1].begin(), d.messages[1].end()), "after");
    for (int fd : {sv[0], sv[1], dg[0], dg[1]}) ::close(fd);
}

TEST(SysProcess, SameOpenFileAcrossProcesses) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    SleepingChild child;  // forked after the pipe: shares both descriptions
    int other = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    EXPECT_TRUE(sys::same_open_file(::getpid(), p[0], child.pid, p[0]));
    EXPECT_FALSE(sys::same_open_file(::getpid(), p[0], child.pid, p[1]));
    EXPECT_THROW(sys::same_open_file(::getpid(), other, child.pid, other), sys::SysError);  // not open there
    for (int fd : {p[0], p[1], other}) ::close(fd);
}

TEST(SysCgroup, CreateLimitAttachRemove) {
    std::string name = "unit-" + std::to_string(::getpid());
    {
        auto cg = sys::Cgroup::create(name);
        cg.set_memory_limit(64 << 20);
        EXPECT_EQ(sys::read_file("/sys/fs/cgroup/memory/initless/" + name + "/memory.limit_in_bytes"),
                  std::to_string(64 << 20) + "\n");
        SleepingChild child;
        cg.attach(child.pid);
        auto members = cg.pids();
        EXPECT_NE(std::find(members.begin(), members.end(), child.pid), members.end());
        // An opened (not created) handle does not own the group: dropping it leaves it.
        { auto view = sys::Cgroup::open(name); }
        EXPECT_TRUE(std::filesystem::exists("/sys/fs/cgroup/memory/initless/" + name));
    }
    // The owner removed it, killing the member first.
    EXPECT_FALSE(std::filesystem::exists("/sys/fs/cgroup/memory/initless/" + name));
}

// Two initless processes at once (the daemon and a CLI, two tests): one removing its group also
// removes the shared initless/ parent when it was the last, between the other's mkdir of the parent
// and of its own group. Creating must make the parent again, not fail with ENOENT.
TEST(SysCgroup, CreateRacesTheSharedParentsRemoval) {
    std::atomic<int> failures{0};
    std::string first_failure;
    std::mutex m;
    auto churn = [&](const std::string& name) {
        for (int i = 0; i < 300; ++i) {
            try {
                auto cg = sys::Cgroup::create(name);
            } catch (const std::exception& e) {
                std::lock_guard lock(m);
                if (failures++ == 0) first_failure = e.what();
            }
        }
    };
    std::string base = "unit-race-" + std::to_string(::getpid());
    std::thread a(churn, base + "-a");
    std::thread b(churn, base + "-b");
    a.join();
    b.join();
    EXPECT_EQ(failures.load(), 0) << first_failure;
}

// The warmup's child makes a no-op migration and is reaped: the caller's cgroups are as they were and
// no child of it is left, zombie or not.
TEST(SysCgroup, MigrationWarmupMovesNothingAndLeavesNoChild) {
    std::string before = sys::read_file("/proc/self/cgroup");
    { sys::MigrationWarmup warm; }
    EXPECT_EQ(sys::read_file("/proc/self/cgroup"), before);
    errno = 0;
    EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
}

TEST(SysHex, RoundTripsAndRefusesWhatIsNotHex) {
    std::vector<uint8_t> bytes = {0x00, 0x0f, 0xa5, 0xff, 0x10};
    EXPECT_EQ(sys::hex(bytes), "000fa5ff10");
    EXPECT_EQ(sys::unhex("000fa5ff10"), bytes);
    EXPECT_EQ(sys::unhex("000FA5FF10"), bytes);
    EXPECT_TRUE(sys::unhex("").empty());
    EXPECT_THROW(sys::unhex("abc"), Error);
    EXPECT_THROW(sys::unhex("0g"), Error);
    EXPECT_THROW(sys::unhex("+1"), Error);
}
