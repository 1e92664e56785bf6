#include "initless/sys/tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::sys {

namespace {

// One name below a directory fd, never through a link of any kind, never onto another mount.
constexpr uint64_t kOneNameBeneath =
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

std::string join(const std::string& dir, const std::string& name) {
    return dir.empty() ? name : dir + "/" + name;
}

std::vector<std::string> sorted_names(int dir, const std::string& where) {
    // getdents on a dup would share the offset with `dir`: read through a fresh open of ".".
    UniqueFd again = open_at(dir, ".", O_RDONLY | O_DIRECTORY, kOneNameBeneath);
    DIR* d = ::fdopendir(again.get());
    if (!d) throw SysError("opendir " + where, errno);
    again.release();
    std::vector<std::string> names;
    errno = 0;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(std::move(n));
        errno = 0;
    }
    int err = errno;
    ::closedir(d);
    if (err) throw SysError("readdir " + where, err);
    std::sort(names.begin(), names.end());
    return names;
}

void set_attributes(int fd, const struct stat& st, const std::string& what) {
    check(::fchown(fd, st.st_uid, st.st_gid), "chown " + what);
    check(::fchmod(fd, st.st_mode & 07777), "chmod " + what);
    // Times too: a restore compares the size and mtime of every file the process maps.
    timespec times[2] = {st.st_atim, st.st_mtim};
    check(::futimens(fd, times), "utimensat " + what);
}

void same_object(const struct stat& seen, int fd, const std::string& what) {
    struct stat now {};
    check(::fstat(fd, &now), "stat " + what);
    if (now.st_dev != seen.st_dev || now.st_ino != seen.st_ino ||
        (now.st_mode & S_IFMT) != (seen.st_mode & S_IFMT))
        throw Error(fmt::format("{} was replaced while it was being copied", what));
}

void copy_file(int from_dir, int to_dir, const std::string& name, const std::string& path,
               const struct stat& st, TreeVisitor* visitor, const std::string& what) {
    // O_NONBLOCK: had the name become a FIFO since fstatat, the open must not wait for a writer.
    UniqueFd in = open_at(from_dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, kOneNameBeneath);
    same_object(st, in.get(), what);
    UniqueFd out;
    if (to_dir >= 0)
        out = open_at(to_dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, kOneNameBeneath, 0600);
    if (visitor) visitor->entry(path, st, {});
    uint64_t total = 0;
    std::vector<char> buf(1 << 16);
    for (;;) {
        ssize_t n = retry_eintr([&] { return ::read(in.get(), buf.data(), buf.size()); });
        if (n < 0) throw SysError("read " + what, errno);
        if (n == 0) break;
        total += static_cast<uint64_t>(n);
        if (visitor) visitor->data({buf.data(), static_cast<size_t>(n)});
        if (out) write_all(out.get(), buf.data(), static_cast<size_t>(n));
    }
    if (total != static_cast<uint64_t>(st.st_size))
        throw Error(
            fmt::format("{} changed size while it was copied ({} bytes, then {})", what, st.st_size, total));
    if (out) set_attributes(out.get(), st, what);
}

void copy_dir(int from, int to, const std::string& rel, TreeVisitor* visitor, const std::string& where) {
    for (const auto& name : sorted_names(from, join(where, rel))) {
        std::string path = join(rel, name);
        std::string what = where + "/" + path;
        struct stat st {};
        check(::fstatat(from, name.c_str(), &st, AT_SYMLINK_NOFOLLOW), "stat " + what);
        if (S_ISDIR(st.st_mode)) {
            UniqueFd sub = open_at(from, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, kOneNameBeneath);
            same_object(st, sub.get(), what);
            if (visitor) visitor->entry(path, st, {});
            UniqueFd sub_to;
            if (to >= 0) {
                if (::mkdirat(to, name.c_str(), 0700) != 0 && errno != EEXIST)
                    throw SysError("mkdir " + what, errno);
                sub_to = open_at(to, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, kOneNameBeneath);
            }
            copy_dir(sub.get(), sub_to ? sub_to.get() : -1, path, visitor, where);
            if (sub_to) set_attributes(sub_to.get(), st, what);
        } else if (S_ISLNK(st.st_mode)) {
            std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
            ssize_t n = ::readlinkat(from, name.c_str(), target.data(), target.size());
            if (n < 0) throw SysError("readlink " + what, errno);
            if (static_cast<size_t>(n) >= target.size())
                throw Error(fmt::format("{} was replaced while it was being copied", what));
            target.resize(static_cast<size_t>(n));
            if (visitor) visitor->entry(path, st, target);
            if (to >= 0) {
                check(::symlinkat(target.c_str(), to, name.c_str()), "symlink " + what);
                check(::fchownat(to, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW),
                      "chown " + what);
                timespec times[2] = {st.st_atim, st.st_mtim};
                check(::utimensat(to, name.c_str(), times, AT_SYMLINK_NOFOLLOW), "utimensat " + what);
            }
        } else if (S_ISREG(st.st_mode)) {
            copy_file(from, to, name, path, st, visitor, what);
        } else if ((S_ISCHR(st.st_mode) && st.st_rdev == 0) || S_ISFIFO(st.st_mode)) {
            // An overlay whiteout (the file was deleted from the lower layer), or a FIFO: made again as
            // a node, never opened.
            if (visitor) visitor->entry(path, st, {});
            if (to >= 0) {
                check(::mknodat(to, name.c_str(), (st.st_mode & S_IFMT) | (st.st_mode & 07777), 0),
                      "mknod " + what);
                check(::fchownat(to, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW),
                      "chown " + what);
                timespec times[2] = {st.st_atim, st.st_mtim};
                check(::utimensat(to, name.c_str(), times, AT_SYMLINK_NOFOLLOW), "utimensat " + what);
            }
        } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
            throw Error(fmt::format(
                "{} is a device node ({} {}:{}): refused, a sandbox's files may hold none", what,
                S_ISCHR(st.st_mode) ? "character" : "block", major(st.st_rdev), minor(st.st_rdev)));
        }
        // Sockets: skipped (a restored listener binds its path again).
    }
}

}  // namespace

UniqueFd open_at(int dir, const std::string& path, int flags, uint64_t resolve, int mode) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? static_cast<uint64_t>(mode) : 0;
    how.resolve = resolve;
    long fd = retry_eintr([&] { return ::syscall(SYS_openat2, dir, path.c_str(), &how, sizeof how); });
    if (fd < 0) throw SysError(fmt::format("open {}", path), errno);
    return UniqueFd(static_cast<int>(fd));
}

UniqueFd open_in_root_of(int pid, const std::string& path, int flags) {
    UniqueFd root = open_file(fmt::format("/proc/{}/root", pid), O_PATH | O_DIRECTORY);
    return open_at(root.get(), path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

void copy_tree_at(int from, int to, TreeVisitor* visitor, const std::string& where) {
    struct stat st {};
    check(::fstat(from, &st), "stat " + where);
    if (!S_ISDIR(st.st_mode)) throw Error(where + " is not a directory");
    if (visitor) visitor->entry("", st, {});
    copy_dir(from, to, "", visitor, where);
    if (to >= 0) set_attributes(to, st, where);
}

}  // namespace initless::sys
