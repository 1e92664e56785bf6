#include "initless/sys/mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::sys {

namespace fs = std::filesystem;

void mount_tmpfs(const fs::path& target, const std::string& options) {
    if (::mount("tmpfs", target.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0)
        throw SysError(fmt::format("mount tmpfs ({}) on {}", options, target.string()), errno);
}

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
            out.push_back(static_cast<char>(v));
            i += 3;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

}  // namespace

int unmount_under(const fs::path& path) {
    std::string prefix = path.lexically_normal().string();
    while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
    std::vector<std::string> targets;
    std::istringstream in(read_file("/proc/self/mountinfo"));
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id, parent, devno, root, point;
        fields >> id >> parent >> devno >> root >> point;
        point = unescape(point);
        if (point == prefix || point.rfind(prefix + "/", 0) == 0) targets.push_back(point);
    }
    // Deepest first; a mount seen twice (stacked) is detached once per entry.
    std::sort(targets.begin(), targets.end(),
              [](const auto& a, const auto& b) { return a.size() > b.size(); });
    int n = 0;
    for (const auto& t : targets)
        if (::umount2(t.c_str(), MNT_DETACH) == 0) ++n;
    return n;
}

void change_owner(const fs::path& path, uid_t uid, gid_t gid) {
    if (::lchown(path.c_str(), uid, gid) != 0) throw SysError("chown " + path.string(), errno);
}

std::pair<UniqueFd, UniqueFd> make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw SysError("pipe2", errno);
    return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

}  // namespace initless::sys
