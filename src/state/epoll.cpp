// epoll instances. Checkpoint reads the registrations from fdinfo (tfd, events, data); a
// registration is keyed by (fd number, open file) and outlives its fd while the file is open
// elsewhere, so each one's file is looked up among the process's fds (kcmp KCMP_EPOLL_TFD): at its
// number, or at another fd (a dup whose original was closed, its number maybe reused), or nowhere
// in the process (refused). Restore makes the instance with the other fds, and registers its targets
// once every fd of the process is at its number; a target held at another fd is put at its number
// for the epoll_ctl (what is there moved aside and back).
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/proc.h"
#include "initless/sys/process.h"
#include "state/kinds.h"

namespace initless::state::epoll {

std::optional<image::FdObject> read(const FdSource& s) {
    if (s.dest != "anon_inode:[eventpoll]") return std::nullopt;
    image::EpollFd e;
    for (const auto& line : s.info.lines) {
        if (line.rfind("tfd:", 0) != 0) continue;
        image::EpollTarget t;
        char data_hex[32] = {};
        unsigned events = 0;
        if (std::sscanf(line.c_str(), "tfd: %d events: %x data: %31s", &t.fd, &events, data_hex) != 3)
            throw Error(s.where + ": cannot parse epoll registration: " + line);
        t.events = events;
        t.data = std::stoull(data_hex, nullptr, 16);
        e.targets.push_back(t);
    }
    std::vector<int> fds;
    std::map<int, int> seen;  // target fd number -> registrations under it so far
    for (auto& t : e.targets) {
        int nth = seen[t.fd]++;
        if (sys::is_epoll_target(s.pid, s.fd, t.fd, nth, t.fd)) continue;
        if (fds.empty()) fds = sys::list_fds(s.pid);
        for (int fd : fds)
            if (fd != t.fd && sys::is_epoll_target(s.pid, s.fd, t.fd, nth, fd)) {
                t.held_at = fd;
                break;
            }
        if (t.held_at < 0)
            throw ContractError(fmt::format(
                "{}: registration of target fd {} (data {:#x}) whose file the process no longer holds at any "
                "fd (closed here, open elsewhere); rule: an epoll set's targets stay open in its process",
                s.where, t.fd, t.data));
    }
    return e;
}

void store(json& j, const image::EpollFd& f) {
    json targets = json::array();
    for (const auto& t : f.targets) targets.push_back({t.fd, t.events, t.data, t.held_at});
    j["targets"] = std::move(targets);
}

void load(const json& j, image::EpollFd& f) {
    for (const auto& t : j.at("targets")) f.targets.push_back({t[0], t[1], t[2], t[3]});
}

void plan_create(Table& t, Region&, const image::Fd& f, const image::EpollFd&) {
    t.op(SYS_epoll_create1, {0}, kTmp, 0, {}, fmt::format("fd {} epoll_create1", f.fd));
}

void plan_targets(Table& t, Region& region, const image::Fd& f, const image::EpollFd& o,
                  const std::map<int, bool>& present, int lift) {
    for (const auto& target : o.targets) {
        epoll_event ev{};
        ev.events = target.events;
        ev.data.u64 = target.data;
        auto tfd = static_cast<uint64_t>(target.fd);
        std::string what = fmt::format("epoll {} add {}", f.fd, target.fd);
        auto here = present.find(target.fd);
        if (target.held_at >= 0) {
            // The file is at held_at: at target.fd just for the epoll_ctl; what holds that number
            // (if anything) waits in kTmp, above every fd, and goes back with its close-on-exec flag.
            if (here != present.end())
                t.op(SYS_fcntl, {tfd, F_DUPFD_CLOEXEC, static_cast<uint64_t>(lift)}, kTmp, 0, {},
                     what + " aside");
            t.op(SYS_dup3, {static_cast<uint64_t>(target.held_at), tfd, 0}, -1, 0, {},
                 what + " from its dup");
        }
        t.op(SYS_epoll_ctl, {static_cast<uint64_t>(f.fd), EPOLL_CTL_ADD, tfd, region.put(&ev, sizeof ev)}, -1,
             0, {}, what);
        if (target.held_at >= 0) {
            if (here != present.end()) {
                t.op(SYS_dup3, {0, tfd, here->second ? static_cast<uint64_t>(O_CLOEXEC) : 0}, -1, 0,
                     {{0, kTmp}}, what + " back");
                t.op(SYS_close, {0}, -1, 0, {{0, kTmp}}, what + " close aside");
            } else {
                t.op(SYS_close, {tfd}, -1, 0, {}, what + " close");
            }
        }
    }
}

}  // namespace initless::state::epoll
