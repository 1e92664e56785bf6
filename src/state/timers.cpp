// Timers. setitimer timers (REAL, VIRTUAL, PROF) are read by injected getitimer and set again with
// the time they had left. POSIX timers (timer_create) keep kernel ids the engine cannot choose at
// restore: they fail the checkpoint. (timerfds are fds: event_fds.cpp.)
#include <sys/syscall.h>
#include <sys/time.h>

#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "state/kinds.h"

namespace initless::state::timers {

void read(Frozen& f, MemoryReader& mem) {
    sys::Tracee& leader = f.threads.front();
    uint64_t scratch = scratch_below_stack(leader.regs());
    for (int which : {ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF}) {
        long r = leader.inject_syscall(f.gadget, SYS_getitimer, {static_cast<uint64_t>(which), scratch});
        if (r != 0)
            throw Error(
                fmt::format("getitimer in process {}: {}", f.host, std::strerror(static_cast<int>(-r))));
        auto it = mem.read<itimerval>(scratch);
        auto us = [](const timeval& tv) {
            return static_cast<uint64_t>(tv.tv_sec) * 1000000 + static_cast<uint64_t>(tv.tv_usec);
        };
        f.p.itimers.push_back({us(it.it_interval), us(it.it_value)});
    }
    if (!sys::read_file(fmt::format("/proc/{}/timers", f.host)).empty())
        throw ContractError(
            fmt::format("process {} has POSIX timers (timer_create): they cannot be restored yet; rule: "
                        "use timerfd or setitimer",
                        f.host));
}

void store(json& j, const image::Process& p) {
    j["itimers"] = p.itimers;
}

void load(const json& j, image::Process& p) {
    p.itimers = j.at("itimers").get<std::vector<std::pair<uint64_t, uint64_t>>>();
}

void plan(Table& t, Region& region, const image::Process& p) {
    for (size_t which = 0; which < p.itimers.size(); ++which) {
        auto [interval, value] = p.itimers[which];
        // Just fired, its SIGALRM still queued: the kernel re-arms only on dequeue, so value reads 0.
        if (!value) value = interval;
        if (!value) continue;
        itimerval it{};
        it.it_interval = {static_cast<time_t>(interval / 1000000),
                          static_cast<suseconds_t>(interval % 1000000)};
        it.it_value = {static_cast<time_t>(value / 1000000), static_cast<suseconds_t>(value % 1000000)};
        t.op(SYS_setitimer, {which, region.put(it), 0}, -1, 0, {}, fmt::format("setitimer {}", which));
    }
}

}  // namespace initless::state::timers
