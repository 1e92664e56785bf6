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
#include "initless/sys/proc.h"
#include "initless/sys/tree.h"
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
    state::net_sysctls::store(j, m);
    state::credentials::store_filter(j, m);
    return j.dump(1);
}

Manifest from_json(const std::string& text) {
    json j = json::parse(text);
    Manifest m;
    m.format = j.at("format");
    if (m.format != kFormatVersion)
        throw Error(fmt::format(
            "image format {} is not supported (this initless reads format {}): make the image again",
            m.format, kFormatVersion));
    m.function = j.at("function");
    m.function_dir = j.at("function_dir");
    m.kernel = j.at("kernel");
    m.vdso_size = j.at("vdso_size");
    m.port = j.at("port");
    m.created = j.at("created");
    state::clocks::load(j, m);
    state::net_sysctls::load(j, m);
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

void Image::for_each_working_set_part(const std::function<void(const Vma&, uint64_t, uint64_t)>& fn) const {
    for (const auto& w : working_set) {
        if (w.process >= manifest.processes.size()) continue;
        uint64_t a = w.vaddr, b = w.vaddr + w.pages * kPageSize;
        for (const auto& v : manifest.processes[w.process].vmas)
            if (v.start < b && a < v.end) fn(v, std::max(a, v.start), std::min(b, v.end));
    }
}

std::vector<std::pair<uint64_t, uint64_t>> Image::working_set_file_ranges() const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for_each_working_set_part([&](const Vma& v, uint64_t a, uint64_t b) {
        if (v.saved_pages == 0) return;
        for (const auto& r : runs_of(v)) {
            uint64_t s = std::max(a, r.vaddr), e = std::min(b, r.vaddr + r.pages * kPageSize);
            if (s < e) out.push_back({r.file_offset + (s - r.vaddr), r.file_offset + (e - r.vaddr)});
        }
    });
    return out;
}

namespace {

constexpr const char* kAuthHeader = "initless-image-auth 1\n";

// The trees of an image, in AUTH's order.
std::vector<std::string> tree_names() {
    std::vector<std::string> out = {kUpperTree, kRwDirsTree};
    for (const auto& [inside, saved] : kTmpfsDirs) out.push_back(saved);
    return out;
}

// AUTH's body (every line but the MAC) for these digests, in a fixed order.
std::string auth_body(const std::map<std::string, std::string>& digests) {
    std::string body = kAuthHeader;
    body += fmt::format("format {}\n", kFormatVersion);
    auto line = [&](const std::string& name, const char* kind) {
        auto it = digests.find(name);
        if (it != digests.end()) body += fmt::format("{} {} {}\n", name, kind, it->second);
    };
    line("manifest.json", "sha256");
    line("pages.idx", "sha256");
    line("pages.img", "pages-sha256");
    for (const auto& t : tree_names()) line(t, "tree-sha256");
    line("workingset.idx", "sha256");
    line("pages.sums", "sha256");
    return body;
}

void write_auth(const fs::path& dir, const std::map<std::string, std::string>& digests, const Key& key) {
    std::string body = auth_body(digests);
    sys::write_file(dir / "AUTH", body + fmt::format("hmac-sha256 {}\n", hmac_sha256_hex(key, body)));
}

std::string sha256_hex(std::string_view data) {
    Sha256 sha;
    sha.update(data);
    return sha.hex();
}

// pages.img's digest: its size, then the bytes of every saved run in pages.idx order.
std::string pages_digest(const uint8_t* base, uint64_t size, const std::vector<PageRun>& runs) {
    Sha256 sha;
    sha.update(&size, sizeof size);
    for (const auto& r : runs) sha.update(base + r.file_offset, r.pages * kPageSize);
    return sha.hex();
}

}  // namespace

std::string page_sums(const uint8_t* base, uint64_t size, const std::vector<PageRun>& runs) {
    std::vector<std::pair<uint64_t, uint64_t>> saved;  // [offset, end) of every saved run
    for (const auto& r : runs) saved.push_back({r.file_offset, r.file_offset + r.pages * kPageSize});
    std::sort(saved.begin(), saved.end());
    std::string out;
    out.reserve((size + kPageSumBlock - 1) / kPageSumBlock * kPageSumSize);
    std::string zero_sum;  // of a whole block of zeros
    size_t next = 0;
    for (uint64_t at = 0; at < size; at += kPageSumBlock) {
        uint64_t len = std::min(kPageSumBlock, size - at);
        while (next < saved.size() && saved[next].second <= at) ++next;
        bool holds_data = next < saved.size() && saved[next].first < at + len;
        Sha256 sha;
        if (holds_data) {
            sha.update(base + at, len);
        } else if (len == kPageSumBlock && !zero_sum.empty()) {
            out += zero_sum;
            continue;
        } else {
            std::vector<uint8_t> zeros(len, 0);
            sha.update(zeros.data(), len);
        }
        std::string sum = sha.bytes();
        if (!holds_data && len == kPageSumBlock) zero_sum = sum;
        out += sum;
    }
    return out;
}

namespace {

std::string tree_digest(const fs::path& tree) {
    sys::UniqueFd fd = sys::open_file(tree, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    TreeDigest digest;
    sys::copy_tree_at(fd.get(), -1, &digest, tree.string());
    return digest.hex();
}

[[noreturn]] void not_authenticated(const fs::path& dir, const std::string& why) {
    throw NotAuthenticated(fmt::format("image {} is not authenticated: {}", dir.string(), why));
}

// Reads AUTH, checks its format line and MAC; returns the digests it lists.
std::map<std::string, std::string> read_auth(const fs::path& dir, const Key& key) {
    std::string text;
    try {
        text = sys::read_file(dir / "AUTH");
    } catch (const sys::SysError& e) {
        if (e.code() != ENOENT) throw Error(fmt::format("image {}: {}", dir.string(), e.what()));
        // Images before format 4 have no AUTH: say which format it is when the manifest tells.
        int format = 0;
        try {
            format = nlohmann::json::parse(sys::read_file(dir / "manifest.json")).at("format").get<int>();
        } catch (const std::exception&) {
        }
        if (format && format != kFormatVersion)
            throw Error(
                fmt::format("image {} has format {}; this initless reads format {}: make the image again",
                            dir.string(), format, kFormatVersion));
        not_authenticated(dir, "it has no AUTH file");
    }
    auto mac_at = text.rfind("hmac-sha256 ");
    if (text.rfind(kAuthHeader, 0) != 0 || mac_at == std::string::npos || text.back() != '\n')
        not_authenticated(dir, "its AUTH file is malformed");
    std::string body = text.substr(0, mac_at);
    std::string mac = text.substr(mac_at + 12, text.size() - mac_at - 13);
    std::map<std::string, std::string> digests;
    std::istringstream lines(body.substr(std::strlen(kAuthHeader)));
    std::string first;
    std::getline(lines, first);
    int format = 0;
    if (std::sscanf(first.c_str(), "format %d", &format) != 1)
        not_authenticated(dir, "its AUTH file is malformed");
    if (format != kFormatVersion)
        throw Error(fmt::format("image {} has format {}; this initless reads format {}: make the image again",
                                dir.string(), format, kFormatVersion));
    if (!same_digest(mac, hmac_sha256_hex(key, body)))
        not_authenticated(
            dir, "its AUTH file does not match its MAC (the image was made with another key, or changed)");
    for (std::string line; std::getline(lines, line);) {
        std::istringstream words(line);
        std::string name, kind, digest;
        words >> name >> kind >> digest;
        digests[name] = digest;
    }
    return digests;
}

std::string read_checked(const fs::path& dir, const std::map<std::string, std::string>& digests,
                         const std::string& name) {
    auto it = digests.find(name);
    if (it == digests.end()) not_authenticated(dir, name + " is not covered by its MAC");
    std::string text;
    try {
        text = sys::read_file(dir / name);
    } catch (const sys::SysError& e) {
        if (e.code() == ENOENT) not_authenticated(dir, name + " is missing");
        throw;
    }
    if (!same_digest(sha256_hex(text), it->second))
        not_authenticated(dir, name + " does not match its MAC (changed or corrupted since the snapshot)");
    return text;
}

}  // namespace

sys::UniqueFd Image::open_pages() const {
    if (pages_file) return sys::reopen(pages_file->get(), O_RDONLY);
    return sys::open_file(pages_path(), O_RDONLY);
}

std::shared_ptr<PageSource> Image::pages_source() const {
    if (page_source) return page_source;
    return local_page_source(open_pages(), fmt::format("pages.img of {}", dir.string()));
}

namespace {

// What a VERIFIED stamp says: the identity of the pages.img that was checked, and which image it
// belongs to (the digest of its AUTH file).
std::string stamp_body(const fs::path& dir, const struct stat& st) {
    return fmt::format(
        "initless-verified 1\npages.img dev {} ino {} size {} mtime {}.{:09} ctime {}.{:09}\nauth {}\n",
        static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), static_cast<int64_t>(st.st_size),
        static_cast<int64_t>(st.st_mtim.tv_sec), st.st_mtim.tv_nsec, static_cast<int64_t>(st.st_ctim.tv_sec),
        st.st_ctim.tv_nsec, sha256_hex(sys::read_file(dir / "AUTH")));
}

bool stamp_matches(const fs::path& dir, const Key& key, const struct stat& st) {
    std::string text;
    try {
        text = sys::read_file(dir / kVerifiedStamp);
    } catch (const sys::SysError&) {
        return false;
    }
    auto mac_at = text.rfind("hmac-sha256 ");
    if (mac_at == std::string::npos || text.back() != '\n') return false;
    std::string body = text.substr(0, mac_at);
    std::string mac = text.substr(mac_at + 12, text.size() - mac_at - 13);
    return body == stamp_body(dir, st) && same_digest(mac, hmac_sha256_hex(key, body));
}

void write_stamp(const fs::path& dir, const Key& key, const struct stat& st) noexcept {
    try {
        std::string body = stamp_body(dir, st);
        sys::write_file_atomic(dir / kVerifiedStamp,
                               body + fmt::format("hmac-sha256 {}\n", hmac_sha256_hex(key, body)));
    } catch (const std::exception&) {
    }
}

// The trees (KBs) against their digests, read in full.
void check_trees(const fs::path& dir, const Image& img) {
    for (const auto& t : tree_names())
        if (img.digests.count(t) && !same_digest(tree_digest(dir / t), img.digests.at(t)))
            not_authenticated(dir, t + " does not match its MAC (changed since the snapshot)");
}

enum class PagesCheck { skip, full, once };

Image load_image(const fs::path& dir, const Key& key, PagesCheck check, bool pages_here, bool* verified_now) {
    if (verified_now) *verified_now = false;
    bool verify_pages = check != PagesCheck::skip;
    Image img;
    img.dir = dir;
    if (!fs::exists(dir / "manifest.json") && !fs::exists(dir / "AUTH"))
        throw Error(fmt::format("image {}: no such image (no manifest.json)", dir.string()));
    img.digests = read_auth(dir, key);
    std::string text = read_checked(dir, img.digests, "manifest.json");
    try {
        img.manifest = from_json(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(
            fmt::format("image {}: manifest.json is not a format-{} manifest ({}); make the image again",
                        dir.string(), kFormatVersion, e.what()));
    }
    std::string index = read_checked(dir, img.digests, "pages.idx");
    if (index.size() % sizeof(PageRun))
        throw Error(fmt::format("image {}: pages.idx is malformed", dir.string()));
    img.runs.resize(index.size() / sizeof(PageRun));
    std::memcpy(img.runs.data(), index.data(), index.size());
    if (fs::exists(dir / "workingset.idx") || img.digests.count("workingset.idx")) {
        std::string ws = read_checked(dir, img.digests, "workingset.idx");
        if (ws.size() % sizeof(WorkingSetRun))
            throw Error(fmt::format("image {}: workingset.idx is malformed", dir.string()));
        img.working_set.resize(ws.size() / sizeof(WorkingSetRun));
        std::memcpy(img.working_set.data(), ws.data(), ws.size());
    }
    if (fs::exists(dir / "pages.sums") || img.digests.count("pages.sums")) {
        img.page_sums = read_checked(dir, img.digests, "pages.sums");
        uint64_t blocks = (img.manifest.pages_file_size + kPageSumBlock - 1) / kPageSumBlock;
        if (img.page_sums.size() != blocks * kPageSumSize)
            throw Error(fmt::format("image {}: pages.sums is malformed", dir.string()));
    }
    for (const auto& t : tree_names())
        if (fs::exists(dir / t) && !img.digests.count(t))
            not_authenticated(dir, t + " is not covered by its MAC");

    if (img.manifest.kernel != kernel_release() || img.manifest.vdso_size != current_vdso_size())
        throw Error(fmt::format("image {} was made on kernel {} (vdso {} bytes); this is {} (vdso {} bytes)",
                                dir.string(), img.manifest.kernel, img.manifest.vdso_size, kernel_release(),
                                current_vdso_size()));
    if (!img.digests.count("pages.img")) not_authenticated(dir, "pages.img is not covered by its MAC");
    if (!pages_here) {
        if (img.page_sums.empty())
            throw Error(
                fmt::format("image {} has no pages.sums (made before remote pages): its pages cannot be "
                            "verified as they arrive from a page server; make the image again",
                            dir.string()));
        check_trees(dir, img);
        return img;
    }
    sys::UniqueFd fd;
    try {
        fd = sys::open_file(img.pages_path(), O_RDONLY | O_NOFOLLOW);
    } catch (const sys::SysError& e) {
        if (e.code() == ENOENT) not_authenticated(dir, "pages.img is missing");
        throw;
    }
    struct stat st {};
    sys::check(::fstat(fd.get(), &st), "stat pages.img");
    if (!S_ISREG(st.st_mode)) not_authenticated(dir, "pages.img is not a regular file");
    if (check == PagesCheck::once && static_cast<uint64_t>(st.st_size) == img.manifest.pages_file_size &&
        stamp_matches(dir, key, st)) {
        // Verified before, and the file is the one verified: only the trees (KBs) are checked again.
        check_trees(dir, img);
    } else if (verify_pages) {
        uint64_t size = img.manifest.pages_file_size;
        if (static_cast<uint64_t>(st.st_size) != size)
            not_authenticated(
                dir, fmt::format("pages.img does not match its MAC: it has {} bytes, {} were written "
                                 "(truncated or changed since the snapshot)",
                                 st.st_size, size));
        for (const auto& r : img.runs)
            if (r.file_offset % kPageSize || r.file_offset > size ||
                r.pages > (size - r.file_offset) / kPageSize)
                throw Error(
                    fmt::format("image {}: pages.idx points past the end of pages.img", dir.string()));
        sys::FileMapping pages(fd.get(), static_cast<size_t>(size));
        if (!same_digest(pages_digest(pages.data(), size, img.runs), img.digests.at("pages.img")))
            not_authenticated(dir,
                              "pages.img does not match its MAC (changed or corrupted since the snapshot)");
        // A restore maps whole VMA ranges, holes included: a byte outside the saved runs must be zero.
        // Only ranges the file system holds data for are read (none, normally).
        std::vector<std::pair<uint64_t, uint64_t>> saved;
        for (const auto& r : img.runs) saved.push_back({r.file_offset, r.file_offset + r.pages * kPageSize});
        std::sort(saved.begin(), saved.end());
        size_t next = 0;
        for (auto [from, to] : sys::data_ranges(fd.get(), size)) {
            for (uint64_t at = from; at < to;) {
                while (next < saved.size() && saved[next].second <= at) ++next;
                uint64_t end = next < saved.size() ? std::min(to, std::max(at, saved[next].first)) : to;
                for (uint64_t i = at; i < end; ++i)
                    if (pages.data()[i] != 0)
                        not_authenticated(
                            dir, fmt::format("pages.img does not match its MAC (data at offset {:#x}, "
                                             "outside every saved page)",
                                             i));
                at = next < saved.size() ? std::max(end, saved[next].second) : to;
            }
        }
        check_trees(dir, img);
        if (verified_now) *verified_now = true;
        if (check == PagesCheck::once) write_stamp(dir, key, st);
    }
    img.pages_file = std::make_shared<const sys::UniqueFd>(std::move(fd));
    return img;
}
}  // namespace

Image load(const fs::path& dir, const Key& key, bool verify_pages) {
    return load_image(dir, key, verify_pages ? PagesCheck::full : PagesCheck::skip, true, nullptr);
}

Image load_verified_once(const fs::path& dir, const Key& key, bool* verified_now) {
    return load_image(dir, key, PagesCheck::once, true, verified_now);
}

void stamp_verified(const fs::path& dir, const Key& key) noexcept {
    struct stat st {};
    if (::stat((dir / "pages.img").c_str(), &st) == 0 && S_ISREG(st.st_mode)) write_stamp(dir, key, st);
}

Image load_without_pages(const fs::path& dir, const Key& key) {
    return load_image(dir, key, PagesCheck::full, false, nullptr);
}

Manifest load_manifest(const fs::path& dir, const Key& key) {
    return from_json(read_checked(dir, read_auth(dir, key), "manifest.json"));
}

void copy_tree(const Image& img, const std::string& name, int to) {
    auto it = img.digests.find(name);
    if (it == img.digests.end()) throw Error(fmt::format("image {} has no {}", img.dir.string(), name));
    sys::UniqueFd from = sys::open_file(img.dir / name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    TreeDigest digest;
    sys::copy_tree_at(from.get(), to, &digest, (img.dir / name).string());
    if (!same_digest(digest.hex(), it->second))
        not_authenticated(img.dir, name + " does not match its MAC (changed since the image was loaded)");
}

void copy_tree(const Image& img, const std::string& name, const fs::path& to) {
    fs::create_directories(to);
    sys::UniqueFd dest = sys::open_file(to, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    copy_tree(img, name, dest.get());
}

ImageWriter::ImageWriter(fs::path final_dir, const Key& key) : final_(std::move(final_dir)), key_(key) {
    if (fs::exists(final_)) throw Error(fmt::format("image {} already exists", final_.string()));
    staging_ = final_;
    staging_ += fmt::format(".tmp.{}", ::getpid());
    if (fs::exists(staging_)) sys::remove_tree(staging_);
    fs::create_directories(staging_);
    // A function's memory may hold its secrets: the image is root's alone.
    sys::check(::chmod(staging_.c_str(), 0700), "chmod " + staging_.string());
}

ImageWriter::~ImageWriter() {
    if (!published_) {
        try {
            sys::remove_tree(staging_);
        } catch (...) {
        }
    }
}

void write_working_set(const fs::path& dir, const std::vector<WorkingSetRun>& runs, const Key& key) {
    std::string ws(reinterpret_cast<const char*>(runs.data()), runs.size() * sizeof(WorkingSetRun));
    auto digests = read_auth(dir, key);
    sys::write_file(dir / "workingset.idx", ws);
    digests["workingset.idx"] = sha256_hex(ws);
    write_auth(dir, digests, key);
}

void ImageWriter::publish(const Manifest& manifest, const std::vector<PageRun>& runs,
                          const std::function<void(const fs::path& staging)>& before_publish) {
    std::string text = to_json(manifest);
    std::string index(reinterpret_cast<const char*>(runs.data()), runs.size() * sizeof(PageRun));
    sys::write_file(staging_ / "manifest.json", text);
    sys::write_file(staging_ / "pages.idx", index);
    std::map<std::string, std::string> digests;
    digests["manifest.json"] = sha256_hex(text);
    digests["pages.idx"] = sha256_hex(index);
    {
        sys::UniqueFd fd = sys::open_file(pages_path(), O_RDONLY);
        struct stat st {};
        sys::check(::fstat(fd.get(), &st), "stat pages.img");
        if (static_cast<uint64_t>(st.st_size) != manifest.pages_file_size)
            throw Error(fmt::format("image {}: pages.img has {} bytes, the manifest says {}",
                                    staging_.string(), st.st_size, manifest.pages_file_size));
        sys::FileMapping pages(fd.get(), static_cast<size_t>(st.st_size));
        digests["pages.img"] = pages_digest(pages.data(), manifest.pages_file_size, runs);
        std::string sums = page_sums(pages.data(), manifest.pages_file_size, runs);
        sys::write_file(staging_ / "pages.sums", sums);
        digests["pages.sums"] = sha256_hex(sums);
    }
    for (const auto& t : tree_names())
        if (fs::exists(staging_ / t)) digests[t] = tree_digest(staging_ / t);
    write_auth(staging_, digests, key_);
    if (before_publish) before_publish(staging_);
    for (const char* f : {"manifest.json", "pages.idx", "AUTH", "pages.img", "workingset.idx", "pages.sums"})
        if (fs::exists(staging_ / f)) sys::fsync_path(staging_ / f);
    sys::fsync_path(staging_);
    if (::rename(staging_.c_str(), final_.c_str()) != 0)
        throw sys::SysError(fmt::format("publish image {}", final_.string()), errno);
    sys::fsync_path(final_.parent_path().empty() ? fs::path(".") : final_.parent_path());
    published_ = true;
}

}  // namespace initless::image
