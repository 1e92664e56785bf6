#include "initless/controller/controller.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "initless/controller/registry.h"
#include "initless/controller/snapshot_builder.h"
#include "initless/image/image.h"
#include "initless/policy/catalog.h"
#include "initless/restore/restore.h"
#include "initless/sandbox/sandbox.h"
#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"

namespace initless::controller {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

constexpr auto kTick = std::chrono::milliseconds(50);
constexpr auto kPoolBackoff = std::chrono::seconds(5);
constexpr uint64_t kFunctionLogMax = 8u << 20;      // a function's log is cut to its last half beyond this
constexpr size_t kLogReadMax = 1u << 20;            // of an instance's log copied per tick
constexpr uint64_t kInstanceLogBacklog = 4u << 20;  // not copied yet beyond this: the middle is dropped

// Threads started for blocking work; `wait_all` joins them (they are detached, and counted).
class JobThreads {
  public:
    void spawn(std::function<void()> fn) {
        {
            std::lock_guard lock(mu_);
            ++running_;
        }
        try {
            start(std::move(fn));
        } catch (...) {  // no thread (EAGAIN): not counted, and the caller learns it
            std::lock_guard lock(mu_);
            if (--running_ == 0) cv_.notify_all();
            throw;
        }
    }
    bool wait_all(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, timeout, [&] { return running_ == 0; });
    }

  private:
    void start(std::function<void()> fn) {
        std::thread([this, fn = std::move(fn)]() mutable {
            {
                auto f = std::move(fn);  // destroyed before the count drops: nothing outlives wait_all
                try {
                    f();
                } catch (const std::exception& e) {
                    spdlog::error("event=job-failed error=\"{}\"", e.what());
                }
            }
            std::lock_guard lock(mu_);
            if (--running_ == 0) cv_.notify_all();
        }).detach();
    }

    std::mutex mu_;
    std::condition_variable cv_;
    uint64_t running_ = 0;
};

// A sandbox kept prepared by its own tracer thread: restore stage 1 done, stage 2 on command.
struct PooledSandbox {
    enum class Command { Wait, Execute, Discard };
    using Done = std::function<void(std::unique_ptr<sandbox::Sandbox>, double restore_ms, std::string error)>;

    void execute(Done done) {
        std::lock_guard lock(mu);
        on_done = std::move(done);
        command = Command::Execute;
        cv.notify_one();
    }
    void discard() {
        std::lock_guard lock(mu);
        if (command == Command::Wait) command = Command::Discard;
        cv.notify_one();
    }

    std::mutex mu;
    std::condition_variable cv;
    Command command = Command::Wait;
    Done on_done;
    Clock::time_point ready_at;
    double prepare_ms = 0;
};

// Answers a waiting request with an error status and a one-line reason (run once the mutex is released).
void reject(std::vector<std::function<void()>>& out, AcquireCallback done, int status, std::string why) {
    Acquired a;
    a.error_status = status;
    a.error = std::move(why);
    out.push_back([done = std::move(done), a = std::move(a)]() mutable { done(std::move(a)); });
}

}  // namespace

const char* start_kind_name(StartKind kind) {
    switch (kind) {
        case StartKind::Warm:
            return "warm";
        case StartKind::Cold:
            return "cold";
        case StartKind::Boot:
            return "boot";
    }
    return "?";
}

struct FunctionState;

struct Instance::State {
    std::weak_ptr<FunctionState> fn;
    std::mutex sandbox_mu;  // the Sandbox is not thread-safe
    std::unique_ptr<sandbox::Sandbox> sandbox;
    enum class Phase { Idle, Busy, Gone } phase = Phase::Idle;
    uint32_t in_flight = 0;
    // Requests that broke on this instance and wait for their diagnosis, each with what the gateway
    // saw and its callback. The instance may have died, and its death can trail the broken
    // connection, so it takes no new request meanwhile (each would break too: a crash under load gave
    // ~8 requests its 502). One diagnosis runs at a time and answers every request waiting when it
    // ends (a thread each held a failing function's instance for 1 s in turn, without bound).
    struct Broken {
        std::string transport_error;
        std::function<void(std::string)> diagnosed;
    };
    std::vector<Broken> suspect;
    bool diagnosing = false;
    uint64_t served = 0;
    Clock::time_point created = Clock::now(), last_used = Clock::now();
    policy::InstanceId policy_id = 0;
    StartKind origin = StartKind::Cold;
    bool prewarmed = false;  // started by a policy pre-warm and not used yet
    // The start a request waited for: credited to the first request that takes this instance.
    bool first_pending = true;
    double sandbox_ms = 0, restore_ms = 0;
    bool on_path = false;
    policy::TimeMs keep_until = policy::kForever;
    // Why it died, once known: written by whoever notices (ticker, diagnosis), read by release.
    std::string death() const {
        std::lock_guard lock(death_mu);
        return death_;
    }
    void set_death(std::string why) {
        std::lock_guard lock(death_mu);
        death_ = std::move(why);
    }
    mutable std::mutex death_mu;
    std::string death_;
    std::mutex log_mu;  // the ticker and a teardown job may both copy the log
    fs::path log_path;
    uint64_t log_offset = 0;  // of the instance's log: copied to the function's log up to here
    uint64_t log_freed = 0;   // and freed up to here (a hole punched)
};

Instance::Instance(std::string id, std::string function, uint16_t port, uint32_t timeout_s,
                   uint32_t concurrency, sys::UniqueFd netns)
    : state(std::make_unique<State>()),
      id_(std::move(id)),
      function_(std::move(function)),
      port_(port),
      timeout_s_(timeout_s),
      concurrency_(concurrency),
      netns_(std::move(netns)) {}

Instance::~Instance() = default;

sys::UniqueFd Instance::connect() {
    return sys::start_connect_in_netns(netns_.get(), port_);
}

std::shared_ptr<void> Instance::gateway_state(const std::function<std::shared_ptr<void>()>& make) {
    std::lock_guard lock(gateway_mu_);
    if (!gateway_state_) gateway_state_ = make();
    return gateway_state_;
}

struct Waiter {
    AcquireCallback done;
    Clock::time_point since;
};

struct FunctionState {
    std::string name;
    // initless_starts_total's samples of this function by StartKind, looked up once (one is counted
    // per request, under the controller's mutex).
    std::array<std::optional<Metrics::CounterRef>, 3> starts_counted;
    spec::FunctionSpec spec;
    RegistryEntry entry;
    std::shared_ptr<const image::Image> image;  // null: no usable snapshot, instances boot
    std::string image_problem;
    restore::Strategy strategy = restore::Strategy::Prefetch;
    policy::FunctionId policy_id = 0;
    std::vector<std::shared_ptr<Instance>> instances;
    std::deque<std::shared_ptr<PooledSandbox>> pool;
    uint32_t pool_preparing = 0;
    Clock::time_point pool_backoff_until{};
    std::deque<Waiter> waiters;
    uint32_t starting = 0;
    uint32_t restoring = 0;  // of `starting`: restores (from the pool, or a sandbox prepared on the path)
    uint32_t prewarm_count = 0;
    policy::TimeMs prewarm_at = 0;
    // Pre-warm starts (a policy's or a scale's) still to do (see start_prewarms).
    uint32_t prewarms_pending = 0;
    bool removed = false;
    // Of a removed function: instance teardowns running, and what to do once nothing of it runs any
    // more (its version's files go: its instances map its code and its image).
    uint32_t teardowns = 0;
    std::function<void()> when_drained;
    // Boots waiting for the ready phrase (up to timeout_s), each by a pidfd of its sandbox's init: killed
    // when the function is removed or the daemon stops, so that those waits end at once.
    std::map<uint64_t, sys::UniqueFd> booting;
    uint64_t boot_seq = 0;
    // Removed by `rm` (not replaced by a new version): its draining instances' output no longer goes to
    // the name's log, which a new deploy of the name owns.
    std::atomic<bool> unregistered{false};
    std::mutex log_mu;  // the function's log file
};

struct Controller::Impl {
    Controller& self;
    ControllerOptions options;
    Registry registry;
    image::Key image_key;  // <state>/image.key: every image of this registry is authenticated under it
    std::unique_ptr<policy::KeepAlivePolicy> policy;
    Clock::time_point epoch = Clock::now();

    mutable std::mutex mu;
    std::map<std::string, std::shared_ptr<FunctionState>> functions;
    // Functions removed or replaced while something of theirs still runs (busy instances, starts,
    // teardowns): held here so that those find their function (an instance's is a weak pointer) and end
    // as the function's do, not torn down on a gateway thread by the last reference.
    std::vector<std::shared_ptr<FunctionState>> retired;
    // Deploys between their start and their end, by function, each with a pidfd of every sandbox's init
    // it made: killed at shutdown, so that a deploy waiting on its function (a warmup that is never
    // answered, within timeout_s) ends at once.
    std::map<std::string, std::vector<sys::UniqueFd>> deploys;
    policy::FunctionId next_policy_function = 0;
    policy::InstanceId next_policy_instance = 1;
    bool shutting_down = false;
    bool stopped = false;
    policy::TimeMs last_policy_tick = 0;
    // Pool refills (restore stage 1 in the background) running, of every function, and how many may
    // run at once: one per CPU. Unbounded, a burst that took 100 pooled sandboxes started 100 refills
    // at once, and they took the CPUs from the restores and first requests of the burst itself.
    uint32_t refills_running = 0;
    const uint32_t refills_at_once = options.refills_at_once ? options.refills_at_once : cpus();
    // Restores of one function at once (see dispatch).
    const uint32_t restores_at_once = options.restores_at_once ? options.restores_at_once : 2 * cpus();
    static uint32_t cpus() { return std::max(1u, std::thread::hardware_concurrency()); }

    JobThreads jobs;
    std::thread ticker;
    std::mutex ticker_mu;
    std::condition_variable ticker_cv;
    bool ticker_stop = false;

    using Callbacks = std::vector<std::function<void()>>;

    Impl(Controller& c, ControllerOptions o)
        : self(c),
          options(std::move(o)),
          registry(options.state_dir, options.image_store_tmpfs),
          image_key(image::Key::of_state_dir(options.state_dir)) {}

    policy::TimeMs now_ms() const {
        return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - epoch).count();
    }
    Metrics& metrics() { return self.metrics_; }

    // ---- registration ----

    std::shared_ptr<FunctionState> make_function(const RegistryEntry& entry, spec::FunctionSpec spec,
                                                 std::shared_ptr<const image::Image> image,
                                                 std::string problem) {
        auto fn = std::make_shared<FunctionState>();
        fn->name = spec.name;
        fn->spec = std::move(spec);
        fn->entry = entry;
        fn->image = std::move(image);
        fn->image_problem = std::move(problem);
        try {
            fn->strategy = restore::parse_strategy(fn->spec.restore);
        } catch (const Error& e) {
            spdlog::warn("event=strategy-unsupported function={} strategy={} using=prefetch", fn->name,
                         fn->spec.restore);
            fn->strategy = restore::Strategy::Prefetch;
        }
        return fn;
    }

    // Caller holds mu.
    void register_with_policy(FunctionState& fn) {
        fn.policy_id = next_policy_function++;
        policy::FunctionProfile p;
        p.id = fn.policy_id;
        p.memory_mb = static_cast<double>(fn.spec.memory_mb);
        p.image_mb = fn.entry.image_mb;
        double boot = std::max(1.0, fn.entry.boot_ms);
        p.cold_from_memory_ms = fn.image ? std::max(1.0, fn.entry.restore_ms) : boot;
        p.cold_from_disk_ms = fn.image ? std::max(p.cold_from_memory_ms, fn.entry.restore_ms * 2) : boot;
        policy->on_function_registered(p);
    }

    // ---- instances ----

    // Caller holds mu. The instance with a free slot this request should take, if any.
    std::shared_ptr<Instance> pick(FunctionState& fn) {
        std::shared_ptr<Instance> best;
        for (auto& inst : fn.instances) {
            auto& s = *inst->state;
            if (s.phase == Instance::State::Phase::Gone || !s.suspect.empty() ||
                s.in_flight >= fn.spec.concurrency)
                continue;
            if (!best) {
                best = inst;
                continue;
            }
            auto& b = *best->state;
            // A fresh instance first (its start is credited to the waiting request), then the most
            // recently used, so that the others can expire.
            if (s.first_pending != b.first_pending) {
                if (s.first_pending) best = inst;
            } else if (s.last_used > b.last_used) {
                best = inst;
            }
        }
        return best;
    }

    policy::StartKind policy_kind(const Instance::State& s, StartKind kind) {
        if (kind == StartKind::Cold) return policy::StartKind::ColdFromMemory;
        if (kind == StartKind::Boot) return policy::StartKind::ColdFromDisk;
        return s.prewarmed ? policy::StartKind::PreWarmed : policy::StartKind::Warm;
    }

    // Caller holds mu. Hands waiting requests to instances with free slots, then starts instances
    // for those left, up to max_instances.
    void dispatch(const std::shared_ptr<FunctionState>& fnp, Callbacks& out) {
        FunctionState& fn = *fnp;
        while (!fn.waiters.empty()) {
            auto inst = pick(fn);
            if (!inst) break;
            Waiter w = std::move(fn.waiters.front());
            fn.waiters.pop_front();
            auto& s = *inst->state;
            Acquired a;
            a.instance = inst;
            a.kind = StartKind::Warm;
            if (s.first_pending) {
                s.first_pending = false;
                if (!s.prewarmed) {
                    a.kind = s.origin;
                    a.sandbox_ms = s.sandbox_ms;
                    a.restore_ms = s.restore_ms;
                    a.sandbox_on_request_path = s.on_path;
                }
            }
            a.queue_ms = std::max(0.0, ms_since(w.since) - a.sandbox_ms - a.restore_ms);
            s.in_flight++;
            s.phase = Instance::State::Phase::Busy;
            s.keep_until = policy::kForever;
            s.last_used = Clock::now();
            policy::Decisions d;
            policy->on_invocation_start({now_ms(), fn.policy_id, s.policy_id, policy_kind(s, a.kind)}, d);
            s.prewarmed = false;
            apply(d);
            auto& counted = fn.starts_counted[static_cast<size_t>(a.kind)];
            if (!counted)
                counted = metrics().counter("initless_starts_total",
                                            {{"function", fn.name}, {"kind", start_kind_name(a.kind)}});
            metrics().add(*counted);
            out.push_back([done = std::move(w.done), a = std::move(a)]() mutable { done(std::move(a)); });
        }
        uint64_t coming = static_cast<uint64_t>(fn.starting) * fn.spec.concurrency;
        while (fn.waiters.size() > coming && fn.instances.size() + fn.starting < fn.spec.max_instances &&
               !shutting_down) {
            // Restores are CPU-bound: started all at once, they share the CPUs and finish together. 100
            // at once on 2 CPUs took ~2 s with the pool empty (each prepares its sandbox too, ~40 ms of
            // CPU) and ~0.15 s with it full, every request waiting for all of them; a few at a time have
            // instances up within milliseconds that take the waiters, and more are started as each
            // restore ends while requests still wait. Boots are not limited: they wait on the function.
            if (restores_full(fn)) break;

            start_instance(fnp, /*prewarm=*/false);
            coming += fn.spec.concurrency;
        }
    }

    // Caller holds mu. Whether a start of `fn` must wait for one of its restores to end (see dispatch).
    bool restores_full(const FunctionState& fn) const { return fn.image && fn.restoring >= restores_at_once; }

    // Caller holds mu. Whether a deploy of `name` is between its start and its end.
    bool deploy_running(const std::string& name) const { return deploys.count(name) != 0; }

    // Caller holds mu. Starts the pre-warms still to do, paced like dispatch's starts: as many as the
    // restores allowed at once leave room for; restored() starts more as restores end, after the starts
    // that requests wait for. A scale to 50 started 50 restores at once, each sharing 2 CPUs with the
    // others and with any request's restore.
    void start_prewarms(const std::shared_ptr<FunctionState>& fn) {
        while (fn->prewarms_pending > 0) {
            if (shutting_down || fn->removed ||
                fn->instances.size() + fn->starting >= fn->spec.max_instances) {
                fn->prewarms_pending = 0;
                break;
            }
            if (restores_full(*fn)) break;
            fn->prewarms_pending--;
            start_instance(fn, /*prewarm=*/true);
        }
    }

    // Caller holds mu. Starts one instance: from a pooled sandbox, from a sandbox prepared now, or by
    // a boot when there is no usable snapshot.
    void start_instance(const std::shared_ptr<FunctionState>& fn, bool prewarm) {
        fn->starting++;
        if (fn->image) fn->restoring++;  // until restored()
        if (fn->image && !fn->pool.empty()) {
            auto ps = fn->pool.front();
            fn->pool.pop_front();
            ps->execute([this, fn, prewarm](std::unique_ptr<sandbox::Sandbox> sb, double restore_ms,
                                            std::string error) {
                restored(fn, std::move(sb), 0, restore_ms, false, prewarm, error);
            });
        } else if (fn->image) {
            auto ps = std::make_shared<PooledSandbox>();
            ps->command = PooledSandbox::Command::Execute;
            ps->on_done = [this, fn, ps, prewarm](std::unique_ptr<sandbox::Sandbox> sb, double restore_ms,
                                                  std::string error) {
                restored(fn, std::move(sb), ps->prepare_ms, restore_ms, true, prewarm, error);
            };
            run_pooled(fn, ps);
        } else {
            jobs.spawn([this, fn, prewarm] { boot(fn, prewarm, fn->image_problem); });
        }
        refill_pool(fn);
    }

    // Caller holds mu. Keeps `prestart` sandboxes prepared.
    void refill_pool(const std::shared_ptr<FunctionState>& fn) {
        if (!fn->image || fn->removed || shutting_down || Clock::now() < fn->pool_backoff_until) return;
        while (fn->pool.size() + fn->pool_preparing < fn->spec.prestart &&
               refills_running < refills_at_once) {
            fn->pool_preparing++;
            refills_running++;
            run_pooled(fn, std::make_shared<PooledSandbox>());
        }
    }

    // The tracer thread of one pooled sandbox: prepares it (restore stage 1), waits for a command,
    // executes the plan (stage 2) on this same thread, as ptrace requires.
    void run_pooled(const std::shared_ptr<FunctionState>& fn, const std::shared_ptr<PooledSandbox>& ps) {
        jobs.spawn([this, fn, ps, image = fn->image, spec = fn->spec, strategy = fn->strategy] {
            Clock::time_point t0 = Clock::now();
            std::unique_ptr<sandbox::Sandbox> sb;
            std::optional<restore::RestorePlan> plan;
            std::string error;
            try {
                sandbox::SandboxOptions opts;
                opts.seed_upper = [&image](const std::filesystem::path& upper) {
                    image::copy_tree(*image, image::kUpperTree, upper);
                };
                sb = std::make_unique<sandbox::Sandbox>(sandbox::Sandbox::prepare(spec, opts));
                plan.emplace(restore::RestorePlan::prepare(*sb, *image, strategy));
            } catch (const std::exception& e) {
                error = e.what();
            }
            ps->prepare_ms = ms_since(t0);
            ps->ready_at = Clock::now();
            bool for_request;
            {
                std::lock_guard lock(ps->mu);
                for_request = ps->command == PooledSandbox::Command::Execute;
            }
            if (!for_request) pooled_ready(fn, ps, error);
            PooledSandbox::Command command;
            PooledSandbox::Done done;
            {
                std::unique_lock lock(ps->mu);
                if (!error.empty() && ps->command == PooledSandbox::Command::Wait)
                    ps->command = PooledSandbox::Command::Discard;
                ps->cv.wait(lock, [&] { return ps->command != PooledSandbox::Command::Wait; });
                command = ps->command;
                done = std::move(ps->on_done);
            }
            if (command == PooledSandbox::Command::Execute && error.empty()) {
                Clock::time_point t1 = Clock::now();
                bool executed = false;
                try {
                    plan->execute();
                    executed = true;
                } catch (const std::exception& e) {
                    error = e.what();
                }
                plan.reset();
                // Outside the try: `done` runs once, whatever it throws (twice, it counted the
                // restore's end twice, and the function's count of restores running wrapped).
                if (executed) return done(std::move(sb), ms_since(t1), "");
            }
            plan.reset();
            if (sb) sb->teardown();
            if (command == PooledSandbox::Command::Execute)
                done(nullptr, 0, error.empty() ? "discarded" : error);
        });
    }

    void pooled_ready(const std::shared_ptr<FunctionState>& fn, const std::shared_ptr<PooledSandbox>& ps,
                      const std::string& error) {
        std::lock_guard lock(mu);
        fn->pool_preparing--;
        refills_running--;
        settle(fn);
        if (!error.empty()) {
            spdlog::warn("event=pool-prepare-failed function={} error=\"{}\"", fn->name, error);
            metrics().add("initless_restore_fallbacks_total",
                          {{"function", fn->name}, {"reason", "prepare-failed"}});
            fn->pool_backoff_until = Clock::now() + kPoolBackoff;
            return;
        }
        if (fn->removed || shutting_down) {
            ps->discard();
            return;
        }
        fn->pool.push_back(ps);
        spdlog::debug("event=pool-ready function={} prepare_ms={:.1f} pool={}", fn->name, ps->prepare_ms,
                      fn->pool.size());
        refill_pool(fn);  // the next one now; other functions' refills at the next tick
    }

    // On the tracer thread after stage 2: the instance is up, or the restore failed and the
    // function boots instead (on this thread), as the contract says: a failed restore falls back to
    // a boot and says so.
    void restored(const std::shared_ptr<FunctionState>& fn, std::unique_ptr<sandbox::Sandbox> sb,
                  double sandbox_ms, double restore_ms, bool on_path, bool prewarm,
                  const std::string& error) {
        // The next restore may start (see dispatch). Dispatched now, not only once the instance is up:
        // a failed restore boots instead, on this thread, and requests still waiting would get no new
        // start for as long as that boot takes.
        Callbacks out;
        bool leaving = false;
        {
            std::lock_guard lock(mu);
            fn->restoring--;
            leaving = fn->removed || shutting_down;
            if (!fn->removed) {
                dispatch(fn, out);
                start_prewarms(fn);
            }
        }
        for (auto& f : out) f();
        if (sb) {
            metrics().observe("initless_restore_seconds", {{"function", fn->name}}, restore_ms / 1000);
            spdlog::info(
                "event=restored function={} instance={} sandbox_ms={:.2f} restore_ms={:.2f} on_path={}",
                fn->name, sb->id(), sandbox_ms, restore_ms, on_path);
            instance_up(fn, std::move(sb), StartKind::Cold, sandbox_ms, restore_ms, on_path, prewarm);
            return;
        }
        spdlog::warn("event=restore-failed function={} fallback={} error=\"{}\"", fn->name,
                     leaving ? "none (the function is leaving)" : "boot", error);
        metrics().add("initless_restore_fallbacks_total",
                      {{"function", fn->name}, {"reason", Metrics::reason_label(error)}});
        if (leaving) return start_failed(fn, "restore failed: " + error);  // no boot for a function leaving
        boot(fn, prewarm, "restore failed: " + error);
    }

    // Blocking: prepares a sandbox and boots the function in it.
    void boot(const std::shared_ptr<FunctionState>& fn, bool prewarm, const std::string& why) {
        Clock::time_point t0 = Clock::now();
        std::unique_ptr<sandbox::Sandbox> sb;
        double sandbox_ms = 0;
        uint64_t boot_id = 0;
        auto unregister = [&] {
            std::lock_guard lock(mu);
            fn->booting.erase(boot_id);
        };
        try {
            sb = std::make_unique<sandbox::Sandbox>(sandbox::Sandbox::prepare(fn->spec));
            sandbox_ms = ms_since(t0);
            {
                std::lock_guard lock(mu);
                if (fn->removed || shutting_down) throw Error("the function is leaving service");
                boot_id = ++fn->boot_seq;
                fn->booting.emplace(boot_id, sb->init_pidfd());
            }
            sb->start();
            sb->wait_ready(fn->spec.ready, std::chrono::seconds(fn->spec.timeout_s));
        } catch (const std::exception& e) {
            unregister();
            if (sb) sb->teardown();
            return start_failed(fn, e.what());
        }
        unregister();
        double boot_ms = ms_since(t0);
        metrics().observe("initless_boot_seconds", {{"function", fn->name}}, boot_ms / 1000);
        spdlog::info("event=booted function={} instance={} boot_ms={:.1f} why=\"{}\"", fn->name, sb->id(),
                     boot_ms, why);
        // Outside the try: instance_up counts the start's end, which start_failed would count again.
        instance_up(fn, std::move(sb), StartKind::Boot, sandbox_ms, boot_ms - sandbox_ms, true, prewarm);
    }

    void start_failed(const std::shared_ptr<FunctionState>& fn, const std::string& error) {
        spdlog::error("event=start-failed function={} error=\"{}\"", fn->name, error);
        Callbacks out;
        {
            std::lock_guard lock(mu);
            fn->starting--;
            settle(fn);
            if (!fn->waiters.empty()) {
                reject(out, std::move(fn->waiters.front().done), 502,
                       fmt::format("could not start an instance of {}: {}", fn->name, first_line(error)));
                fn->waiters.pop_front();
            }
            if (!fn->removed) dispatch(fn, out);
        }
        for (auto& f : out) f();
    }

    static std::string describe_death(const sandbox::ExitReport& ex) {
        return fmt::format("the function {} (pid {} in its sandbox)", ex.describe(), ex.pid);
    }

    static std::string first_line(const std::string& s) {
        auto nl = s.find('\n');
        return nl == std::string::npos ? s : s.substr(0, nl);
    }

    void instance_up(const std::shared_ptr<FunctionState>& fn, std::unique_ptr<sandbox::Sandbox> sb,
                     StartKind kind, double sandbox_ms, double restore_ms, bool on_path, bool prewarm) {
        std::shared_ptr<Instance> inst;
        try {
            inst = std::make_shared<Instance>(sb->id(), fn->name, fn->spec.port, fn->spec.timeout_s,
                                              fn->spec.concurrency, sys::duplicate(sb->netns_fd()));
        } catch (const std::exception& e) {  // EMFILE: the start fails, counted once
            sb->teardown();
            return start_failed(fn, fmt::format("the instance could not be set up: {}", e.what()));
        }
        auto& s = *inst->state;
        s.fn = fn;
        s.log_path = sb->log_path();
        s.sandbox = std::move(sb);
        s.origin = kind;
        s.sandbox_ms = sandbox_ms;
        s.restore_ms = restore_ms;
        s.on_path = on_path;
        s.prewarmed = prewarm;
        Callbacks out;
        {
            std::lock_guard lock(mu);
            fn->starting--;
            if (fn->removed || shutting_down) {
                teardown_later(*fn, inst);
                settle(fn);
            } else {
                s.policy_id = next_policy_instance++;
                fn->instances.push_back(inst);
                dispatch(fn, out);
                if (s.in_flight == 0) became_idle(*fn, inst, policy::IdleReason::PreWarmed);
            }
        }
        for (auto& f : out) f();
    }

    // Caller holds mu.
    void became_idle(FunctionState& fn, const std::shared_ptr<Instance>& inst, policy::IdleReason reason) {
        auto& s = *inst->state;
        s.phase = Instance::State::Phase::Idle;
        policy::Decisions d;
        policy->on_instance_idle({now_ms(), fn.policy_id, s.policy_id, reason}, d);
        apply(d);
        // The idle-memory budget: what the policy keeps beyond it, it must free.
        double idle_mb = idle_memory_mb();
        if (idle_mb > options.memory_mb) {
            policy::Decisions p;
            policy->on_memory_pressure({now_ms(), idle_mb - options.memory_mb, fn.policy_id}, p);
            apply(p);
        }
    }

    double idle_memory_mb() const {
        double mb = 0;
        for (const auto& [name, fn] : functions)
            for (const auto& inst : fn->instances)
                if (inst->state->phase == Instance::State::Phase::Idle)
                    mb += static_cast<double>(fn->spec.memory_mb);
        return mb;
    }

    // Caller holds mu. Carries out a policy's decisions.
    void apply(const policy::Decisions& decisions) {
        for (const auto& d : decisions) {
            switch (d.kind) {
                case policy::DecisionKind::Evict:
                    if (auto [fn, inst] = find_instance(d.instance); inst) {
                        if (inst->state->in_flight == 0) {
                            spdlog::info("event=evicted function={} instance={}", fn->name, inst->id());
                            remove_instance(*fn, inst, /*tell_policy=*/false);
                        }
                    }
                    break;
                case policy::DecisionKind::KeepUntil:
                    if (auto [fn, inst] = find_instance(d.instance); inst) inst->state->keep_until = d.at;
                    break;
                case policy::DecisionKind::PreWarm:
                    for (auto& [name, fn] : functions)
                        if (fn->policy_id == d.function && !fn->removed) {
                            fn->prewarm_at = d.at;
                            fn->prewarm_count = d.count;
                        }
                    break;
                case policy::DecisionKind::PlaceSnapshot:
                    break;  // images stay where the image store keeps them
            }
        }
    }

    std::pair<std::shared_ptr<FunctionState>, std::shared_ptr<Instance>> find_instance(
        policy::InstanceId id) {
        for (auto& [name, fn] : functions)
            for (auto& inst : fn->instances)
                if (inst->state->policy_id == id) return {fn, inst};
        return {nullptr, nullptr};
    }

    // Caller holds mu. Takes the instance out of service; its sandbox is torn down on a job thread.
    // `tell_policy`: false only where the policy decided it (an eviction) or nothing decides any more
    // (shutdown); an instance the policy is not told of stays in its idle set, to be evicted in vain.
    void remove_instance(FunctionState& fn, const std::shared_ptr<Instance>& inst, bool tell_policy) {
        auto& s = *inst->state;
        if (s.phase == Instance::State::Phase::Gone) return;
        s.phase = Instance::State::Phase::Gone;
        fn.instances.erase(std::remove(fn.instances.begin(), fn.instances.end(), inst), fn.instances.end());
        if (tell_policy) {
            policy::Decisions d;
            policy->on_instance_removed({now_ms(), fn.policy_id, s.policy_id}, d);
            apply(d);
        }
        teardown_later(fn, inst);
    }

    // Caller holds mu.
    void teardown_later(FunctionState& fn, const std::shared_ptr<Instance>& inst) {
        fn.teardowns++;
        jobs.spawn([this, inst] {
            pump_log(*inst);
            {
                std::lock_guard lock(inst->state->sandbox_mu);
                if (inst->state->sandbox) {
                    inst->state->sandbox->teardown();
                    inst->state->sandbox.reset();
                }
            }
            if (auto fn = inst->state->fn.lock()) {
                std::lock_guard lock(mu);
                fn->teardowns--;
                settle(fn);
            }
        });
    }

    // Caller holds mu. The function leaves service (removed or replaced by a redeploy): its pool and
    // idle instances go now, busy ones when their requests end; waiting requests get a 503. Once
    // nothing of it runs, `when_drained` runs on a job thread.
    void retire(const std::shared_ptr<FunctionState>& fn, Callbacks& out,
                std::function<void()> when_drained) {
        fn->removed = true;
        fn->when_drained = std::move(when_drained);
        kill_boots(*fn);
        retired.push_back(fn);
        for (auto& ps : fn->pool) ps->discard();
        fn->pool.clear();
        auto instances = fn->instances;
        for (auto& inst : instances)
            if (inst->state->in_flight == 0) remove_instance(*fn, inst, /*tell_policy=*/true);
        reject_waiters(*fn, 503, fmt::format("function {} was removed", fn->name), out);
        settle(fn);
    }

    // Caller holds mu.
    static void kill_boots(FunctionState& fn) {
        for (auto& [id, init] : fn.booting) {
            try {
                sys::pidfd_send_signal(init.get(), SIGKILL);
            } catch (const Error& e) {
                spdlog::warn("event=boot-kill-failed function={} error=\"{}\"", fn.name, e.what());
            }
        }
    }

    // Caller holds mu. A retired function with nothing left running is let go, and its when_drained
    // started.
    void settle(const std::shared_ptr<FunctionState>& fn) {
        if (!fn->removed || !fn->instances.empty() || fn->starting || fn->pool_preparing || fn->teardowns)
            return;
        retired.erase(std::remove(retired.begin(), retired.end(), fn), retired.end());
        if (auto then = std::move(fn->when_drained)) {
            fn->when_drained = nullptr;
            jobs.spawn(std::move(then));
        }
    }

    // Caller holds mu. Every function something of which may run: the registered ones and the retired.
    std::vector<std::shared_ptr<FunctionState>> every_function() const {
        std::vector<std::shared_ptr<FunctionState>> all(retired);
        for (const auto& [name, fn] : functions) all.push_back(fn);
        return all;
    }

    // Caller holds mu. Every request waiting for `fn` gets `status` and `why`.
    static void reject_waiters(FunctionState& fn, int status, const std::string& why, Callbacks& out) {
        for (auto& w : fn.waiters) reject(out, std::move(w.done), status, why);
        fn.waiters.clear();
    }

    // ---- faults ----

    // On a job thread: did this instance die (why), after a connection to it broke? Removes it if so;
    // empty if it lives.
    std::string diagnose(const std::shared_ptr<Instance>& inst) {
        auto& s = *inst->state;
        auto fn = s.fn.lock();
        std::string death;
        {
            std::lock_guard lock(s.sandbox_mu);
            death = s.death();
            Clock::time_point t0 = Clock::now();
            // The exit report may trail the broken connection by a moment.
            while (death.empty() && s.sandbox && ms_since(t0) < 1000) {
                if (auto ex = s.sandbox->poll_exit())
                    death = describe_death(*ex);
                else
                    std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
            bool oom = false;
            try {
                oom = s.sandbox && s.sandbox->cgroup().oom_killed();
            } catch (const Error&) {
            }
            if (oom)
                death = fmt::format("the function was OOM-killed: it reached its memory limit of {} MB ({})",
                                    fn ? fn->spec.memory_mb : 0, death.empty() ? "still running" : death);
            s.set_death(death);
        }
        if (death.empty()) return death;
        spdlog::warn("event=instance-died function={} instance={} reason=\"{}\"", inst->function(),
                     inst->id(), death);
        if (fn) {
            std::lock_guard lock(mu);
            remove_instance(*fn, inst, true);
        }
        return death;
    }

    // ---- the ticker ----

    void tick() {
        Callbacks out;
        std::vector<std::shared_ptr<Instance>> live;
        std::vector<std::shared_ptr<PooledSandbox>> stale;
        {
            std::lock_guard lock(mu);
            policy::TimeMs now = now_ms();
            for (auto& [name, fn] : functions) {
                // Requests that waited too long.
                while (!fn->waiters.empty() && ms_since(fn->waiters.front().since) >=
                                                   static_cast<double>(fn->spec.queue_timeout_ms)) {
                    reject(out, std::move(fn->waiters.front().done), 504,
                           fmt::format("no instance of {} became free within queue_timeout_ms = {}", fn->name,
                                       fn->spec.queue_timeout_ms));
                    fn->waiters.pop_front();
                    metrics().add("initless_queue_rejected_total",
                                  {{"function", fn->name}, {"reason", "timeout"}});
                }
                // Idle instances past their keep-alive.
                auto instances = fn->instances;
                for (auto& inst : instances) {
                    auto& s = *inst->state;
                    if (s.phase == Instance::State::Phase::Idle && s.keep_until != policy::kForever &&
                        now >= s.keep_until) {
                        spdlog::info("event=expired function={} instance={} served={}", fn->name, inst->id(),
                                     s.served);
                        remove_instance(*fn, inst, true);
                    }
                }
                // Prepared sandboxes too old: their clock offsets were fixed when they were made.
                while (!fn->pool.empty() && Clock::now() - fn->pool.front()->ready_at >
                                                std::chrono::seconds(fn->spec.prestart_max_age_s)) {
                    stale.push_back(fn->pool.front());
                    fn->pool.pop_front();
                }
                refill_pool(fn);
                // Pre-warms the policy asked for.
                if (fn->prewarm_count > 0 && now >= fn->prewarm_at) {
                    uint32_t idle = 0;
                    for (auto& inst : fn->instances)
                        if (inst->state->phase == Instance::State::Phase::Idle) idle++;
                    uint32_t have = idle + fn->starting;
                    fn->prewarms_pending = fn->prewarm_count > have ? fn->prewarm_count - have : 0;
                    start_prewarms(fn);
                    fn->prewarm_count = 0;
                }
                for (auto& inst : fn->instances) live.push_back(inst);
            }
            if (policy->tick_interval_ms() > 0 && now - last_policy_tick >= policy->tick_interval_ms()) {
                last_policy_tick = now;
                policy::Decisions d;
                policy->on_clock_tick({now}, d);
                apply(d);
            }
        }
        for (auto& ps : stale) ps->discard();
        for (auto& f : out) f();
        // Instances that died while idle; logs.
        for (auto& inst : live) {
            auto& s = *inst->state;
            std::string death;
            {
                std::unique_lock lock(s.sandbox_mu, std::try_to_lock);
                if (!lock.owns_lock() || !s.sandbox) continue;
                if (auto ex = s.sandbox->poll_exit()) {
                    death = describe_death(*ex);
                    s.set_death(death);
                }
            }
            pump_log(*inst);
            if (!death.empty()) {
                spdlog::warn("event=instance-died function={} instance={} reason=\"{}\"", inst->function(),
                             inst->id(), death);
                if (auto fn = s.fn.lock()) {
                    std::lock_guard lock(mu);
                    if (s.in_flight == 0)
                        remove_instance(*fn, inst, true);  // busy: the request's release does it
                }
            }
        }
    }

    // Appends what the instance logged since the last call to its function's log, each line prefixed
    // with the instance id.
    void pump_log(Instance& inst) {
        auto& s = *inst.state;
        auto fn = s.fn.lock();
        if (!fn || s.log_path.empty()) return;
        std::lock_guard instance_log(s.log_mu);
        std::string data;
        uint64_t dropped = 0;
        try {
            sys::UniqueFd fd = sys::open_file(s.log_path, O_RDWR);
            struct stat st {};
            if (::fstat(fd.get(), &st) != 0) return;
            uint64_t size = static_cast<uint64_t>(st.st_size);
            if (size < s.log_offset) s.log_offset = s.log_freed = 0;  // the function truncated its output
            if (size == s.log_offset) return;  // nothing new (most instances at most ticks): no read
            if (size > s.log_offset + kInstanceLogBacklog) {
                // Printing faster than this copies (1 MiB a tick): keep up by dropping the middle, which
                // bounds both what waits in the instance's log and the daemon's work per instance.
                dropped = size - kLogReadMax - s.log_offset;
                s.log_offset += dropped;
            }
            data = sys::read_from(fd.get(), s.log_offset, kLogReadMax);
            if (dropped) {  // from the next whole line on
                size_t nl = data.find('\n');
                size_t cut = nl == std::string::npos ? data.size() : nl + 1;
                data.erase(0, cut);
                dropped += cut;
                s.log_offset += cut;
            }
            auto last_nl = data.rfind('\n');
            if (last_nl != std::string::npos)
                data.resize(last_nl + 1);
            else if (data.size() < kLogReadMax)
                data.clear();  // a line not finished yet; one as long as a whole read goes as it is
            s.log_offset += data.size();
            // What is copied is freed: the file keeps its size, where O_APPEND writes go on, not its blocks.
            uint64_t free_to = s.log_offset & ~uint64_t{4095};
            if (free_to > s.log_freed &&
                ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            static_cast<off_t>(s.log_freed), static_cast<off_t>(free_to - s.log_freed)) == 0)
                s.log_freed = free_to;
        } catch (const Error&) {
            return;
        }
        if (data.empty() && !dropped) return;
        std::string out;
        if (dropped)
            out += fmt::format(
                "[{}] [initless: {} bytes of output dropped: printed faster than the log is copied]\n",
                inst.id(), dropped);
        size_t pos = 0;
        while (pos < data.size()) {
            size_t nl = std::min(data.find('\n', pos), data.size() - 1);
            out += "[" + inst.id() + "] " + data.substr(pos, nl - pos + 1);
            if (data[nl] != '\n') out += '\n';
            pos = nl + 1;
        }
        std::lock_guard lock(fn->log_mu);
        if (fn->unregistered) return;
        registry.append_log(fn->name, out, kFunctionLogMax);
    }

    void ticker_loop() {
        std::unique_lock lock(ticker_mu);
        while (!ticker_stop) {
            ticker_cv.wait_for(lock, kTick);
            if (ticker_stop) break;
            lock.unlock();
            try {
                tick();
            } catch (const std::exception& e) {
                spdlog::error("event=tick-failed error=\"{}\"", e.what());
            }
            lock.lock();
        }
    }
};

Controller::Controller(ControllerOptions options) : impl_(std::make_unique<Impl>(*this, std::move(options))) {
    auto& m = metrics_;
    std::vector<double> latency = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25,  0.5,    1,     2.5,  5,     10,   30};
    m.declare("gateway_function_invocation_total", Metrics::Type::Counter,
              "Function invocations through the gateway, by function and status code.");
    m.declare("gateway_functions_seconds", Metrics::Type::Histogram,
              "Time from a request's arrival at the gateway to its response, by function.", latency);
    m.declare("initless_starts_total", Metrics::Type::Counter,
              "Requests by how they got their instance: warm (idle instance), cold (restored), boot.");
    m.declare("initless_restore_seconds", Metrics::Type::Histogram, "Restore stage 2 (on the request path).",
              latency);
    m.declare("initless_boot_seconds", Metrics::Type::Histogram,
              "Normal boots: sandbox, start, ready phrase.", latency);
    m.declare("initless_instances", Metrics::Type::Gauge, "Instances by function and state.");
    m.declare("initless_pool_size", Metrics::Type::Gauge,
              "Pre-started sandboxes (restore stage 1 done) by function.");
    m.declare(
        "initless_restore_fallbacks_total", Metrics::Type::Counter,
        "Restores that failed (or pool sandboxes that could not be prepared), by reason; a boot took over.");
    m.declare("initless_queue_rejected_total", Metrics::Type::Counter,
              "Requests refused while waiting for an instance: queue full (503) or timeout (504).");
    m.declare("initless_instance_failures_total", Metrics::Type::Counter,
              "Requests whose instance crashed, was OOM-killed or timed out.");
}

Controller::~Controller() {
    if (impl_ && !impl_->stopped) shutdown(std::chrono::seconds(5));
}

void Controller::start() {
    auto& I = *impl_;
    I.policy = policy::make_policy(I.options.policy);
    for (const auto& line : sandbox::collect_garbage()) spdlog::info("event=gc what=\"{}\"", line);
    I.registry.remove_leftovers();
    for (const auto& entry : I.registry.load_all()) {
        std::shared_ptr<const image::Image> img;
        std::string problem;
        spec::FunctionSpec spec;
        try {
            spec = spec::load(entry.code_dir);
        } catch (const Error& e) {
            spdlog::error("event=registry-skip function={} error=\"{}\"", entry.name, e.what());
            continue;
        }
        Clock::time_point t0 = Clock::now();
        try {
            img = std::make_shared<const image::Image>(image::load(entry.image_dir, I.image_key));
            // An authenticated image of another function (moved into this one's place) is refused too.
            if (img->manifest.function != entry.name)
                throw Error(fmt::format("image {} is a snapshot of {}, not of {}", entry.image_dir.string(),
                                        img->manifest.function, entry.name));
        } catch (const Error& e) {
            problem = e.what();
            spdlog::warn("event=image-unusable function={} error=\"{}\" fallback=boot", entry.name, problem);
        }
        spdlog::info("event=registered function={} image={} load_ms={:.1f}", entry.name, img ? "yes" : "no",
                     ms_since(t0));
        auto fn = I.make_function(entry, std::move(spec), std::move(img), std::move(problem));
        std::lock_guard lock(I.mu);
        I.register_with_policy(*fn);
        I.functions[fn->name] = fn;
        I.refill_pool(fn);
    }
    I.ticker = std::thread([&I] { I.ticker_loop(); });
}

void Controller::shutdown(std::chrono::milliseconds drain) {
    auto& I = *impl_;
    if (I.stopped) return;
    Impl::Callbacks out;
    {
        std::lock_guard lock(I.mu);
        I.shutting_down = true;
        for (auto& [name, fn] : I.functions)
            Impl::reject_waiters(*fn, 503, "the server is shutting down", out);
    }
    for (auto& f : out) f();
    // Drain: in-flight requests finish (their instances stay up until then).
    Clock::time_point t0 = Clock::now();
    for (;;) {
        uint32_t in_flight = 0;
        {
            std::lock_guard lock(I.mu);
            for (auto& fn : I.every_function())
                for (auto& inst : fn->instances) in_flight += inst->state->in_flight;
        }
        if (in_flight == 0 || Clock::now() - t0 > drain) {
            if (in_flight) spdlog::warn("event=drain-timeout in_flight={}", in_flight);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    {
        std::lock_guard lock(I.ticker_mu);
        I.ticker_stop = true;
    }
    I.ticker_cv.notify_all();
    if (I.ticker.joinable()) I.ticker.join();
    {
        std::lock_guard lock(I.mu);
        for (auto& fn : I.every_function()) {
            fn->removed = true;
            for (auto& ps : fn->pool) ps->discard();
            fn->pool.clear();
            auto instances = fn->instances;
            for (auto& inst : instances) I.remove_instance(*fn, inst, false);
            Impl::kill_boots(*fn);
        }
        for (auto& [name, inits] : I.deploys) {
            spdlog::info("event=deploy-stopped function={} reason=\"the server is shutting down\"", name);
            for (auto& init : inits) {
                try {
                    sys::pidfd_send_signal(init.get(), SIGKILL);
                } catch (const Error& e) {
                    spdlog::warn("event=deploy-stop-failed function={} error=\"{}\"", name, e.what());
                }
            }
        }
    }
    if (!I.jobs.wait_all(std::chrono::seconds(60))) {
        spdlog::error("event=shutdown-jobs-left");
    } else {
        // Every sandbox is torn down: what a failed teardown left goes now, not at the next start.
        for (const auto& line : sandbox::collect_garbage(/*ours_too=*/true))
            spdlog::info("event=gc what=\"{}\"", line);
    }
    I.stopped = true;
    spdlog::info("event=stopped");
}

void Controller::acquire(const std::string& function, AcquireCallback done) {
    auto& I = *impl_;
    Impl::Callbacks out;
    {
        std::lock_guard lock(I.mu);
        auto it = I.functions.find(function);
        if (I.shutting_down) {
            reject(out, std::move(done), 503, "the server is shutting down");
        } else if (it == I.functions.end()) {
            reject(out, std::move(done), 404, fmt::format("no function named '{}' is deployed", function));
        } else if (it->second->waiters.size() >= it->second->spec.queue_max) {
            reject(out, std::move(done), 503,
                   fmt::format("queue full: {} requests already wait for an instance of {} (queue_max)",
                               it->second->waiters.size(), function));
            metrics_.add("initless_queue_rejected_total", {{"function", function}, {"reason", "full"}});
        } else {
            it->second->waiters.push_back({std::move(done), Clock::now()});
            I.dispatch(it->second, out);
        }
    }
    for (auto& f : out) f();
}

void Controller::release(const Acquired& slot, Outcome outcome, std::function<void(std::string)> diagnosed,
                         std::string broken) {
    auto& I = *impl_;
    auto inst = slot.instance;
    if (!inst) return;
    auto& s = *inst->state;
    Impl::Callbacks out;
    std::shared_ptr<FunctionState> fn = s.fn.lock();
    // What the gateway saw, for a broken request (not made for the others: this is the warm path).
    if (outcome == Outcome::UpstreamFailed && broken.empty()) broken = "the connection to the function broke";
    bool suspected = false, diagnose_now = false;
    {
        std::lock_guard lock(I.mu);
        s.in_flight--;
        s.served++;
        s.last_used = Clock::now();
        if (fn && s.phase != Instance::State::Phase::Gone) {
            policy::Decisions d;
            I.policy->on_invocation_end({I.now_ms(), fn->policy_id, s.policy_id}, d);
            I.apply(d);
            if (outcome == Outcome::TimedOut) {
                metrics_.add("initless_instance_failures_total",
                             {{"function", fn->name}, {"reason", "timeout"}});
                spdlog::warn("event=timeout function={} instance={} timeout_s={}", fn->name, inst->id(),
                             fn->spec.timeout_s);
                I.remove_instance(*fn, inst, true);
            } else if (bool dead = !s.death().empty(); outcome == Outcome::Ok || dead) {
                if (dead) {
                    I.remove_instance(*fn, inst, true);
                } else if (s.in_flight == 0 && s.suspect.empty()) {
                    I.became_idle(*fn, inst, policy::IdleReason::AfterInvocation);
                }
            } else if (outcome == Outcome::UpstreamFailed) {
                s.suspect.push_back({broken, std::move(diagnosed)});
                suspected = true;
                if (!s.diagnosing) {
                    s.diagnosing = true;
                    diagnose_now = true;
                }
            }
            if (fn->removed) {
                if (s.in_flight == 0) I.remove_instance(*fn, inst, /*tell_policy=*/true);
            } else {
                I.dispatch(fn, out);
            }
        }
    }
    for (auto& f : out) f();
    if (outcome == Outcome::TimedOut) {
        if (diagnosed)
            diagnosed(
                fmt::format("function {} did not answer within timeout_s = {} s; its instance was killed",
                            inst->function(), inst->timeout_s()));
        return;
    }
    if (outcome != Outcome::UpstreamFailed) return;
    if (!suspected) {
        // Known dead (and removed), gone already, or of a removed function: nothing to wait for.
        if (fn)
            metrics_.add("initless_instance_failures_total", {{"function", fn->name}, {"reason", "crash"}});
        std::string death = s.death();
        if (diagnosed) diagnosed(death.empty() ? broken : death);
        return;
    }
    if (!diagnose_now) return;  // the diagnosis running answers this request too
    I.jobs.spawn([this, inst, fn] {
        auto& I = *impl_;
        auto& s = *inst->state;
        std::string death = I.diagnose(inst);
        std::vector<Instance::State::Broken> answered;
        Impl::Callbacks out;
        {
            std::lock_guard lock(I.mu);
            answered.swap(s.suspect);
            s.diagnosing = false;
            if (fn) {
                if (s.phase != Instance::State::Phase::Gone && s.in_flight == 0)
                    I.became_idle(*fn, inst, policy::IdleReason::AfterInvocation);
                if (!fn->removed) I.dispatch(fn, out);
            }
        }
        if (fn)
            metrics_.add("initless_instance_failures_total", {{"function", fn->name}, {"reason", "crash"}},
                         static_cast<double>(answered.size()));
        for (auto& f : out) f();
        for (auto& b : answered)
            if (b.diagnosed) b.diagnosed(death.empty() ? b.transport_error : death);
    });
}

void Controller::deploy(const fs::path& dir, DeployProgress progress) {
    auto& I = *impl_;
    I.jobs.spawn([this, &I, dir, progress = std::move(progress)] {
        Clock::time_point t0 = Clock::now();
        std::string name;
        bool running = false;  // this deploy holds the name (not one refused because another does)
        std::optional<StagedEntry> staged;
        Impl::Callbacks deferred;
        try {
            spec::FunctionSpec source = spec::load(dir);
            name = source.name;
            {
                std::lock_guard lock(I.mu);
                if (I.shutting_down) throw Error("the server is shutting down");
                if (I.deploy_running(name))
                    throw Error(fmt::format("a deploy of {} is already running", name));
                I.deploys[name];
                running = true;
            }
            spdlog::info("event=deploy-start function={} dir={}", name, dir.string());
            Clock::time_point t = Clock::now();
            staged = I.registry.stage(source);
            spec::FunctionSpec spec = spec::load(staged->entry.code_dir);
            progress({{"step", "copy"}, {"ms", ms_since(t)}});
            auto result = build_snapshot(
                spec, staged->entry.image_dir, I.image_key, "/",
                [&](const std::string& step, double ms) {
                    progress({{"step", step}, {"ms", ms}});
                },
                [&](sys::UniqueFd init) {
                    std::lock_guard lock(I.mu);
                    // Made after the shutdown's kills: killed here.
                    if (I.shutting_down) sys::pidfd_send_signal(init.get(), SIGKILL);
                    I.deploys[name].push_back(std::move(init));
                });
            t = Clock::now();
            auto img =
                std::make_shared<const image::Image>(image::load(staged->entry.image_dir, I.image_key));
            staged->entry.boot_ms = result.boot_ms + result.ready_ms;
            staged->entry.restore_ms = result.restore_ms;  // the restore alone, not the trial's request
            staged->entry.image_mb = static_cast<double>(result.stats.image_bytes) / 1048576.0;
            staged->entry.snapshot = {{"boot_ms", result.boot_ms},
                                      {"ready_ms", result.ready_ms},
                                      {"warmup_ms", result.warmup_ms},
                                      {"checkpoint_ms", result.checkpoint_ms},
                                      {"trial_restore_ms", result.trial_ms},
                                      {"publish_ms", result.publish_ms},
                                      {"image_bytes", result.stats.image_bytes},
                                      {"working_set_pages", result.working_set_pages},
                                      {"notes", result.stats.notes}};
            RegistryEntry old = I.registry.commit(*staged);
            auto fn = I.make_function(staged->entry, spec, std::move(img), "");
            staged.reset();
            std::shared_ptr<FunctionState> previous;
            {
                std::lock_guard lock(I.mu);
                auto it = I.functions.find(name);
                if (it != I.functions.end()) previous = it->second;
                I.register_with_policy(*fn);
                I.functions[name] = fn;
                I.deploys.erase(name);
                running = false;
                if (previous) {
                    // Requests waiting for the old version are served by the new one.
                    fn->waiters = std::move(previous->waiters);
                    previous->waiters.clear();
                    Impl::Callbacks ignored;
                    // The old version's files go once nothing of it runs (its instances map its code).
                    I.retire(previous, ignored, [&I, old] { I.registry.remove_version(old); });
                }
                I.refill_pool(fn);
                Impl::Callbacks out;
                I.dispatch(fn, out);
                deferred = std::move(out);
            }
            for (auto& f : deferred) f();
            double total = ms_since(t0);
            spdlog::info("event=deployed function={} total_ms={:.1f} image_mb={:.1f}", name, total,
                         fn->entry.image_mb);
            progress({{"ok", true},
                      {"function", name},
                      {"total_ms", total},
                      {"image_mb", fn->entry.image_mb},
                      {"snapshot", fn->entry.snapshot}});
        } catch (const std::exception& e) {
            if (staged) I.registry.discard(*staged);
            if (running) {
                std::lock_guard lock(I.mu);
                I.deploys.erase(name);
            }
            spdlog::error("event=deploy-failed function={} error=\"{}\"", name.empty() ? dir.string() : name,
                          e.what());
            progress({{"error", e.what()}});
        }
    });
}

bool Controller::remove(const std::string& function) {
    auto& I = *impl_;
    Impl::Callbacks out;
    RegistryEntry entry;
    {
        std::lock_guard lock(I.mu);
        // Its cleanup job would outlive the controller.
        if (I.shutting_down) throw Error("the server is shutting down");
        auto it = I.functions.find(function);
        if (it == I.functions.end()) return false;
        entry = it->second->entry;
        I.retire(it->second, out, [&I, entry] {
            I.registry.remove_version(entry);  // the removed version's files: no one else's
            // What is left of the function's dir (current.json, the log) is the removed function's only
            // if it was not deployed again meanwhile; checked, and removed, under the lock a deploy takes
            // first.
            std::lock_guard lock(I.mu);
            if (I.functions.count(entry.name) || I.deploy_running(entry.name)) return;
            I.registry.remove_function(entry);
        });
        {
            std::lock_guard log_lock(it->second->log_mu);  // no copy of a draining instance's log after this
            it->second->unregistered = true;
        }
        // Durable at once: a daemon killed within the cleanup's second below no longer brings the function
        // back. A deploy of the name already running will write its own current.json when it commits.
        if (!I.deploy_running(function)) I.registry.unregister(function);
        I.functions.erase(it);
    }
    for (auto& f : out) f();
    spdlog::info("event=removed function={}", function);
    return true;
}

std::optional<json> Controller::scale(const std::string& function, uint32_t replicas) {
    auto& I = *impl_;
    std::lock_guard lock(I.mu);
    auto it = I.functions.find(function);
    if (it == I.functions.end()) return std::nullopt;
    auto& fn = it->second;
    uint32_t removed = 0;
    auto instances = fn->instances;
    uint32_t count = static_cast<uint32_t>(instances.size());
    for (auto& inst : instances) {
        if (count <= replicas) break;
        if (inst->state->in_flight == 0) {
            I.remove_instance(*fn, inst, true);
            count--;
            removed++;
        }
    }
    uint32_t target = std::min(replicas, fn->spec.max_instances);
    uint32_t have = static_cast<uint32_t>(fn->instances.size()) + fn->starting;
    fn->prewarms_pending = target > have ? target - have : 0;
    // Started now or as earlier restores end (start_prewarms): on their way, not all restoring yet.
    uint32_t starting = fn->prewarms_pending;
    I.start_prewarms(fn);
    spdlog::info("event=scaled function={} replicas={} removed={} starting={}", function, replicas, removed,
                 starting);
    return json{{"function", function}, {"replicas", replicas}, {"removed", removed}, {"starting", starting}};
}

namespace {
json describe_locked(const FunctionState& fn) {
    json instances = json::array();
    uint32_t idle = 0, busy = 0;
    for (const auto& inst : fn.instances) {
        const auto& s = *inst->state;
        bool is_busy = s.phase == Instance::State::Phase::Busy;
        (is_busy ? busy : idle)++;
        instances.push_back({{"id", inst->id()},
                             {"state", is_busy ? "busy" : "idle"},
                             {"age_s", ms_since(s.created) / 1000},
                             {"requests", s.served},
                             {"in_flight", s.in_flight},
                             {"start", start_kind_name(s.origin)}});
    }
    json out = {{"name", fn.name},
                {"dir", fn.entry.code_dir.string()},
                {"deployed_at", fn.entry.deployed_at},
                {"snapshot", fn.image ? json(fn.entry.image_dir.string()) : json(nullptr)},
                {"strategy", restore::strategy_name(fn.strategy)},
                {"image_mb", fn.entry.image_mb},
                {"concurrency", fn.spec.concurrency},
                {"max_instances", fn.spec.max_instances},
                {"prestart", fn.spec.prestart},
                {"memory_mb", fn.spec.memory_mb},
                {"timeout_s", fn.spec.timeout_s},
                {"pool", fn.pool.size()},
                {"starting", fn.starting},
                {"restoring", fn.restoring},  // of "starting": restores under way (paced)
                {"starts_pending", fn.prewarms_pending},
                {"queued", fn.waiters.size()},
                {"idle", idle},
                {"busy", busy},
                {"instances", instances},
                {"deploy", fn.entry.snapshot}};
    if (!fn.image) out["snapshot_problem"] = fn.image_problem;
    return out;
}
}  // namespace

json Controller::list() const {
    auto& I = *impl_;
    std::lock_guard lock(I.mu);
    json out = json::array();
    for (const auto& [name, fn] : I.functions) out.push_back(describe_locked(*fn));
    return out;
}

std::optional<json> Controller::describe(const std::string& function) const {
    auto& I = *impl_;
    std::lock_guard lock(I.mu);
    auto it = I.functions.find(function);
    if (it == I.functions.end()) return std::nullopt;
    return describe_locked(*it->second);
}

json Controller::stats() const {
    auto& I = *impl_;
    json out = json::object();
    std::vector<std::string> names;
    {
        std::lock_guard lock(I.mu);
        for (const auto& [name, fn] : I.functions) {
            out[name] = {{"instances", fn->instances.size()},
                         {"pool", fn->pool.size()},
                         {"queued", fn->waiters.size()}};
            names.push_back(name);
        }
    }
    for (const auto& name : names) {
        json starts = json::object();
        for (const char* kind : {"warm", "cold", "boot"})
            starts[kind] = metrics_.value("initless_starts_total", {{"function", name}, {"kind", kind}});
        out[name]["starts"] = starts;
    }
    return out;
}

std::optional<fs::path> Controller::log_path(const std::string& function) const {
    auto& I = *impl_;
    std::lock_guard lock(I.mu);
    if (!I.functions.count(function)) return std::nullopt;
    return I.registry.log_path(function);
}

std::string Controller::metrics_text() {
    auto& I = *impl_;
    metrics_.clear("initless_instances");
    metrics_.clear("initless_pool_size");
    {
        std::lock_guard lock(I.mu);
        for (const auto& [name, fn] : I.functions) {
            double idle = 0, busy = 0;
            for (const auto& inst : fn->instances)
                (inst->state->phase == Instance::State::Phase::Busy ? busy : idle) += 1;
            metrics_.set("initless_instances", {{"function", name}, {"state", "idle"}}, idle);
            metrics_.set("initless_instances", {{"function", name}, {"state", "busy"}}, busy);
            metrics_.set("initless_instances", {{"function", name}, {"state", "starting"}}, fn->starting);
            metrics_.set("initless_pool_size", {{"function", name}}, static_cast<double>(fn->pool.size()));
        }
    }
    return metrics_.exposition();
}

}  // namespace initless::controller
