// Credentials and limits: capability sets, no_new_privs and rlimits. Checkpoint reads them from
// /proc/PID/status and prlimit. Restore: the bounding set and no_new_privs are per thread but
// inherited by clone, so a process's leader sets them once before creating its threads; each thread
// sets its effective, permitted and inheritable sets itself (after the leader's clone3 calls, which
// need CAP_SYS_ADMIN). A hard limit above the sandbox's cannot be restored without
// CAP_SYS_RESOURCE: such a resource keeps the sandbox's.
// Seccomp: the checkpoint reads each thread's filters (PTRACE_SECCOMP_GET_FILTER) and accepts only
// the sandbox's own filter, alone; the restore installs it in each process with TSYNC as its very
// last step (execute.cpp), after every syscall the restore makes, so a restored function runs under
// the same filter as a booted one.
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <cerrno>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/seccomp/profile.h"
#include "initless/sys/error.h"
#include "initless/sys/inspect.h"
#include "state/kinds.h"

namespace initless::state::credentials {

void read(Frozen& f) {
    image::Process& p = f.p;
    auto& status = f.status;
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
            what = fmt::format("a seccomp filter of its own ({} instructions) on top of the sandbox's", chain[1].size());
        else if (sandbox_filter.empty())
            what = fmt::format("a seccomp filter of its own ({} instructions) while its sandbox installs none",
                               chain[0].size());
        else
            what = fmt::format("a seccomp filter of its own ({} instructions) instead of the sandbox's",
                               chain[0].size());
        throw ContractError(fmt::format("process {} thread {} has {} (Seccomp: 2 in /proc/{}/status); {}", f.host,
                                        t.tid(), what, t.tid(), rule));
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
}

void load(const json& j, image::Process& p) {
    p.rlimits = j.at("rlimits").get<std::vector<std::pair<uint64_t, uint64_t>>>();
    const auto& c = j.at("caps");
    p.creds = {c[0], c[1], c[2], c[3], c[4]};
    const auto& modes = j.at("seccomp_modes");
    if (modes.size() != p.threads.size()) throw Error("manifest: one seccomp mode per thread expected");
    for (size_t i = 0; i < modes.size(); ++i) p.threads[i].seccomp_mode = modes[i];
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
