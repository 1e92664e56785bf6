#include "initless/sys/proc.h"

#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include <fmt/format.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::sys {

namespace {
std::string trim(const std::string& s) {
    auto b = s.find_first_not_of(" \t");
    auto e = s.find_last_not_of(" \t\n");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool parse_maps_line(const std::string& line, MapsEntry& m) {
    std::istringstream in(line);
    std::string range, dev;
    if (!(in >> range >> m.perms >> std::hex >> m.offset >> dev >> std::dec >> m.inode)) return false;
    auto dash = range.find('-');
    m.start = std::stoull(range.substr(0, dash), nullptr, 16);
    m.end = std::stoull(range.substr(dash + 1), nullptr, 16);
    std::string rest;
    std::getline(in, rest);
    m.path = trim(rest);
    return true;
}
}  // namespace

std::vector<MapsEntry> read_maps(pid_t pid, bool with_flags) {
    std::vector<MapsEntry> out;
    std::istringstream in(read_file(fmt::format("/proc/{}/{}", pid, with_flags ? "smaps" : "maps")));
    std::string line;
    while (std::getline(in, line)) {
        MapsEntry m;
        if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < 17 &&
            parse_maps_line(line, m)) {
            out.push_back(std::move(m));
        } else if (with_flags && line.rfind("VmFlags:", 0) == 0 && !out.empty()) {
            std::istringstream f(line.substr(8));
            std::string flag;
            while (f >> flag) out.back().vm_flags.push_back(flag);
        }
    }
    return out;
}

std::map<std::string, std::string> read_status(pid_t pid) {
    std::map<std::string, std::string> out;
    std::istringstream in(read_file(fmt::format("/proc/{}/status", pid)));
    std::string line;
    while (std::getline(in, line)) {
        auto colon = line.find(':');
        if (colon != std::string::npos) out[line.substr(0, colon)] = trim(line.substr(colon + 1));
    }
    return out;
}

FdInfo read_fdinfo(pid_t pid, int fd) {
    FdInfo info;
    std::istringstream in(read_file(fmt::format("/proc/{}/fdinfo/{}", pid, fd)));
    std::string line;
    while (std::getline(in, line)) {
        info.lines.push_back(line);
        auto colon = line.find(':');
        if (colon != std::string::npos)
            info.fields.emplace(line.substr(0, colon), trim(line.substr(colon + 1)));
    }
    return info;
}

std::map<int, MountInfo> read_mountinfo(pid_t pid) {
    std::map<int, MountInfo> out;
    std::istringstream in(read_file(fmt::format("/proc/{}/mountinfo", pid)));
    std::string line;
    while (std::getline(in, line)) {
        // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
        std::istringstream f(line);
        MountInfo m;
        std::string parent, device, word;
        f >> m.id >> parent >> device >> m.root >> m.mount_point;
        while (f >> word && word != "-") {
        }
        f >> m.fstype;
        unsigned major = 0, minor = 0;
        if (std::sscanf(device.c_str(), "%u:%u", &major, &minor) == 2) m.device = makedev(major, minor);
        out[m.id] = m;
    }
    return out;
}

std::vector<int> list_fds(pid_t pid) {
    std::vector<int> out;
    for (const auto& name : list_directory(fmt::format("/proc/{}/fd", pid))) out.push_back(std::stoi(name));
    std::sort(out.begin(), out.end());
    return out;
}

std::string read_link(const std::string& path) {
    char buf[4096];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    if (n < 0) throw SysError("readlink " + path, errno);
    return std::string(buf, static_cast<size_t>(n));
}

}  // namespace initless::sys
