// Credentials and limits: ids and groups, capability sets, no_new_privs and rlimits. Checkpoint reads
// them from /proc/PID/status (ids translated into the sandbox's user namespace through
// /proc/PID/uid_map and gid_map) and prlimit. Restore does not change ids: the restored process has
// the restorer's, root of the sandbox's user namespace; check_allowed refuses an image whose ids or
// capabilities differ from what the sandbox's spec gives. Securebits are not read (no /proc field;
// without CAP_SETPCAP, which no function has, they cannot leave their default). Restore: the bounding set and
// no_new_privs are per thread but inherited by clone, so a process's leader sets them once before creating
// its threads; each thread sets its effective, permitted and inheritable sets itself (after the leader's
// clone3 calls, which need CAP_SYS_ADMIN). A hard limit above the sandbox's cannot be restored without
// CAP_SYS_RESOURCE: such a resource keeps the sandbox's.
// Seccomp: the checkpoint reads each thread's filters (PTRACE_SECCOMP_GET_FILTER) and accepts only
// the sandbox's own filter, alone; the restore installs it in each process with TSYNC as its very
// last step (execute.cpp), after every syscall the restore makes, so a restored function runs under
// the same filter as a booted one.
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/seccomp/profile.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/inspect.h"
#include "state/kinds.h"

namespace initless::state::credentials {

namespace {

// "inside outside count" lines of /proc/PID/uid_map, as seen from our namespace.
std::vector<oci::IdMapping> id_map(pid_t pid, const char* which) {
    std::vector<oci::IdMapping> out;
    std::istringstream in(sys::read_file(fmt::format("/proc/{}/{}", pid, which)));
    oci::IdMapping m;
    while (in >> m.container_id >> m.host_id >> m.size) out.push_back(m);
    return out;
}

std::vector<uint32_t> numbers(const std::string& s) {
    std::vector<uint32_t> out;
    std::istringstream in(s);
    for (uint32_t v; in >> v;) out.push_back(v);
    return out;
}

// Status ids (host view) as the process's own user namespace sees them.
std::array<uint32_t, 4> inside(const std::string& line, const std::vector<oci::IdMapping>& map, pid_t pid,
                               const char* what) {
    auto host = numbers(line);
    if (host.size() != 4) throw Error(fmt::format("process {}: cannot read its {}s: '{}'", pid, what, line));
    std::array<uint32_t, 4> out{};
    for (size_t i = 0; i < 4; ++i) {
        auto c = oci::to_container(map, host[i]);
        if (!c)
            throw Error(fmt::format("process {}: its {} {} has no mapping in its user namespace", pid, what,
                                    host[i]));
        out[i] = *c;
    }
    return out;
}

std::string cap_names(uint64_t mask) {
    std::string out;
    for (int cap = 0; cap < 64; ++cap)
        if (mask & (1ULL << cap)) out += (out.empty() ? "" : ",") + std::to_string(cap);
    return out;
}

}  // namespace

void read(Frozen& f) {
    image::Process& p = f.p;
    auto& status = f.status;
    auto uid_map = id_map(f.host, "uid_map");
    auto gid_map = id_map(f.host, "gid_map");
    p.creds.uids = inside(status.at("Uid"), uid_map, p.pid, "uid");
    p.creds.gids = inside(status.at("Gid"), gid_map, p.pid, "gid");
    p.creds.groups.clear();
    for (uint32_t g : numbers(status.count("Groups") ? status["Groups"] : "")) {
        auto c = oci::to_container(gid_map, g);
        if (!c) throw Error(fmt::format("process {}: its supplementary group {} has no mapping", p.pid, g));
        p.creds.groups.push_back(*c);
    }
    p.creds.cap_inheritable = hex_u64(status.at("CapInh"));
    p.creds.cap_permitted = hex_u64(status.at("CapPrm"));
    p.creds.cap_effective = hex_u64(status.at("CapEff"));
    p.creds.cap_bounding = hex_u64(status.at("CapBnd"));
    p.creds.no_new_privs = status.count("NoNewPrivs") && status["NoNewPrivs"] == "1";
    p.rlimits = sys::process_rlimits(f.host);
}

void read_seccomp(Frozen& f, const std::vector<sock_filter>& sandbox_filter) {
    const char* rule =
        "rule: no seccomp filter beyond the sandbox's when ready: restore rebuilds only the sandbox's "
        "filter, and a filter of the function's own may block the syscalls the checkpoint injects";
    f.seccomp_modes.assign(f.threads.size(), 0);
    for (size_t i = 0; i < f.threads.size(); ++i) {
        sys::Tracee& t = f.threads[i];
        int& mode = f.seccomp_modes[i];
        // PTRACE_SECCOMP_GET_FILTER counts from the first filter installed (index 0).
        std::vector<std::vector<sock_filter>> chain;
        for (unsigned long k = 0; k < 2; ++k) {
            auto bpf = t.seccomp_filter(k);
            if (!bpf) break;
            chain.push_back(std::move(*bpf));
        }
        if (chain.empty()) {
            if (!sandbox_filter.empty())
                throw ContractError(fmt::format(
                    "process {} thread {} has no seccomp filter, but its sandbox installs one ({} "
                    "instructions) in every function; {}",
                    f.host, t.tid(), sandbox_filter.size(), rule));
            mode = 0;
            continue;
        }
        auto is_sandbox_filter = [&](const std::vector<sock_filter>& bpf) {
            return !sandbox_filter.empty() && seccomp::same_program(bpf, sandbox_filter);
        };
        if (chain.size() == 1 && is_sandbox_filter(chain[0])) {
            mode = 2;
            continue;
        }
        std::string what;
        if (chain.size() > 1 && is_sandbox_filter(chain[0]))
            what = fmt::format("a seccomp filter of its own ({} instructions) on top of the sandbox's",
                               chain[1].size());
        else if (sandbox_filter.empty())
            what =
                fmt::format("a seccomp filter of its own ({} instructions) while its sandbox installs none",
                            chain[0].size());
        else
            what = fmt::format("a seccomp filter of its own ({} instructions) instead of the sandbox's",
                               chain[0].size());
        throw ContractError(fmt::format("process {} thread {} has {} (Seccomp: 2 in /proc/{}/status); {}",
                                        f.host, t.tid(), what, t.tid(), rule));
    }
}

void store_filter(json& j, const image::Manifest& m) {
    j["seccomp"] = {{"filter", hex(m.seccomp_filter)}, {"flags", m.seccomp_flags}};
}

void load_filter(const json& j, image::Manifest& m) {
    m.seccomp_filter = unhex(j.at("seccomp").at("filter"));
    m.seccomp_flags = j.at("seccomp").at("flags");
    if (m.seccomp_filter.size() % sizeof(sock_filter) != 0)
        throw Error(fmt::format("manifest: the seccomp filter's {} bytes are not whole instructions",
                                m.seccomp_filter.size()));
}

void store(json& j, const image::Process& p) {
    j["rlimits"] = p.rlimits;
    json modes = json::array();
    for (const auto& th : p.threads) modes.push_back(th.seccomp_mode);
    j["seccomp_modes"] = std::move(modes);
    j["caps"] = {p.creds.cap_effective, p.creds.cap_permitted, p.creds.cap_inheritable, p.creds.cap_bounding,
                 p.creds.no_new_privs};
    j["ids"] = {{"uids", p.creds.uids}, {"gids", p.creds.gids}, {"groups", p.creds.groups}};
}

void load(const json& j, image::Process& p) {
    p.rlimits = j.at("rlimits").get<std::vector<std::pair<uint64_t, uint64_t>>>();
    const auto& c = j.at("caps");
    p.creds = {c[0], c[1], c[2], c[3], c[4], {}, {}, {}};
    const auto& ids = j.at("ids");
    p.creds.uids = ids.at("uids").get<std::array<uint32_t, 4>>();
    p.creds.gids = ids.at("gids").get<std::array<uint32_t, 4>>();
    p.creds.groups = ids.at("groups").get<std::vector<uint32_t>>();
    const auto& modes = j.at("seccomp_modes");
    if (modes.size() != p.threads.size()) throw Error("manifest: one seccomp mode per thread expected");
    for (size_t i = 0; i < modes.size(); ++i) p.threads[i].seccomp_mode = modes[i];
}

void check_allowed(const image::Process& p, const oci::RuntimeSpec& spec) {
    const auto& c = p.creds;
    const auto& user = spec.process.user;
    auto refuse = [&](const std::string& what) {
        throw Error(fmt::format("the image asks for more than the sandbox's spec allows: process {} {}",
                                p.pid, what));
    };
    for (uint32_t id : c.uids)
        if (id != user.uid) refuse(fmt::format("runs as uid {}, the spec's user is uid {}", id, user.uid));
    for (uint32_t id : c.gids)
        if (id != user.gid) refuse(fmt::format("runs as gid {}, the spec's user is gid {}", id, user.gid));
    for (uint32_t g : c.groups)
        if (g != user.gid && std::find(user.additional_gids.begin(), user.additional_gids.end(), g) ==
                                 user.additional_gids.end())
            refuse(fmt::format("is in group {}, which the spec's user does not have", g));
    uint64_t allowed = oci::capability_mask(spec.process.capabilities.bounding);
    uint64_t asked = c.cap_effective | c.cap_permitted | c.cap_inheritable | c.cap_bounding;
    if (asked & ~allowed)
        refuse(fmt::format("holds capabilities {} outside the spec's bounding set",
                           cap_names(asked & ~allowed)));
    if (spec.process.no_new_privileges && !c.no_new_privs) refuse("has no_new_privs off; the spec sets it");
    // Restore keeps the restorer's ids (root of the sandbox's namespace): any other user is not restorable.
    if (user.uid != 0 || user.gid != 0)
        refuse(fmt::format("would need its ids set to {}:{}; restoring a non-root user is not supported yet",
                           user.uid, user.gid));
}

void plan_limits(Table& t, Region& region, const image::Process& p) {
    for (size_t res = 0; res < p.rlimits.size(); ++res) {
        rlimit64 lim{p.rlimits[res].first, p.rlimits[res].second};
        t.op(SYS_prlimit64, {0, res, region.put(lim), 0}, -1, STUB_OP_ALLOW_FAIL, {},
             fmt::format("rlimit {}", res));
    }
}

void plan_inherited(Table& t, const image::Credentials& creds) {
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
        if (!(creds.cap_bounding & (1ULL << cap)))
            t.op(SYS_prctl, {PR_CAPBSET_DROP, static_cast<uint64_t>(cap)}, -1, STUB_OP_ALLOW_FAIL, {},
                 "capbset drop");
    if (creds.no_new_privs) t.op(SYS_prctl, {PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0}, -1, 0, {}, "no_new_privs");
}

void plan_thread(Table& t, Region& region, const image::Credentials& creds) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    data[0] = {static_cast<uint32_t>(creds.cap_effective), static_cast<uint32_t>(creds.cap_permitted),
               static_cast<uint32_t>(creds.cap_inheritable)};
    data[1] = {static_cast<uint32_t>(creds.cap_effective >> 32),
               static_cast<uint32_t>(creds.cap_permitted >> 32),
               static_cast<uint32_t>(creds.cap_inheritable >> 32)};
    uint64_t h = region.put(header);
    uint64_t d = region.put(data, sizeof data);
    t.op(SYS_capset, {h, d}, -1, 0, {}, "capset");
}

}  // namespace initless::state::credentials
