// Threads and registers. Checkpoint: each thread's tid as the sandbox sees it (glibc caches it),
// name, general registers and xstate, signal mask, rseq, robust list (ptrace), and what only the
// thread can tell (clear-tid address, sigaltstack) by injected syscalls. Restore: the leader's table
// clones every further thread with its tid (clone3 set_tid); each thread's own table sets its name,
// rseq, robust list, clear-tid address and sigaltstack; registers, xstate and masks are set through
// ptrace when the tables have run (a syscall interrupted by the freeze restarts).
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "state/kinds.h"

namespace initless::state::threads {

namespace {

constexpr size_t kRegCount = sizeof(user_regs_struct) / sizeof(unsigned long long);

json regs_json(const user_regs_struct& r) {
    const auto* p = reinterpret_cast<const unsigned long long*>(&r);
    return std::vector<unsigned long long>(p, p + kRegCount);
}

user_regs_struct regs_from(const json& j) {
    auto v = j.get<std::vector<unsigned long long>>();
    if (v.size() != kRegCount) throw Error("manifest: register set has the wrong size");
    user_regs_struct r{};
    std::memcpy(&r, v.data(), sizeof r);
    return r;
}

void read_thread(sys::Tracee& t, uint64_t gadget, MemoryReader& mem, image::Thread& th) {
    th.tid = ns_id(sys::read_status(t.tid()).at("NSpid"));
    th.comm = sys::read_file(fmt::format("/proc/{}/comm", t.tid()));
    if (!th.comm.empty() && th.comm.back() == '\n') th.comm.pop_back();
    th.regs = t.regs();
    th.xstate = t.xstate();
    th.sigmask = t.signal_mask();
    auto rseq = t.rseq();
    th.rseq = {rseq.address, rseq.length, rseq.signature};
    auto robust = t.robust_list();
    th.robust_list = robust.head;
    th.robust_list_len = robust.length;

    uint64_t scratch = scratch_below_stack(th.regs);
    long r = t.inject_syscall(gadget, SYS_prctl, {PR_GET_TID_ADDRESS, scratch});
    if (r != 0)
        throw Error(fmt::format("prctl(PR_GET_TID_ADDRESS) in tid {}: {}", t.tid(),
                                std::strerror(static_cast<int>(-r))));
    th.clear_child_tid = mem.read<uint64_t>(scratch);
    r = t.inject_syscall(gadget, SYS_sigaltstack, {0, scratch});
    if (r != 0)
        throw Error(fmt::format("sigaltstack in tid {}: {}", t.tid(), std::strerror(static_cast<int>(-r))));
    auto ss = mem.read<stack_t>(scratch);
    th.altstack_sp = reinterpret_cast<uint64_t>(ss.ss_sp);
    th.altstack_size = ss.ss_size;
    th.altstack_flags = ss.ss_flags;
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

}  // namespace

void read(Frozen& f, MemoryReader& mem) {
    for (size_t i = 0; i < f.threads.size(); ++i) {
        auto& t = f.threads[i];
        image::Thread th;
        read_thread(t, f.gadget, mem, th);
        th.seccomp_mode = i < f.seccomp_modes.size() ? f.seccomp_modes[i] : 0;
        f.p.threads.push_back(std::move(th));
    }
}

void store(json& j, const image::Process& p) {
    json threads = json::array();
    for (const auto& t : p.threads)
        threads.push_back({{"tid", t.tid},
                           {"comm", t.comm},
                           {"regs", regs_json(t.regs)},
                           {"xstate", hex(t.xstate)},
                           {"sigmask", t.sigmask},
                           {"rseq", {t.rseq.address, t.rseq.length, t.rseq.signature}},
                           {"robust_list", {t.robust_list, t.robust_list_len}},
                           {"clear_child_tid", t.clear_child_tid},
                           {"altstack", {t.altstack_sp, t.altstack_size, t.altstack_flags}}});
    j["threads"] = std::move(threads);
}

void load(const json& j, image::Process& p) {
    for (const auto& t : j.at("threads")) {
        image::Thread th;
        th.tid = t.at("tid");
        th.comm = t.at("comm");
        th.regs = regs_from(t.at("regs"));
        th.xstate = unhex(t.at("xstate"));
        th.sigmask = t.at("sigmask");
        th.rseq = {t.at("rseq")[0], t.at("rseq")[1], t.at("rseq")[2]};
        th.robust_list = t.at("robust_list")[0];
        th.robust_list_len = t.at("robust_list")[1];
        th.clear_child_tid = t.at("clear_child_tid");
        th.altstack_sp = t.at("altstack")[0];
        th.altstack_size = t.at("altstack")[1];
        th.altstack_flags = t.at("altstack")[2];
        p.threads.push_back(std::move(th));
    }
}

void plan_clones(Table& t, Region& region, const image::Process& p, uint64_t stacks, uint64_t stack_size) {
    for (size_t i = 1; i < p.threads.size(); ++i) {
        clone_args ca{};
        ca.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
        ca.stack = stacks + (i - 1) * stack_size;
        ca.stack_size = stack_size;
        ca.set_tid = region.put(p.threads[i].tid);
        ca.set_tid_size = 1;
        t.op(SYS_clone3, {region.put(ca), sizeof ca}, -1, 0, {},
             fmt::format("clone3 thread {}", p.threads[i].tid));
    }
}

void plan_thread(Table& t, Region& region, const image::Thread& th) {
    t.op(SYS_getpid, {}, kTgid, 0, {}, "getpid");
    t.op(SYS_gettid, {}, kSelfTid, 0, {}, "gettid");
    if (!th.comm.empty())
        t.op(SYS_prctl, {PR_SET_NAME, region.put_string(th.comm)}, -1, STUB_OP_ALLOW_FAIL, {}, "thread name");
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
        t.op(SYS_sigaltstack, {region.put(ss), 0}, -1, 0, {}, "sigaltstack");
    }
}

FinalThread final_state(const image::Thread& th) {
    FinalThread f{th.tid, th.regs, th.xstate, th.sigmask};
    fix_syscall_restart(f.regs);
    return f;
}

void set_final_state(sys::Tracee& t, const FinalThread& f) {
    t.set_regs(f.regs);
    t.set_xstate(f.xstate);
    t.set_signal_mask(f.sigmask);
}

}  // namespace initless::state::threads
