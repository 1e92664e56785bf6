#include "initless/sim/trace_replay.h"

#include <algorithm>
#include <queue>
#include <random>
#include <unordered_map>
#include <vector>

#include "initless/sys/error.h"

namespace initless::sim {

using namespace initless::policy;

const char* world_name(ColdStartWorld w) {
    return w == ColdStartWorld::Restore ? "restore" : "boot";
}

const char* model_name(ReplayModel m) {
    return m == ReplayModel::Initless ? "initless" : "faascache";
}

TraceReplay::TraceReplay(const AzureTrace& trace, const ColdStartCostModel& costs, ReplayConfig config)
    : trace_(trace), costs_(costs), config_(config) {
    if (!(config.memory_budget_mb > 0)) throw Error("sim: memory budget must be > 0 MB");
    if (config.instance_concurrency < 1) throw Error("sim: instance concurrency must be >= 1");
}

FunctionProfile TraceReplay::profile(std::size_t index) const {
    const auto& f = trace_.functions.at(index);
    FunctionProfile p;
    p.id = static_cast<FunctionId>(index);
    p.memory_mb = f.memory_mb;
    if (config_.model == ReplayModel::FaasCache) {
        // FaaSCache's simulator: the cost of a miss is the function's init time, from the trace alone.
        p.memory_mb = f.memory_average_mb;
        p.cold_from_memory_ms = p.cold_from_disk_ms = std::max(0.0, f.maximum_ms - f.average_ms);
        p.image_mb = 0;
    } else if (config_.world == ColdStartWorld::Boot) {
        // No snapshots: every cold start boots, wherever the policy would like the snapshot to be.
        p.cold_from_memory_ms = p.cold_from_disk_ms = costs_.boot_ms(f.memory_mb);
        p.image_mb = 0;
    } else {
        p.cold_from_memory_ms = costs_.restore_ms(f.memory_mb);
        p.cold_from_disk_ms = costs_.restore_disk_ms(f.memory_mb);
        p.image_mb = costs_.image_mb(f.memory_mb);
    }
    return p;
}

namespace {

// Events at the same time run in this order: the policy's tick first (it may extend deadlines that
// end now), then finishing invocations (an instance freed now can serve a request arriving now).
enum class EventKind : std::uint8_t { Tick = 0, End = 1, Expiry = 2, PreWarm = 3, Arrival = 4 };

struct Event {
    TimeMs at;
    EventKind kind;
    std::uint64_t seq;
    std::uint64_t a;  // instance (End, Expiry) or function (PreWarm)
    std::uint64_t b;  // count (PreWarm)
    bool operator>(const Event& o) const {
        if (at != o.at) return at > o.at;
        if (kind != o.kind) return kind > o.kind;
        return seq > o.seq;
    }
};

struct Arrival {
    TimeMs at;
    FunctionId function;
    double duration_ms;
};

struct Instance {
    FunctionId function;
    bool busy;  // runs at least one invocation
    bool pre_warmed_unused;
    TimeMs ready_at;
    // Keep-alive timer. At most one Expiry event per instance is live in the queue (at `queued_at`); it
    // re-arms itself when the deadline moved later, so an instance reused a thousand times does not
    // leave a thousand stale events behind.
    TimeMs deadline;   // kForever: none
    TimeMs queued_at;  // time of the live Expiry event, -1: none
    std::size_t idle_index;
    TimeMs idle_since = 0;
    std::uint32_t active = 0;           // invocations running on it
    std::size_t open_index = kNotOpen;  // index in open_ when busy with a free slot

    static constexpr std::size_t kNotOpen = static_cast<std::size_t>(-1);
};

// Uniform double in [0, 1) from 53 random bits: the same on every platform, unlike the std distributions.
double unit(std::mt19937_64& rng) {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

class Host {
  public:
    Host(const TraceReplay& replay, const AzureTrace& trace, ReplayConfig config, KeepAlivePolicy& policy)
        : trace_(trace),
          config_(config),
          policy_(policy),
          end_(static_cast<TimeMs>(trace.minutes) * kMinuteMs) {
        std::size_t n = trace.functions.size();
        profiles_.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            profiles_.push_back(replay.profile(i));
            policy_.on_function_registered(profiles_.back());
        }
        idle_.resize(n);
        open_.resize(n);
        in_memory_.assign(n, false);
        result_.per_function.resize(n);
        result_.policy = std::string(policy.name());
        result_.memory_budget_mb = config.memory_budget_mb;
        result_.seed = config.seed;
        result_.world = config.world;
        result_.model = config.model;
    }

    ReplayResult run() {
        std::mt19937_64 rng(config_.seed);
        TimeMs tick = policy_.tick_interval_ms();
        if (tick > 0) push({0, EventKind::Tick, 0, 0, 0});
        std::vector<Arrival> arrivals;
        for (int minute = 0; minute < trace_.minutes; ++minute) {
            arrivals.clear();
            TimeMs base = static_cast<TimeMs>(minute) * kMinuteMs;
            for (std::size_t f = 0; f < trace_.functions.size(); ++f) {
                const auto& tf = trace_.functions[f];
                std::uint32_t n = tf.per_minute[static_cast<std::size_t>(minute)];
                for (std::uint32_t k = 0; k < n; ++k) {
                    if (faascache()) {
                        // Evenly spaced, every run the function's average (a cold one adds its init time).
                        TimeMs at = base + static_cast<TimeMs>(k) * kMinuteMs / static_cast<TimeMs>(n);
                        arrivals.push_back({at, static_cast<FunctionId>(f), std::max(1.0, tf.average_ms)});
                        continue;
                    }
                    TimeMs at = base + static_cast<TimeMs>(unit(rng) * kMinuteMs);
                    arrivals.push_back({at, static_cast<FunctionId>(f), tf.duration.at(unit(rng))});
                }
            }
            std::stable_sort(arrivals.begin(), arrivals.end(),
                             [](const Arrival& x, const Arrival& y) { return x.at < y.at; });
            for (const auto& a : arrivals) {
                drain_until(a.at, EventKind::Arrival);
                advance(a.at);
                arrive(a);
            }
        }
        drain_until(end_, EventKind::Arrival);
        advance(end_);
        for (const auto& ids : idle_)
            for (InstanceId id : ids) charge_idle(instances_.at(id), end_);
        // Memory-time stops at the end of the trace; the counts cover every invocation that started in it.
        result_.busy_gb_s = busy_mb_ms_ / 1024 / 1000;
        result_.idle_gb_s = idle_mb_ms_ / 1024 / 1000;
        result_.snapshot_gb_s = snapshot_mb_ms_ / 1024 / 1000;
        result_.over_budget_gb_s = over_mb_ms_ / 1024 / 1000;
        return result_;
    }

  private:
    void push(Event e) {
        e.seq = seq_++;
        events_.push(e);
    }

    // Runs every queued event that comes before (at, kind).
    void drain_until(TimeMs at, EventKind kind) {
        while (!events_.empty()) {
            const Event& top = events_.top();
            if (top.at > at || (top.at == at && top.kind >= kind)) break;
            Event e = top;
            events_.pop();
            advance(e.at);
            switch (e.kind) {
                case EventKind::Tick:
                    tick(e.at);
                    break;
                case EventKind::End:
                    end_invocation(e.at, e.a);
                    break;
                case EventKind::Expiry:
                    expire(e.at, e.a);
                    break;
                case EventKind::PreWarm:
                    pre_warm(e.at, static_cast<FunctionId>(e.a), static_cast<std::uint32_t>(e.b));
                    break;
                case EventKind::Arrival:
                    break;
            }
        }
    }

    void advance(TimeMs t) {
        TimeMs to = std::min(t, end_);
        if (to > now_) {
            auto dt = static_cast<double>(to - now_);
            busy_mb_ms_ += busy_mb_ * dt;
            idle_mb_ms_ += idle_mb_ * dt;
            snapshot_mb_ms_ += snapshot_mb_ * dt;
            over_mb_ms_ += std::max(0.0, limited() - config_.memory_budget_mb) * dt;
            now_ = to;
        }
        if (t > clock_) clock_ = t;
    }

    double total() const { return busy_mb_ + idle_mb_ + snapshot_mb_; }
    bool faascache() const { return config_.model == ReplayModel::FaasCache; }
    // What the budget limits: memory that is not running anything (ours), or all of it (FaaSCache's).
    double limited() const { return faascache() ? total() : idle_mb_ + snapshot_mb_; }

    void note_peak() { result_.peak_memory_mb = std::max(result_.peak_memory_mb, total()); }

    // Asks the policy for room to keep `need_mb` more; returns whether it fits now.
    bool make_room(double need_mb, FunctionId f) {
        double over = limited() + need_mb - config_.memory_budget_mb;
        if (over <= 1e-9) return true;
        decisions_stack_.emplace_back();
        policy_.on_memory_pressure({clock_, over, f}, decisions_stack_.back());
        apply_top();
        return limited() + need_mb - config_.memory_budget_mb <= 1e-9;
    }

    double cold_cost(FunctionId f) const {
        const auto& p = profiles_[f];
        return in_memory_[f] ? p.cold_from_memory_ms : p.cold_from_disk_ms;
    }

    InstanceId create(FunctionId f, bool busy, TimeMs ready_at) {
        InstanceId id = next_instance_++;
        instances_.emplace(id, Instance{f, busy, !busy, ready_at, kForever, -1, 0});
        (busy ? busy_mb_ : idle_mb_) += profiles_[f].memory_mb;
        if (!busy) add_idle(id);
        note_peak();
        return id;
    }

    void add_idle(InstanceId id) {
        auto& inst = instances_.at(id);
        auto& v = idle_[inst.function];
        inst.idle_index = v.size();
        inst.idle_since = std::min(clock_, end_);
        v.push_back(id);
    }

    void charge_idle(const Instance& inst, TimeMs until) {
        result_.per_function[inst.function].idle_gb_s +=
            profiles_[inst.function].memory_mb * static_cast<double>(until - inst.idle_since) / 1024 / 1000;
    }

    void remove_idle(InstanceId id) {
        auto& inst = instances_.at(id);
        auto& v = idle_[inst.function];
        charge_idle(inst, std::min(clock_, end_));
        std::size_t i = inst.idle_index;
        if (i + 1 != v.size()) {
            v[i] = v.back();
            instances_.at(v[i]).idle_index = i;
        }
        v.pop_back();
    }

    // Busy instances with a free slot (only when instances take more than one invocation at a time).
    void add_open(InstanceId id) {
        auto& inst = instances_.at(id);
        if (inst.open_index != Instance::kNotOpen) return;
        inst.open_index = open_[inst.function].size();
        open_[inst.function].push_back(id);
    }

    void remove_open(InstanceId id) {
        auto& inst = instances_.at(id);
        if (inst.open_index == Instance::kNotOpen) return;
        auto& v = open_[inst.function];
        std::size_t i = inst.open_index;
        if (i + 1 != v.size()) {
            v[i] = v.back();
            instances_.at(v[i]).open_index = i;
        }
        v.pop_back();
        inst.open_index = Instance::kNotOpen;
    }

    // Removes an idle instance; returns false if it is gone or busy.
    bool remove(InstanceId id) {
        auto it = instances_.find(id);
        if (it == instances_.end() || it->second.busy) return false;
        remove_idle(id);
        idle_mb_ -= profiles_[it->second.function].memory_mb;
        if (it->second.pre_warmed_unused) ++result_.pre_warms_unused;
        instances_.erase(it);
        return true;
    }

    void arrive(const Arrival& a) {
        ++result_.invocations;
        FunctionId f = a.function;
        auto& stats = result_.per_function[f];
        ++stats.invocations;
        InstanceId id;
        StartKind kind;
        double delay = 0;
        const std::uint32_t slots = config_.instance_concurrency;
        if (!open_[f].empty()) {
            // Join a running instance (a cold one still starting makes the request wait for it).
            id = open_[f].back();
            auto& inst = instances_.at(id);
            kind = StartKind::Warm;
            delay = static_cast<double>(std::max<TimeMs>(0, inst.ready_at - a.at));
            if (++inst.active >= slots) remove_open(id);
            ++result_.warm_starts;
        } else if (!idle_[f].empty()) {
            id = idle_[f].back();
            remove_idle(id);
            auto& inst = instances_.at(id);
            kind = inst.pre_warmed_unused ? StartKind::PreWarmed : StartKind::Warm;
            delay = static_cast<double>(std::max<TimeMs>(0, inst.ready_at - a.at));
            inst.busy = true;
            inst.active = 1;
            if (slots > 1) add_open(id);
            inst.pre_warmed_unused = false;
            inst.deadline = kForever;
            idle_mb_ -= profiles_[f].memory_mb;
            busy_mb_ += profiles_[f].memory_mb;
            ++(kind == StartKind::Warm ? result_.warm_starts : result_.pre_warmed_starts);
        } else {
            if (faascache() && !make_room(profiles_[f].memory_mb, f)) {
                ++result_.dropped;
                ++stats.dropped;
                return;
            }
            kind = in_memory_[f] ? StartKind::ColdFromMemory : StartKind::ColdFromDisk;
            delay = cold_cost(f);
            id = create(f, true, a.at + static_cast<TimeMs>(delay));
            instances_.at(id).active = 1;
            if (slots > 1) add_open(id);
            ++(kind == StartKind::ColdFromMemory ? result_.cold_from_memory : result_.cold_from_disk);
            ++stats.cold_starts;
        }
        result_.cold_start_overhead_s += delay / 1000;
        stats.cold_start_overhead_s += delay / 1000;
        result_.slowdown_sum += delay / a.duration_ms;
        decisions_stack_.emplace_back();
        policy_.on_invocation_start({a.at, f, id, kind}, decisions_stack_.back());
        apply_top();
        push({a.at + static_cast<TimeMs>(delay + a.duration_ms), EventKind::End, 0, id, 0});
    }

    void end_invocation(TimeMs at, InstanceId id) {
        auto& inst = instances_.at(id);
        FunctionId f = inst.function;
        if (inst.active > 1) {
            // Still running others: the instance only gains a free slot.
            --inst.active;
            add_open(id);
            decisions_stack_.emplace_back();
            policy_.on_invocation_end({at, f, id}, decisions_stack_.back());
            apply_top();
            return;
        }
        inst.active = 0;
        remove_open(id);
        inst.busy = false;
        busy_mb_ -= profiles_[f].memory_mb;
        idle_mb_ += profiles_[f].memory_mb;
        add_idle(id);
        decisions_stack_.emplace_back();
        policy_.on_invocation_end({at, f, id}, decisions_stack_.back());
        policy_.on_instance_idle({at, f, id, IdleReason::AfterInvocation}, decisions_stack_.back());
        apply_top();
        make_room(0, f);
    }

    void expire(TimeMs at, InstanceId id) {
        auto it = instances_.find(id);
        if (it == instances_.end() || it->second.queued_at != at) return;  // gone, or a superseded event
        auto& inst = it->second;
        inst.queued_at = -1;
        if (inst.busy || inst.deadline == kForever) return;
        if (inst.deadline > at) {
            arm(id, inst);
            return;
        }
        FunctionId f = it->second.function;
        remove(id);
        ++result_.expirations;
        decisions_stack_.emplace_back();
        policy_.on_instance_removed({at, f, id}, decisions_stack_.back());
        apply_top();
    }

    void pre_warm(TimeMs at, FunctionId f, std::uint32_t count) {
        if (at >= end_) return;
        // Bounded: making room may evict an idle instance of `f` itself.
        for (std::size_t have = idle_[f].size(); have < count; ++have) {
            if (!make_room(profiles_[f].memory_mb, f)) {
                ++result_.pre_warms_skipped;
                return;
            }
            InstanceId id = create(f, false, at + static_cast<TimeMs>(cold_cost(f)));
            ++result_.pre_warms;
            decisions_stack_.emplace_back();
            policy_.on_instance_idle({at, f, id, IdleReason::PreWarmed}, decisions_stack_.back());
            apply_top();
        }
    }

    void tick(TimeMs at) {
        decisions_stack_.emplace_back();
        policy_.on_clock_tick({at}, decisions_stack_.back());
        apply_top();
        TimeMs next = at + policy_.tick_interval_ms();
        if (next < end_) push({next, EventKind::Tick, 0, 0, 0});
    }

    // Carries out the decisions at the top of the stack (applying one may ask the policy again, which
    // pushes a new list; hence a stack and not one reused vector).
    void apply_top() {
        std::size_t level = decisions_stack_.size() - 1;
        for (std::size_t i = 0; i < decisions_stack_[level].size(); ++i) {
            Decision d = decisions_stack_[level][i];
            switch (d.kind) {
                case DecisionKind::Evict:
                    if (remove(d.instance)) {
                        ++result_.evictions;
                        ++result_.per_function[d.function].evictions;
                    }
                    break;
                case DecisionKind::KeepUntil: {
                    auto it = instances_.find(d.instance);
                    if (it == instances_.end() || it->second.busy) break;
                    it->second.deadline = d.at == kForever ? kForever : std::max(d.at, clock_);
                    arm(d.instance, it->second);
                    break;
                }
                case DecisionKind::PreWarm:
                    if (d.at <= clock_)
                        pre_warm(clock_, d.function, d.count);
                    else
                        push({d.at, EventKind::PreWarm, 0, d.function, d.count});
                    break;
                case DecisionKind::PlaceSnapshot:
                    place(d.function, d.tier);
                    break;
            }
        }
        decisions_stack_.pop_back();
    }

    void arm(InstanceId id, Instance& inst) {
        if (inst.deadline == kForever) return;
        if (inst.queued_at >= 0 && inst.queued_at <= inst.deadline) return;  // fires first, re-arms then
        inst.queued_at = inst.deadline;
        push({inst.deadline, EventKind::Expiry, 0, id, 0});
    }

    void place(FunctionId f, Tier tier) {
        if (config_.world == ColdStartWorld::Boot) return;  // there is no snapshot to place
        bool want = tier == Tier::SnapshotInMemory;
        if (want == in_memory_[f]) return;
        in_memory_[f] = want;
        snapshot_mb_ += (want ? 1 : -1) * profiles_[f].image_mb;
        if (want) {
            note_peak();
            make_room(0, f);
        }
    }

    const AzureTrace& trace_;
    ReplayConfig config_;
    KeepAlivePolicy& policy_;
    TimeMs end_;
    TimeMs now_ = 0;    // memory-time integrated up to here
    TimeMs clock_ = 0;  // the host's current time
    std::vector<FunctionProfile> profiles_;
    std::unordered_map<InstanceId, Instance> instances_;
    std::vector<std::vector<InstanceId>> idle_;
    std::vector<std::vector<InstanceId>> open_;
    std::vector<bool> in_memory_;
    std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
    std::vector<Decisions> decisions_stack_;
    std::uint64_t seq_ = 0;
    InstanceId next_instance_ = 1;
    double busy_mb_ = 0, idle_mb_ = 0, snapshot_mb_ = 0;
    double busy_mb_ms_ = 0, idle_mb_ms_ = 0, snapshot_mb_ms_ = 0, over_mb_ms_ = 0;
    ReplayResult result_;
};

}  // namespace

ReplayResult TraceReplay::run(KeepAlivePolicy& policy) const {
    return Host(*this, trace_, config_, policy).run();
}

}  // namespace initless::sim
