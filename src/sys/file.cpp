#include "initless/sys/file.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <algorithm>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/tree.h"

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

std::string read_regular_file(const fs::path& path, size_t max) {
    UniqueFd fd = open_file(path, O_RDONLY | O_NONBLOCK);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw SysError(fmt::format("stat {}", path.string()), errno);
    if (!S_ISREG(st.st_mode)) throw Error(fmt::format("{} is not a regular file", path.string()));
    if (static_cast<uint64_t>(st.st_size) > max)
        throw Error(fmt::format("{} is {} bytes, more than the {} allowed", path.string(), st.st_size, max));
    std::string out(max + 1, '\0');
    size_t got = 0;
    while (got < out.size()) {  // a file that grows meanwhile is cut at max + 1 and refused below
        ssize_t n = retry_eintr([&] { return ::read(fd.get(), out.data() + got, out.size() - got); });
        if (n < 0) throw SysError(fmt::format("read {}", path.string()), errno);
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    if (got > max) throw Error(fmt::format("{} is more than the {} bytes allowed", path.string(), max));
    out.resize(got);
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
    // One WILLNEED queues at most the device's read-ahead window (max of io_pages and ra_pages, 8 MiB
    // here): a longer range is asked for a step at a time.
    constexpr uint64_t kStep = 4 << 20;
    for (uint64_t at = offset, end = offset + len; at < end; at += kStep)
        (void)::posix_fadvise(fd, static_cast<off_t>(at), static_cast<off_t>(std::min(kStep, end - at)),
                              POSIX_FADV_WILLNEED);
}

namespace {
// A shared read-only mapping of the page-aligned span around [offset, offset+len) of a file.
struct SpanMapping {
    uint8_t* base = nullptr;
    size_t size = 0;
    SpanMapping(int fd, uint64_t offset, uint64_t len) {
        uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
        uint64_t start = offset & ~(page - 1), end = (offset + len + page - 1) & ~(page - 1);
        size = end - start;
        void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(start));
        if (p == MAP_FAILED) throw SysError("mmap for the page cache", errno);
        base = static_cast<uint8_t*>(p);
    }
    ~SpanMapping() { ::munmap(base, size); }
    SpanMapping(const SpanMapping&) = delete;
    SpanMapping& operator=(const SpanMapping&) = delete;
};
constexpr int kMadvPopulateRead = 22;  // Linux 5.14+; older headers may lack it
}  // namespace

void read_into_page_cache(int fd, uint64_t offset, uint64_t len) {
    if (len == 0) return;
    SpanMapping m(fd, offset, len);
    if (::madvise(m.base, m.size, kMadvPopulateRead) != 0) throw SysError("read into the page cache", errno);
}

bool in_memory_file(int fd) {
    struct statfs fs {};
    if (::fstatfs(fd, &fs) != 0) throw SysError("fstatfs", errno);
    return fs.f_type == TMPFS_MAGIC;  // memfds are on an internal tmpfs (shmem) mount too
}

bool in_page_cache(int fd, uint64_t offset, uint64_t len) {
    if (len == 0) return true;
    uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    uint64_t first = offset / page, last = (offset + len + page - 1) / page;
    // cachestat (Linux 6.5+; not in Debian 12's headers): counts without a mapping.
    struct {
        uint64_t off, len;
    } range{first * page, (last - first) * page};
    struct {
        uint64_t cache, dirty, writeback, evicted, recently_evicted;
    } stat{};
    constexpr long kSysCachestat = 451;
    if (::syscall(kSysCachestat, fd, &range, &stat, 0) == 0) return stat.cache >= last - first;
    if (errno != ENOSYS) throw SysError("cachestat", errno);
    SpanMapping m(fd, offset, len);
    std::vector<unsigned char> resident(m.size / page);
    if (::mincore(m.base, m.size, resident.data()) != 0) throw SysError("mincore", errno);
    return std::all_of(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; });
}

void wait_page_read(int fd, uint64_t offset) {
    char byte;
    if (::pread(fd, &byte, 1, static_cast<off_t>(offset)) < 0) throw SysError("pread", errno);
}

void fsync_path(const fs::path& path) {
    UniqueFd fd = open_file(path, O_RDONLY);
    check(::fsync(fd.get()), fmt::format("fsync {}", path.string()));
}

namespace {
void replace_file(const fs::path& path, std::string_view data, bool durable) {
    fs::path tmp = path;
    tmp += fmt::format(".tmp.{}", ::getpid());
    try {
        UniqueFd fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC);
        write_all(fd.get(), data.data(), data.size());
        if (durable) check(::fsync(fd.get()), fmt::format("fsync {}", tmp.string()));
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    check(::rename(tmp.c_str(), path.c_str()), fmt::format("rename {} to {}", tmp.string(), path.string()));
    if (durable) fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path());
}
}  // namespace

void write_file_atomic(const fs::path& path, std::string_view data) {
    replace_file(path, data, true);
}

void write_file_replace(const fs::path& path, std::string_view data) {
    replace_file(path, data, false);
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

MemoryFile::MemoryFile(const char* name, size_t size) : size_(size) {
    fd_ = UniqueFd(::memfd_create(name, MFD_CLOEXEC));
    if (!fd_) throw SysError(fmt::format("memfd_create {}", name), errno);
    check(::ftruncate(fd_.get(), static_cast<off_t>(size)), fmt::format("ftruncate {}", name));
    if (size == 0) return;
    data_ = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (data_ == MAP_FAILED) {
        data_ = nullptr;
        throw SysError(fmt::format("mmap {}", name), errno);
    }
}

MemoryFile::~MemoryFile() {
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
    UniqueFd source = open_file(from, O_RDONLY | O_DIRECTORY);
    if (::mkdir(to.c_str(), 0700) != 0 && errno != EEXIST) throw SysError("mkdir " + to.string(), errno);
    UniqueFd target = open_file(to, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    copy_tree_at(source.get(), target.get(), nullptr, from.string());
}

std::string read_or_create_secret(const fs::path& path, size_t size) {
    for (int attempt = 0; attempt < 3; ++attempt) {
        int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            UniqueFd file(fd);
            struct stat st {};
            check(::fstat(fd, &st), "stat " + path.string());
            if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0 ||
                static_cast<uint64_t>(st.st_size) != size)
                throw Error(
                    fmt::format("{} is not a key this initless can trust (a regular file of {} bytes, owned "
                                "by uid {}, mode 0600): it has {} bytes, uid {}, mode {:04o}; remove it",
                                path.string(), size, ::geteuid(), st.st_size, st.st_uid, st.st_mode & 07777));
            std::string secret(size, '\0');
            read_exact(fd, secret.data(), size, 0);
            return secret;
        }
        if (errno == ELOOP) throw Error(fmt::format("{} is a symlink: refused as a key", path.string()));
        if (errno != ENOENT) throw SysError("open " + path.string(), errno);
        std::string secret(size, '\0');
        for (size_t got = 0; got < size;) {
            ssize_t n = ::getrandom(secret.data() + got, size - got, 0);
            if (n < 0 && errno != EINTR) throw SysError("getrandom", errno);
            if (n > 0) got += static_cast<size_t>(n);
        }
        fs::path tmp = path;
        tmp += fmt::format(".tmp.{}", ::getpid());
        ::unlink(tmp.c_str());
        {
            UniqueFd out = open_file(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
            check(::fchmod(out.get(), 0600), "chmod " + tmp.string());  // whatever the umask
            write_all(out.get(), secret.data(), size);
            check(::fsync(out.get()), "fsync " + tmp.string());
        }
        int linked = ::link(tmp.c_str(), path.c_str());
        int err = errno;
        ::unlink(tmp.c_str());
        if (linked == 0) {
            fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path());
            return secret;
        }
        if (err != EEXIST) throw SysError("create " + path.string(), err);
        // Another process made it first: use theirs.
    }
    throw Error(fmt::format("{} could not be read or created", path.string()));
}

std::vector<std::pair<uint64_t, uint64_t>> data_ranges(int fd, uint64_t size) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    off_t at = 0;
    while (static_cast<uint64_t>(at) < size) {
        off_t data = ::lseek(fd, at, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;                // only a hole is left
            if (errno == EINVAL) return {{0, size}};  // no hole support
            throw SysError("lseek SEEK_DATA", errno);
        }
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        if (hole < 0) throw SysError("lseek SEEK_HOLE", errno);
        uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
        if (static_cast<uint64_t>(data) >= end) break;
        out.push_back({static_cast<uint64_t>(data), end});
        at = hole;
    }
    return out;
}

UniqueFd reopen(int fd, int flags) {
    return open_file(fmt::format("/proc/self/fd/{}", fd), flags);
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
    // An empty directory goes without listing it, which takes an fd the process may be short of.
    if (::rmdir(path.c_str()) == 0) return;
    for (const auto& name : list_directory(path)) {
        fs::path entry = path / name;
        struct stat st {};
        if (::lstat(entry.c_str(), &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != root.st_dev)
                throw Error(fmt::format("refusing to remove {}: it is a mount point", entry.string()));
            remove_tree(entry);
        } else {
            check(::unlink(entry.c_str()), fmt::format("unlink {}", entry.string()));
        }
    }
    check(::rmdir(path.c_str()), fmt::format("rmdir {}", path.string()));
}

std::vector<std::string> list_directory(const fs::path& path) {
    std::error_code ec;
    fs::directory_iterator it(path, ec), end;
    std::vector<std::string> names;
    for (; !ec && it != end; it.increment(ec)) names.push_back(it->path().filename().string());
    if (ec) throw SysError(fmt::format("list {}", path.string()), ec.value());
    return names;
}

}  // namespace initless::sys
