// Small file helpers over raw fds: whole-file reads of /proc-style files, full writes, atomic
// publication (temp name, fsync, rename, fsync dir), recursive removal that never crosses mounts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "initless/sys/unique_fd.h"

namespace initless::sys {

UniqueFd open_file(const std::filesystem::path& path, int flags, int mode = 0644);
std::string read_file(const std::filesystem::path& path);
// A file someone else controls (a function's function.toml): it must be a regular file (after symlinks)
// of at most `max` bytes. Opened without blocking, so a FIFO in its place is refused, not waited on.
std::string read_regular_file(const std::filesystem::path& path, size_t max);
void write_file(const std::filesystem::path& path, std::string_view data);  // truncates
void write_all(int fd, const void* data, size_t len);
void read_exact(int fd, void* data, size_t len, off_t offset);
// Up to `max` bytes from `offset` (fewer at the end of the file).
std::string read_from(int fd, uint64_t offset, size_t max);
void fsync_path(const std::filesystem::path& path);
// Asks the kernel to read [offset, offset+len) of `fd` into the page cache (posix_fadvise WILLNEED:
// the reads are queued, this returns without waiting for them). Errors are ignored: advice only.
void read_ahead(int fd, uint64_t offset, uint64_t len);
// Returns once [offset, offset+len) of `fd` is in the page cache: reads what is not there (in the
// kernel's read-around windows), waits for reads in flight. No copy: a temporary shared read-only
// mapping populated with MADV_POPULATE_READ, then unmapped. Throws on a read error.
void read_into_page_cache(int fd, uint64_t offset, uint64_t len);
// Whether the file open at `fd` lives in memory (tmpfs, a memfd): nothing to read ahead, and reading a
// hole of it would allocate a page.
bool in_memory_file(int fd);
// Whether every page of [offset, offset+len) of `fd` is in the page cache now (cachestat, or mincore
// on older kernels; reads nothing).
bool in_page_cache(int fd, uint64_t offset, uint64_t len);
// Returns once the page holding `offset` of `fd` has been read (a one-byte pread: waits for a read in
// flight, reads it if nobody asked for it).
void wait_page_read(int fd, uint64_t offset);
// Writes `data` to path via a temp file in the same directory, fsyncs and renames it (and fsyncs the
// directory). Readers see the old or the new contents, never a part.
void write_file_atomic(const std::filesystem::path& path, std::string_view data);
// The same without the fsyncs: atomic for readers, not durable across a crash of the machine. For
// state that does not outlive a reboot (the OCI runtime's records: containers end with the machine),
// where two fsyncs would cost milliseconds on every verb.
void write_file_replace(const std::filesystem::path& path, std::string_view data);
// A file mapped read-only (MAP_PRIVATE) for one sequential pass, unmapped when dropped; empty (null
// data) for a size of 0.
class FileMapping {
  public:
    FileMapping(int fd, size_t size);
    FileMapping(FileMapping&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(o.size_) {}
    FileMapping& operator=(FileMapping&&) = delete;
    FileMapping(const FileMapping&) = delete;
    ~FileMapping();
    const uint8_t* data() const { return static_cast<const uint8_t*>(data_); }
    size_t size() const { return size_; }

  private:
    void* data_ = nullptr;
    size_t size_ = 0;
};

// An anonymous file in memory (memfd, close-on-exec) of `size` bytes, mapped read-write and shared:
// what is written through data() is what other open file descriptions of it (reopen) read and map.
// Holes read as zeros and take no memory until written.
class MemoryFile {
  public:
    MemoryFile(const char* name, size_t size);
    MemoryFile(const MemoryFile&) = delete;
    MemoryFile& operator=(const MemoryFile&) = delete;
    ~MemoryFile();
    int fd() const { return fd_.get(); }
    uint8_t* data() const { return static_cast<uint8_t*>(data_); }
    size_t size() const { return size_; }

  private:
    UniqueFd fd_;
    void* data_ = nullptr;
    size_t size_ = 0;
};

// Copies a tree keeping modes, owners, symlinks, FIFOs and overlay whiteouts (0:0 character
// devices); sockets are skipped (their owners recreate them), other device nodes refused. `to` is
// made if missing. Never follows a symlink inside the tree: sys::copy_tree_at (tree.h).
void copy_tree(const std::filesystem::path& from, const std::filesystem::path& to);
// A secret of `size` random bytes kept in the file `path` (a key): read when the file exists, which
// must then be a regular file (not a symlink) of exactly `size` bytes, owned by this euid and
// readable by no one else (mode 0600 or stricter); else created atomically (an O_EXCL temp file of
// mode 0600 linked into place, so two processes creating it at once agree on one secret). Throws
// naming the path and what is wrong with it.
std::string read_or_create_secret(const std::filesystem::path& path, size_t size);
// The byte ranges of an open file that hold data (SEEK_DATA/SEEK_HOLE), up to `size`; a file system
// without hole support reports the whole file.
std::vector<std::pair<uint64_t, uint64_t>> data_ranges(int fd, uint64_t size);
// A new open file description of the file `fd` refers to (through /proc/self/fd: the same inode,
// whatever its path now names).
UniqueFd reopen(int fd, int flags);
// Removes a tree; refuses to descend into another mount (a leaked bind mount must not be emptied).
void remove_tree(const std::filesystem::path& path);
// The names in a directory (std::filesystem's iterator throws its own error; this one throws ours).
std::vector<std::string> list_directory(const std::filesystem::path& path);

}  // namespace initless::sys
