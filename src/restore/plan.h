// What a RestorePlan holds between its two stages (src/restore/restore.cpp builds it, execute.cpp
// runs it). Self-contained: copies of what execute needs, no reference into the image or the sandbox.
#pragma once

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "initless/restore/restore.h"
#include "initless/sys/tracee.h"
#include "pages/strategy.h"
#include "state/kinds.h"
#include "state/table.h"

namespace initless::restore {

using Clock = std::chrono::steady_clock;

// Milliseconds since `t`, which moves to now (for the Timings laps).
inline double ms_since(Clock::time_point& t) {
    auto now = Clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - t).count();
    t = now;
    return ms;
}

inline constexpr uint64_t kMainStack = 64 * 1024;
inline constexpr uint64_t kThreadStack = 16 * 1024;

// What one process of the tree runs: its main table, and one table per further thread.
struct ProcessPlan {
    pid_t pid = 0;  // in the sandbox
    state::Table table;
    uint64_t table_addr = 0;
    std::vector<state::Table> per_thread;  // [0] unused: the leader runs the main table
    std::vector<uint64_t> thread_tables;
    std::vector<state::FinalThread> threads;  // [0] the leader
    uint64_t vdso_start = 0;
    std::vector<size_t> forks;      // processes its table creates, in order
    bool seccomp_in_table = false;  // its main table installs the seccomp filter (one thread)
};

struct RestorePlan::State {
    ~State();               // kills a restorer whose plan never ran
    std::thread::id owner;  // the thread that seized the restorer: the only one ptrace answers
    std::chrono::seconds timeout{10};
    int restore_signal = 0;
    std::filesystem::path log_path;
    sandbox::ProcessHandle helper;
    sys::Tracee main;
    uint64_t base = 0, region_size = 0, stacks = 0, vdso_syscall_offset = 0;
    // The sandbox's seccomp filter as a sock_fprog in the stub region (0: none) and its flags.
    uint64_t seccomp_prog = 0;
    unsigned seccomp_flags = 0;
    std::vector<ProcessPlan> procs;
    Timings timings;
    std::unique_ptr<pages::Attachment> memory;  // the strategy's side of execute (lazy), or null
    bool executed = false;
};

}  // namespace initless::restore
