// Directory trees read and copied through directory fds only: every entry is opened with openat2
// relative to its parent's fd, with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
// RESOLVE_NO_XDEV, so a symlink (to /etc/shadow, to ../../.., to /proc/self/root/...) planted in the
// tree, or a directory swapped for one, is never followed out of it: a symlink is copied as the link
// it is. Regular files are opened O_NONBLOCK and checked to be what fstatat saw, so a FIFO never
// blocks a copy. FIFOs and overlay whiteouts (character devices 0:0) are made again as nodes (never
// opened); sockets are skipped (a restored listener binds its path again); any other device node is
// refused, naming it.
//
// Used for a sandbox's writable layer and tmpfs dirs at checkpoint (read while the function is
// frozen) and for an image's trees at restore. Blocking file I/O; any thread; no shared state.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "initless/sys/unique_fd.h"

namespace initless::sys {

// openat2(2): `path` resolved relative to `dir` under `resolve` (RESOLVE_* of linux/openat2.h).
// O_CLOEXEC is added. Throws SysError naming `path` (ELOOP/EXDEV/EXDEV when resolution was refused).
UniqueFd open_at(int dir, const std::string& path, int flags, uint64_t resolve, int mode = 0);

// Opens the directory `path` inside the root of process `pid` (/proc/PID/root), resolving it as that
// process would (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: an absolute symlink or ".." stays inside).
UniqueFd open_in_root_of(int pid, const std::string& path, int flags);

// What a tree walk reports, in a fixed order (entries of a directory sorted by name, a directory
// before its contents), so that two walks of equal trees report the same sequence.
class TreeVisitor {
  public:
    virtual ~TreeVisitor() = default;
    // `path` is relative to the root ("" for the root itself); `link` is a symlink's target.
    virtual void entry(const std::string& path, const struct stat& st, std::string_view link) = 0;
    // A regular file's contents, in order, after its entry().
    virtual void data(std::string_view chunk) = 0;
};

// Walks the tree under the directory fd `from` and, when `to` >= 0, copies it into the directory
// fd `to` (which exists; its own mode, owner and times are set from `from`'s), keeping modes, owners,
// times and symlinks. `visitor` (may be null) sees every entry copied and every byte read. `where`
// names the tree in errors. A file that changes size while it is read fails the walk.
void copy_tree_at(int from, int to, TreeVisitor* visitor, const std::string& where);

}  // namespace initless::sys
