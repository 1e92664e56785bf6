// Credentials and limits: capability sets, no_new_privs and rlimits. Checkpoint reads them from
// /proc/PID/status and prlimit. Restore: the bounding set and no_new_privs are per thread but
// inherited by clone, so a process's leader sets them once before creating its threads; each thread
// sets its effective, permitted and inheritable sets itself (after the leader's clone3 calls, which
// need CAP_SYS_ADMIN). A hard limit above the sandbox's cannot be restored without
// CAP_SYS_RESOURCE: such a resource keeps the sandbox's.
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <cerrno>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

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

void store(json& j, const image::Process& p) {
    j["rlimits"] = p.rlimits;
    j["caps"] = {p.creds.cap_effective, p.creds.cap_permitted, p.creds.cap_inheritable, p.creds.cap_bounding,
                 p.creds.no_new_privs};
}

void load(const json& j, image::Process& p) {
    p.rlimits = j.at("rlimits").get<std::vector<std::pair<uint64_t, uint64_t>>>();
    const auto& c = j.at("caps");
    p.creds = {c[0], c[1], c[2], c[3], c[4]};
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
