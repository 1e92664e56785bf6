#include "initless/sys/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>

#include <fmt/format.h>

#include "initless/sys/error.h"

namespace initless::sys {

namespace fs = std::filesystem;

UniqueFd open_file(const fs::path& path, int flags, int mode) {
    int fd = retry_eintr([&] { return ::open(path.c_str(), flags | O_CLOEXEC, mode); });
    if (fd < 0) throw SysError(fmt::format("open {}", path.string()), errno);
    return UniqueFd(fd);
}

std::string read_file(const fs::path& path) {
    UniqueFd fd = open_file(path, O_RDONLY);
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
        if (n < 0) throw SysError(fmt::format("read {}", path.string()), errno);
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

void write_all(int fd, const void* data, size_t len) {
    auto* p = static_cast<const char*>(data);
    while (len > 0) {
        ssize_t n = retry_eintr([&] { return ::write(fd, p, len); });
        if (n < 0) throw SysError("write", errno);
        p += n;
        len -= static_cast<size_t>(n);
    }
}

void read_exact(int fd, void* data, size_t len, off_t offset) {
    auto* p = static_cast<char*>(data);
    while (len > 0) {
        ssize_t n = retry_eintr([&] { return ::pread(fd, p, len, offset); });
        if (n < 0) throw SysError("pread", errno);
        if (n == 0) throw Error(fmt::format("short read at offset {}", offset));
        p += n;
        len -= static_cast<size_t>(n);
        offset += n;
    }
}

void write_file(const fs::path& path, std::string_view data) {
    UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
    try {
        write_all(fd.get(), data.data(), data.size());
    } catch (const SysError& e) {
        throw SysError(fmt::format("write {}", path.string()), e.code());
    }
}

void read_ahead(int fd, uint64_t offset, uint64_t len) {
    (void)::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(len), POSIX_FADV_WILLNEED);
}

void fsync_path(const fs::path& path) {
    UniqueFd fd = open_file(path, O_RDONLY);
    check(::fsync(fd.get()), fmt::format("fsync {}", path.string()));
}

void write_file_atomic(const fs::path& path, std::string_view data) {
    fs::path tmp = path;
    tmp += fmt::format(".tmp.{}", ::getpid());
    try {
        UniqueFd fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC);
        write_all(fd.get(), data.data(), data.size());
        check(::fsync(fd.get()), fmt::format("fsync {}", tmp.string()));
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    check(::rename(tmp.c_str(), path.c_str()), fmt::format("rename {} to {}", tmp.string(), path.string()));
    fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path());
}

FileMapping::FileMapping(int fd, size_t size) : size_(size) {
    if (size == 0) return;
    data_ = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data_ == MAP_FAILED) {
        data_ = nullptr;
        throw SysError("mmap", errno);
    }
    ::madvise(data_, size, MADV_SEQUENTIAL);
}

FileMapping::~FileMapping() {
    if (data_) ::munmap(data_, size_);
}

std::string read_from(int fd, uint64_t offset, size_t max) {
    std::string out;
    char buf[65536];
    while (out.size() < max) {
        size_t want = std::min(sizeof buf, max - out.size());
        ssize_t n =
            retry_eintr([&] { return ::pread(fd, buf, want, static_cast<off_t>(offset + out.size())); });
        if (n < 0) throw SysError("pread", errno);
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

void copy_tree(const fs::path& from, const fs::path& to) {
    struct stat st {};
    check(::lstat(from.c_str(), &st), "lstat " + from.string());
    if (S_ISDIR(st.st_mode)) {
        if (::mkdir(to.c_str(), 0700) != 0 && errno != EEXIST) throw SysError("mkdir " + to.string(), errno);
        for (const auto& e : fs::directory_iterator(from)) copy_tree(e.path(), to / e.path().filename());
    } else if (S_ISLNK(st.st_mode)) {
        fs::create_symlink(fs::read_symlink(from), to);
    } else if (S_ISREG(st.st_mode)) {
        fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        check(::mknod(to.c_str(), st.st_mode, st.st_rdev), "mknod " + to.string());
    } else {
        return;
    }
    if (::lchown(to.c_str(), st.st_uid, st.st_gid) != 0) throw SysError("chown " + to.string(), errno);
    if (!S_ISLNK(st.st_mode)) check(::chmod(to.c_str(), st.st_mode & 07777), "chmod " + to.string());
    // Times too: a restore compares the size and mtime of every file the process maps.
    timespec times[2] = {st.st_atim, st.st_mtim};
    check(::utimensat(AT_FDCWD, to.c_str(), times, AT_SYMLINK_NOFOLLOW), "utimensat " + to.string());
}

void remove_tree(const fs::path& path) {
    struct stat root {};
    if (::lstat(path.c_str(), &root) != 0) {
        if (errno == ENOENT) return;
        throw SysError(fmt::format("stat {}", path.string()), errno);
    }
    if (!S_ISDIR(root.st_mode)) {
        check(::unlink(path.c_str()), fmt::format("unlink {}", path.string()));
        return;
    }
    for (const auto& entry : fs::directory_iterator(path)) {
        struct stat st {};
        if (::lstat(entry.path().c_str(), &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != root.st_dev)
                throw Error(fmt::format("refusing to remove {}: it is a mount point", entry.path().string()));
            remove_tree(entry.path());
        } else {
            check(::unlink(entry.path().c_str()), fmt::format("unlink {}", entry.path().string()));
        }
    }
    check(::rmdir(path.c_str()), fmt::format("rmdir {}", path.string()));
}

}  // namespace initless::sys
