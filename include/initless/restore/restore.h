// Restore: rebuilds an image's process tree inside a prepared sandbox. The controller plans; the
// restored processes execute: init spawns an empty process at the first process's pid holding a
// small stub, and the controller feeds the stub one table of syscalls per process. The first table
// unmaps the helper, makes what several processes share (pipes, sockets, shared memory) at fixed
// fds, and forks the other processes with their pids (clone3 set_tid; each inherits the stub and
// those fds); every process's table then sets its session and group, forks its own children, moves
// the vDSO block, lays out every VMA, fills memory by the chosen strategy, recreates fds, signal
// state, mm fields and threads (clone3 set_tid). Per-thread state runs in each thread's own short
// table. Then registers are set through ptrace and everything is detached. Ptrace round trips are
// per thread and per process, never per VMA or per page.
//   eager: anonymous memory is allocated and filled from pages.img (pread inside the process).
//   cow:   anonymous VMAs with saved pages map their pages.img range MAP_PRIVATE: cost independent of
//          size, and instances share the page cache. Long runs of dirty pages in file mappings are
//          mapped from the image too; short ones are copied.
//   prefetch: cow, then the image's working set (the pages the first request after a restore
//          touched, recorded at snapshot) is installed in bulk with MADV_POPULATE_{WRITE,READ}
//          instead of one ~15 us fault per page (REAP's idea, in the kernel's own bulk path).
//   lazy:  private anonymous memory is registered with a userfaultfd and served by our page server
//          (include/initless/pages/page_server.h): faults answered in growing chunks, the rest
//          filled in the background, working set first. The restore's cost is independent of size.
// Each strategy is a pages::MemoryStrategy (src/pages/strategy.h); each kind of state plans its own
// ops (src/state/kinds.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "initless/image/image.h"
#include "initless/pages/page_server.h"
#include "initless/sandbox/sandbox.h"

namespace initless::restore {

enum class Strategy { Eager, Cow, Prefetch, Lazy };
Strategy parse_strategy(const std::string& name);  // throws on an unknown name
const char* strategy_name(Strategy s);

struct Timings {
    // Stage 1, `RestorePlan::prepare` (off the request path, with the pre-started sandbox):
    double spawn_ms = 0;  // restorer process created and seized
    double plan_ms = 0;   // syscall tables built and written into it
    // Stage 2, `RestorePlan::execute` (on the request path):
    double layout_ms = 0;   // the main table: memory, fds, signals, mm, thread creation
    double threads_ms = 0;  // per-thread tables
    double finish_ms = 0;   // registers set, seccomp filter installed, stub unmapped, detached
    double seccomp_ms = 0;  // of finish_ms: installing the sandbox's seccomp filter (all processes)
    double total_ms = 0;    // of execute (restore_into: of both stages)
    uint64_t ops = 0;
};

struct Restored {
    sandbox::ProcessHandle process;  // the first process of the tree
    Timings timings;
    std::vector<pid_t> host_pids;  // every process, in the image's order (host pid namespace)
    // Under lazy: the memory the page server goes on serving (figures, completion); else null.
    std::shared_ptr<pages::ServedMemory> served;
};

// The seed paper's two-stage restore. `prepare` runs when a sandbox is pre-started for a function:
// it spawns the restorer at the image's pid, seizes it, builds the syscall tables and writes them
// in. `execute` runs when a request arrives. Both throw initless::Error with context; after a
// failure the sandbox is unusable and should be torn down. A plan dropped (or assigned over)
// without `execute` kills its restorer.
//
// Threads: the restorer is traced by the thread that ran `prepare`, and the kernel answers ptrace
// requests only from the tracer thread; with PTRACE_O_EXITKILL the restorer is killed when that
// THREAD exits. So `execute` must run on the thread that ran `prepare` (it throws otherwise), and
// that thread must live until `execute` has returned or the plan is dropped. A pool that prepares
// on one thread and serves requests on others must hand the `execute` call to the preparing thread.
// Other members (moving, destroying) may be called from any thread, one at a time.
//
// Lifetimes: `prepare` copies what `execute` needs; the plan keeps no reference to the image or the
// sandbox passed to it (either may be moved or dropped after `prepare` returns). The sandbox's
// processes must still exist when `execute` runs: tearing the sandbox down kills the restorer.
class RestorePlan {
  public:
    static RestorePlan prepare(sandbox::Sandbox& sandbox, const image::Image& image, Strategy strategy);
    Restored execute();

    RestorePlan(RestorePlan&&) noexcept;
    RestorePlan& operator=(RestorePlan&&) noexcept;
    ~RestorePlan();

  private:
    struct State;
    explicit RestorePlan(std::unique_ptr<State> s);
    std::unique_ptr<State> s_;
};

// The pages of `process`'s VMAs (as recorded in `image`) that are present in the running process
// `host_pid` now: after a restore and one request, that request's working set. `process_index` is
// the process's place in the image.
std::vector<image::WorkingSetRun> record_working_set(pid_t host_pid, const image::Process& process,
                                                     uint64_t process_index);

// Both stages back to back, on the calling thread. The sandbox must be prepared and not started.
Restored restore_into(sandbox::Sandbox& sandbox, const image::Image& image, Strategy strategy);

}  // namespace initless::restore
