// Mounts the daemon makes in the host's mount namespace (an instance's writable-layer tmpfs), and their
// removal. Any thread; each call is a few syscalls.
#pragma once

#include <filesystem>
#include <string>
#include <utility>

#include "initless/sys/unique_fd.h"

namespace initless::sys {

// A tmpfs at `target` (nosuid, nodev) with `options` ("size=64m,mode=0755").
void mount_tmpfs(const std::filesystem::path& target, const std::string& options);
// Detaches every mount at or below `path`, deepest first (from /proc/self/mountinfo). Returns how many.
int unmount_under(const std::filesystem::path& path);
// lchown that throws.
void change_owner(const std::filesystem::path& path, uid_t uid, gid_t gid);
// pipe2(O_CLOEXEC): {read end, write end}.
std::pair<UniqueFd, UniqueFd> make_pipe();

}  // namespace initless::sys
