// inotify instances. Checkpoint: each watch's wd, inode (ino, sdev) and mask from fdinfo's
// "inotify wd:.. ino:.. sdev:.. mask:.." lines; the inode's path is found by walking the mounts of
// its filesystem under the process's root (the kernel keeps no path for a watch). Refused, naming
// the watch: an inode found at no path (deleted, or hidden by a mount) or at several (hard links,
// bind mounts), since re-adding by another path would watch something else; wds other than 1..n (a
// watch was removed, or an IN_ONESHOT one fired), since a fresh instance numbers its watches from 1
// and the function holds the old numbers. Events queued at the checkpoint are dropped, which the
// snapshot's output says (the kernel itself drops events on overflow; a watcher rescans).
// Restore: inotify_init1 with the instance's flags, then inotify_add_watch of each path with its
// mask in wd order, each op checked to return its wd.
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/inspect.h"
#include "initless/sys/process.h"
#include "state/kinds.h"

namespace initless::state::inotify {

namespace {

// How many directory entries the search for one watched inode may look at before it gives up.
constexpr size_t kMaxEntriesSearched = 200000;

struct WatchInfo {
    int wd = 0;
    uint64_t ino = 0;
    dev_t dev = 0;
    uint32_t mask = 0, ignored_mask = 0;
    int handle_type = 0;
    std::vector<uint8_t> handle;  // the inode's file handle, when its filesystem gives one
};

std::vector<WatchInfo> parse_watches(const sys::FdInfo& info) {
    std::vector<WatchInfo> out;
    for (const auto& line : info.lines) {
        if (line.rfind("inotify ", 0) != 0) continue;
        unsigned wd = 0, sdev = 0, mask = 0, ignored = 0;
        unsigned long ino = 0;
        if (std::sscanf(line.c_str(), "inotify wd:%x ino:%lx sdev:%x mask:%x ignored_mask:%x", &wd, &ino,
                        &sdev, &mask, &ignored) != 5)
            throw Error("inotify fdinfo: cannot parse '" + line + "'");
        // fdinfo shows the kernel's dev_t (major << 20 | minor), stat the user's encoding.
        WatchInfo w{static_cast<int>(wd), ino, makedev(sdev >> 20, sdev & 0xfffff), mask, ignored, 0, {}};
        unsigned bytes = 0, type = 0;
        auto at = line.find("fhandle-bytes:");
        auto hex_at = line.find("f_handle:");
        if (at != std::string::npos && hex_at != std::string::npos &&
            std::sscanf(line.c_str() + at, "fhandle-bytes:%x fhandle-type:%x", &bytes, &type) == 2) {
            std::string hex = line.substr(hex_at + 9, bytes * 2);
            if (hex.size() == bytes * 2) {
                w.handle_type = static_cast<int>(type);
                w.handle = unhex(hex);
            }
        }
        out.push_back(std::move(w));
    }
    std::sort(out.begin(), out.end(), [](const WatchInfo& a, const WatchInfo& b) { return a.wd < b.wd; });
    return out;
}

std::string join_path(const std::string& dir, const std::string& rel) {
    if (rel.empty()) return dir;
    return dir == "/" ? "/" + rel : dir + "/" + rel;
}

// `path` below `dir` (component-wise): what follows it ("" for dir itself), or nullopt.
std::optional<std::string> below(const std::string& dir, const std::string& path) {
    if (dir == "/") return path == "/" ? "" : path.substr(1);
    if (path == dir) return "";
    if (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/')
        return path.substr(dir.size() + 1);
    return std::nullopt;
}

struct Found {
    std::vector<std::string> paths;  // as the process sees them, sorted
    bool symlink = false;
    bool complete = true;  // false: the walk gave up before looking everywhere
};

bool is_inode(const std::string& host_path, const WatchInfo& w, struct stat& st) {
    return sys::lstat_path(host_path, st) && st.st_dev == w.dev && st.st_ino == w.ino;
}

// Every path of the watch's inode through every mount of its filesystem, by walking them.
Found walk(const std::string& root, const std::map<int, sys::MountInfo>& mounts, const WatchInfo& w) {
    Found out;
    for (const auto& [id, m] : mounts) {
        if (m.device != w.dev) continue;
        sys::InodePaths found;
        try {
            found = sys::find_inode(root + m.mount_point, w.dev, w.ino, kMaxEntriesSearched);
        } catch (const sys::SysError&) {
            continue;  // a mount point the process cannot reach (over-mounted, gone)
        }
        out.complete = out.complete && found.complete;
        for (const auto& match : found.matches) {
            out.paths.push_back(join_path(m.mount_point, match.path));
            out.symlink = match.symlink;
        }
    }
    std::sort(out.paths.begin(), out.paths.end());
    return out;
}

// The inode's path from its file handle (opened through a mount of its filesystem, checked by
// lstat), and the other paths it has through the other mounts of that filesystem; nullopt when the
// handle gives no path here or the inode may have further paths (hard links): then walk.
std::optional<Found> from_handle(const std::string& root, const std::map<int, sys::MountInfo>& mounts,
                                 const WatchInfo& w) {
    if (w.handle.empty()) return std::nullopt;
    std::string path;
    struct stat st {};
    for (const auto& [id, m] : mounts) {
        if (m.device != w.dev) continue;
        std::string p = sys::path_of_handle(root + m.mount_point, w.handle_type, w.handle);
        if (!p.empty() && p[0] == '/' && is_inode(root + p, w, st)) {
            path = p;
            break;
        }
    }
    if (path.empty() || (!S_ISDIR(st.st_mode) && st.st_nlink != 1)) return std::nullopt;
    // The mount `path` goes through (the deepest mount point above it), then the inode's path in its
    // filesystem, then every mount of that filesystem showing that path.
    const sys::MountInfo* through = nullptr;
    for (const auto& [id, m] : mounts)
        if (below(m.mount_point, path) && (!through || m.mount_point.size() >= through->mount_point.size()))
            through = &m;
    if (!through || through->device != w.dev) return std::nullopt;
    std::string in_fs = join_path(through->root, *below(through->mount_point, path));
    Found out;
    out.symlink = S_ISLNK(st.st_mode);
    for (const auto& [id, m] : mounts) {
        if (m.device != w.dev) continue;
        auto rel = below(m.root, in_fs);
        if (!rel) continue;
        std::string p = join_path(m.mount_point, *rel);
        struct stat other {};
        if (is_inode(root + p, w, other)) out.paths.push_back(p);
    }
    std::sort(out.paths.begin(), out.paths.end());
    out.paths.erase(std::unique(out.paths.begin(), out.paths.end()), out.paths.end());
    return out;
}

}  // namespace

std::optional<image::FdObject> read(const FdSource& s) {
    if (s.dest != "anon_inode:inotify") return std::nullopt;
    auto where = fmt::format("process {} fd {}", s.pid, s.fd);
    std::vector<WatchInfo> watches = parse_watches(s.info);
    auto mounts = sys::read_mountinfo(s.pid);
    std::string root = fmt::format("/proc/{}/root", s.pid);
    image::InotifyFd out;
    for (size_t i = 0; i < watches.size(); ++i) {
        const WatchInfo& w = watches[i];
        auto watch = fmt::format("{}: the inotify watch wd {} (inode {} on device {}:{})", where, w.wd, w.ino,
                                 major(w.dev), minor(w.dev));
        if (w.wd != static_cast<int>(i + 1))
            throw ContractError(fmt::format(
                "{}: its watches have wds {}{}, not 1..{} (a watch was removed or fired IN_ONESHOT); rule: "
                "an "
                "inotify instance is restored only when adding its watches again gives each its wd",
                where, watches.front().wd, watches.size() > 1 ? fmt::format("..{}", watches.back().wd) : "",
                watches.size()));
        if (w.ignored_mask)
            throw ContractError(watch +
                                " has an ignored mask, which inotify does not make; rule: only inotify "
                                "watches as inotify_add_watch makes them are restored");
        std::optional<Found> found = from_handle(root, mounts, w);
        if (!found) found = walk(root, mounts, w);
        if (!found->complete)
            throw ContractError(
                fmt::format("{}: its path was not found among the first {} entries of its "
                            "filesystem; rule: an inotify watch is re-added by the path of its inode",
                            watch, kMaxEntriesSearched));
        if (found->paths.empty())
            throw ContractError(watch +
                                " is at no path under the sandbox's root (deleted, or hidden by a "
                                "mount); rule: an inotify watch is re-added by the path of its inode");
        if (found->paths.size() > 1)
            throw ContractError(
                fmt::format("{} is at several paths ({}); rule: an inotify watch is re-added by "
                            "the one path of its inode",
                            watch, fmt::join(found->paths, ", ")));
        out.watches.push_back({w.wd, w.mask, found->paths.front(), found->symlink});
    }
    sys::UniqueFd copy = sys::pidfd_getfd(s.pidfd, s.fd);
    if (sys::readable_now(copy.get()) && s.context)
        s.context->notes.push_back(fmt::format(
            "{}: an inotify instance ({} watches): events queued at the checkpoint are not restored", where,
            out.watches.size()));
    return out;
}

void store(json& j, const image::InotifyFd& f) {
    json watches = json::array();
    for (const auto& w : f.watches)
        watches.push_back({{"wd", w.wd}, {"mask", w.mask}, {"path", w.path}, {"symlink", w.symlink}});
    j["watches"] = std::move(watches);
}

void load(const json& j, image::InotifyFd& f) {
    for (const auto& w : j.at("watches"))
        f.watches.push_back({w.at("wd"), w.at("mask"), w.at("path"), w.at("symlink")});
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::InotifyFd& o) {
    std::string what = fmt::format("fd {}", f.fd);
    uint64_t nonblock = (f.flags & O_NONBLOCK) ? IN_NONBLOCK : 0;
    t.op(SYS_inotify_init1, {nonblock}, kTmp, 0, {}, what + " inotify_init1");
    for (const auto& w : o.watches) {
        uint64_t mask = w.mask | (w.symlink ? uint64_t{IN_DONT_FOLLOW} : 0);
        t.op(SYS_inotify_add_watch, {0, region.put_string(w.path), mask, static_cast<uint64_t>(w.wd)}, -1,
             STUB_OP_EXPECT_ARG3, {{0, kTmp}},
             fmt::format("{} inotify_add_watch {} (wd {})", what, w.path, w.wd));
    }
}

}  // namespace initless::state::inotify
