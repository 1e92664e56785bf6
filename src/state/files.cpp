// Files, character devices and the log; the working directory and umask. Checkpoint: a regular
// file or directory must be open for reading and still reachable by its path (the init-less
// contract), so must the working directory, and an fd of /proc/<pid> must name a task of the
// snapshot; the fd that points at the instance's log is the log (restore points it at the new
// instance's). Restore: reopened by path with the same flags and offset.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "state/kinds.h"

namespace initless::state::files {

namespace {
uint64_t position(const FdSource& s) {
    return s.info.fields.count("pos") ? std::stoull(s.info.fields.at("pos")) : 0;
}

void plan_open(Table& t, Region& region, const image::Fd& f, const std::string& path, uint64_t pos) {
    std::string what = fmt::format("fd {}", f.fd);
    t.op(SYS_open, {region.put_string(path), static_cast<uint64_t>(f.flags & ~(O_CREAT | O_TRUNC | O_EXCL))},
         kTmp, 0, {}, what + " open " + path);
    if (pos) t.op(SYS_lseek, {0, pos, SEEK_SET}, -1, STUB_OP_ALLOW_FAIL, {{0, kTmp}}, what + " seek");
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
    if (s.st.st_dev == s.log.st_dev && s.st.st_ino == s.log.st_ino) return image::LogFd{};
    if (S_ISREG(s.st.st_mode)) {
        if ((s.flags & O_ACCMODE) != O_RDONLY)
            throw ContractError(
                s.where + ": a regular file open for writing; rule: no files open for writing when ready");
        if (s.dest.find("(deleted)") != std::string::npos || s.dest.empty() || s.dest[0] != '/')
            throw ContractError(s.where +
                                ": a deleted or unreachable file; rule: open files must stay in place");
        return image::FileFd{s.dest, position(s)};
    }
    if (S_ISDIR(s.st.st_mode)) {
        if (s.st.st_nlink == 0 || s.dest.find("(deleted)") != std::string::npos || s.dest.empty() ||
            s.dest[0] != '/')
            throw ContractError(s.where +
                                ": a deleted or unreachable directory; rule: open directories must stay in place");
        return image::FileFd{s.dest, position(s)};
    }
    if (S_ISCHR(s.st.st_mode)) return image::CharDeviceFd{s.dest, position(s)};
    return std::nullopt;
}

void read_process(Frozen& f) {
    f.p.cwd = sys::read_link(fmt::format("/proc/{}/cwd", f.host));
    // Restore enters the working directory by path.
    if (f.p.cwd.find(" (deleted)") != std::string::npos || f.p.cwd.empty() || f.p.cwd[0] != '/')
        throw ContractError(fmt::format("process {}: its current directory {} is deleted or unreachable; rule: "
                                        "the working directory must stay in place",
                                        f.host, f.p.cwd));
    f.p.umask = static_cast<uint32_t>(std::stoul(f.status.at("Umask"), nullptr, 8));
}

void check_proc_paths(const std::vector<Frozen>& ms) {
    std::set<pid_t> inside;  // pids and tids of the snapshot, as the sandbox sees them
    for (const auto& m : ms) {
        inside.insert(m.p.pid);
        for (const auto& th : m.p.threads) inside.insert(th.tid);
    }
    for (const auto& m : ms)
        for (const auto& f : m.p.fds) {
            const auto* file = f.as<image::FileFd>();
            if (!file || file->path.rfind("/proc/", 0) != 0) continue;
            std::string rest = file->path.substr(6);
            size_t digits = 0;
            while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
            if (digits == 0 || (digits < rest.size() && rest[digits] != '/')) continue;
            pid_t pid = static_cast<pid_t>(std::stol(rest.substr(0, digits)));
            if (inside.count(pid)) continue;
            throw ContractError(fmt::format(
                "process {} fd {} ({}): /proc/{} is a task outside the snapshot (pid {} in the sandbox is "
                "not one of the function's processes or threads); rule: /proc/<pid> only of the "
                "function's own tasks",
                m.host, f.fd, file->path, pid, pid));
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

void store(json&, const image::LogFd&) {}
void load(const json&, image::LogFd&) {}

// Files and devices are stored alike: a path and an offset.
void store(json& j, const image::FileFd& f) {
    store_path(j, f);
}
void load(const json& j, image::FileFd& f) {
    load_path(j, f);
}
void store(json& j, const image::CharDeviceFd& f) {
    store_path(j, f);
}
void load(const json& j, image::CharDeviceFd& f) {
    load_path(j, f);
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::FileFd& o) {
    plan_open(t, region, f, o.path, o.position);
}
void plan_create(Table& t, Region& region, const image::Fd& f, const image::CharDeviceFd& o) {
    plan_open(t, region, f, o.path, o.position);
}

void plan_process(Table& t, Region& region, const image::Process& p) {
    t.op(SYS_chdir, {region.put_string(p.cwd)}, -1, 0, {}, "chdir " + p.cwd);
    t.op(SYS_umask, {p.umask}, -1, 0, {}, "umask");
}

}  // namespace initless::state::files
