// The mm fields (code, data, brk, stack, arguments, environment, auxv), the executable, and the
// vDSO block. Checkpoint reads the fields from /proc/PID/stat and auxv, brk by an injected brk(0).
// Restore moves the helper's [vvar]/[vvar_vclock]/[vdso] block as one to where the process had its
// own (through a parking spot when old and new overlap), and sets the fields with one
// PR_SET_MM_MAP holding the executable's fd.
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstddef>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/process.h"
#include "state/kinds.h"

namespace initless::state::mm {

namespace {
struct PrctlMmMap {
    uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
    uint64_t arg_start, arg_end, env_start, env_end;
    uint64_t auxv;
    uint32_t auxv_size;
    uint32_t exe_fd;
};
}  // namespace

void read(Frozen& f) {
    image::Mm& m = f.p.mm;
    auto fields = sys::proc_stat_fields(f.host);
    auto u = [&](int i) { return std::stoull(fields.at(static_cast<size_t>(i))); };
    m.start_code = u(26);
    m.end_code = u(27);
    m.start_stack = u(28);
    m.start_data = u(45);
    m.end_data = u(46);
    m.start_brk = u(47);
    m.arg_start = u(48);
    m.arg_end = u(49);
    m.env_start = u(50);
    m.env_end = u(51);
    std::string auxv = sys::read_file(fmt::format("/proc/{}/auxv", f.host));
    m.auxv.assign(auxv.begin(), auxv.end());
    f.p.exe = sys::read_link(fmt::format("/proc/{}/exe", f.host));
    m.brk = static_cast<uint64_t>(f.threads.front().inject_syscall(f.gadget, SYS_brk, {0}));
}

void store(json& j, const image::Process& p) {
    const image::Mm& m = p.mm;
    j["exe"] = p.exe;
    j["mm"] = {m.start_code,  m.end_code,  m.start_data, m.end_data,  m.start_brk, m.brk,
               m.start_stack, m.arg_start, m.arg_end,    m.env_start, m.env_end};
    j["auxv"] = hex(m.auxv);
}

void load(const json& j, image::Process& p) {
    p.exe = j.at("exe");
    const auto& m = j.at("mm");
    p.mm = {m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], unhex(j.at("auxv"))};
}

VdsoBlock vdso_block(std::vector<std::pair<uint64_t, uint64_t>> parts) {
    VdsoBlock b;
    b.parts = std::move(parts);
    std::sort(b.parts.begin(), b.parts.end());
    if (!b.parts.empty()) {
        b.start = b.parts.front().first;
        b.end = b.parts.back().second;
    }
    return b;
}

uint64_t plan_vdso(Table& t, const image::Process& p, const VdsoBlock& hv, uint64_t park) {
    std::vector<std::pair<uint64_t, uint64_t>> target;
    for (const auto& v : p.vmas)
        if (v.kind == image::VmaKind::Vdso || v.kind == image::VmaKind::Vvar ||
            v.kind == image::VmaKind::VvarVclock)
            target.push_back({v.start, v.end});
    VdsoBlock tv = vdso_block(std::move(target));
    if (hv.end - hv.start != tv.end - tv.start || hv.parts.size() != tv.parts.size())
        throw Error("the vDSO of this kernel differs from the image's");
    if (hv.start == tv.start) return tv.start;
    auto move_block = [&](const VdsoBlock& from, uint64_t to) {
        for (auto [s, e] : from.parts)
            t.op(SYS_mremap, {s, e - s, e - s, MREMAP_MAYMOVE | MREMAP_FIXED, to + (s - from.start)}, -1, 0,
                 {}, fmt::format("mremap vdso part {:#x}", s));
    };
    if (hv.start < tv.end && tv.start < hv.end) {  // overlapping: through the parking spot
        move_block(hv, park);
        VdsoBlock parked = hv;
        for (auto& [s, e] : parked.parts) {
            s = park + (s - hv.start);
            e = park + (e - hv.start);
        }
        parked.start = park;
        move_block(parked, tv.start);
    } else {
        move_block(hv, tv.start);
    }
    return tv.start;
}

void plan(Table& t, Region& region, const image::Process& p) {
    const image::Mm& m = p.mm;
    PrctlMmMap map{m.start_code,
                   m.end_code,
                   m.start_data,
                   m.end_data,
                   m.start_brk,
                   m.brk,
                   m.start_stack,
                   m.arg_start,
                   m.arg_end,
                   m.env_start,
                   m.env_end,
                   0,
                   static_cast<uint32_t>(m.auxv.size()),
                   static_cast<uint32_t>(-1)};
    map.auxv = region.put(m.auxv.data(), m.auxv.size());
    uint64_t addr = region.put(map);
    t.op(SYS_open, {region.put_string(p.exe), O_RDONLY | O_CLOEXEC}, kExe, 0, {}, "open exe " + p.exe);
    t.op(0, {addr + offsetof(PrctlMmMap, exe_fd), 0}, -1, STUB_OP_STORE32, {{1, kExe}}, "exe fd into mm map");
    t.op(SYS_prctl, {PR_SET_MM, PR_SET_MM_MAP, addr, sizeof(PrctlMmMap), 0}, -1, 0, {},
         fmt::format("prctl PR_SET_MM_MAP code {:#x}-{:#x} data {:#x}-{:#x} brk {:#x}-{:#x} stack {:#x} "
                     "args {:#x}-{:#x} env {:#x}-{:#x}",
                     m.start_code, m.end_code, m.start_data, m.end_data, m.start_brk, m.brk, m.start_stack,
                     m.arg_start, m.arg_end, m.env_start, m.env_end));
    t.op(SYS_close, {0}, -1, 0, {{0, kExe}}, "close exe");
}

}  // namespace initless::state::mm
