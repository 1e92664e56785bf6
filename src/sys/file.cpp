#include "initless/sys/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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
