// Timers. setitimer timers (REAL, VIRTUAL, PROF) are read by injected getitimer and set again with
// the time they had left. POSIX timers (timer_create): /proc/PID/timers gives each id, clock, signal,
// sigev_value and whom it notifies, an injected timer_gettime the time left and the interval; restore
// creates each again with its own id (prctl PR_TIMER_CREATE_RESTORE_IDS, Linux 6.15) once the
// process's threads exist (a timer may notify one of them), and arms it with the time it had left.
// Lost: overruns not read yet (timer_getoverrun starts at 0). (timerfds are fds: event_fds.cpp.)
#include <signal.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>

#include <cstdio>
#include <cstring>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "state/kinds.h"

namespace initless::state::timers {

namespace {

// prctl(PR_TIMER_CREATE_RESTORE_IDS): timer_create takes the id it is given (linux/prctl.h, 6.15).
constexpr int kPrTimerCreateRestoreIds = 77;

uint64_t ns_of(const timespec& t) {
    return static_cast<uint64_t>(t.tv_sec) * 1000000000ULL + static_cast<uint64_t>(t.tv_nsec);
}
timespec timespec_of(uint64_t ns) {
    return {static_cast<time_t>(ns / 1000000000ULL), static_cast<long>(ns % 1000000000ULL)};
}

// /proc/PID/timers: "ID: 0", "signal: 10/0000000000000000", "notify: signal/pid.12", "ClockID: 1".
void read_posix_timers(Frozen& f, MemoryReader& mem, sys::Tracee& leader, uint64_t scratch) {
    std::istringstream in(sys::read_file(fmt::format("/proc/{}/timers", f.host)));
    std::string line;
    image::PosixTimer* t = nullptr;
    while (std::getline(in, line)) {
        unsigned long long value = 0;
        int number = 0;
        char how[16] = {}, whom[8] = {};
        if (std::sscanf(line.c_str(), "ID: %d", &number) == 1) {
            f.p.posix_timers.push_back({});
            t = &f.p.posix_timers.back();
            t->id = number;
        } else if (t && std::sscanf(line.c_str(), "signal: %d/%llx", &number, &value) == 2) {
            t->signal = number;
            t->value = value;
        } else if (t && std::sscanf(line.c_str(), "notify: %15[a-z]/%7[a-z].%d", how, whom, &number) == 3) {
            std::string h = how;
            t->notify = h == "none" ? SIGEV_NONE : h == "thread" ? SIGEV_THREAD : SIGEV_SIGNAL;
            if (std::string(whom) == "tid") {
                // The host's /proc shows the host's tid: the thread's tid in the sandbox is restored.
                t->notify |= SIGEV_THREAD_ID;
                t->tid = ns_id(sys::read_status(number).at("NSpid"));
            }
        } else if (t && std::sscanf(line.c_str(), "ClockID: %d", &number) == 1) {
            t->clock = number;
        }
    }
    for (auto& timer : f.p.posix_timers) {
        // The process's CPU clock counts on in the restored process (the time left is relative); a
        // thread's CPU clock (or another process's) names a clock restore cannot name again.
        // (A CPU clock id is ~pid << 3 | a per-thread bit 4 | the kind; pid 0 is the caller's own.)
        bool own_process_cpu = timer.clock == CLOCK_PROCESS_CPUTIME_ID ||
                               (timer.clock < 0 && (~timer.clock >> 3) == 0 && !(timer.clock & 4));
        if (timer.clock != CLOCK_REALTIME && timer.clock != CLOCK_MONOTONIC &&
            timer.clock != CLOCK_BOOTTIME && timer.clock != CLOCK_REALTIME_ALARM &&
            timer.clock != CLOCK_BOOTTIME_ALARM && timer.clock != CLOCK_TAI && !own_process_cpu)
            throw ContractError(fmt::format(
                "process {}: POSIX timer {} counts the CPU time of a thread or of another process (clock "
                "{}); rule: only timers of the realtime, monotonic, boottime, TAI or the process's CPU "
                "clock are restored",
                f.host, timer.id, timer.clock));
        long r =
            leader.inject_syscall(f.gadget, SYS_timer_gettime, {static_cast<uint64_t>(timer.id), scratch});
        if (r != 0)
            throw Error(fmt::format("timer_gettime({}) in process {}: {}", timer.id, f.host,
                                    std::strerror(static_cast<int>(-r))));
        auto its = mem.read<itimerspec>(scratch);
        timer.interval_ns = ns_of(its.it_interval);
        timer.remaining_ns = ns_of(its.it_value);
    }
}

}  // namespace

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
    read_posix_timers(f, mem, leader, scratch);
}

void store(json& j, const image::Process& p) {
    j["itimers"] = p.itimers;
    json posix = json::array();
    for (const auto& t : p.posix_timers)
        posix.push_back({{"id", t.id},
                         {"clock", t.clock},
                         {"notify", t.notify},
                         {"signal", t.signal},
                         {"value", t.value},
                         {"tid", t.tid},
                         {"interval_ns", t.interval_ns},
                         {"remaining_ns", t.remaining_ns}});
    j["posix_timers"] = std::move(posix);
}

void load(const json& j, image::Process& p) {
    p.itimers = j.at("itimers").get<std::vector<std::pair<uint64_t, uint64_t>>>();
    if (j.contains("posix_timers"))
        for (const auto& t : j.at("posix_timers"))
            p.posix_timers.push_back({t.at("id"), t.at("clock"), t.at("notify"), t.at("signal"),
                                      t.at("value"), t.at("tid"), t.at("interval_ns"), t.at("remaining_ns")});
}

void plan_posix(Table& t, Region& region, const image::Process& p) {
    if (p.posix_timers.empty()) return;
    t.op(SYS_prctl, {kPrTimerCreateRestoreIds, 1, 0, 0, 0}, -1, 0, {}, "prctl timer create restore ids on");
    for (const auto& timer : p.posix_timers) {
        std::string what = fmt::format("POSIX timer {}", timer.id);
        sigevent ev{};
        ev.sigev_notify = timer.notify;
        ev.sigev_signo = timer.signal;
        ev.sigev_value.sival_ptr = reinterpret_cast<void*>(timer.value);
        if (timer.notify & SIGEV_THREAD_ID) ev._sigev_un._tid = timer.tid;
        int id = timer.id;
        uint64_t id_at = region.put(id);  // in: the id to take; out: the id taken
        t.op(SYS_timer_create, {static_cast<uint64_t>(timer.clock), region.put(ev), id_at}, -1, 0, {},
             what + " create");
        if (!timer.remaining_ns) continue;  // disarmed
        itimerspec its{};
        its.it_value = timespec_of(timer.remaining_ns);
        its.it_interval = timespec_of(timer.interval_ns);
        t.op(SYS_timer_settime, {static_cast<uint64_t>(timer.id), 0, region.put(its), 0}, -1, 0, {},
             what + " arm");
    }
    t.op(SYS_prctl, {kPrTimerCreateRestoreIds, 0, 0, 0, 0}, -1, 0, {}, "prctl timer create restore ids off");
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
