// Stage 1 of a restore (off the request path): spawns the restorer, seizes it, and builds every
// process's syscall tables by asking each kind of state (src/state/kinds.h) for its ops, in the
// order the kernel needs them. Stage 2 is execute.cpp.
#include "initless/restore/restore.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <algorithm>

#include <fmt/format.h>

#include "initless/seccomp/profile.h"
#include "initless/sys/error.h"
#include "initless/sys/fault.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "initless/sys/tree.h"
#include "pages/strategy.h"
#include "restore/plan.h"

extern "C" const uint8_t initless_stub_begin[];
extern "C" const uint8_t initless_stub_end[];

namespace initless::restore {

namespace {

using image::kPageSize;
using state::kImg;
using state::kLog;
using state::page_up;
using state::Region;
using state::Table;
const pages::MemoryStrategy& memory_strategy(Strategy s) {
    switch (s) {
        case Strategy::Eager:
            return pages::eager();
        case Strategy::Cow:
            return pages::cow();
        case Strategy::Lazy:
            return pages::lazy();
        case Strategy::Prefetch:
            break;
    }
    return pages::prefetch();
}

// Chooses the stub's address: a hole no VMA of any process of the image uses.
std::vector<uint64_t> stub_candidates(const std::vector<image::Process>& procs, uint64_t size) {
    std::vector<uint64_t> out;
    for (uint64_t base = 0x10000000000ULL; base < 0x7f0000000000ULL && out.size() < 6;
         base += 0x13000000000ULL) {
        bool clash = false;
        for (const auto& p : procs)
            for (const auto& v : p.vmas)
                if (v.start < base + size + (1 << 20) && v.end + (1 << 20) > base) clash = true;
        if (!clash) out.push_back(base);
    }
    if (out.empty()) throw Error("no free address range for the restorer stub");
    return out;
}

// Bytes of region data an fd's ops may point at (paths, addresses, queued data, registrations).
uint64_t fd_data_estimate(const image::Fd& f) {
    return 64 + std::visit(
                    [](const auto& o) {
                        uint64_t n = 0;
                        if constexpr (requires { o.path; }) n += o.path.size() + 1;
                        if constexpr (requires { o.address; }) n += o.address.size();
                        if constexpr (requires { o.options; }) n += 8 * o.options.size();
                        if constexpr (requires { o.unread; }) n += 2 * o.unread.size();
                        if constexpr (requires { o.queued; })
                            n += 2 * o.queued.size() + 8 * o.message_sizes.size();
                        if constexpr (requires { o.targets; }) n += 64 * o.targets.size();
                        return n;
                    },
                    f.object);
}

// The region holds the stub's code, every table and its data, and the stacks: sized generously,
// ops for every VMA, run (a run over 1 GiB takes several), fd, signal and thread.
uint64_t region_size_for(const image::Image& img, size_t code_size, size_t max_threads) {
    const auto& procs = img.manifest.processes;
    uint64_t est_ops = 64, est_data = 65536;
    for (const auto& p : procs) {
        est_ops += 64 + p.vmas.size() * 8 + p.fds.size() * 16 + p.actions.size() + p.rlimits.size() +
                   p.pending_shared.size() + p.threads.size() * (CAP_LAST_CAP + 24) + procs.size() * 2 +
                   p.posix_timers.size() * 2;
        est_data += 4096 + p.threads.size() * 4096 + p.mm.auxv.size() + p.pending_shared.size() * 128 +
                    p.posix_timers.size() * 160;
        for (const auto& v : p.vmas)
            est_data += v.name.size() + 1 + (v.saved_pages * kPageSize >> 30) * sizeof(stub_op);
        for (const auto& f : p.fds) est_data += fd_data_estimate(f);
        for (const auto& th : p.threads) est_data += th.pending.size() * 128 + th.comm.size() + 1;
    }
    est_ops += img.runs.size() + img.working_set.size();
    est_data += img.manifest.seccomp_filter.size() + 64;
    return page_up(page_up(code_size) + page_up(est_ops * sizeof(stub_op) + est_data) + kMainStack +
                   max_threads * kThreadStack);
}

// The first process's own start: it takes the helper apart (every signal blocked, its rseq
// unregistered, its fds and mappings gone but the stub and the vDSO block), then makes what several
// processes share at the fixed numbers of FdLayout.
void plan_helper_teardown(Table& t, Region& region, const state::FdLayout& L,
                          const std::vector<std::pair<uint64_t, uint64_t>>& helper_unmap,
                          const sys::RseqConfig& helper_rseq) {
    state::signals::plan_block_all(t, region);
    if (helper_rseq.length)
        t.op(SYS_rseq,
             {helper_rseq.address, helper_rseq.length, 1 /* RSEQ_FLAG_UNREGISTER */, helper_rseq.signature},
             -1, 0, {}, "rseq unregister");
    // The userfaultfd device first: its fd 4 may be the image's number in the layout.
    if (L.uffd_device)
        t.op(SYS_dup3,
             {static_cast<uint64_t>(sandbox::Sandbox::kRestorerUffdDeviceFd),
              static_cast<uint64_t>(L.uffd_device), O_CLOEXEC},
             state::kUffdDevice, 0, {}, "move userfaultfd device fd");
    t.op(SYS_dup3,
         {static_cast<uint64_t>(sandbox::Sandbox::kRestorerPagesFd), static_cast<uint64_t>(L.img), O_CLOEXEC},
         kImg, 0, {}, "move image fd");
    t.op(SYS_dup3, {1, static_cast<uint64_t>(L.log), O_CLOEXEC}, kLog, 0, {}, "keep log fd");
    // The other stdio fds, for LogFd streams 0 and 2 (an OCI container's stdin and stderr); the
    // restorer may have none.
    t.op(SYS_dup3, {0, static_cast<uint64_t>(L.log_in), O_CLOEXEC}, -1, STUB_OP_ALLOW_FAIL, {}, "keep stdin");
    t.op(SYS_dup3, {2, static_cast<uint64_t>(L.log_err), O_CLOEXEC}, -1, STUB_OP_ALLOW_FAIL, {},
         "keep stderr");
    for (int fd : {0, 1, 2, sandbox::Sandbox::kRestorerPagesFd, sandbox::Sandbox::kRestorerUffdDeviceFd})
        if (fd != L.img && fd != L.log && fd != L.log_in && fd != L.log_err)
            t.op(SYS_close, {static_cast<uint64_t>(fd)}, -1, STUB_OP_ALLOW_FAIL, {}, "close helper fd");
    for (auto [s, e] : helper_unmap)
        t.op(SYS_munmap, {s, e - s}, -1, 0, {}, fmt::format("munmap helper {:#x}", s));
}

// A thread's own table: its state, capabilities and queued signals.
void plan_thread_table(Table& t, Region& region, const image::Thread& th, const image::Credentials& creds) {
    state::threads::plan_thread(t, region, th);
    state::attributes::plan_thread(t, region, th);
    state::credentials::plan_thread(t, region, creds);
    state::signals::plan_thread_queue(t, region, th);
    state::attributes::plan_thread_last(t, th);
}

// The main table of process `index`. It starts in a process holding only the stub region, the
// helper's vDSO block and the fds of FdLayout, with every signal blocked: the first process once
// its table has taken the helper apart, every other one as its forker's copy.
void plan_process(ProcessPlan& plan, Region& region, const image::Image& img, size_t index, size_t forker,
                  const state::FdLayout& layout, const state::VdsoBlock& helper_vdso, uint64_t park,
                  uint64_t stacks, const pages::MemoryStrategy& memory, uint64_t seccomp_prog,
                  unsigned seccomp_flags) {
    const auto& procs = img.manifest.processes;
    const image::Process& p = procs[index];
    Table& t = plan.table;
    if (index > 0) {
        t.preset(kImg, static_cast<uint64_t>(layout.img));
        t.preset(kLog, static_cast<uint64_t>(layout.log));
        if (layout.uffd_device) t.preset(state::kUffdDevice, static_cast<uint64_t>(layout.uffd_device));
    }
    t.op(SYS_getpid, {}, state::kTgid, 0, {}, "getpid");
    state::attributes::plan_before_forks(t, p);
    state::tree::plan(t, region, procs, index, forker, plan.forks);
    plan.vdso_start = state::mm::plan_vdso(t, p, helper_vdso, park);
    state::memory::plan(t, region, img, index, layout, memory);
    // Test-only: an op of the stub fails for real, in the last process's table, between its memory
    // and its fds (the stub reports it; the restore must end and leave nothing).
    if (index + 1 == procs.size() && sys::fault_requested("restore:stub-op"))
        t.op(SYS_close, {~0ULL}, -1, 0, {}, "injected fault: close(-1)");
    state::fds::plan(t, region, p, layout);
    state::credentials::plan_limits(t, region, p);
    state::files::plan_process(t, region, p);
    state::timers::plan(t, region, p);
    state::signals::plan_actions(t, region, p);
    state::mm::plan(t, region, p);
    state::attributes::plan_process(t, region, p);
    t.op(SYS_close, {0}, -1, 0, {{0, kImg}}, "close image");
    // The function never keeps /dev/userfaultfd (its seccomp filter denies making a userfaultfd).
    if (layout.uffd_device)
        t.op(SYS_close, {0}, -1, 0, {{0, state::kUffdDevice}}, "close userfaultfd device");
    state::signals::plan_process_queue(t, region, p);
    state::credentials::plan_inherited(t, p.creds);
    state::attributes::plan_last(t, p);
    state::threads::plan_clones(t, region, p, stacks, kThreadStack);
    state::timers::plan_posix(t, region, p);
    // Without no_new_privs, installing a filter takes CAP_SYS_ADMIN, which the capset below drops for
    // a process that does not keep it (Docker's default: no no-new-privileges, no CAP_SYS_ADMIN; the
    // install failed with EPERM). The filter then goes in before that capset, over every thread made
    // above (TSYNC), and what follows runs filtered: the leader's thread state and capset, the other
    // threads' tables, as runc's process runs filtered from its filter to its exec. With no_new_privs
    // it comes last, below.
    bool before_capset = seccomp_prog && !p.creds.no_new_privs;
    if (before_capset) {
        t.op(SYS_seccomp, {SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC | seccomp_flags, seccomp_prog},
             -1, 0, {}, "seccomp filter (no no_new_privs: before the capset)");
        plan.seccomp_in_table = true;
    }
    plan_thread_table(t, region, p.threads.at(0), p.creds);
    // A process with one thread installs the seccomp filter as its table's last op (no stop of its
    // own on the request path); one with more threads does it once their tables have run too
    // (execute.cpp), since those run after this one.
    if (seccomp_prog && !before_capset && p.threads.size() == 1) {
        t.op(SYS_seccomp, {SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC | seccomp_flags, seccomp_prog},
             -1, 0, {}, "seccomp filter");
        plan.seccomp_in_table = true;
    }
    plan.table_addr = t.place(region);
    plan.per_thread.resize(p.threads.size());
    for (size_t i = 1; i < p.threads.size(); ++i) {
        plan_thread_table(plan.per_thread[i], region, p.threads[i], p.creds);
        plan.thread_tables.push_back(plan.per_thread[i].place(region));
    }
    plan.pid = p.pid;
    for (const auto& th : p.threads) plan.threads.push_back(state::threads::final_state(th));
}

}  // namespace

Strategy parse_strategy(const std::string& name) {
    if (name == "eager") return Strategy::Eager;
    if (name == "cow") return Strategy::Cow;
    if (name == "prefetch" || name == "auto") return Strategy::Prefetch;
    if (name == "lazy") return Strategy::Lazy;
    throw Error(fmt::format("unknown restore strategy '{}' (known: eager, cow, prefetch, lazy, auto)", name));
}

const char* strategy_name(Strategy s) {
    switch (s) {
        case Strategy::Eager:
            return "eager";
        case Strategy::Cow:
            return "cow";
        case Strategy::Prefetch:
            return "prefetch";
        case Strategy::Lazy:
            return "lazy";
    }
    return "?";
}

RestorePlan::State::~State() {
    // A plan never executed leaves a half-built process: kill it (init reaps it).
    if (!executed && helper.host_pid > 0) {
        // We trace it: collect its death so that init can reap it (bounded: see kill_and_collect).
        sys::kill_and_collect({helper.host_pid}, std::chrono::seconds(3));
        main.release();
    }
}

RestorePlan::RestorePlan(std::unique_ptr<State> s) : s_(std::move(s)) {}
RestorePlan::RestorePlan(RestorePlan&&) noexcept = default;
RestorePlan& RestorePlan::operator=(RestorePlan&&) noexcept = default;
RestorePlan::~RestorePlan() = default;

RestorePlan RestorePlan::prepare(sandbox::Sandbox& sb, const image::Image& img, Strategy strategy) {
    auto st = std::make_unique<State>();
    st->owner = std::this_thread::get_id();
    st->timeout = std::chrono::seconds(sb.spec().timeout_s);
    st->restore_signal = sb.spec().restore_signal;
    st->log_path = sb.log_path();
    auto lap = Clock::now();
    Timings& tm = st->timings;
    const auto& procs = img.manifest.processes;
    if (procs.empty()) throw Error("the image holds no process");
    for (const auto& p : procs) state::credentials::check_allowed(p, sb.runtime_spec());
    const pages::MemoryStrategy& memory = memory_strategy(strategy);

    size_t code_size = static_cast<size_t>(initless_stub_end - initless_stub_begin);
    size_t max_threads = 1;
    for (const auto& p : procs) max_threads = std::max(max_threads, p.threads.size());
    const uint64_t region_size = region_size_for(img, code_size, max_threads);

    // The image's /tmp and /dev/shm, checked against their MAC as they are copied (image/auth.h).
    // The sandbox's tmpfs mounts belong to its user namespace, which does not map our ids: the files
    // are made as its root.
    for (const auto& [inside, saved] : image::kTmpfsDirs)
        if (img.has_tree(saved)) {
            auto [uid, gid] = sb.root_ids();
            sys::FsIdentity as_sandbox_root(uid, gid);
            image::copy_tree(img, saved,
                             sys::open_in_root_of(sb.init_pid(), inside, O_RDONLY | O_DIRECTORY).get());
        }
    for (const auto& p : procs) state::memory::verify_mapped_files(sb.init_pid(), p);
    // The restored function runs under its sandbox's filter, the one the image was checkpointed
    // under: an image made under another filter (or none) is not restored into this sandbox.
    const auto& image_filter = img.manifest.seccomp_filter;
    const auto& sandbox_filter = sb.seccomp_filter();
    if (!seccomp::same_program(seccomp::from_bytes(image_filter), sandbox_filter.bpf) ||
        img.manifest.seccomp_flags != sandbox_filter.flags)
        throw Error(fmt::format(
            "the image's seccomp filter ({} instructions) is not the one the function's spec asks for "
            "now ({} instructions, seccomp = \"{}\"); make the image again",
            image_filter.size() / sizeof(sock_filter), sandbox_filter.bpf.size(), sb.spec().seccomp));
    sys::UniqueFd pages = img.open_pages();  // the file load verified, not what its path names now
    memory.prepare_pages(img, pages.get(), [&](const std::string& path) {
        return sys::open_in_root_of(sb.init_pid(), path, O_RDONLY | O_CLOEXEC);
    });
    // Inside the sandbox's user namespace the userfaultfd syscall makes only user-mode-only ones
    // (vm.unprivileged_userfaultfd = 0 and no CAP_SYS_PTRACE over the host), whose kernel-mode
    // faults (a read() into a served page) would fail with EFAULT: the restored process makes its
    // userfaultfd through /dev/userfaultfd, opened here.
    sys::UniqueFd uffd_device;
    if (memory.uses_userfaultfd()) uffd_device = sys::open_file("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    sandbox::ProcessHandle& helper = st->helper;
    uint64_t base = 0;
    std::string spawn_errors;
    uint64_t reserve = ::getenv("INITLESS_NO_RESERVE") ? 0 : memory.warm_reserve(img);
    reserve = std::min<uint64_t>(reserve + (4 << 20), 1ULL << 30);
    auto [monotonic, boottime] = state::clocks::offsets(img.manifest);
    sandbox::ClockOffsets clocks{monotonic, boottime};
    for (uint64_t candidate : stub_candidates(procs, region_size)) {
        try {
            helper = sb.spawn_restorer(procs[0].pid, candidate, region_size, pages.get(), reserve, clocks,
                                       uffd_device ? uffd_device.get() : -1);
            base = candidate;
            break;
        } catch (const Error& e) {
            spawn_errors += std::string(e.what()) + "; ";
        }
    }
    if (!base) throw Error("cannot start the restorer: " + spawn_errors);
    pid_t hpid = helper.host_pid;
    // PTRACE_O_EXITKILL: the restorer dies with this thread (see restore.h).
    st->main = sys::Tracee::seize(hpid, PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_EXITKILL);
    tm.spawn_ms = ms_since(lap);
    sys::maybe_inject_fault("restore:prepare");

    // What the helper holds that must go: every mapping but the stub and the vDSO block.
    std::vector<std::pair<uint64_t, uint64_t>> helper_unmap, helper_vdso;
    for (const auto& m : sys::read_maps(hpid)) {
        if (m.start == base) continue;
        if (m.path == "[vvar]" || m.path == "[vvar_vclock]" || m.path == "[vdso]")
            helper_vdso.push_back({m.start, m.end});
        else if (m.path != "[vsyscall]")
            helper_unmap.push_back({m.start, m.end});
    }
    state::VdsoBlock hv = state::mm::vdso_block(helper_vdso);
    uint64_t vdso_syscall_offset = sys::find_syscall_instruction(hpid) - hv.start;

    Region region(base, code_size);
    if (!image_filter.empty()) {
        // Inherited by every process of the tree (the region is copied by each fork).
        uint64_t code = region.put(image_filter.data(), image_filter.size());
        sock_fprog prog{static_cast<unsigned short>(image_filter.size() / sizeof(sock_filter)),
                        reinterpret_cast<sock_filter*>(code)};
        st->seccomp_prog = region.put(prog);
        st->seccomp_flags = img.manifest.seccomp_flags;
    }
    state::FdLayout layout = state::fds::layout(procs);
    if (uffd_device) layout.uffd_device = layout.lift++;
    uint64_t stacks = base + region_size - kMainStack - (max_threads - 1) * kThreadStack;
    uint64_t park = base + region_size + (1 << 20);  // where a vDSO block waits when old and new overlap
    std::vector<size_t> forker_of = state::tree::forkers(procs);
    st->procs.resize(procs.size());
    for (size_t i = 1; i < procs.size(); ++i) st->procs[forker_of[i]].forks.push_back(i);
    plan_helper_teardown(st->procs[0].table, region, layout, helper_unmap, st->main.rseq());
    state::fds::plan_shared(st->procs[0].table, region, procs, layout);
    state::net_sysctls::plan(st->procs[0].table, region, img.manifest);
    for (size_t i = 0; i < procs.size(); ++i) {
        plan_process(st->procs[i], region, img, i, forker_of[i], layout, hv, park, stacks, memory,
                     st->seccomp_prog, st->seccomp_flags);
        tm.ops += st->procs[i].table.size();
    }
    if (page_up(code_size) + region.data_size() > region_size - kMainStack - (max_threads - 1) * kThreadStack)
        throw Error(
            fmt::format("restore plan needs {} bytes, more than the stub region holds", region.data_size()));

    sys::write_process_memory(hpid, base, initless_stub_begin, code_size);
    sys::write_process_memory(hpid, base + region.code_size(), region.data().data(), region.data_size());
    tm.plan_ms = ms_since(lap);

    st->base = base;
    st->region_size = region_size;
    st->stacks = stacks;
    st->vdso_syscall_offset = vdso_syscall_offset;
    st->memory = memory.attach(img);
    return RestorePlan(std::move(st));
}

Restored restore_into(sandbox::Sandbox& sb, const image::Image& img, Strategy strategy) {
    auto plan = RestorePlan::prepare(sb, img, strategy);
    Restored r = plan.execute();
    r.timings.total_ms += r.timings.spawn_ms + r.timings.plan_ms;
    return r;
}

}  // namespace initless::restore
