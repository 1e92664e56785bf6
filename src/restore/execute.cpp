// Stage 2 of a restore (on the request path): runs the tables prepare wrote into the restorer,
// collects every process and thread it creates, sets their final state and detaches.
#include <elf.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include <spdlog/spdlog.h>

#include "initless/sys/error.h"
#include "initless/sys/fault.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "initless/sys/tracee.h"
#include "restore/plan.h"

namespace initless::restore {

namespace {

std::string log_tail(const std::filesystem::path& log, size_t bytes) {
    try {
        std::string all = sys::read_file(log);
        return all.size() > bytes ? all.substr(all.size() - bytes) : all;
    } catch (const Error&) {
        return "(no log)";
    }
}

// Kills the watched processes if not dismissed (destroyed) within `limit`.
class Watchdog {
  public:
    Watchdog(pid_t pid, std::chrono::milliseconds limit)
        : pids_{pid}, thread_([this, limit] {
              std::unique_lock lock(mutex_);
              if (!cv_.wait_for(lock, limit, [this] { return done_; }))
                  for (pid_t p : pids_) sys::send_signal(p, SIGKILL);
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

// Tasks of the pid namespace `pidns` (a /proc/PID/ns/pid link) traced by this process: after a
// failure, a child a table forked that we never adopted (its parent died before reporting the fork
// event) is one, and as a traced zombie it would keep the sandbox's init from exiting.
std::vector<pid_t> unadopted_tracees(const std::string& pidns) {
    std::vector<pid_t> out;
    if (pidns.empty()) return out;
    std::error_code ec;
    std::string me = std::to_string(::getpid());
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = e.path().filename().string();
        if (name.empty() || name[0] < '0' || name[0] > '9') continue;
        try {
            if (sys::read_link(e.path() / "ns/pid") != pidns) continue;
            auto status = sys::read_status(std::stoi(name));
            if (status.count("TracerPid") && status["TracerPid"] == me) out.push_back(std::stoi(name));
        } catch (const std::exception&) {
        }
    }
    return out;
}

std::string describe_stop(pid_t tid, int status) {
    if (WIFSTOPPED(status)) {
        return fmt::format("stopped by signal {} ({}) at rip {:#x}", WSTOPSIG(status),
                           strsignal(WSTOPSIG(status)), sys::stopped_instruction_pointer(tid));
    }
    if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
    return fmt::format("exited with status {}", WEXITSTATUS(status));
}

// With INITLESS_RESTORE_PROFILE set, prints the slowest ops of a table (TSC cycles) to stderr.
void profile_table(pid_t pid, uint64_t addr, const state::Table& t) {
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

void check_table(pid_t pid, uint64_t addr, const state::Table& t, const char* which) {
    stub_table head{};
    sys::read_process_memory(pid, addr, &head, sizeof head);
    if (head.done != t.size())
        throw Error(fmt::format("{} table failed at op {} of {} ({}): {}", which, head.failed_op, t.size(),
                                t.what(head.failed_op),
                                head.failed_result < 0 && head.failed_result > -4096
                                    ? std::strerror(static_cast<int>(-head.failed_result))
                                    : fmt::format("unexpected result {:#x}", head.failed_result)));
}

// Whether process `index`'s table stopped at one of its pause ops; if so, the strategy acts on it.
bool paused(pid_t pid, const ProcessPlan& plan, pages::Attachment& memory, size_t index) {
    stub_table head{};
    sys::read_process_memory(pid, plan.table_addr, &head, sizeof head);
    if (head.done >= plan.table.size() || !plan.table.pauses_at(head.done)) return false;
    memory.on_pause(index, pid, head.slots);
    return true;
}

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
    if (std::this_thread::get_id() != st.owner)
        throw Error("RestorePlan::execute must run on the thread that ran prepare (the restorer's tracer)");
    st.executed = true;
    // A stub blocked in a syscall (it should never be) must not hang the controller: past the
    // function's timeout the restored processes are killed, every wait below returns, and the
    // restore fails.
    Watchdog watchdog(st.helper.host_pid, st.timeout);
    auto t0 = Clock::now();
    auto lap = t0;
    Timings& tm = st.timings;
    const auto& procs = st.procs;
    const uint64_t base = st.base, region_size = st.region_size, stacks = st.stacks;
    const size_t n = procs.size();

    std::vector<sys::Tracee> leaders(n);
    std::vector<pid_t> host(n, 0);
    leaders[0] = std::move(st.main);
    host[0] = st.helper.host_pid;
    std::map<pid_t, sys::Tracee> threads;     // host tid -> tracee, for threads the tables created
    std::vector<std::vector<pid_t>> born(n);  // per process: host tids in creation order
    std::string pidns;                        // for the clean-up of a failure only
    try {
        pidns = sys::read_link(fmt::format("/proc/{}/ns/pid", host[0]));
    } catch (const Error&) {
    }
    try {
        // Main tables, one process after the other: a process exists once its forker's table has
        // run. Waits only on our own tracees: the controller may have other children.
        for (size_t i = 0; i < n; ++i) {
            const auto& plan = procs[i];
            sys::Tracee& leader = leaders[i];
            start_table(leader, base, plan.table_addr, base + region_size - 64);
            if (i == 0 && sys::fault_requested("restore:kill-restorer")) sys::send_signal(host[0], SIGKILL);
            size_t created = 0;
            for (;;) {
                // The watchdog kills the tree at st.timeout; the wait ends shortly after at worst.
                int status = leader.wait_event(st.timeout + std::chrono::seconds(2));
                if (!WIFSTOPPED(status))
                    throw Error(fmt::format("restored process {}: {}; log: {}", procs[i].pid,
                                            describe_stop(host[i], status), log_tail(st.log_path, 500)));
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
                if (WSTOPSIG(status) == SIGTRAP) {
                    // A pause the memory strategy planned (the table goes on when resumed), or the end.
                    if (st.memory && paused(host[i], plan, *st.memory, i)) {
                        leader.resume();
                        continue;
                    }
                    break;
                }
                throw Error(fmt::format("restored process {} {} while running its table", procs[i].pid,
                                        describe_stop(host[i], status)));
            }
            check_table(host[i], plan.table_addr, plan.table, "main");
            profile_table(host[i], plan.table_addr, plan.table);
            if (born[i].size() != plan.threads.size() - 1)
                throw Error(fmt::format("process {}: {} of {} threads were created", procs[i].pid,
                                        born[i].size(), plan.threads.size() - 1));
        }
        tm.layout_ms = ms_since(lap);
        sys::maybe_inject_fault("restore:tables");

        // Per-thread tables of every process, all started, then all collected. A table created
        // its threads in order, so the k-th clone event is thread k.
        for (size_t i = 0; i < n; ++i)
            for (size_t k = 1; k < procs[i].threads.size(); ++k)
                start_table(threads.at(born[i][k - 1]), base, procs[i].thread_tables[k - 1],
                            stacks + k * kThreadStack - 64);
        for (size_t i = 0; i < n; ++i)
            for (size_t k = 1; k < procs[i].threads.size(); ++k) {
                sys::Tracee& th = threads.at(born[i][k - 1]);
                int status = th.wait_stop();
                if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
                    throw Error(fmt::format("thread {}: {}", procs[i].threads[k].tid,
                                            describe_stop(th.tid(), status)));
                check_table(host[i], procs[i].thread_tables[k - 1], procs[i].per_thread[k], "thread");
                state::threads::set_final_state(th, procs[i].threads[k]);
            }
        tm.threads_ms = ms_since(lap);

        // A process with several threads installs the sandbox's seccomp filter in all of them at
        // once (TSYNC) now that every table has run, so no op of ours runs filtered: the last
        // syscall of the restore but the stub's munmap (which the filter allows). A process with
        // one thread did it as its table's last op. Then it drops its stub through a syscall
        // instruction of its restored vDSO, and its leader gets its state back.
        for (size_t i = 0; i < n; ++i) {
            sys::Tracee& leader = leaders[i];
            if (st.seccomp_prog && !procs[i].seccomp_in_table) {
                auto started = Clock::now();
                user_regs_struct f = leader.regs();
                f.rip = procs[i].vdso_start + st.vdso_syscall_offset;
                f.rax = SYS_seccomp;
                f.rdi = SECCOMP_SET_MODE_FILTER;
                f.rsi = SECCOMP_FILTER_FLAG_TSYNC | st.seccomp_flags;
                f.rdx = st.seccomp_prog;
                f.orig_rax = static_cast<uint64_t>(-1);
                leader.set_regs(f);
                leader.single_step_and_wait();
                auto r = static_cast<long>(leader.regs().rax);
                if (r != 0)
                    throw Error(fmt::format("installing the seccomp filter in process {} failed: {}",
                                            procs[i].pid,
                                            r < 0 ? std::strerror(static_cast<int>(-r))
                                                  : fmt::format("thread {} could not be synchronised", r)));
                tm.seccomp_ms += std::chrono::duration<double, std::milli>(Clock::now() - started).count();
            }
            user_regs_struct g = leader.regs();
            g.rip = procs[i].vdso_start + st.vdso_syscall_offset;
            g.rax = SYS_munmap;
            g.rdi = base;
            g.rsi = region_size;
            g.orig_rax = static_cast<uint64_t>(-1);
            leader.set_regs(g);
            leader.single_step_and_wait();
            if (static_cast<long>(leader.regs().rax) != 0)
                throw Error(fmt::format("unmapping the restorer stub of process {} failed", procs[i].pid));
            state::threads::set_final_state(leader, procs[i].threads.at(0));
        }
        sys::maybe_inject_fault("restore:finish");
    } catch (...) {
        // A half-built process must never run: every process of the tree dies with the restore.
        // Each of its threads is our tracee, so its death is ours to collect before the sandbox's
        // init can reap it: a zombie left traced would hang init, and the sandbox teardown with it.
        std::vector<pid_t> tids;
        for (pid_t pid : host)
            if (pid > 0) tids.push_back(pid);
        for (const auto& [tid, th] : threads) tids.push_back(tid);
        for (pid_t tid : unadopted_tracees(pidns))
            if (std::find(tids.begin(), tids.end(), tid) == tids.end()) tids.push_back(tid);
        std::vector<pid_t> left = sys::kill_and_collect(tids, std::chrono::seconds(3));
        for (auto& leader : leaders) leader.release();
        for (auto& [tid, th] : threads) th.release();
        if (!left.empty())
            spdlog::warn("restore failed and {} of its tasks were not collected within 3 s (first: {})",
                         left.size(), left.front());
        throw;
    }
    for (auto& [tid, th] : threads) th.detach();
    for (auto& leader : leaders) leader.detach();
    // The background fill (lazy) starts once the restore is done: until then it would only compete
    // with the restore's last steps for the CPU (faults are answered all along).
    if (st.memory) st.memory->on_restored();
    // The opt-in post-restore notice, to the first process: pending before any request is forwarded.
    if (int sig = st.restore_signal) sys::send_signal(host[0], sig);
    tm.finish_ms = ms_since(lap);
    tm.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    Restored out{std::move(st.helper), tm, host, st.memory ? st.memory->release() : nullptr};
    return out;
}

}  // namespace initless::restore
