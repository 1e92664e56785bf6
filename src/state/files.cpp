// Files, character devices and the log; the working directory and umask. Checkpoint: a regular
// file or directory must still be reachable by its path (the init-less contract), so must the working
// directory, and an fd of /proc/<pid> must name a task of the snapshot; a file open for writing must
// be in the instance's private storage (the writable layer, /tmp, /dev/shm: the image keeps a copy of
// each, taken while the tree is frozen, and every restored instance writes to its own copy); the fd
// that points at the instance's log is the log (restore points it at the new instance's). Restore:
// reopened by path with the same flags (O_APPEND, O_RDWR ...; never O_CREAT or O_TRUNC) and offset.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "state/kinds.h"

namespace initless::state::files {

namespace {
// The mount an fd's file is on, as its process sees it.
sys::MountInfo mount_info(const FdSource& s) {
    auto mounts = sys::read_mountinfo(s.pid);
    auto it =
        s.info.fields.count("mnt_id") ? mounts.find(std::stoi(s.info.fields.at("mnt_id"))) : mounts.end();
    return it != mounts.end() ? it->second : sys::MountInfo{};
}

std::string mount_of(const FdSource& s) {
    sys::MountInfo m = mount_info(s);
    return m.fstype.empty() ? "an unknown mount" : fmt::format("{} mounted at {}", m.fstype, m.mount_point);
}

// The instance's private storage: the sandbox's overlay root (whose writable layer the image keeps)
// and its tmpfs /tmp and /dev/shm (which the image keeps beside it). Each restored instance gets a
// copy of them, so a file open for writing there is restored as the instance's own. An OCI
// container's root overlay is private storage only below the dirs the image keeps (its RW_DIRS,
// /tmp): a restored container has its own fresh writable layer, without what this one wrote (a file
// made since, such as a module cache a request made Python write, would be missing). "" elsewhere.
std::string private_storage(const FdSource& s) {
    sys::MountInfo m = mount_info(s);
    if (m.mount_point == "/" && m.fstype == "overlay") {
        if (!s.context || !s.context->root_kept_dirs) return "the writable layer";
        for (const auto& dir : *s.context->root_kept_dirs)
            if (s.dest.size() > dir.size() && s.dest.compare(0, dir.size(), dir) == 0 &&
                s.dest[dir.size()] == '/')
                return dir;
        return "";
    }
    if ((m.mount_point == "/tmp" || m.mount_point == "/dev/shm") && m.fstype == "tmpfs" && m.root == "/")
        return m.mount_point;
    return "";
}

// Where private_storage allows files open for writing, for a refusal's rule.
std::string storage_rule(const FdSource& s) {
    if (!s.context || !s.context->root_kept_dirs) return "the writable layer, /tmp or /dev/shm";
    std::string dirs;
    for (const auto& dir : *s.context->root_kept_dirs) dirs += (dirs.empty() ? "" : ", ") + dir;
    return dirs +
           " (the container's RW_DIRS, /tmp and /dev/shm: the rest of its root is not in the snapshot)";
}

// The locks an open file holds, from fdinfo: "lock:\t1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
// (flock and OFD locks and leases belong to the open file description, POSIX locks to the process,
// which fdinfo shows on each of its fds of the file).
std::vector<image::FileLock> read_locks(const FdSource& s) {
    std::vector<image::FileLock> out;
    for (const auto& line : s.info.lines) {
        if (line.rfind("lock:", 0) != 0) continue;
        std::istringstream in(line.substr(5));
        std::string id, kind, state, type, pid, inode, start, end;
        in >> id >> kind >> state >> type >> pid >> inode >> start >> end;
        image::FileLock l;
        if (kind == "FLOCK")
            l.kind = image::FileLock::Flock;
        else if (kind == "OFDLCK")
            l.kind = image::FileLock::Ofd;
        else if (kind == "POSIX")
            l.kind = image::FileLock::Posix;
        else if (kind == "LEASE")
            l.kind = image::FileLock::Lease;
        else
            throw ContractError(
                fmt::format("{}: holds a {} lock initless cannot take again; rule: only flock, "
                            "fcntl (OFD and classic) locks and leases",
                            s.where, kind));
        if (l.kind == image::FileLock::Lease && state != "ACTIVE")
            throw ContractError(
                fmt::format("{}: holds a lease being broken ({}); rule: no lease break in "
                            "progress when ready",
                            s.where, state));
        l.type = type == "WRITE" ? F_WRLCK : F_RDLCK;
        l.start = std::stoull(start);
        l.length = end == "EOF" ? 0 : std::stoull(end) - l.start + 1;
        // A lock is the instance's own only on its own copy of the file; on a file every instance
        // opens (the function's directory), instances would contend for one lock.
        if (private_storage(s).empty())
            throw ContractError(fmt::format(
                "{}: holds a {} lock on a file outside the instance's private storage (on {}); rule: locks "
                "only on files in {}",
                s.where,
                kind == "OFDLCK"  ? "OFD"
                : kind == "LEASE" ? "lease"
                                  : kind,
                mount_of(s), storage_rule(s)));
        out.push_back(l);
    }
    return out;
}

uint64_t position(const FdSource& s) {
    return s.info.fields.count("pos") ? std::stoull(s.info.fields.at("pos")) : 0;
}

void plan_open(Table& t, Region& region, const image::Fd& f, const std::string& path, uint64_t pos) {
    std::string what = fmt::format("fd {}", f.fd);
    t.op(SYS_open, {region.put_string(path), static_cast<uint64_t>(f.flags & ~(O_CREAT | O_TRUNC | O_EXCL))},
         kTmp, 0, {}, what + " open " + path);
    if (pos) t.op(SYS_lseek, {0, pos, SEEK_SET}, -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " seek");
}
// Takes the file's flock and OFD locks and leases again on the fd just opened (kTmp): each instance's copy of
// the file is its own, so nothing contends. Non-blocking: a conflict fails the restore instead of waiting.
void plan_locks(Table& t, Region& region, const image::Fd& f, const std::vector<image::FileLock>& locks) {
    std::string what = fmt::format("fd {}", f.fd);
    for (const auto& l : locks) {
        if (l.kind == image::FileLock::Flock) {
            t.op(SYS_flock, {0, static_cast<uint64_t>((l.type == F_WRLCK ? LOCK_EX : LOCK_SH) | LOCK_NB)}, -1,
                 0, {{0, kTmp}}, what + " flock");
        } else if (l.kind == image::FileLock::Lease) {
            t.op(SYS_fcntl, {0, F_SETLEASE, static_cast<uint64_t>(l.type)}, -1, 0, {{0, kTmp}},
                 what + " lease");
        } else if (l.kind == image::FileLock::Ofd) {
            struct flock fl {};
            fl.l_type = static_cast<short>(l.type);
            fl.l_whence = SEEK_SET;
            fl.l_start = static_cast<off_t>(l.start);
            fl.l_len = static_cast<off_t>(l.length);
            t.op(SYS_fcntl, {0, F_OFD_SETLK, region.put(fl)}, -1, 0, {{0, kTmp}}, what + " OFD lock");
        }  // POSIX locks: plan_posix_locks, once the fd is at its number
    }
}

template <typename T>
void store_path(json& j, const T& f) {
    j["path"] = f.path;
    j["position"] = f.position;
}
template <typename T>
void load_path(const json& j, T& f) {
    f.path = j.at("path");
    f.position = j.at("position");
}
}  // namespace

std::optional<image::FdObject> read(const FdSource& s) {
    auto same = [&](const struct stat& o) {
        return o.st_ino && s.st.st_dev == o.st_dev && s.st.st_ino == o.st_ino;
    };
    if (same(s.log)) return image::LogFd{};
    if (s.context && same(s.context->stdio_in)) return image::LogFd{0};
    if (s.context && same(s.context->stdio_err)) return image::LogFd{2};
    if (S_ISREG(s.st.st_mode)) {
        bool writing = (s.flags & O_ACCMODE) != O_RDONLY;
        if (writing) {
            std::string storage = private_storage(s);
            if (storage.empty())
                throw ContractError(fmt::format(
                    "{}: a regular file open for writing outside the instance's private storage (it is on "
                    "{}); rule: files open for writing when ready only in {}, which each instance gets a "
                    "copy of",
                    s.where, mount_of(s), storage_rule(s)));
        }
        if (s.dest.find("(deleted)") != std::string::npos || s.dest.empty() || s.dest[0] != '/')
            throw ContractError(s.where + (writing
                                               ? ": a deleted file open for writing (its contents are not "
                                                 "in the writable layer); rule: open files must stay in place"
                                               : ": a deleted or unreachable file; rule: open files must "
                                                 "stay in place"));
        return image::FileFd{s.dest, position(s), read_locks(s)};
    }
    if (S_ISDIR(s.st.st_mode)) {
        if (s.st.st_nlink == 0 || s.dest.find("(deleted)") != std::string::npos || s.dest.empty() ||
            s.dest[0] != '/')
            throw ContractError(
                s.where + ": a deleted or unreachable directory; rule: open directories must stay in place");
        return image::FileFd{s.dest, position(s)};
    }
    if (S_ISCHR(s.st.st_mode)) return image::CharDeviceFd{s.dest, position(s)};
    return std::nullopt;
}

void read_process(Frozen& f) {
    f.p.cwd = sys::read_link(fmt::format("/proc/{}/cwd", f.host));
    // Restore enters the working directory by path.
    if (f.p.cwd.find(" (deleted)") != std::string::npos || f.p.cwd.empty() || f.p.cwd[0] != '/')
        throw ContractError(
            fmt::format("process {}: its current directory {} is deleted or unreachable; rule: "
                        "the working directory must stay in place",
                        f.host, f.p.cwd));
    f.p.umask = static_cast<uint32_t>(std::stoul(f.status.at("Umask"), nullptr, 8));
}

void check_proc_paths(const std::vector<Frozen>& ms) {
    std::map<pid_t, pid_t> process_of;  // pids and tids of the snapshot, as the sandbox sees them
    for (const auto& m : ms)
        for (const auto& th : m.p.threads) process_of[th.tid] = m.p.pid;
    // The number at the start of `s` ("" when none), and what follows it.
    auto leading_number = [](const std::string& s) {
        size_t digits = 0;
        while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
        return std::pair{s.substr(0, digits), s.substr(digits)};
    };
    for (const auto& m : ms)
        for (const auto& f : m.p.fds) {
            const auto* file = f.as<image::FileFd>();
            if (!file || file->path.rfind("/proc/", 0) != 0) continue;
            auto [first, rest] = leading_number(file->path.substr(6));
            if (first.empty() || (!rest.empty() && rest[0] != '/')) continue;
            // /proc/<pid>, /proc/<tid> (a thread's directory, hidden from listings) and
            // /proc/<pid>/task/<tid> name tasks.
            std::vector<pid_t> named{static_cast<pid_t>(std::stol(first))};
            if (rest.rfind("/task/", 0) == 0)
                if (auto [tid, after] = leading_number(rest.substr(6));
                    !tid.empty() && (after.empty() || after[0] == '/'))
                    named.push_back(static_cast<pid_t>(std::stol(tid)));
            for (pid_t task : named) {
                auto it = process_of.find(task);
                if (it == process_of.end())
                    throw ContractError(fmt::format(
                        "process {} fd {} ({}): /proc/{} is a task outside the snapshot (pid {} in the "
                        "sandbox "
                        "is not one of the function's processes or threads); rule: /proc/<pid> only of the "
                        "function's own tasks",
                        m.host, f.fd, file->path, task, task));
                // Restore opens a process's fds before it makes its threads: a path naming a thread
                // other than a main one would not exist yet.
                if (it->second != task)
                    throw ContractError(fmt::format(
                        "process {} fd {} ({}): names thread {} of process {} (pid {} in the sandbox), not a "
                        "process; rule: /proc fds only of the function's processes (their main threads): "
                        "restore opens fds before it makes the other threads",
                        m.host, f.fd, file->path, task, it->second, it->second));
            }
        }
}

void store_process(json& j, const image::Process& p) {
    j["cwd"] = p.cwd;
    j["umask"] = p.umask;
}

void load_process(const json& j, image::Process& p) {
    p.cwd = j.at("cwd");
    p.umask = j.at("umask");
}

void store(json& j, const image::LogFd& f) {
    if (f.stream != 1) j["stream"] = f.stream;  // absent: the log (images made before streams)
}
void load(const json& j, image::LogFd& f) {
    f.stream = j.value("stream", 1);
    if (f.stream < 0 || f.stream > 2) throw Error(fmt::format("log fd stream {} is not 0, 1 or 2", f.stream));
}

// Files and devices are stored alike: a path and an offset.
void store(json& j, const image::FileFd& f) {
    store_path(j, f);
    if (f.locks.empty()) return;
    json locks = json::array();
    for (const auto& l : f.locks) locks.push_back({l.kind, l.type, l.start, l.length});
    j["locks"] = std::move(locks);
}
void load(const json& j, image::FileFd& f) {
    load_path(j, f);
    if (j.contains("locks"))
        for (const auto& l : j.at("locks")) f.locks.push_back({l[0], l[1], l[2], l[3]});
}
void store(json& j, const image::CharDeviceFd& f) {
    store_path(j, f);
}
void load(const json& j, image::CharDeviceFd& f) {
    load_path(j, f);
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::FileFd& o) {
    plan_open(t, region, f, o.path, o.position);
    plan_locks(t, region, f, o.locks);
}
void plan_create(Table& t, Region& region, const image::Fd& f, const image::CharDeviceFd& o) {
    plan_open(t, region, f, o.path, o.position);
}

// A process's POSIX locks belong to the process, and it loses all it holds on a file when it closes
// any fd of that file: they are taken once every fd is at its number and no temporary is closed.
void plan_posix_locks(Table& t, Region& region, const image::Process& p) {
    for (const auto& f : p.fds) {
        const auto* file = f.as<image::FileFd>();
        if (!file || f.dup_of >= 0) continue;
        for (const auto& l : file->locks) {
            if (l.kind != image::FileLock::Posix) continue;
            struct flock fl {};
            fl.l_type = static_cast<short>(l.type);
            fl.l_whence = SEEK_SET;
            fl.l_start = static_cast<off_t>(l.start);
            fl.l_len = static_cast<off_t>(l.length);
            t.op(SYS_fcntl, {static_cast<uint64_t>(f.fd), F_SETLK, region.put(fl)}, -1, 0, {},
                 fmt::format("fd {} POSIX lock", f.fd));
        }
    }
}

void plan_process(Table& t, Region& region, const image::Process& p) {
    t.op(SYS_chdir, {region.put_string(p.cwd)}, -1, 0, {}, "chdir " + p.cwd);
    t.op(SYS_umask, {p.umask}, -1, 0, {}, "umask");
}

}  // namespace initless::state::files
