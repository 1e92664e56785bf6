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

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/proc.h"
#include "state/kinds.h"

namespace initless::image {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string to_json(const Manifest& m) {
    json procs = json::array();
    for (const auto& p : m.processes) procs.push_back(state::store_process(p));
    json j = {{"format", m.format},
              {"function", m.function},
              {"function_dir", m.function_dir},
              {"kernel", m.kernel},
              {"vdso_size", m.vdso_size},
              {"port", m.port},
              {"created", m.created},
              {"pages_file_size", m.pages_file_size},
              {"pages_written", m.pages_written},
              {"zero_pages_skipped", m.zero_pages_skipped},
              {"processes", procs}};
    state::clocks::store(j, m);
    state::credentials::store_filter(j, m);
    return j.dump(1);
}

Manifest from_json(const std::string& text) {
    json j = json::parse(text);
    Manifest m;
    m.format = j.at("format");
    if (m.format != kFormatVersion)
        throw Error(fmt::format("image format {} is not supported (this initless reads format {}); make the "
                                "image again",
                                m.format, kFormatVersion));
    m.function = j.at("function");
    m.function_dir = j.at("function_dir");
    m.kernel = j.at("kernel");
    m.vdso_size = j.at("vdso_size");
    m.port = j.at("port");
    m.created = j.at("created");
    state::clocks::load(j, m);
    state::credentials::load_filter(j, m);
    m.pages_file_size = j.at("pages_file_size");
    m.pages_written = j.at("pages_written");
    m.zero_pages_skipped = j.at("zero_pages_skipped");
    for (const auto& p : j.at("processes")) m.processes.push_back(state::load_process(p));
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
    uint64_t total = 0;
    for (const auto& m : sys::read_maps(::getpid()))
        if (m.path == "[vvar]" || m.path == "[vvar_vclock]" || m.path == "[vdso]") total += m.end - m.start;
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
        sys::FileMapping pages(fd.get(), static_cast<size_t>(st.st_size));
        const auto* base = pages.data();
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
