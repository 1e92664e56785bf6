#include "initless/image/image.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::image {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string hex(const std::vector<uint8_t>& bytes) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (uint8_t b : bytes) {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 15]);
    }
    return out;
}

std::vector<uint8_t> unhex(const std::string& s) {
    if (s.size() % 2) throw Error("manifest: odd-length hex string");
    std::vector<uint8_t> out(s.size() / 2);
    for (size_t i = 0; i < out.size(); ++i)
        out[i] = static_cast<uint8_t>(std::stoul(s.substr(2 * i, 2), nullptr, 16));
    return out;
}

json hex_list(const std::vector<std::vector<uint8_t>>& v) {
    json out = json::array();
    for (const auto& b : v) out.push_back(hex(b));
    return out;
}

std::vector<std::vector<uint8_t>> unhex_list(const json& j) {
    std::vector<std::vector<uint8_t>> out;
    for (const auto& s : j) out.push_back(unhex(s.get<std::string>()));
    return out;
}

constexpr size_t kRegCount = sizeof(user_regs_struct) / sizeof(unsigned long long);

json regs_json(const user_regs_struct& r) {
    const auto* p = reinterpret_cast<const unsigned long long*>(&r);
    return std::vector<unsigned long long>(p, p + kRegCount);
}

user_regs_struct regs_from(const json& j) {
    auto v = j.get<std::vector<unsigned long long>>();
    if (v.size() != kRegCount) throw Error("manifest: register set has the wrong size");
    user_regs_struct r{};
    std::memcpy(&r, v.data(), sizeof r);
    return r;
}

const char* kind_name(VmaKind k) {
    switch (k) {
        case VmaKind::Anonymous:
            return "anon";
        case VmaKind::File:
            return "file";
        case VmaKind::Vdso:
            return "vdso";
        case VmaKind::Vvar:
            return "vvar";
        case VmaKind::VvarVclock:
            return "vvar_vclock";
        case VmaKind::Vsyscall:
            return "vsyscall";
        case VmaKind::SharedMemory:
            return "shmem";
    }
    return "?";
}

VmaKind vma_kind(const std::string& s) {
    for (auto k : {VmaKind::Anonymous, VmaKind::File, VmaKind::Vdso, VmaKind::Vvar, VmaKind::VvarVclock,
                   VmaKind::Vsyscall, VmaKind::SharedMemory})
        if (s == kind_name(k)) return k;
    throw Error("manifest: unknown VMA kind " + s);
}

const char* const kFdKinds[] = {"log",        "file",        "chardev",  "tcp-listen", "unix-listen",
                                "epoll",      "eventfd",     "timerfd",  "signalfd",   "pipe-read",
                                "pipe-write", "unix-orphan", "unix-pair"};

FdKind fd_kind(const std::string& s) {
    for (size_t i = 0; i < std::size(kFdKinds); ++i)
        if (s == kFdKinds[i]) return static_cast<FdKind>(i);
    throw Error("manifest: unknown fd kind " + s);
}

json process_json(const Process& p) {
    json threads = json::array();
    for (const auto& t : p.threads)
        threads.push_back({{"tid", t.tid},
                           {"comm", t.comm},
                           {"regs", regs_json(t.regs)},
                           {"xstate", hex(t.xstate)},
                           {"sigmask", t.sigmask},
                           {"rseq", {t.rseq.address, t.rseq.length, t.rseq.signature}},
                           {"robust_list", {t.robust_list, t.robust_list_len}},
                           {"clear_child_tid", t.clear_child_tid},
                           {"altstack", {t.altstack_sp, t.altstack_size, t.altstack_flags}},
                           {"pending", hex_list(t.pending)}});
    json vmas = json::array();
    for (const auto& v : p.vmas)
        vmas.push_back({{"start", v.start},
                        {"end", v.end},
                        {"prot", v.prot},
                        {"shared", v.shared},
                        {"growsdown", v.growsdown},
                        {"kind", kind_name(v.kind)},
                        {"name", v.name},
                        {"file_offset", v.file_offset},
                        {"file", {v.file_size, v.file_inode, v.file_mtime_ns}},
                        {"image_offset", v.image_offset},
                        {"saved_pages", v.saved_pages},
                        {"pages_crc", v.pages_crc}});
    json fds = json::array();
    for (const auto& f : p.fds) {
        json targets = json::array();
        for (const auto& t : f.targets) targets.push_back({t.fd, t.events, t.data});
        json options = json::array();
        for (const auto& [key, value] : f.options) options.push_back({key.first, key.second, value});
        fds.push_back({{"fd", f.fd},
                       {"kind", kFdKinds[static_cast<int>(f.kind)]},
                       {"flags", f.flags},
                       {"cloexec", f.cloexec},
                       {"path", f.path},
                       {"position", f.position},
                       {"domain", f.domain},
                       {"type", f.type},
                       {"address", hex(f.address)},
                       {"options", options},
                       {"targets", targets},
                       {"counter", f.counter},
                       {"semaphore", f.semaphore},
                       {"clock", f.clock},
                       {"value_ns", f.value_ns},
                       {"interval_ns", f.interval_ns},
                       {"sigmask", f.sigmask},
                       {"pipe_id", f.pipe_id},
                       {"pair_end", f.pair_end},
                       {"shared_id", f.shared_id},
                       {"dup_of", f.dup_of},
                       {"pipe_size", f.pipe_size},
                       {"backlog", f.backlog},
                       {"pipe_data", hex(f.pipe_data)},
                       {"message_sizes", f.message_sizes}});
    }
    json actions = json::array();
    for (const auto& a : p.actions) actions.push_back({a.signal, a.handler, a.flags, a.restorer, a.mask});
    const Mm& m = p.mm;
    return {{"pid", p.pid},
            {"ppid", p.ppid},
            {"pgid", p.pgid},
            {"sid", p.sid},
            {"exe", p.exe},
            {"cwd", p.cwd},
            {"threads", threads},
            {"vmas", vmas},
            {"fds", fds},
            {"actions", actions},
            {"mm",
             {m.start_code, m.end_code, m.start_data, m.end_data, m.start_brk, m.brk, m.start_stack,
              m.arg_start, m.arg_end, m.env_start, m.env_end}},
            {"auxv", hex(m.auxv)},
            {"rlimits", p.rlimits},
            {"pending_shared", hex_list(p.pending_shared)},
            {"itimers", p.itimers},
            {"umask", p.umask},
            {"caps",
             {p.creds.cap_effective, p.creds.cap_permitted, p.creds.cap_inheritable, p.creds.cap_bounding,
              p.creds.no_new_privs}}};
}

Process process_from(const json& j) {
    Process p;
    p.pid = j.at("pid");
    p.ppid = j.at("ppid");
    p.pgid = j.at("pgid");
    p.sid = j.at("sid");
    p.exe = j.at("exe");
    p.cwd = j.at("cwd");
    for (const auto& t : j.at("threads")) {
        Thread th;
        th.tid = t.at("tid");
        th.comm = t.at("comm");
        th.regs = regs_from(t.at("regs"));
        th.xstate = unhex(t.at("xstate"));
        th.sigmask = t.at("sigmask");
        th.rseq = {t.at("rseq")[0], t.at("rseq")[1], t.at("rseq")[2]};
        th.robust_list = t.at("robust_list")[0];
        th.robust_list_len = t.at("robust_list")[1];
        th.clear_child_tid = t.at("clear_child_tid");
        th.altstack_sp = t.at("altstack")[0];
        th.altstack_size = t.at("altstack")[1];
        th.altstack_flags = t.at("altstack")[2];
        th.pending = unhex_list(t.at("pending"));
        p.threads.push_back(std::move(th));
    }
    for (const auto& v : j.at("vmas")) {
        Vma m;
        m.start = v.at("start");
        m.end = v.at("end");
        m.prot = v.at("prot");
        m.shared = v.at("shared");
        m.growsdown = v.at("growsdown");
        m.kind = vma_kind(v.at("kind"));
        m.name = v.at("name");
        m.file_offset = v.at("file_offset");
        m.file_size = v.at("file")[0];
        m.file_inode = v.at("file")[1];
        m.file_mtime_ns = v.at("file")[2];
        m.image_offset = v.at("image_offset");
        m.saved_pages = v.at("saved_pages");
        m.pages_crc = v.at("pages_crc");
        p.vmas.push_back(std::move(m));
    }
    for (const auto& f : j.at("fds")) {
        Fd d;
        d.fd = f.at("fd");
        d.kind = fd_kind(f.at("kind"));
        d.flags = f.at("flags");
        d.cloexec = f.at("cloexec");
        d.path = f.at("path");
        d.position = f.at("position");
        d.domain = f.at("domain");
        d.type = f.at("type");
        d.address = unhex(f.at("address"));
        for (const auto& o : f.at("options")) d.options.push_back({{o[0], o[1]}, o[2]});
        for (const auto& t : f.at("targets")) d.targets.push_back({t[0], t[1], t[2]});
        d.counter = f.at("counter");
        d.semaphore = f.at("semaphore");
        d.clock = f.at("clock");
        d.value_ns = f.at("value_ns");
        d.interval_ns = f.at("interval_ns");
        d.sigmask = f.at("sigmask");
        d.pipe_id = f.at("pipe_id");
        d.pair_end = f.at("pair_end");
        d.shared_id = f.at("shared_id");
        d.dup_of = f.at("dup_of");
        d.pipe_size = f.at("pipe_size");
        d.backlog = f.at("backlog");
        d.pipe_data = unhex(f.at("pipe_data"));
        d.message_sizes = f.at("message_sizes").get<std::vector<uint32_t>>();
        p.fds.push_back(std::move(d));
    }
    for (const auto& a : j.at("actions")) p.actions.push_back({a[0], a[1], a[2], a[3], a[4]});
    const auto& m = j.at("mm");
    p.mm = {m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], unhex(j.at("auxv"))};
    p.rlimits = j.at("rlimits").get<std::vector<std::pair<uint64_t, uint64_t>>>();
    p.pending_shared = unhex_list(j.at("pending_shared"));
    p.itimers = j.at("itimers").get<std::vector<std::pair<uint64_t, uint64_t>>>();
    p.umask = j.at("umask");
    const auto& c = j.at("caps");
    p.creds = {c[0], c[1], c[2], c[3], c[4]};
    return p;
}

}  // namespace

std::string to_json(const Manifest& m) {
    json procs = json::array();
    for (const auto& p : m.processes) procs.push_back(process_json(p));
    json j = {{"format", m.format},
              {"function", m.function},
              {"function_dir", m.function_dir},
              {"kernel", m.kernel},
              {"vdso_size", m.vdso_size},
              {"port", m.port},
              {"created", m.created},
              {"clocks", {m.monotonic_ns, m.boottime_ns}},
              {"pages_file_size", m.pages_file_size},
              {"pages_written", m.pages_written},
              {"zero_pages_skipped", m.zero_pages_skipped},
              {"processes", procs}};
    return j.dump(1);
}

Manifest from_json(const std::string& text) {
    json j = json::parse(text);
    Manifest m;
    m.format = j.at("format");
    if (m.format != kFormatVersion)
        throw Error(fmt::format("image format {} is not supported (this initless reads format {})", m.format,
                                kFormatVersion));
    m.function = j.at("function");
    m.function_dir = j.at("function_dir");
    m.kernel = j.at("kernel");
    m.vdso_size = j.at("vdso_size");
    m.port = j.at("port");
    m.created = j.at("created");
    m.monotonic_ns = j.at("clocks")[0];
    m.boottime_ns = j.at("clocks")[1];
    m.pages_file_size = j.at("pages_file_size");
    m.pages_written = j.at("pages_written");
    m.zero_pages_skipped = j.at("zero_pages_skipped");
    for (const auto& p : j.at("processes")) m.processes.push_back(process_from(p));
    return m;
}

__attribute__((target("sse4.2"))) uint32_t crc32c(uint32_t crc, const void* data, size_t len) {
    const auto* p = static_cast<const uint8_t*>(data);
    uint64_t c = ~crc;
    while (len >= 8) {
        uint64_t v;
        std::memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    auto c32 = static_cast<uint32_t>(c);
    while (len--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}

std::string kernel_release() {
    utsname u{};
    ::uname(&u);
    return u.release;
}

uint64_t current_vdso_size() {
    std::istringstream maps(sys::read_file("/proc/self/maps"));
    std::string line;
    uint64_t total = 0;
    while (std::getline(maps, line)) {
        if (line.find("[vvar]") == std::string::npos && line.find("[vvar_vclock]") == std::string::npos &&
            line.find("[vdso]") == std::string::npos)
            continue;
        uint64_t start = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
        uint64_t end = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
        total += end - start;
    }
    return total;
}

std::span<const PageRun> Image::runs_of(const Vma& v) const {
    if (!v.saved_pages) return {};
    auto by_offset = [](const PageRun& r, uint64_t off) { return r.file_offset < off; };
    auto first = std::lower_bound(runs.begin(), runs.end(), v.image_offset, by_offset);
    auto last = std::lower_bound(first, runs.end(), v.image_offset + v.length(), by_offset);
    return {first, last};
}

Image load(const fs::path& dir, bool verify_pages) {
    Image img;
    img.dir = dir;
    std::string text;
    try {
        text = sys::read_file(dir / "manifest.json");
    } catch (const Error& e) {
        throw Error(fmt::format("image {}: {}", dir.string(), e.what()));
    }
    std::string sums = sys::read_file(dir / "CHECKSUMS");
    uint32_t want_manifest = 0, want_index = 0;
    if (std::sscanf(sums.c_str(), "manifest %x index %x", &want_manifest, &want_index) != 2)
        throw Error(fmt::format("image {}: CHECKSUMS is malformed", dir.string()));
    if (crc32c(0, text.data(), text.size()) != want_manifest)
        throw Error(fmt::format("image {}: manifest.json is corrupted (checksum mismatch)", dir.string()));
    try {
        img.manifest = from_json(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(
            fmt::format("image {}: manifest.json is not a format-{} manifest ({}); make the image again",
                        dir.string(), kFormatVersion, e.what()));
    }
    std::string index = sys::read_file(dir / "pages.idx");
    if (crc32c(0, index.data(), index.size()) != want_index || index.size() % sizeof(PageRun))
        throw Error(fmt::format("image {}: pages.idx is corrupted (checksum mismatch)", dir.string()));
    img.runs.resize(index.size() / sizeof(PageRun));
    std::memcpy(img.runs.data(), index.data(), index.size());
    if (fs::exists(dir / "workingset.idx")) {
        std::string ws = sys::read_file(dir / "workingset.idx");
        uint32_t want_ws = 0;
        auto at = sums.find("workingset ");
        if (at == std::string::npos || std::sscanf(sums.c_str() + at, "workingset %x", &want_ws) != 1 ||
            crc32c(0, ws.data(), ws.size()) != want_ws || ws.size() % sizeof(WorkingSetRun))
            throw Error(
                fmt::format("image {}: workingset.idx is corrupted (checksum mismatch)", dir.string()));
        img.working_set.resize(ws.size() / sizeof(WorkingSetRun));
        std::memcpy(img.working_set.data(), ws.data(), ws.size());
    }

    if (img.manifest.kernel != kernel_release() || img.manifest.vdso_size != current_vdso_size())
        throw Error(fmt::format("image {} was made on kernel {} (vdso {} bytes); this is {} (vdso {} bytes)",
                                dir.string(), img.manifest.kernel, img.manifest.vdso_size, kernel_release(),
                                current_vdso_size()));
    if (verify_pages) {
        sys::UniqueFd fd = sys::open_file(img.pages_path(), O_RDONLY);
        struct stat st {};
        sys::check(::fstat(fd.get(), &st), "stat pages.img");
        if (static_cast<uint64_t>(st.st_size) != img.manifest.pages_file_size)
            throw Error(fmt::format("image {}: pages.img has {} bytes, the manifest says {}", dir.string(),
                                    st.st_size, img.manifest.pages_file_size));
        void* map = nullptr;
        if (st.st_size > 0) {
            map = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
            if (map == MAP_FAILED) throw sys::SysError("mmap pages.img", errno);
            ::madvise(map, static_cast<size_t>(st.st_size), MADV_SEQUENTIAL);
        }
        auto size = static_cast<size_t>(st.st_size);
        std::unique_ptr<void, std::function<void(void*)>> unmap(map, [size](void* m) { ::munmap(m, size); });
        const auto* base = static_cast<const uint8_t*>(map);
        for (const auto& proc : img.manifest.processes)
            for (const auto& v : proc.vmas) {
                if (v.saved_pages == 0) continue;
                uint32_t crc = 0;
                for (const auto& r : img.runs_of(v)) {
                    if (r.file_offset + r.pages * kPageSize > img.manifest.pages_file_size)
                        throw Error(fmt::format("image {}: pages.idx points past the end of pages.img",
                                                dir.string()));
                    crc = crc32c(crc, base + r.file_offset, r.pages * kPageSize);
                }
                if (crc != v.pages_crc)
                    throw Error(
                        fmt::format("image {}: pages of VMA {:#x}-{:#x} are corrupted (checksum mismatch)",
                                    dir.string(), v.start, v.end));
            }
    }
    return img;
}

ImageWriter::ImageWriter(fs::path final_dir) : final_(std::move(final_dir)) {
    if (fs::exists(final_)) throw Error(fmt::format("image {} already exists", final_.string()));
    staging_ = final_;
    staging_ += fmt::format(".tmp.{}", ::getpid());
    if (fs::exists(staging_)) sys::remove_tree(staging_);
    fs::create_directories(staging_);
}

ImageWriter::~ImageWriter() {
    if (!published_) {
        try {
            sys::remove_tree(staging_);
        } catch (...) {
        }
    }
}

void write_working_set(const fs::path& dir, const std::vector<WorkingSetRun>& runs) {
    std::string ws(reinterpret_cast<const char*>(runs.data()), runs.size() * sizeof(WorkingSetRun));
    sys::write_file(dir / "workingset.idx", ws);
    std::string sums = sys::read_file(dir / "CHECKSUMS");
    auto at = sums.find("workingset ");
    if (at != std::string::npos) sums.erase(at);
    while (!sums.empty() && sums.back() == '\n') sums.pop_back();
    sys::write_file(dir / "CHECKSUMS",
                    fmt::format("{} workingset {:08x}\n", sums, crc32c(0, ws.data(), ws.size())));
}

void ImageWriter::publish(const Manifest& manifest, const std::vector<PageRun>& runs,
                          const std::function<void(const fs::path& staging)>& before_publish) {
    std::string text = to_json(manifest);
    std::string index(reinterpret_cast<const char*>(runs.data()), runs.size() * sizeof(PageRun));
    sys::write_file(staging_ / "manifest.json", text);
    sys::write_file(staging_ / "pages.idx", index);
    sys::write_file(staging_ / "CHECKSUMS",
                    fmt::format("manifest {:08x} index {:08x}\n", crc32c(0, text.data(), text.size()),
                                crc32c(0, index.data(), index.size())));
    if (before_publish) before_publish(staging_);
    for (const char* f : {"manifest.json", "pages.idx", "CHECKSUMS", "pages.img", "workingset.idx"})
        if (fs::exists(staging_ / f)) sys::fsync_path(staging_ / f);
    sys::fsync_path(staging_);
    if (::rename(staging_.c_str(), final_.c_str()) != 0)
        throw sys::SysError(fmt::format("publish image {}", final_.string()), errno);
    sys::fsync_path(final_.parent_path().empty() ? fs::path(".") : final_.parent_path());
    published_ = true;
}

}  // namespace initless::image
