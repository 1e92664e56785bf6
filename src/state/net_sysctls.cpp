// Sysctls of the function's network namespace (/proc/sys/net as seen from it): a restored instance
// gets a fresh one, so every value the function changed would be lost. Checkpoint reads each
// readable and writable file under /proc/sys/net from a thread that joined the sandbox's netns, and
// the same from a thread in a brand-new netns (the defaults); the values that differ are kept.
// Restore writes them back from the first process, inside the new sandbox's netns, before anything
// else of its own runs. Files present in only one of the two (other interfaces) are not compared.
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "state/kinds.h"

namespace initless::state::net_sysctls {

namespace {

namespace fs = std::filesystem;

// Every readable, writable file under /proc/sys/net as the calling thread's netns shows it.
void walk(const fs::path& dir, std::map<std::string, std::string>& out) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        struct stat st {};
        if (::lstat(e.path().c_str(), &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            walk(e.path(), out);
            continue;
        }
        if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IRUSR) || !(st.st_mode & S_IWUSR)) continue;
        int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        std::string value;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) value.append(buf, static_cast<size_t>(n));
        ::close(fd);
        if (n < 0) continue;  // unreadable until set (stable_secret): nothing to keep
        out[e.path().string()] = value;
    }
}

// In a thread of its own: setns/unshare change only the calling thread's netns.
std::map<std::string, std::string> read_in(int netns_fd) {
    std::map<std::string, std::string> out;
    std::exception_ptr failed;
    std::thread t([&] {
        try {
            if (netns_fd >= 0)
                sys::check(::setns(netns_fd, CLONE_NEWNET), "setns into the function's netns");
            else
                sys::check(::unshare(CLONE_NEWNET), "unshare a fresh netns");
            walk("/proc/sys/net", out);
        } catch (...) {
            failed = std::current_exception();
        }
    });
    t.join();
    if (failed) std::rethrow_exception(failed);
    return out;
}

}  // namespace

void read(image::Manifest& m, pid_t init) {
    sys::UniqueFd netns = sys::open_file(fmt::format("/proc/{}/ns/net", init), O_RDONLY | O_CLOEXEC);
    auto function = read_in(netns.get());
    auto defaults = read_in(-1);
    for (const auto& [path, value] : function) {
        auto d = defaults.find(path);
        if (d != defaults.end() && d->second != value) m.net_sysctls.push_back({path, value});
    }
}

void store(json& j, const image::Manifest& m) {
    j["net_sysctls"] = m.net_sysctls;
}

void load(const json& j, image::Manifest& m) {
    m.net_sysctls = j.at("net_sysctls").get<std::vector<std::pair<std::string, std::string>>>();
}

void plan(Table& t, Region& region, const image::Manifest& m) {
    for (const auto& [path, value] : m.net_sysctls) {
        t.op(SYS_open, {region.put_string(path), O_WRONLY | O_CLOEXEC}, kTmp, 0, {}, "open " + path);
        t.op(SYS_write, {0, region.put(value.data(), value.size(), 1), value.size()}, -1, STUB_OP_EXPECT_ARG2,
             {{0, kTmp}}, "write " + path);
        t.op(SYS_close, {0}, -1, 0, {{0, kTmp}}, "close " + path);
    }
}

}  // namespace initless::state::net_sysctls
