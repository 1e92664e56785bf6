// Keep-alive and pre-warm policy: the one interface shared by the controller and the simulator.
// Contract: a host (the live controller, or sim::TraceReplay) owns the instances and the clock; it tells the
// policy what happened through the on_* events and carries out the Decisions the policy appends to `out`.
// A policy never sees sandboxes, sockets or threads, and depends on nothing above this header, so the
// same object runs unchanged in `initless serve` and in `initless sim`.
//  - Times are milliseconds on the host's monotonic clock (trace time in the simulator); events arrive
//    in non-decreasing time order.
//  - Functions are registered before their first event; FunctionIds are small dense integers.
//  - An Evict decision is final: the policy forgets the instance when it emits it. Every other removal
//    (a KeepUntil deadline passing, a crash, an operator) is reported with on_instance_removed.
//  - An instance that is idle and has no KeepUntil is kept until the policy evicts it.
//  - on_memory_pressure asks for at least `need_mb` to be freed; the policy may free less (it never
//    evicts a busy instance) and the host then decides what to do with the request.
#pragma once

#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

namespace initless::policy {

using TimeMs = std::int64_t;
using FunctionId = std::uint32_t;
using InstanceId = std::uint64_t;

inline constexpr TimeMs kForever = std::numeric_limits<TimeMs>::max();
inline constexpr TimeMs kMinuteMs = 60'000;

// Where a function lives between invocations. Warm: an initialised instance in memory (start costs
// nothing). SnapshotInMemory: its snapshot pages are in page cache or tmpfs (a cold start is a restore
// that reads no disk). SnapshotOnDisk: only the image on disk (a cold start is a restore that faults
// its working set in from disk, or a boot when there is no snapshot).
enum class Tier : std::uint8_t { Warm, SnapshotInMemory, SnapshotOnDisk };

// What a policy needs to know about a function. Costs are what a cold start costs from each snapshot
// tier; in a world without snapshots both equal the boot time, and tiering then buys nothing.
struct FunctionProfile {
    FunctionId id = 0;
    double memory_mb = 0;            // one running or idle instance
    double image_mb = 0;             // snapshot pages held when the snapshot sits in the memory tier
    double cold_from_memory_ms = 0;  // restore with the snapshot in page cache (or boot)
    double cold_from_disk_ms = 0;    // restore with the snapshot on disk only (or boot)
};

// How an invocation got its instance.
enum class StartKind : std::uint8_t {
    Warm,            // an idle instance that had served before
    PreWarmed,       // first use of an instance the policy asked to pre-warm
    ColdFromMemory,  // new instance, snapshot in the memory tier
    ColdFromDisk,    // new instance, snapshot on disk (or booted)
};

struct InvocationStart {
    TimeMs now = 0;
    FunctionId function = 0;
    InstanceId instance = 0;
    StartKind start = StartKind::Warm;
};

struct InvocationEnd {
    TimeMs now = 0;
    FunctionId function = 0;
    InstanceId instance = 0;
};

enum class IdleReason : std::uint8_t { AfterInvocation, PreWarmed };

// The instance runs nothing now. The policy answers with KeepUntil or Evict for it (or nothing: keep).
struct InstanceIdle {
    TimeMs now = 0;
    FunctionId function = 0;
    InstanceId instance = 0;
    IdleReason reason = IdleReason::AfterInvocation;
};

struct InstanceRemoved {
    TimeMs now = 0;
    FunctionId function = 0;
    InstanceId instance = 0;
};

// The host needs `need_mb` more memory than it has (to start an instance of `function`, or to place a
// snapshot in memory).
struct MemoryPressure {
    TimeMs now = 0;
    double need_mb = 0;
    FunctionId function = 0;
};

struct ClockTick {
    TimeMs now = 0;
};

enum class DecisionKind : std::uint8_t {
    Evict,          // tear down idle `instance` now
    KeepUntil,      // keep idle `instance` until `at`, then tear it down unless it was used meanwhile
    PreWarm,        // from `at`, have at least `count` idle instances of `function` (start the missing)
    PlaceSnapshot,  // keep `function`'s snapshot in `tier` (SnapshotInMemory or SnapshotOnDisk)
};

struct Decision {
    DecisionKind kind = DecisionKind::KeepUntil;
    FunctionId function = 0;
    InstanceId instance = 0;
    TimeMs at = 0;
    std::uint32_t count = 1;
    Tier tier = Tier::Warm;

    static Decision evict(FunctionId f, InstanceId i) {
        return {DecisionKind::Evict, f, i, 0, 1, Tier::Warm};
    }
    static Decision keep_until(FunctionId f, InstanceId i, TimeMs at) {
        return {DecisionKind::KeepUntil, f, i, at, 1, Tier::Warm};
    }
    static Decision pre_warm(FunctionId f, TimeMs at, std::uint32_t count = 1) {
        return {DecisionKind::PreWarm, f, 0, at, count, Tier::Warm};
    }
    static Decision place_snapshot(FunctionId f, Tier t) {
        return {DecisionKind::PlaceSnapshot, f, 0, 0, 1, t};
    }
    bool operator==(const Decision&) const = default;
};

using Decisions = std::vector<Decision>;

class KeepAlivePolicy {
  public:
    virtual ~KeepAlivePolicy() = default;

    virtual std::string_view name() const = 0;
    // How often the policy wants on_clock_tick; 0 means never.
    virtual TimeMs tick_interval_ms() const { return 0; }

    virtual void on_function_registered(const FunctionProfile& profile) = 0;
    virtual void on_invocation_start(const InvocationStart& e, Decisions& out) = 0;
    virtual void on_invocation_end(const InvocationEnd& /*e*/, Decisions& /*out*/) {}
    virtual void on_instance_idle(const InstanceIdle& e, Decisions& out) = 0;
    virtual void on_instance_removed(const InstanceRemoved& e, Decisions& out) = 0;
    virtual void on_memory_pressure(const MemoryPressure& e, Decisions& out) = 0;
    virtual void on_clock_tick(const ClockTick& /*e*/, Decisions& /*out*/) {}
};

}  // namespace initless::policy
