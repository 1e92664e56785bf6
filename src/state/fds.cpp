// The fd table and the list of fd kinds. Checkpoint: each fd of /proc/PID/fd is offered to the
// kinds' readers in order (the first that knows it reads it); fds of one process sharing an open
// file description become dups (kcmp), and descriptions held by several processes of the tree get a
// shared_id. Restore: what several processes share is made once by the first process at fixed fd
// numbers above every target (FdLayout) before the forks, and dup3'd to its numbers by each holder;
// everything else is made by its kind's plan_create (pairs: plan_pair) and moved to its number.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sandbox/sandbox.h"
#include "initless/sys/error.h"
#include "initless/sys/inspect.h"
#include "initless/sys/process.h"
#include "initless/sys/socket.h"
#include "state/kinds.h"

namespace initless::state::fds {

namespace {

// The readers of the fd kinds, tried in order (files first: it knows the log, a regular file too).
constexpr std::optional<image::FdObject> (*kReaders[])(const FdSource&) = {
    files::read,        pipes::read, tcp::read,       udp::read,
    unix_sockets::read, epoll::read, event_fds::read, inotify::read};

// How each kind is stored and made (overloads by the kind's type).
using epoll::load, epoll::plan_create, epoll::store;
using event_fds::load, event_fds::plan_create, event_fds::store;
using files::load, files::plan_create, files::store;
using inotify::load, inotify::plan_create, inotify::store;
using pipes::load, pipes::plan_create, pipes::store;
using tcp::load, tcp::plan_create, tcp::store;
using udp::load, udp::plan_create, udp::store;
using unix_sockets::load, unix_sockets::plan_create, unix_sockets::store;

template <size_t I = 0>
image::FdObject load_object(const std::string& kind, const json& j) {
    if constexpr (I < std::variant_size_v<image::FdObject>) {
        using T = std::variant_alternative_t<I, image::FdObject>;
        if (kind != T::kName) return load_object<I + 1>(kind, j);
        T object;
        load(j, object);
        return object;
    } else {
        throw Error("manifest: unknown fd kind " + kind);
    }
}

// The two ends of a pipe or socket pair share an id; `end` tells them apart.
struct PairKey {
    size_t kind = 0;
    uint64_t id = 0;
    bool operator<(const PairKey& o) const { return std::tie(kind, id) < std::tie(o.kind, o.id); }
};
std::optional<std::pair<PairKey, int>> pair_of(const image::Fd& f) {
    if (const auto* p = f.as<image::PipeFd>())
        return std::pair{PairKey{f.object.index(), p->pipe_id}, p->end};
    if (const auto* u = f.as<image::UnixPairFd>())
        return std::pair{PairKey{f.object.index(), u->pair_id}, u->end};
    return std::nullopt;
}

void plan_pair(Table& t, Region& region, const image::Fd& end0, const image::Fd& end1, int lift) {
    std::string what = fmt::format("fd {} and {}", end0.fd, end1.fd);
    if (const auto* p = end0.as<image::PipeFd>())
        pipes::plan_pair(t, region, *p, *end1.as<image::PipeFd>(), lift, what);
    else
        unix_sockets::plan_pair(t, region, *end0.as<image::UnixPairFd>(), *end1.as<image::UnixPairFd>(), lift,
                                what);
}

// A single object (not a pair, not the log) into slot kTmp.
void plan_object(Table& t, Region& region, const image::Fd& f) {
    std::visit(
        [&](const auto& o) {
            using T = std::decay_t<decltype(o)>;
            if constexpr (requires { plan_create(t, region, f, o); })
                plan_create(t, region, f, o);
            else
                throw Error(fmt::format("fd {}: a {} is not a single object", f.fd, T::kName));
        },
        f.object);
}

// Moves a fresh fd out of `slot` to a fixed number, close-on-exec, with the description's flags.
void place_at(Table& t, int slot, int fd, int flags) {
    t.move_fd(slot, fd, true, flags);
}

}  // namespace

std::vector<image::Fd> read(const Frozen& fr, const struct stat& log,
                            const std::map<uint64_t, sys::UnixSocketDiag>& unix_sockets,
                            CheckpointContext& context) {
    std::vector<image::Fd> out;
    for (int fd : sys::list_fds(fr.host)) {
        FdSource s;
        s.pid = fr.host;
        s.pidfd = fr.pidfd.get();
        s.fd = fd;
        auto link = fmt::format("/proc/{}/fd/{}", fr.host, fd);
        s.dest = sys::read_link(link);
        s.info = sys::read_fdinfo(fr.host, fd);
        s.flags = static_cast<int>(std::stoul(s.info.fields.at("flags"), nullptr, 8));
        s.where = fmt::format("process {} fd {} ({})", fr.host, fd, s.dest);
        s.st = sys::stat_path(link);
        s.log = log;
        s.unix_sockets = &unix_sockets;
        s.context = &context;
        image::Fd f;
        f.fd = fd;
        f.cloexec = s.flags & O_CLOEXEC;
        f.flags = s.flags & ~O_CLOEXEC;
        std::optional<image::FdObject> object;
        for (auto reader : kReaders)
            if ((object = reader(s))) break;
        if (!object && S_ISSOCK(s.st.st_mode)) {
            sys::UniqueFd sock = sys::pidfd_getfd(s.pidfd, fd);
            int domain = sys::socket_option(sock.get(), SOL_SOCKET, SO_DOMAIN);
            const char* family = domain == AF_NETLINK                      ? "netlink"
                                 : domain == AF_PACKET                     ? "packet"
                                 : domain == AF_INET || domain == AF_INET6 ? "raw or other inet"
                                                                           : "other";
            throw ContractError(fmt::format(
                "process {} fd {}: a {} socket (domain {}, type {}) cannot be recreated by initless; rule: "
                "only TCP, UDP and unix sockets (listening, socket pairs, TCP connections) are restored",
                fr.host, fd, family, domain, sys::socket_option(sock.get(), SOL_SOCKET, SO_TYPE)));
        }
        if (!object)
            throw ContractError(s.where +
                                ": this kind of fd cannot be recreated by initless (rule: only files, "
                                "sockets, pipes and FIFOs, epoll, eventfd, timerfd, signalfd, inotify)");
        f.object = std::move(*object);
        out.push_back(std::move(f));
    }
    // dup'd fds share one open file description (offset, flags): found with kcmp, restored by dup.
    for (size_t i = 0; i < out.size(); ++i)
        for (size_t j = 0; j < i; ++j)
            if (out[j].dup_of < 0 && out[i].object.index() == out[j].object.index() &&
                sys::same_open_file(fr.host, out[j].fd, out[i].fd)) {
                out[i].dup_of = out[j].fd;
                break;
            }
    return out;
}

// Fds of different processes that are one open file description (inherited through fork) get one
// `shared_id`; so do both ends of a pipe or socket pair whose ends are in more than one process.
void link(std::vector<Frozen>& ms) {
    files::check_proc_paths(ms);
    uint64_t next_id = 1;
    for (size_t i = 0; i < ms.size(); ++i)
        for (auto& f : ms[i].p.fds) {
            if (f.dup_of >= 0 || f.as<image::LogFd>()) continue;
            for (size_t j = 0; j < i && !f.shared_id; ++j)
                for (auto& g : ms[j].p.fds) {
                    if (g.dup_of >= 0 || g.object.index() != f.object.index() ||
                        !sys::same_open_file(ms[i].host, f.fd, ms[j].host, g.fd))
                        continue;
                    if (!g.shared_id) g.shared_id = next_id++;
                    f.shared_id = g.shared_id;
                    break;
                }
            if (const auto* file = f.as<image::FileFd>(); file && f.shared_id)
                for (const auto& l : file->locks)
                    if (l.kind == image::FileLock::Posix)
                        throw ContractError(fmt::format(
                            "process {} fd {} ({}): a POSIX lock held through a file description several "
                            "processes share cannot be given back to its owner; rule: take POSIX locks "
                            "after fork, or use OFD locks",
                            ms[i].host, f.fd, file->path));
            if (f.shared_id && (f.as<image::EpollFd>() || f.as<image::TimerFd>() || f.as<image::SignalFd>() ||
                                f.as<image::UnixOrphanFd>()))
                throw ContractError(
                    fmt::format("process {} fd {}: an epoll, timerfd, signalfd or orphaned socket shared "
                                "by several processes cannot be restored; rule: create these after fork",
                                ms[i].host, f.fd));
        }

    struct End {
        size_t member;
        image::Fd* fd;
    };
    std::map<PairKey, std::array<std::vector<End>, 2>> pairs;
    for (size_t i = 0; i < ms.size(); ++i)
        for (auto& f : ms[i].p.fds)
            if (auto key = pair_of(f); key && f.dup_of < 0) pairs[key->first][key->second].push_back({i, &f});
    for (auto& [key, ends] : pairs) {
        for (int e = 0; e < 2; ++e)
            if (ends[e].empty()) {
                const End& other = ends[1 - e].front();
                throw ContractError(
                    fmt::format("process {} fd {}: a {} whose other end is outside the function; rule: "
                                "pipes and socket pairs only between processes of the snapshot",
                                ms[other.member].host, other.fd->fd,
                                other.fd->as<image::UnixPairFd>() ? "socket pair" : "pipe"));
            }
        std::set<size_t> holders;
        for (const auto& end : ends)
            for (const End& r : end) holders.insert(r.member);
        if (holders.size() > 1)
            for (auto& end : ends) {
                uint64_t sid = 0;
                for (End& r : end) sid = std::max(sid, r.fd->shared_id);
                if (!sid) sid = next_id++;
                for (End& r : end) r.fd->shared_id = sid;
            }
    }
    pipes::drain(ms);
}

void store(json& j, const image::Process& p) {
    json fds = json::array();
    for (const auto& f : p.fds) {
        json o = {{"fd", f.fd},           {"kind", f.kind()},   {"flags", f.flags},
                  {"cloexec", f.cloexec}, {"dup_of", f.dup_of}, {"shared_id", f.shared_id}};
        std::visit([&](const auto& object) { store(o, object); }, f.object);
        fds.push_back(std::move(o));
    }
    j["fds"] = std::move(fds);
}

void load(const json& j, image::Process& p) {
    for (const auto& o : j.at("fds")) {
        image::Fd f;
        f.fd = o.at("fd");
        f.flags = o.at("flags");
        f.cloexec = o.at("cloexec");
        f.dup_of = o.at("dup_of");
        f.shared_id = o.at("shared_id");
        f.object = load_object(o.at("kind").get<std::string>(), o);
        p.fds.push_back(std::move(f));
    }
}

FdLayout layout(const std::vector<image::Process>& procs) {
    FdLayout l;
    for (const auto& p : procs)
        for (const auto& f : p.fds) {
            l.max_fd = std::max(l.max_fd, f.fd);
            // An epoll target's number is used for a moment even when no fd holds it now.
            if (const auto* e = f.as<image::EpollFd>())
                for (const auto& target : e->targets) l.max_fd = std::max(l.max_fd, target.fd);
        }
    // Above the restorer's own fds too (pages 3, userfaultfd device 4): a dup3 onto the same number fails.
    int base = std::max(l.max_fd, sandbox::Sandbox::kRestorerUffdDeviceFd);
    l.img = base + 1;
    l.log = base + 2;
    l.log_in = base + 3;
    l.log_err = base + 4;
    int next = base + 5;
    for (const auto& p : procs)
        for (const auto& f : p.fds)
            if (f.shared_id && !l.shared.count(f.shared_id)) l.shared[f.shared_id] = next++;
    for (uint64_t inode : memory::shared_objects(procs)) l.shm[inode] = next++;
    l.lift = next;
    return l;
}

void plan_lift_ends(Table& t, uint64_t pair, int lift, const std::string& what) {
    t.op(0, {pair}, kTmp, STUB_OP_LOAD32, {}, "end 0");
    t.op(0, {pair + 4}, kPipeW, STUB_OP_LOAD32, {}, "end 1");
    for (auto [from, to] : {std::pair{kTmp, kPipeR}, std::pair{kPipeW, kTmp}}) {
        t.op(SYS_fcntl, {0, F_DUPFD_CLOEXEC, static_cast<uint64_t>(lift)}, to, 0, {{0, from}},
             what + " lift end");
        t.op(SYS_close, {0}, -1, 0, {{0, from}}, what + " close low end");
    }
}

void plan_shared(Table& t, Region& region, const std::vector<image::Process>& procs, const FdLayout& L) {
    std::map<uint64_t, const image::Fd*> first;  // shared id -> its first record
    std::map<PairKey, std::array<const image::Fd*, 2>> pairs;
    for (const auto& p : procs)
        for (const auto& f : p.fds) {
            if (!f.shared_id || f.dup_of >= 0) continue;
            first.try_emplace(f.shared_id, &f);
            if (auto key = pair_of(f); key && !pairs[key->first][key->second])
                pairs[key->first][key->second] = &f;
        }
    std::set<PairKey> made_pairs;
    for (const auto& [id, f] : first) {
        if (auto key = pair_of(*f)) {
            if (!made_pairs.insert(key->first).second) continue;
            auto ends = pairs.at(key->first);
            if (!ends[0] || !ends[1])
                throw Error(fmt::format("shared pair {} lacks an end in the image", key->first.id));
            plan_pair(t, region, *ends[0], *ends[1], L.lift);
            place_at(t, kPipeR, L.shared.at(ends[0]->shared_id), ends[0]->flags);
            place_at(t, kTmp, L.shared.at(ends[1]->shared_id), ends[1]->flags);
            continue;
        }
        plan_object(t, region, *f);
        place_at(t, kTmp, L.shared.at(id), f->flags);
    }
    for (const auto& [inode, fd] : L.shm) {
        const image::Vma* object = nullptr;  // any VMA of it: they share its name and size
        for (const auto& p : procs)
            for (const auto& v : p.vmas)
                if (!object && v.kind == image::VmaKind::SharedMemory && v.file_inode == inode) object = &v;
        memory::plan_memfd(t, region, *object, kTmp);
        place_at(t, kTmp, fd, O_RDWR);
    }
}

void plan(Table& t, Region& region, const image::Process& p, const FdLayout& L) {
    auto cloexec = [](const image::Fd& f) { return f.cloexec ? static_cast<uint64_t>(O_CLOEXEC) : 0; };
    std::map<int, bool> present;  // fd -> close-on-exec
    for (const auto& f : p.fds) present[f.fd] = f.cloexec;
    std::map<PairKey, std::array<const image::Fd*, 2>> pairs;
    for (const auto& f : p.fds) {
        if (f.dup_of >= 0) continue;  // made after its original, below
        if (f.shared_id) {
            t.op(SYS_dup3,
                 {static_cast<uint64_t>(L.shared.at(f.shared_id)), static_cast<uint64_t>(f.fd), cloexec(f)},
                 -1, 0, {}, fmt::format("fd {} (shared)", f.fd));
            continue;
        }
        if (const auto* log = f.as<image::LogFd>()) {
            if (log->stream == 1)
                t.op(SYS_dup3, {0, static_cast<uint64_t>(f.fd), cloexec(f)}, -1, 0, {{0, kLog}},
                     fmt::format("fd {} (log)", f.fd));
            else
                t.op(SYS_dup3,
                     {static_cast<uint64_t>(log->stream == 0 ? L.log_in : L.log_err),
                      static_cast<uint64_t>(f.fd), cloexec(f)},
                     -1, 0, {}, fmt::format("fd {} (stdio stream {})", f.fd, log->stream));
            continue;
        }
        if (auto key = pair_of(f)) {
            auto& ends = pairs[key->first];
            ends[key->second] = &f;
            if (!ends[0] || !ends[1]) continue;  // both ends are made when the second is seen
            plan_pair(t, region, *ends[0], *ends[1], L.lift);
            t.move_fd(kPipeR, ends[0]->fd, ends[0]->cloexec, ends[0]->flags);
            t.move_fd(kTmp, ends[1]->fd, ends[1]->cloexec, ends[1]->flags);
            continue;
        }
        plan_object(t, region, f);
        t.move_fd(kTmp, f.fd, f.cloexec, f.flags);
    }
    for (const auto& f : p.fds)
        if (f.dup_of >= 0)
            t.op(SYS_dup3, {static_cast<uint64_t>(f.dup_of), static_cast<uint64_t>(f.fd), cloexec(f)}, -1, 0,
                 {}, fmt::format("fd {} (dup of {})", f.fd, f.dup_of));
    for (const auto& f : p.fds)
        if (const auto* e = f.as<image::EpollFd>()) epoll::plan_targets(t, region, f, *e, present, L.lift);
    t.op(SYS_close, {0}, -1, 0, {{0, kLog}}, "close log copy");
    for (int copy : {L.log_in, L.log_err})
        t.op(SYS_close, {static_cast<uint64_t>(copy)}, -1, STUB_OP_ALLOW_FAIL, {}, "close stdio copy");
    // Shared memory temps may be closed already (as this process's memfd slots).
    for (const auto& [id, fd] : L.shared)
        t.op(SYS_close, {static_cast<uint64_t>(fd)}, -1, 0, {}, "close shared fd");
    for (const auto& [inode, fd] : L.shm)
        t.op(SYS_close, {static_cast<uint64_t>(fd)}, -1, STUB_OP_ALLOW_FAIL, {}, "close shared memory fd");
    files::plan_posix_locks(t, region, p);  // last: a close of any fd of a file drops them
}

}  // namespace initless::state::fds
