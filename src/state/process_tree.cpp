// The process tree, sessions and process groups. Checkpoint: every process below the sandbox's
// init is frozen (all its threads seized), parents first; pids, groups and sessions are read as the
// sandbox sees them, and what restore cannot rebuild is refused (a traced, zombie or stopped
// process; a thread in seccomp strict mode; a vfork in progress, checked before seizing because its
// parent never stops for ptrace; a thread with an fd table or filesystem context of its own; a session
// or group whose leader is gone or restored later). Restore: each
// process is forked by its parent's table (a further child of init by the first process, CLONE_PARENT) with
// clone3 set_tid, then calls setsid or setpgid before forking its own children.
#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "initless/sys/tracee.h"
#include "state/kinds.h"

namespace initless::state::tree {

namespace {

// Whether thread `tid` of process `pid` still exists and has not exited.
bool thread_alive(pid_t pid, pid_t tid) {
    try {
        std::string status = sys::read_file(fmt::format("/proc/{}/task/{}/status", pid, tid));
        size_t at = status.find("\nState:\t");
        return at != std::string::npos && status[at + 8] != 'Z' && status[at + 8] != 'X';
    } catch (const Error&) {
        return false;
    }
}

using Clock = std::chrono::steady_clock;

// How long the freeze may keep finding new threads and processes: a function whose threads or
// processes each start the next one (and end) stays ahead of a walk that seizes them one by one, and
// without this limit the checkpoint would never end.
constexpr auto kFreezeLimit = std::chrono::seconds(10);

Error kept_changing(const std::string& what) {
    return Error(fmt::format("{} kept changing for {} s while they were being frozen; nothing was published",
                             what, std::chrono::duration_cast<std::chrono::seconds>(kFreezeLimit).count()));
}

// Threads of `pid`, seized until the set is stable (a thread may be created while we seize).
std::vector<sys::Tracee> seize_all(pid_t pid, Clock::time_point deadline) {
    std::vector<sys::Tracee> out;
    std::set<pid_t> seized;
    for (bool grew = true; grew;) {
        grew = false;
        if (Clock::now() > deadline) throw kept_changing(fmt::format("the threads of process {}", pid));
        for (pid_t tid : sys::proc_tasks(pid)) {
            if (seized.count(tid)) continue;
            try {
                out.push_back(sys::Tracee::seize(tid));
            } catch (const sys::StopTimeout&) {
                throw;
            } catch (const Error&) {
                // A thread that ended between the listing and the seize (ESRCH, or its exit reported
                // in place of the stop) is simply not part of the snapshot; its process goes on. It may
                // have started a thread after the listing, before it ended: list again (without this, a
                // thread that starts the next and ends lost the new one; thread-chain, 8 restores in 50).
                if (tid == pid || thread_alive(pid, tid)) throw;
                seized.insert(tid);  // not tried again should it still be listed (a zombie)
                grew = true;
                continue;
            }
            seized.insert(tid);
            grew = true;
        }
    }
    // Leader first: restore builds the others from it.
    std::stable_partition(out.begin(), out.end(), [&](const sys::Tracee& t) { return t.tid() == pid; });
    return out;
}

ContractError vfork_in_progress(pid_t parent, pid_t child, const std::string& what_parent_does);

// A zombie among the function's processes. Its parent is frozen already (parents come first), so
// it may be a child that ended during the freeze, which its parent reaps once it runs again:
// freeze tries again before this becomes the refusal.
struct ZombieFound : ContractError {
    using ContractError::ContractError;
};

// Before seizing: a process someone else traces, a zombie or a stopped process cannot be restored
// as it is; nor a thread with a seccomp filter or a pending SIGTRAP.
void check_freezable(pid_t pid) {
    auto status = sys::read_status(pid);
    std::string state = status.count("State") ? status["State"] : "";
    if (!state.empty() && state[0] == 'Z' && sys::proc_tasks(pid).size() > 1)
        throw ContractError(
            fmt::format("process {}: its main thread has ended (pthread_exit) while {} other thread(s) run; "
                        "rule: the main thread of every process lives when ready (restore builds the "
                        "process from it)",
                        pid, sys::proc_tasks(pid).size() - 1));
    if (!state.empty() && state[0] == 'Z')
        throw ZombieFound(
            fmt::format("process {} has exited but was not waited for (a zombie; or it exited during the "
                        "checkpoint, after its parent was frozen); rule: reap child processes before ready",
                        pid));
    if (!state.empty() && state[0] == 'T')
        throw ContractError(
            fmt::format("process {} is stopped (job control); rule: every process runs when ready", pid));
    // Strict mode allows only read, write, exit and sigreturn: nothing the checkpoint injects.
    // Filters are read once the threads are seized (credentials::read_seccomp).
    for (pid_t tid : sys::proc_tasks(pid)) {
        std::string seccomp;
        std::map<std::string, std::string> ts;
        try {
            ts = sys::read_status(tid);
            seccomp = ts.count("Seccomp") ? ts["Seccomp"] : "0";
        } catch (const Error&) {
            continue;  // the thread has just exited
        }
        // ptrace allows one tracer per thread, and the checkpoint must be it (any thread: a process
        // may trace one thread of another).
        if (ts.count("TracerPid") && ts["TracerPid"] != "0")
            throw ContractError(fmt::format(
                "process {} thread {} is already being traced (TracerPid {} in /proc/{}/status); rule: no "
                "thread of the function is traced when ready: the checkpoint must be its only tracer",
                pid, tid, ts["TracerPid"], tid));
        // The checkpoint's injected syscalls and the restore's stub stop through SIGTRAP (a single
        // step, an int3): a SIGTRAP already pending would be delivered in their place and lost.
        constexpr uint64_t kTrap = uint64_t{1} << (SIGTRAP - 1);
        for (const char* set : {"SigPnd", "ShdPnd"})
            if (ts.count(set) && hex_u64(ts[set]) & kTrap)
                throw ContractError(fmt::format(
                    "process {} thread {} has a SIGTRAP pending ({}: {} in /proc/{}/status); rule: no "
                    "SIGTRAP pending when ready: checkpoint and restore stop the process through SIGTRAP "
                    "traps, which a pending one would take the place of",
                    pid, tid, set, ts[set], tid));
        // A vfork parent never stops for ptrace: refused before the seize would wait for it in vain.
        // (A vfork that shares the address space is found by check_no_shared_address_space too; one
        // made by clone(CLONE_VFORK) without CLONE_VM only here.)
        if (pid_t child = ts.count("State") && ts["State"].rfind("D", 0) == 0 ? sys::vfork_child_of(tid) : 0)
            throw vfork_in_progress(
                pid, child, fmt::format("(its thread {}) is {}", tid, sys::describe_thread_state(tid)));
        if (seccomp == "1")
            throw ContractError(fmt::format(
                "process {} thread {} is in seccomp strict mode (Seccomp: 1 in /proc/{}/status); rule: no "
                "seccomp strict mode when ready: the checkpoint injects syscalls strict mode kills the "
                "thread for",
                pid, tid, tid));
    }
}

// The one wording of the vfork rule: `parent` sleeps until `child` execs or exits, sharing its
// address space with it (vfork) or not (clone with CLONE_VFORK alone); `what_parent_does` says what
// we saw of it.
ContractError vfork_in_progress(pid_t parent, pid_t child, const std::string& what_parent_does) {
    bool shared = sys::same_address_space(parent, child);
    return ContractError(fmt::format(
        "processes {} and {} {} (a vfork in progress: {} waits until {} execs or exits; {} {}); rule: no "
        "vfork in progress when ready",
        parent, child,
        shared ? "share one address space" : "are parent and child of a clone with CLONE_VFORK", parent,
        child, parent, what_parent_does));
}

// Two processes sharing one address space: a vfork in progress (the parent sleeps, unstoppable by
// ptrace, until its child execs or exits), or a CLONE_VM child. Checked before seizing anything.
void check_no_shared_address_space(const std::vector<pid_t>& pids) {
    for (size_t i = 0; i < pids.size(); ++i)
        for (size_t j = i + 1; j < pids.size(); ++j) {
            if (!sys::same_address_space(pids[i], pids[j])) continue;
            // process_tree lists parents first: pids[i] is the vfork parent, unless both are
            // CLONE_VM children of a third.
            throw vfork_in_progress(pids[i], pids[j], "is " + sys::describe_thread_state(pids[i]));
        }
}

// Threads with a table of their own (unshare(CLONE_FS) or unshare(CLONE_FILES) in a thread): the
// process's fds, cwd, root and umask are read from its main thread and restore gives every thread
// those, so such a thread would come back silently changed. Checked once the threads are seized (a
// frozen thread cannot unshare, nor end and look different).
void check_threads_share_tables(pid_t pid, const std::vector<sys::Tracee>& threads) {
    for (const auto& t : threads) {
        if (t.tid() == pid) continue;
        if (!sys::same_table(pid, t.tid(), sys::SharedTable::Fs)) {
            std::string cwd;
            try {
                cwd = sys::read_link(fmt::format("/proc/{}/task/{}/cwd", pid, t.tid()));
            } catch (const Error&) {
                cwd = "?";
            }
            throw ContractError(fmt::format(
                "process {} thread {} has a filesystem context of its own (unshare(CLONE_FS): its current "
                "directory is {}, its process's {}); rule: the threads of a process share one cwd, root "
                "and umask when ready (restore gives every thread its process's)",
                pid, t.tid(), cwd, sys::read_link(fmt::format("/proc/{}/cwd", pid))));
        }
        if (!sys::same_table(pid, t.tid(), sys::SharedTable::Files))
            throw ContractError(fmt::format(
                "process {} thread {} has an fd table of its own (unshare(CLONE_FILES)); rule: the threads "
                "of "
                "a process share one fd table when ready (restore gives every thread its process's)",
                pid, t.tid()));
    }
}

// The children of `parent`, oldest first: by start time, then by pid in the sandbox's namespace,
// where a function's pids count up as it forks. Not by host pid: host pids wrap at pid_max (32768 on
// this 2-CPU machine, passed many times in a full test run), and a child forked after a wrap sorted
// before its elder sibling; a process that had joined that sibling's group then looked restored
// before its group leader, a contract error that came and went (process_tree_remote). Start times
// alone tie: they count clock ticks, and a function forks several children in one.
std::vector<pid_t> children_oldest_first(pid_t parent) {
    std::vector<std::tuple<uint64_t, pid_t, pid_t>> order;  // start, pid in the sandbox, host pid
    for (pid_t child : sys::proc_children(parent)) {
        uint64_t start = 0;
        pid_t in_sandbox = child;
        try {
            start = sys::proc_start_time(child);
            in_sandbox = ns_id(sys::read_status(child).at("NSpid"));
        } catch (const std::exception&) {
            // It ended since the listing: its place does not matter, the caller finds it gone.
        }
        order.emplace_back(start, in_sandbox, child);
    }
    std::sort(order.begin(), order.end());
    std::vector<pid_t> out;
    for (const auto& [start, in_sandbox, child] : order) out.push_back(child);
    return out;
}

// The function's processes: every descendant of init, parents before children, each one's children
// oldest first (the first child of init, the one init started, leads: restore spawns it and builds
// the rest from it).
std::vector<pid_t> process_tree(pid_t init) {
    std::vector<pid_t> out = children_oldest_first(init);
    for (size_t i = 0; i < out.size(); ++i)
        for (pid_t child : children_oldest_first(out[i])) out.push_back(child);
    return out;
}

// Session and process group of each process, as restore can rebuild them: each process is forked by
// its parent (a child of init by the first process, with CLONE_PARENT) and then may call setsid or
// setpgid, so a process is in its own session or its forker's, and in its own group, its forker's,
// or that of a group leader restored before it in the same session.
void check_sessions(const std::vector<Frozen>& ms) {
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

// Tables restore makes once per process: two processes sharing one (clone with CLONE_FILES or
// CLONE_FS but without CLONE_THREAD) would come back with a copy each, and a change one makes would
// no longer reach the other. (A shared SysV undo list needs SysV semaphores, refused by ipc.cpp;
// kcmp cannot tell two empty undo lists from one shared list.)
void check_no_shared_tables(const std::vector<Frozen>& ms) {
    struct Kind {
        sys::SharedTable which;
        const char* what;
    };
    constexpr Kind kinds[] = {{sys::SharedTable::Files, "fd table (CLONE_FILES)"},
                              {sys::SharedTable::Fs, "filesystem context: cwd, root, umask (CLONE_FS)"}};
    for (size_t i = 0; i < ms.size(); ++i)
        for (size_t j = i + 1; j < ms.size(); ++j)
            for (const auto& k : kinds)
                if (sys::same_table(ms[i].host, ms[j].host, k.which))
                    throw ContractError(fmt::format(
                        "processes {} and {} share one {}; rule: processes of the function share no "
                        "per-process table (restore gives each its own copy)",
                        ms[i].host, ms[j].host, k.what));
}

}  // namespace

namespace {
// Seizes every thread of every process, walking the tree again until it stops changing: a process
// not yet frozen may fork or spawn a thread meanwhile, a frozen one cannot.
std::vector<Frozen> freeze_once(pid_t init) {
    std::map<pid_t, Frozen> frozen;
    auto deadline = Clock::now() + kFreezeLimit;
    for (bool grew = true; grew;) {
        grew = false;
        if (Clock::now() > deadline) throw kept_changing("the function's processes");
        std::vector<pid_t> tree = process_tree(init);
        check_no_shared_address_space(tree);
        for (pid_t pid : tree) {
            if (frozen.count(pid)) continue;
            Frozen m;
            m.host = pid;
            try {
                check_freezable(pid);
                m.pidfd = sys::pidfd_open(pid);
                m.threads = seize_all(pid, deadline);
            } catch (const sys::StopTimeout& e) {
                // A vfork begun after the tree was listed above: the check there could not see it.
                if (!e.vfork_child()) throw;
                throw vfork_in_progress(
                    pid, e.vfork_child(),
                    fmt::format("(its thread {}) never stopped for ptrace, and was killed", e.tid()));
            } catch (const ContractError&) {
                throw;
            } catch (const Error& e) {
                // A process that ended between the listing and the seize. Reaped already (by init, or
                // by its parent before that was frozen): it is simply not part of the snapshot. Still
                // there, a zombie: the function exited during the checkpoint, or a process of it did.
                if (thread_alive(pid, pid)) throw;
                if (!sys::process_alive(pid)) {
                    grew = true;  // list the tree again
                    continue;
                }
                throw Error(
                    fmt::format("process {} of the function exited during the checkpoint, while it "
                                "was being frozen; nothing was published (first error: {})",
                                pid, e.what()));
            }
            check_threads_share_tables(pid, m.threads);
            frozen.emplace(pid, std::move(m));
            grew = true;
        }
    }
    std::vector<Frozen> out;
    if (frozen.empty())
        throw Error(
            "the function exited during the checkpoint: no process of it was left to freeze; nothing "
            "was published");
    for (pid_t pid : process_tree(init)) {
        Frozen& m = frozen.at(pid);
        m.status = sys::read_status(pid);
        out.push_back(std::move(m));
    }
    return out;
}
}  // namespace

std::vector<Frozen> freeze(pid_t init) {
    // A function that runs short-lived children (fork, exec, waitpid) may have one ending, or just
    // ended and not yet reaped, while its parent is frozen: everything is let go, and the parent
    // reaps it, before a second or third try. A zombie nobody reaps stays and is refused.
    constexpr int kAttempts = 3;
    for (int attempt = 1;; ++attempt) {
        try {
            return freeze_once(init);
        } catch (const ZombieFound&) {
            if (attempt == kAttempts) throw;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

void read(Frozen& f) {
    f.p.pid = ns_id(f.status.at("NSpid"));
    f.p.pgid = ns_id(f.status.at("NSpgid"));
    f.p.sid = ns_id(f.status.at("NSsid"));
}

void link(std::vector<Frozen>& tree, pid_t init) {
    std::map<pid_t, pid_t> ns_pid;  // host pid -> pid in the sandbox
    ns_pid[init] = 1;
    for (const auto& m : tree) ns_pid[m.host] = m.p.pid;
    for (auto& m : tree) {
        auto parent = ns_pid.find(static_cast<pid_t>(std::stol(m.status.at("PPid"))));
        if (parent == ns_pid.end())
            throw Error(fmt::format("process {}: its parent is outside the sandbox", m.host));
        m.p.ppid = parent->second;
    }
    check_sessions(tree);
    check_no_shared_tables(tree);
}

void store(json& j, const image::Process& p) {
    j["pid"] = p.pid;
    j["ppid"] = p.ppid;
    j["pgid"] = p.pgid;
    j["sid"] = p.sid;
}

void load(const json& j, image::Process& p) {
    p.pid = j.at("pid");
    p.ppid = j.at("ppid");
    p.pgid = j.at("pgid");
    p.sid = j.at("sid");
}

std::vector<size_t> forkers(const std::vector<image::Process>& procs) {
    std::vector<size_t> forker_of(procs.size(), 0);
    for (size_t i = 1; i < procs.size(); ++i) {
        if (procs[i].ppid == 1) continue;
        auto parent = std::find_if(procs.begin(), procs.begin() + static_cast<long>(i),
                                   [&](const image::Process& q) { return q.pid == procs[i].ppid; });
        if (parent == procs.begin() + static_cast<long>(i))
            throw Error(fmt::format("process {}: its parent {} is not listed before it", procs[i].pid,
                                    procs[i].ppid));
        forker_of[i] = static_cast<size_t>(parent - procs.begin());
    }
    return forker_of;
}

void plan(Table& t, Region& region, const std::vector<image::Process>& procs, size_t index, size_t forker,
          const std::vector<size_t>& forks) {
    const image::Process& p = procs[index];
    // Session and group before any child is forked, so the children inherit them.
    if (index > 0) {
        if (p.sid == p.pid)
            t.op(SYS_setsid, {}, -1, 0, {}, "setsid");
        else if (p.pgid == p.pid)
            t.op(SYS_setpgid, {0, 0}, -1, 0, {}, "setpgid own group");
        else if (p.pgid != procs[forker].pgid)
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
}

}  // namespace initless::state::tree
