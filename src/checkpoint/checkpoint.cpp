// The checkpoint driver: freezes the tree, asks each kind of state (src/state/kinds.h) to read its
// part of every process, links what processes share, writes the pages and publishes the image.
#include "initless/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>

#include <fmt/format.h>
#include <thread>

#include "initless/image/image.h"
#include "initless/seccomp/profile.h"
#include "initless/sys/fault.h"
#include "initless/sys/file.h"
#include "initless/sys/inspect.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"
#include "initless/sys/tracee.h"
#include "initless/sys/tree.h"
#include "state/kinds.h"

namespace initless::checkpoint {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {
double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Each kind of state reads its part of every frozen process.
void read_members(std::vector<state::Frozen>& members, pid_t init, const struct stat& log,
                  const std::map<uint64_t, sys::UnixSocketDiag>& unix_sockets,
                  state::CheckpointContext& context, const std::vector<sock_filter>& sandbox_filter) {
    for (auto& m : members) {
        m.gadget = sys::find_syscall_instruction(m.host);
        state::MemoryReader mem(m.host);
        state::tree::read(m);
        state::credentials::read(m);
        state::credentials::read_seccomp(m, sandbox_filter);  // before the first injected syscall
        state::files::read_process(m);
        state::mm::read(m);
        state::threads::read(m, mem);
        state::signals::read(m, mem);
        state::timers::read(m, mem);
        state::attributes::read(m, mem, init);
        m.p.vmas = state::memory::read(m.host);
        m.p.fds = state::fds::read(m, log, unix_sockets, context);
    }
    state::MemoryReader mem(members.front().host);
    state::ipc::check(members.front(), mem);
}

// A frozen process cannot exit by itself, but it can be killed (SIGKILL, the OOM killer): then the
// reads fail with whatever came first (ptrace ESRCH, an empty maps file). This names the cause.
void one_died_pass(const std::vector<state::Frozen>& members, const Error& first);

// Copies the tree of the directory fd `from` into `staging`/`name`.
void copy_tree_out(const sys::UniqueFd& from, const fs::path& staging, const std::string& name,
                   const std::string& what) {
    fs::path to = staging / name;
    sys::check(::mkdir(to.c_str(), 0700), "mkdir " + to.string());
    sys::UniqueFd dest = sys::open_file(to, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    sys::copy_tree_at(from.get(), dest.get(), nullptr, what);
}

void throw_if_one_died(const std::vector<state::Frozen>& members, const Error& first) {
    // A SIGKILLed task fails ptrace at once, but its process shows Z or X only when its death is
    // done: look again for up to 1 s before calling the first error the cause.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    do {
        one_died_pass(members, first);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (std::chrono::steady_clock::now() < deadline);
}

void one_died_pass(const std::vector<state::Frozen>& members, const Error& first) {
    for (const auto& m : members) {
        std::string state;
        try {
            auto status = sys::read_status(m.host);
            state = status.count("State") ? status["State"] : "";
        } catch (const Error&) {
            state = "gone";
        }
        if (state == "gone" || state.rfind("Z", 0) == 0 || state.rfind("X", 0) == 0)
            throw Error(
                fmt::format("process {} of the function died during the checkpoint ({}); nothing "
                            "was published (first error: {})",
                            m.host, state, first.what()));
    }
}
}  // namespace

Stats checkpoint(const Target& target, const fs::path& image_dir, const image::Key& key,
                 const std::function<void(const fs::path& staging)>& before_publish) {
    auto t0 = Clock::now();
    Stats stats;
    if (sys::proc_children(target.init_host_pid).empty())
        throw Error("the sandbox has no function process to snapshot");
    image::Manifest manifest;
    manifest.function = target.function;
    manifest.function_dir = target.function_dir.string();
    manifest.port = target.port;
    manifest.kernel = image::kernel_release();
    manifest.vdso_size = image::current_vdso_size();
    manifest.seccomp_filter = seccomp::to_bytes(target.seccomp_filter);
    manifest.seccomp_flags = target.seccomp_flags;
    manifest.created = std::to_string(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now()));

    state::CheckpointContext context;
    context.refuse_tcp_connections = target.refuse_tcp_connections;
    context.port = target.port;
    if (target.upper_dir.empty()) {
        std::vector<std::string> kept;
        for (const auto& dir : target.rw_dirs) {
            fs::path d = dir.lexically_normal();
            kept.push_back((d.has_filename() ? d : d.parent_path()).string());  // "/data/": "/data"
        }
        for (const auto& [inside, saved] : image::kTmpfsDirs) kept.emplace_back(inside);
        context.root_kept_dirs = std::move(kept);
    }
    image::ImageWriter writer(image_dir, key);
    std::vector<state::Frozen> members = state::tree::freeze(target.init_host_pid);
    // On failure, each process's other threads are let go before its leader: a dead leader's end
    // is reported to us (and it can be collected, then reaped by init) only after theirs.
    struct LeadersLast {
        std::vector<state::Frozen>& members;
        ~LeadersLast() {
            for (auto& m : members)
                while (!m.threads.empty()) m.threads.pop_back();
        }
    } leaders_last{members};
    state::clocks::read(manifest);
    if (!target.skip_net_sysctls) state::net_sysctls::read(manifest, target.init_host_pid);
    stats.freeze_ms = ms_since(t0);
    // Test-only: the function dies while frozen (as if it exited during the checkpoint).
    if (sys::fault_requested("checkpoint:function-exits")) sys::send_signal(members.front().host, SIGKILL);
    {
        sys::UniqueFd netns = sys::open_file(fmt::format("/proc/{}/ns/net", target.init_host_pid), O_RDONLY);
        auto unix_sockets = sys::unix_socket_diag(netns.get());
        struct stat log = sys::stat_path(target.log_path);
        if (!target.stdin_path.empty()) context.stdio_in = sys::stat_path(target.stdin_path);
        if (!target.stderr_path.empty()) context.stdio_err = sys::stat_path(target.stderr_path);
        try {
            read_members(members, target.init_host_pid, log, unix_sockets, context, target.seccomp_filter);
        } catch (const ContractError&) {
            throw;
        } catch (const Error& e) {
            throw_if_one_died(members, e);
            throw;
        }
    }
    {
        state::tree::link(members, target.init_host_pid);
        state::fds::link(members);
        std::vector<image::PageRun> runs;
        try {
            sys::UniqueFd out = sys::open_file(writer.pages_path(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            uint64_t cursor = 0;
            for (auto& m : members)
                state::memory::dump_pages(m.host, m.p.vmas, out.get(), cursor, manifest, runs);
            sys::check(::ftruncate(out.get(), static_cast<off_t>(cursor)), "truncate pages.img");
            manifest.pages_file_size = cursor;
        } catch (const Error& e) {
            throw_if_one_died(members, e);  // killed while frozen (SIGKILL, the OOM killer): say so
            throw;
        }
        for (auto& m : members) {
            ++stats.processes;
            stats.threads += m.p.threads.size();
            stats.vmas += m.p.vmas.size();
            stats.fds += m.p.fds.size();
        }
        // The writable layer and the tmpfs dirs are copied while the function is still frozen (it
        // cannot change them under the copy, nor swap a directory for a symlink), through directory
        // fds only: a symlink it planted is copied as a link, never followed (sys/tree.h).
        pid_t first = members.front().host;
        if (!target.upper_dir.empty())
            copy_tree_out(sys::open_file(target.upper_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW),
                          writer.staging(), image::kUpperTree, "the writable layer");
        if (!target.rw_dirs.empty()) {
            sys::check(::mkdir((writer.staging() / image::kRwDirsTree).c_str(), 0700), "mkdir rw dirs tree");
            for (const auto& dir : target.rw_dirs) {
                fs::path rel = dir.lexically_normal().relative_path();
                if (rel.empty() || *rel.begin() == "..")
                    throw Error(fmt::format("rw dir '{}' is not a directory below the root", dir.string()));
                fs::path saved = fs::path(image::kRwDirsTree) / rel;
                fs::create_directories(writer.staging() / saved.parent_path());
                copy_tree_out(sys::open_in_root_of(first, "/" + rel.string(), O_RDONLY | O_DIRECTORY),
                              writer.staging(), saved.string(), "rw dir " + dir.string());
            }
        }
        // /tmp and /dev/shm are tmpfs of the sandbox, outside the writable layer: kept beside it.
        for (const auto& [inside, saved] : image::kTmpfsDirs)
            copy_tree_out(sys::open_in_root_of(first, inside, O_RDONLY | O_DIRECTORY), writer.staging(),
                          saved, std::string("the sandbox's ") + inside);
        for (auto& m : members) manifest.processes.push_back(std::move(m.p));
        members.clear();
        writer.publish(manifest, runs, before_publish);
    }
    stats.notes = std::move(context.notes);
    stats.pages_written = manifest.pages_written;
    stats.zero_pages_skipped = manifest.zero_pages_skipped;
    stats.image_bytes = static_cast<uint64_t>(sys::stat_path(image_dir / "pages.img").st_blocks) * 512;
    stats.total_ms = ms_since(t0);
    stats.dump_ms = stats.total_ms - stats.freeze_ms;
    return stats;
}

}  // namespace initless::checkpoint
