// epoll instances. Checkpoint reads the registrations from fdinfo (tfd, events, data). Restore makes
// the instance with the other fds, and registers its targets once every fd of the process is at its
// number (a target registered, then closed, was dropped by the kernel too and is skipped).
#include <sys/epoll.h>
#include <sys/syscall.h>

#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
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
    return e;
}

void store(json& j, const image::EpollFd& f) {
    json targets = json::array();
    for (const auto& t : f.targets) targets.push_back({t.fd, t.events, t.data});
    j["targets"] = std::move(targets);
}

void load(const json& j, image::EpollFd& f) {
    for (const auto& t : j.at("targets")) f.targets.push_back({t[0], t[1], t[2]});
}

void plan_create(Table& t, Region&, const image::Fd& f, const image::EpollFd&) {
    t.op(SYS_epoll_create1, {0}, kTmp, 0, {}, fmt::format("fd {} epoll_create1", f.fd));
}

void plan_targets(Table& t, Region& region, const image::Fd& f, const image::EpollFd& o,
                  const std::set<int>& present) {
    for (const auto& target : o.targets) {
        if (!present.count(target.fd)) continue;
        epoll_event ev{};
        ev.events = target.events;
        ev.data.u64 = target.data;
        t.op(SYS_epoll_ctl,
             {static_cast<uint64_t>(f.fd), EPOLL_CTL_ADD, static_cast<uint64_t>(target.fd),
              region.put(&ev, sizeof ev)},
             -1, 0, {}, fmt::format("epoll {} add {}", f.fd, target.fd));
    }
}

}  // namespace initless::state::epoll
