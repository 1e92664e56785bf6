// The controller of `initless serve` (the seed's Core Controller): the function registry, each
// function's pool of pre-started sandboxes, its instances, dispatch of requests to instances, scale
// out, keep-alive through a policy::KeepAlivePolicy, faults, and the metrics of all of it.
//
// Threads (see DESIGN.md "The daemon"):
//  - Every public method is thread-safe and returns without blocking on the engine: state is guarded
//    by one mutex, held only for bookkeeping, never across a sandbox, restore or teardown call.
//  - Blocking engine work runs on threads the controller starts and joins: a boot or a teardown on a
//    job thread; each pooled sandbox on a tracer thread of its own, which prepares it (restore stage
//    1: sandbox, restorer seized under ptrace, plan written) and later executes the plan (stage 2),
//    because the kernel accepts ptrace requests only from the attaching thread and kills the tracees
//    (PTRACE_O_EXITKILL) when that thread exits; a deploy on a job thread of its own.
//  - Callbacks (AcquireCallback, diagnosis, deploy progress) are called from any of these threads,
//    or from the caller's thread, never with the mutex held: the gateway posts them to its own
//    executor.
//  - A ticker thread expires idle instances and queued requests, refills and recycles pools, carries
//    out pre-warms, ticks the policy, notices instances that died while idle, and copies instance
//    logs into each function's log.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "initless/controller/metrics.h"
#include "initless/sys/unique_fd.h"

namespace initless::controller {

// How a request got its instance: an idle one (warm), one restored from the function's snapshot
// (cold), or one booted normally (boot: no usable snapshot, or a restore that failed).
enum class StartKind { Warm, Cold, Boot };
const char* start_kind_name(StartKind kind);

// One running sandboxed function instance. The gateway reaches it only through connections.
class Instance {
  public:
    const std::string& id() const { return id_; }
    const std::string& function() const { return function_; }
    uint16_t port() const { return port_; }
    uint32_t timeout_s() const { return timeout_s_; }
    uint32_t concurrency() const { return concurrency_; }  // requests it takes at once
    // A new connection to the function, made inside the sandbox's network namespace, non-blocking
    // and never waiting (the gateway's I/O threads call it): possibly still connecting when it
    // returns; a refusal shows on its first write (sys::connect_in_netns). Throws initless::Error
    // if no socket could be made.
    sys::UniqueFd connect();
    // What the gateway keeps for this instance (its kept-alive connections, as its own objects):
    // made by `make` on first use, destroyed with the instance. Thread-safe.
    std::shared_ptr<void> gateway_state(const std::function<std::shared_ptr<void>()>& make);

    // The controller's bookkeeping of this instance (opaque outside the controller).
    struct State;
    std::unique_ptr<State> state;

    Instance(std::string id, std::string function, uint16_t port, uint32_t timeout_s, uint32_t concurrency,
             sys::UniqueFd netns);
    ~Instance();

  private:
    std::string id_, function_;
    uint16_t port_ = 0;
    uint32_t timeout_s_ = 0;
    uint32_t concurrency_ = 1;
    sys::UniqueFd netns_;
    std::mutex gateway_mu_;
    std::shared_ptr<void> gateway_state_;
};

// The outcome of waiting for an instance: an instance slot (release it exactly once), or an error
// status (404 unknown function, 503 queue full or shutting down, 504 queue timeout, 502 start
// failed) with a one-line reason.
struct Acquired {
    std::shared_ptr<Instance> instance;
    StartKind kind = StartKind::Warm;
    double queue_ms = 0, sandbox_ms = 0, restore_ms = 0;
    bool sandbox_on_request_path = false;  // cold start with no pooled sandbox left
    int error_status = 0;
    std::string error;
    uint64_t token = 0;  // identifies the slot for release
};
using AcquireCallback = std::function<void(Acquired)>;

enum class Outcome {
    Ok,              // the function answered
    UpstreamFailed,  // the connection to the function broke before a whole response came
    TimedOut,        // no answer within the function's timeout_s: the instance is killed
};

// A deploy's progress: one event per step, then the end ({"ok": true, ...} or {"error": "..."}).
using DeployProgress = std::function<void(const nlohmann::json& event)>;

struct ControllerOptions {
    std::filesystem::path state_dir = "/var/lib/initless";  // registry and images, on disk
    bool image_store_tmpfs = false;                         // images in RAM (/dev/shm) instead
    std::string policy = "ttl";
    double memory_mb = 4096;  // idle-memory budget: idle instances beyond it are evicted by the policy
    // Pacing (DESIGN.md "Dispatch"); 0 takes the default from the CPU count.
    uint32_t restores_at_once = 0;  // restores of one function running at once (default 2 per CPU)
    uint32_t refills_at_once = 0;  // pool refills running at once, all functions together (default 1 per CPU)
};

class Controller {
  public:
    explicit Controller(ControllerOptions options);
    ~Controller();  // shuts down if `shutdown` was not called
    Controller(const Controller&) = delete;
    Controller& operator=(const Controller&) = delete;

    // Removes what a killed daemon left (instances, cgroups, staged images), loads the registry and
    // each function's image (verifying it), fills the pools, starts the ticker. Blocks for the
    // image loads.
    void start();
    // Refuses new requests, answers queued ones 503, waits up to `drain` for in-flight requests,
    // tears down every instance and pooled sandbox, joins every thread. Blocks.
    void shutdown(std::chrono::milliseconds drain = std::chrono::seconds(30));

    // Finds an instance slot of `function` for one request; `done` is called exactly once.
    void acquire(const std::string& function, AcquireCallback done);
    // Gives the slot back. After UpstreamFailed the controller looks at the instance (did it exit,
    // was it OOM-killed?) on a job thread, removes it if it died, and calls `diagnosed` with a
    // one-line reason; until then the instance takes no new request, and requests broken on it
    // meanwhile wait for that one diagnosis (at most ~1 s). After TimedOut it kills the instance and
    // calls `diagnosed` likewise.
    // `broken`: after UpstreamFailed, what the gateway saw ("the function closed the connection before
    // answering"), the diagnosis when the instance did not die.
    void release(const Acquired& slot, Outcome outcome, std::function<void(std::string)> diagnosed = {},
                 std::string broken = {});

    // Registers the function in `dir` (copied into the registry) and builds its snapshot; runs on a
    // job thread of its own; `progress` gets each step and then the end. A failed deploy leaves
    // nothing behind (a redeploy that fails keeps the function as it was).
    void deploy(const std::filesystem::path& dir, DeployProgress progress);
    // Unregisters a function: its instances and pool are torn down, its files removed once nothing of
    // it runs. False if unknown; throws Error once shutdown() has begun.
    bool remove(const std::string& function);

    // Sets the number of instances (OpenFaaS's scale-function): idle instances beyond `replicas` are
    // torn down (busy ones are left), and missing ones are started (restored from the pool, or
    // booted) up to max_instances; they wait idle under the keep-alive policy. Nullopt if unknown.
    std::optional<nlohmann::json> scale(const std::string& function, uint32_t replicas);

    nlohmann::json list() const;  // every function, with instances
    std::optional<nlohmann::json> describe(const std::string& function) const;
    nlohmann::json stats() const;  // counts per function
    std::optional<std::filesystem::path> log_path(const std::string& function) const;
    std::string metrics_text();  // Prometheus exposition
    Metrics& metrics() { return metrics_; }

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    Metrics metrics_;
};

}  // namespace initless::controller
