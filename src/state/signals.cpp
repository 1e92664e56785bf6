// Signals: actions, and signals queued for a thread or its whole process (masks travel with each
// thread's final state, see threads.cpp). Checkpoint reads actions by injected rt_sigaction (any
// failure fails the checkpoint: no action is dropped silently) and queued signals with their siginfo
// without dequeuing them (PTRACE_PEEKSIGINFO). Restore: every signal stays blocked until ptrace sets
// the final masks; actions by rt_sigaction; queued signals go back with their siginfo (a process may
// queue anything, any si_code, to itself).
#include <signal.h>
#include <sys/syscall.h>

#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "state/kinds.h"

namespace initless::state::signals {

namespace {

struct KernelSigaction {
    uint64_t handler, flags, restorer, mask;
};

std::vector<std::vector<uint8_t>> queued(const sys::Tracee& t, bool shared) {
    auto out = t.queued_signals(shared);
    if (out.size() == 64)
        throw ContractError(
            fmt::format("thread {} has 64 or more queued signals; rule: none pile up when ready", t.tid()));
    return out;
}

json hex_list(const std::vector<std::vector<uint8_t>>& v) {
    json out = json::array();
    for (const auto& b : v) out.push_back(hex(b));
    return out;
}

std::vector<std::vector<uint8_t>> unhex_list(const json& j) {
    std::vector<std::vector<uint8_t>> out;
    for (const auto& s : j) out.push_back(unhex(s.get<std::string>()));
    return out;
}

int signal_of(const std::vector<uint8_t>& info) {
    int sig = 0;
    std::memcpy(&sig, info.data(), sizeof sig);
    return sig;
}

}  // namespace

void read(Frozen& f, MemoryReader& mem) {
    sys::Tracee& leader = f.threads.front();
    uint64_t scratch = scratch_below_stack(leader.regs());
    for (int sig = 1; sig <= 64; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        long r =
            leader.inject_syscall(f.gadget, SYS_rt_sigaction, {static_cast<uint64_t>(sig), 0, scratch, 8});
        if (r != 0)
            throw Error(fmt::format("rt_sigaction({}) in process {}: {}", sig, f.host,
                                    std::strerror(static_cast<int>(-r))));
        auto a = mem.read<KernelSigaction>(scratch);
        if (a.handler == 0 && a.flags == 0 && a.mask == 0) continue;
        f.p.actions.push_back({sig, a.handler, a.flags, a.restorer, a.mask});
    }
    f.p.pending_shared = queued(leader, true);
    for (size_t i = 0; i < f.threads.size(); ++i) f.p.threads.at(i).pending = queued(f.threads[i], false);
}

void store(json& j, const image::Process& p) {
    json actions = json::array();
    for (const auto& a : p.actions) actions.push_back({a.signal, a.handler, a.flags, a.restorer, a.mask});
    j["actions"] = std::move(actions);
    j["pending_shared"] = hex_list(p.pending_shared);
    // Per thread, beside the thread's own record (threads.cpp stores those first).
    for (size_t i = 0; i < p.threads.size(); ++i)
        j.at("threads").at(i)["pending"] = hex_list(p.threads[i].pending);
}

void load(const json& j, image::Process& p) {
    for (const auto& a : j.at("actions")) p.actions.push_back({a[0], a[1], a[2], a[3], a[4]});
    p.pending_shared = unhex_list(j.at("pending_shared"));
    for (size_t i = 0; i < p.threads.size(); ++i)
        p.threads[i].pending = unhex_list(j.at("threads").at(i).at("pending"));
}

void plan_block_all(Table& t, Region& region) {
    // Threads and forked processes inherit this mask: nothing is delivered to a half-built process.
    uint64_t all_signals = ~uint64_t{0};
    t.op(SYS_rt_sigprocmask, {SIG_SETMASK, region.put(all_signals), 0, 8}, -1, 0, {}, "block signals");
}

void plan_actions(Table& t, Region& region, const image::Process& p) {
    for (const auto& a : p.actions) {
        KernelSigaction ksa{a.handler, a.flags, a.restorer, a.mask};
        t.op(SYS_rt_sigaction, {static_cast<uint64_t>(a.signal), region.put(ksa), 0, 8}, -1, 0, {},
             fmt::format("sigaction {}", a.signal));
    }
}

void plan_process_queue(Table& t, Region& region, const image::Process& p) {
    for (const auto& info : p.pending_shared) {
        int sig = signal_of(info);
        t.op(SYS_rt_sigqueueinfo, {0, static_cast<uint64_t>(sig), region.put(info.data(), info.size())}, -1,
             0, {{0, kTgid}}, fmt::format("queue signal {}", sig));
    }
}

void plan_thread_queue(Table& t, Region& region, const image::Thread& th) {
    for (const auto& info : th.pending) {
        int sig = signal_of(info);
        t.op(SYS_rt_tgsigqueueinfo, {0, 0, static_cast<uint64_t>(sig), region.put(info.data(), info.size())},
             -1, 0, {{0, kTgid}, {1, kSelfTid}}, fmt::format("queue thread signal {}", sig));
    }
}

}  // namespace initless::state::signals
