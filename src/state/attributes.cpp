// Process and thread attributes a function may set and nothing else restores: prctl state
// (personality, child subreaper, dumpable, THP disable, KSM merge, memory-deny-write-execute, parent
// death signal, securebits and keep-caps, timer slack, TSC access, machine-check kill policy,
// speculation control), oom_score_adj, membarrier registrations, and scheduling (policy,
// nice, priority, affinity). Checkpoint reads what /proc shows from the host and the rest by prctl or
// membarrier injected into each thread; scheduling and affinity are kept only where they differ from
// the sandbox's init (which every restored process inherits them from). Restore: each is set by the
// process itself, those its children inherit (subreaper) before its forks, the per-mm ones after its
// memory is laid out, per-thread ones in each thread's table before its capabilities are set.
// Not readable, so not restored: a GLOBAL_EXPEDITED membarrier registration older than the kernel's
// GET_REGISTRATIONS (this kernel has it), the Yama ptracer (PR_SET_PTRACER; Yama is off here).
// Not open to a function (it holds no capability): PR_SET_IO_FLUSHER (CAP_SYS_RESOURCE).
#include <fcntl.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/process.h"
#include "state/kinds.h"

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#endif
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif
#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

namespace initless::state::attributes {

namespace {

constexpr int kSpeculation[] = {PR_SPEC_STORE_BYPASS, PR_SPEC_INDIRECT_BRANCH, PR_SPEC_L1D_FLUSH};
// The registrations restore makes again (the REGISTER_* bits GET_REGISTRATIONS reports).
constexpr int kMembarrierRegistrations[] = {
    MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ};

// struct sched_attr (SCHED_ATTR_SIZE_VER1), absent from this libc's headers.
struct SchedAttr {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
    uint32_t sched_util_min, sched_util_max;
};
constexpr uint64_t kSchedFlagUtilClamp = 0x20 | 0x40;     // SCHED_FLAG_UTIL_CLAMP_MIN | _MAX
constexpr uint64_t kSchedFlagsKept = 0x01 | 0x02 | 0x04;  // RESET_ON_FORK, RECLAIM, DL_OVERRUN

SchedAttr sched_of(pid_t tid) {
    SchedAttr a{};
    if (::syscall(SYS_sched_getattr, tid, &a, sizeof a, 0) != 0)
        throw sys::SysError(fmt::format("sched_getattr of {}", tid), errno);
    return a;
}

std::vector<uint64_t> sched_words(const SchedAttr& a) {
    return {a.sched_policy,
            a.sched_flags & kSchedFlagsKept,
            static_cast<uint64_t>(static_cast<int64_t>(a.sched_nice)),
            a.sched_priority,
            a.sched_runtime,
            a.sched_deadline,
            a.sched_period,
            a.sched_util_min,
            a.sched_util_max};
}

std::vector<uint64_t> affinity_of(pid_t tid) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(tid, sizeof set, &set) != 0)
        throw sys::SysError(fmt::format("sched_getaffinity of {}", tid), errno);
    std::vector<uint64_t> words(sizeof set / 8);
    std::memcpy(words.data(), &set, sizeof set);
    while (!words.empty() && words.back() == 0) words.pop_back();
    return words;
}

// An injected syscall that must work: its failure fails the checkpoint (nothing is dropped).
long must(sys::Tracee& t, uint64_t gadget, long nr, std::initializer_list<uint64_t> args, const char* what) {
    long r = t.inject_syscall(gadget, nr, args);
    if (r < 0 && r > -4096)
        throw Error(fmt::format("{} in thread {}: {}", what, t.tid(), std::strerror(static_cast<int>(-r))));
    return r;
}

// An injected query this kernel may not know (EINVAL): `fallback` then.
long optional(sys::Tracee& t, uint64_t gadget, long nr, std::initializer_list<uint64_t> args, long fallback,
              const char* what) {
    long r = t.inject_syscall(gadget, nr, args);
    if (r == -EINVAL) return fallback;
    if (r < 0 && r > -4096)
        throw Error(fmt::format("{} in thread {}: {}", what, t.tid(), std::strerror(static_cast<int>(-r))));
    return r;
}

int read_int(MemoryReader& mem, uint64_t addr) {
    return mem.read<int>(addr);
}

}  // namespace

void read(Frozen& f, MemoryReader& mem, pid_t init) {
    image::ProcessAttributes& a = f.p.attrs;
    sys::Tracee& leader = f.threads.front();
    uint64_t scratch = scratch_below_stack(leader.regs());
    // The audit login uid: restore cannot set it (the kernel lets a uid be set once, with
    // CAP_AUDIT_CONTROL), and a restored process inherits the sandbox init's.
    std::string loginuid = sys::read_file(fmt::format("/proc/{}/loginuid", f.host));
    std::string init_loginuid = sys::read_file(fmt::format("/proc/{}/loginuid", init));
    if (loginuid != init_loginuid)
        throw ContractError(fmt::format(
            "process {} has audit login uid {} (/proc/{}/loginuid), not the sandbox's {}; rule: leave the "
            "login uid as it was (restore cannot set it again)",
            f.host, loginuid, f.host, init_loginuid));
    a.personality = hex_u64(sys::read_file(fmt::format("/proc/{}/personality", f.host)));
    a.oom_score_adj = std::stoi(sys::read_file(fmt::format("/proc/{}/oom_score_adj", f.host)));
    must(leader, f.gadget, SYS_prctl, {PR_GET_CHILD_SUBREAPER, scratch}, "prctl(PR_GET_CHILD_SUBREAPER)");
    a.child_subreaper = read_int(mem, scratch) != 0;
    a.dumpable =
        static_cast<int>(must(leader, f.gadget, SYS_prctl, {PR_GET_DUMPABLE}, "prctl(PR_GET_DUMPABLE)"));
    a.thp_disable = must(leader, f.gadget, SYS_prctl, {PR_GET_THP_DISABLE}, "prctl(PR_GET_THP_DISABLE)") != 0;
    a.memory_merge =
        optional(leader, f.gadget, SYS_prctl, {PR_GET_MEMORY_MERGE}, 0, "prctl(PR_GET_MEMORY_MERGE)");
    a.mdwe =
        static_cast<uint64_t>(optional(leader, f.gadget, SYS_prctl, {PR_GET_MDWE}, 0, "prctl(PR_GET_MDWE)"));
    a.membarrier =
        static_cast<uint64_t>(must(leader, f.gadget, SYS_membarrier, {MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0},
                                   "membarrier(GET_REGISTRATIONS)"));

    SchedAttr init_sched = sched_of(init);
    std::vector<uint64_t> init_affinity = affinity_of(init);
    for (size_t i = 0; i < f.threads.size(); ++i) {
        sys::Tracee& t = f.threads[i];
        image::ThreadAttributes& ta = f.p.threads.at(i).attrs;
        uint64_t s = scratch_below_stack(t.regs());
        must(t, f.gadget, SYS_prctl, {PR_GET_PDEATHSIG, s}, "prctl(PR_GET_PDEATHSIG)");
        ta.pdeath_signal = read_int(mem, s);
        ta.securebits = static_cast<uint64_t>(
            must(t, f.gadget, SYS_prctl, {PR_GET_SECUREBITS}, "prctl(PR_GET_SECUREBITS)"));
        ta.timerslack_ns = static_cast<uint64_t>(
            must(t, f.gadget, SYS_prctl, {PR_GET_TIMERSLACK}, "prctl(PR_GET_TIMERSLACK)"));
        ta.tsc = PR_TSC_ENABLE;
        if (optional(t, f.gadget, SYS_prctl, {PR_GET_TSC, s}, -1, "prctl(PR_GET_TSC)") == 0)
            ta.tsc = read_int(mem, s);
        ta.mce_kill = must(t, f.gadget, SYS_prctl, {PR_MCE_KILL_GET, 0, 0, 0, 0}, "prctl(PR_MCE_KILL_GET)");
        ta.speculation.clear();
        for (int which : kSpeculation)
            ta.speculation.push_back(optional(
                t, f.gadget, SYS_prctl, {PR_GET_SPECULATION_CTRL, static_cast<uint64_t>(which), 0, 0, 0}, -1,
                "prctl(PR_GET_SPECULATION_CTRL)"));
        SchedAttr sa = sched_of(t.tid());
        if (sched_words(sa) != sched_words(init_sched)) ta.sched = sched_words(sa);
        if (auto aff = affinity_of(t.tid()); aff != init_affinity) ta.affinity = aff;
    }
}

void store(json& j, const image::Process& p) {
    const auto& a = p.attrs;
    j["attributes"] = {a.personality, a.child_subreaper, a.dumpable,  a.thp_disable, a.memory_merge,
                       a.mdwe,        a.oom_score_adj,   a.membarrier};
    for (size_t i = 0; i < p.threads.size(); ++i) {
        const auto& t = p.threads[i].attrs;
        j.at("threads").at(i)["attributes"] = {{"pdeath_signal", t.pdeath_signal},
                                               {"securebits", t.securebits},
                                               {"timerslack_ns", t.timerslack_ns},
                                               {"tsc", t.tsc},
                                               {"mce_kill", t.mce_kill},
                                               {"speculation", t.speculation},
                                               {"sched", t.sched},
                                               {"affinity", t.affinity}};
    }
}

void load(const json& j, image::Process& p) {
    const auto& a = j.at("attributes");
    p.attrs = {a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]};
    for (size_t i = 0; i < p.threads.size(); ++i) {
        const auto& t = j.at("threads").at(i).at("attributes");
        auto& ta = p.threads[i].attrs;
        ta.pdeath_signal = t.at("pdeath_signal");
        ta.securebits = t.at("securebits");
        ta.timerslack_ns = t.at("timerslack_ns");
        ta.tsc = t.at("tsc");
        ta.mce_kill = t.at("mce_kill");
        ta.speculation = t.at("speculation").get<std::vector<int64_t>>();
        ta.sched = t.at("sched").get<std::vector<uint64_t>>();
        ta.affinity = t.at("affinity").get<std::vector<uint64_t>>();
    }
}

void plan_before_forks(Table& t, const image::Process& p) {
    // Children forked afterwards inherit "has a subreaper above": orphans of theirs come to us.
    if (p.attrs.child_subreaper)
        t.op(SYS_prctl, {PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0}, -1, 0, {}, "prctl PR_SET_CHILD_SUBREAPER");
}

void plan_process(Table& t, Region& region, const image::Process& p) {
    const auto& a = p.attrs;
    t.op(SYS_personality, {a.personality}, -1, 0, {}, fmt::format("personality {:#x}", a.personality));
    t.op(SYS_prctl, {PR_SET_DUMPABLE, static_cast<uint64_t>(a.dumpable), 0, 0, 0}, -1, 0, {},
         "prctl PR_SET_DUMPABLE");
    t.op(SYS_prctl, {PR_SET_THP_DISABLE, a.thp_disable ? 1u : 0u, 0, 0, 0}, -1, 0, {},
         "prctl PR_SET_THP_DISABLE");
    if (a.memory_merge)
        t.op(SYS_prctl, {PR_SET_MEMORY_MERGE, 1, 0, 0, 0}, -1, 0, {}, "prctl PR_SET_MEMORY_MERGE");
    for (int cmd : kMembarrierRegistrations)
        if (a.membarrier & static_cast<uint64_t>(cmd))
            t.op(SYS_membarrier, {static_cast<uint64_t>(cmd), 0, 0}, -1, 0, {},
                 fmt::format("membarrier register {:#x}", cmd));
    std::string adj = std::to_string(a.oom_score_adj);
    t.op(SYS_open, {region.put_string("/proc/self/oom_score_adj"), O_WRONLY | O_CLOEXEC}, kTmp, 0, {},
         "open /proc/self/oom_score_adj");
    t.op(SYS_write, {0, region.put(adj.data(), adj.size(), 1), adj.size()}, -1, STUB_OP_EXPECT_ARG2,
         {{0, kTmp}}, "oom_score_adj " + adj);
    t.op(SYS_close, {0}, -1, 0, {{0, kTmp}}, "close oom_score_adj");
}

void plan_last(Table& t, const image::Process& p) {
    // Memory-deny-write-execute last: it would refuse the layout's own protection changes.
    if (p.attrs.mdwe) t.op(SYS_prctl, {PR_SET_MDWE, p.attrs.mdwe, 0, 0, 0}, -1, 0, {}, "prctl PR_SET_MDWE");
}

void plan_thread(Table& t, Region& region, const image::Thread& th) {
    const auto& a = th.attrs;
    t.op(SYS_prctl, {PR_SET_SECUREBITS, a.securebits, 0, 0, 0}, -1, 0, {}, "prctl PR_SET_SECUREBITS");
    t.op(SYS_prctl, {PR_SET_TIMERSLACK, a.timerslack_ns, 0, 0, 0}, -1, 0, {}, "prctl PR_SET_TIMERSLACK");
    if (a.pdeath_signal)
        t.op(SYS_prctl, {PR_SET_PDEATHSIG, static_cast<uint64_t>(a.pdeath_signal), 0, 0, 0}, -1, 0, {},
             "prctl PR_SET_PDEATHSIG");
    if (a.mce_kill != PR_MCE_KILL_DEFAULT)
        t.op(SYS_prctl, {PR_MCE_KILL, PR_MCE_KILL_SET, static_cast<uint64_t>(a.mce_kill), 0, 0}, -1, 0, {},
             "prctl PR_MCE_KILL");
    for (size_t i = 0; i < a.speculation.size() && i < std::size(kSpeculation); ++i) {
        int64_t v = a.speculation[i];
        if (v < 0 || !(v & PR_SPEC_PRCTL)) continue;  // not controllable by prctl: nothing was set
        uint64_t state = (v & PR_SPEC_FORCE_DISABLE)    ? PR_SPEC_FORCE_DISABLE
                         : (v & PR_SPEC_DISABLE_NOEXEC) ? PR_SPEC_DISABLE_NOEXEC
                         : (v & PR_SPEC_DISABLE)        ? PR_SPEC_DISABLE
                                                        : PR_SPEC_ENABLE;
        if (state == PR_SPEC_ENABLE) continue;  // the default of a fresh task
        t.op(SYS_prctl, {PR_SET_SPECULATION_CTRL, static_cast<uint64_t>(kSpeculation[i]), state, 0, 0}, -1, 0,
             {}, "prctl PR_SET_SPECULATION_CTRL");
    }
    if (a.sched.size() == 9) {
        SchedAttr s{};
        s.size = sizeof s;
        s.sched_policy = static_cast<uint32_t>(a.sched[0]);
        s.sched_flags = a.sched[1];
        s.sched_nice = static_cast<int32_t>(static_cast<int64_t>(a.sched[2]));
        s.sched_priority = static_cast<uint32_t>(a.sched[3]);
        s.sched_runtime = a.sched[4];
        s.sched_deadline = a.sched[5];
        s.sched_period = a.sched[6];
        s.sched_util_min = static_cast<uint32_t>(a.sched[7]);
        s.sched_util_max = static_cast<uint32_t>(a.sched[8]);
        // Clamps read 0/0 on a kernel without uclamp (this one), 0/1024 when never set.
        bool clamped = s.sched_util_max != 0 && (s.sched_util_min != 0 || s.sched_util_max != 1024);
        if (clamped) s.sched_flags |= kSchedFlagUtilClamp;
        t.op(SYS_sched_setattr, {0, region.put(s), 0}, -1, 0, {}, "sched_setattr");
    }
    if (!a.affinity.empty())
        t.op(SYS_sched_setaffinity,
             {0, a.affinity.size() * 8, region.put(a.affinity.data(), a.affinity.size() * 8)}, -1, 0, {},
             "sched_setaffinity");
}

void plan_thread_last(Table& t, const image::Thread& th) {
    // With PR_TSC_SIGSEGV the thread's next rdtsc faults: the stub's op timing included.
    if (th.attrs.tsc != PR_TSC_ENABLE)
        t.op(SYS_prctl, {PR_SET_TSC, static_cast<uint64_t>(th.attrs.tsc), 0, 0, 0}, -1, STUB_OP_NO_CLOCK, {},
             "prctl PR_SET_TSC");
}

}  // namespace initless::state::attributes
