// Readers of /proc/PID files: maps (with smaps VmFlags; the one maps parser of the project), status,
// fdinfo.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace initless::sys {

struct MapsEntry {
    uint64_t start = 0, end = 0;
    std::string perms;  // "rw-p"
    uint64_t offset = 0;
    uint64_t inode = 0;
    std::string path;                   // may be empty, "[heap]", "/usr/lib/... (deleted)"
    std::vector<std::string> vm_flags;  // from smaps: "gd", "ac", ...
};

// `with_flags` also reads smaps for VmFlags (slower).
std::vector<MapsEntry> read_maps(pid_t pid, bool with_flags = false);
// "Key: value" lines of /proc/PID/status (value trimmed).
std::map<std::string, std::string> read_status(pid_t pid);
// fdinfo as "key: value" pairs for single-valued keys; `lines` keeps every raw line.
struct FdInfo {
    std::map<std::string, std::string> fields;
    std::vector<std::string> lines;
};
FdInfo read_fdinfo(pid_t pid, int fd);
std::vector<int> list_fds(pid_t pid);
// One mount of /proc/PID/mountinfo, as the process sees it.
struct MountInfo {
    int id = 0;
    std::string root;         // the mounted directory of its filesystem ("/" for a whole one)
    std::string mount_point;  // where the process sees it
    std::string fstype;       // "overlay", "tmpfs", "proc" ...
    dev_t device = 0;         // its filesystem's st_dev (the "major:minor" field)
};
std::map<int, MountInfo> read_mountinfo(pid_t pid);  // by mount id (fdinfo's mnt_id)
std::string read_link(const std::string& path);

}  // namespace initless::sys
