// eventfd, timerfd and signalfd, read from fdinfo and made again with their values. Limits: an
// eventfd counter above 2^32 is truncated (eventfd2 takes an unsigned int); a timerfd with unread
// expirations comes back armed to expire at once (its count restarts at 1), then periodic as before.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>

#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "state/kinds.h"

namespace initless::state::event_fds {

std::optional<image::FdObject> read(const FdSource& s) {
    const auto& fields = s.info.fields;
    if (s.dest == "anon_inode:[eventfd]") {
        image::EventFd e;
        e.counter = hex_u64(fields.at("eventfd-count"));
        e.semaphore = fields.count("eventfd-semaphore") && fields.at("eventfd-semaphore") == "1";
        return e;
    }
    if (s.dest == "anon_inode:[timerfd]") {
        image::TimerFd t;
        t.clock = std::stoi(fields.at("clockid"));
        long long vs = 0, vn = 0, is = 0, in = 0;
        std::sscanf(fields.at("it_value").c_str(), "(%lld, %lld)", &vs, &vn);
        std::sscanf(fields.at("it_interval").c_str(), "(%lld, %lld)", &is, &in);
        t.value_ns = static_cast<uint64_t>(vs * 1000000000LL + vn);
        t.interval_ns = static_cast<uint64_t>(is * 1000000000LL + in);
        t.ticks = fields.count("ticks") ? std::stoull(fields.at("ticks")) : 0;
        return t;
    }
    if (s.dest == "anon_inode:[signalfd]") return image::SignalFd{.sigmask = hex_u64(fields.at("sigmask"))};
    return std::nullopt;
}

void store(json& j, const image::EventFd& f) {
    j["counter"] = f.counter;
    j["semaphore"] = f.semaphore;
}
void load(const json& j, image::EventFd& f) {
    f.counter = j.at("counter");
    f.semaphore = j.at("semaphore");
}
void store(json& j, const image::TimerFd& f) {
    j["clock"] = f.clock;
    j["value_ns"] = f.value_ns;
    j["interval_ns"] = f.interval_ns;
    j["ticks"] = f.ticks;
}
void load(const json& j, image::TimerFd& f) {
    f.clock = j.at("clock");
    f.value_ns = j.at("value_ns");
    f.interval_ns = j.at("interval_ns");
    f.ticks = j.at("ticks");
}
void store(json& j, const image::SignalFd& f) {
    j["sigmask"] = f.sigmask;
}
void load(const json& j, image::SignalFd& f) {
    f.sigmask = j.at("sigmask");
}

void plan_create(Table& t, Region&, const image::Fd& f, const image::EventFd& o) {
    t.op(SYS_eventfd2,
         {o.counter,
          (o.semaphore ? uint64_t{EFD_SEMAPHORE} : 0) | (f.flags & O_NONBLOCK ? uint64_t{EFD_NONBLOCK} : 0)},
         kTmp, 0, {}, fmt::format("fd {} eventfd", f.fd));
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::TimerFd& o) {
    std::string what = fmt::format("fd {}", f.fd);
    uint64_t nonblock = (f.flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
    t.op(SYS_timerfd_create, {static_cast<uint64_t>(o.clock), nonblock}, kTmp, 0, {}, what + " timerfd");
    // Unread expirations make the kernel show it_value 0 even for a running periodic timer: such a
    // timer is re-armed to expire at once (its count restarts at 1), then periodic.
    uint64_t value = o.ticks ? 1 : (o.value_ns ? o.value_ns : o.interval_ns);
    if (!value) return;
    itimerspec its{};
    its.it_value = {static_cast<time_t>(value / 1000000000), static_cast<long>(value % 1000000000)};
    its.it_interval = {static_cast<time_t>(o.interval_ns / 1000000000),
                       static_cast<long>(o.interval_ns % 1000000000)};
    t.op(SYS_timerfd_settime, {0, 0, region.put(its), 0}, -1, 0, {{0, kTmp}}, what + " timerfd_settime");
}

void plan_create(Table& t, Region& region, const image::Fd& f, const image::SignalFd& o) {
    uint64_t nonblock = (f.flags & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
    uint64_t mask = o.sigmask;
    t.op(SYS_signalfd4, {static_cast<uint64_t>(-1), region.put(mask), 8, nonblock}, kTmp, 0, {},
         fmt::format("fd {} signalfd", f.fd));
}

}  // namespace initless::state::event_fds
