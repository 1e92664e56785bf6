#include "initless/controller/registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <functional>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"

namespace initless::controller {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string utc_now() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string new_version_id() {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
    std::random_device rd;
    return fmt::format("v-{}-{:06x}", ms, rd() & 0xffffff);
}

json to_json(const RegistryEntry& e) {
    return {{"name", e.name},
            {"version_dir", e.version_dir.string()},
            {"code_dir", e.code_dir.string()},
            {"image_dir", e.image_dir.string()},
            {"deployed_at", e.deployed_at},
            {"boot_ms", e.boot_ms},
            {"restore_ms", e.restore_ms},
            {"image_mb", e.image_mb},
            {"snapshot", e.snapshot}};
}

RegistryEntry from_json(const json& j) {
    RegistryEntry e;
    e.name = j.at("name").get<std::string>();
    e.version_dir = j.at("version_dir").get<std::string>();
    e.code_dir = j.at("code_dir").get<std::string>();
    e.image_dir = j.at("image_dir").get<std::string>();
    e.deployed_at = j.value("deployed_at", "");
    e.boot_ms = j.value("boot_ms", 0.0);
    e.restore_ms = j.value("restore_ms", 0.0);
    e.image_mb = j.value("image_mb", 0.0);
    e.snapshot = j.value("snapshot", json::object());
    return e;
}

void remove_quietly(const fs::path& p) {
    try {
        sys::remove_tree(p);
    } catch (const Error& e) {
        spdlog::warn("event=registry-remove-failed path={} error=\"{}\"", p.string(), e.what());
    }
}

}  // namespace

Registry::Registry(fs::path state_dir, bool tmpfs_images)
    : state_dir_(fs::absolute(state_dir)), tmpfs_images_(tmpfs_images) {
    // One tmpfs image root per state dir, so two daemons with their own state never share images.
    tmpfs_root_ = fs::path("/dev/shm/initless-images") /
                  fmt::format("{:016x}", std::hash<std::string>{}(state_dir_.string()));
    fs::create_directories(state_dir_ / "functions");
    ::chmod(state_dir_.c_str(), 0700);
    if (tmpfs_images_) {
        // /dev/shm is writable by every local user: a dir there that someone else made first could
        // have images swapped under the daemon. Ours only: made 0700, refused if another owns it.
        for (const fs::path& d : {tmpfs_root_.parent_path(), tmpfs_root_}) {
            if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST)
                throw sys::SysError("mkdir " + d.string(), errno);
            struct stat st {};
            sys::check(::lstat(d.c_str(), &st), "stat " + d.string());
            if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 022))
                throw Error(
                    fmt::format("the tmpfs image store {} is not a directory of uid {} writable by it alone "
                                "(uid {}, mode {:04o}): refused; remove it",
                                d.string(), ::geteuid(), st.st_uid, st.st_mode & 07777));
        }
    }
}

fs::path Registry::image_root(const std::string& name) const {
    return tmpfs_images_ ? tmpfs_root_ / name : function_dir(name);
}

std::vector<RegistryEntry> Registry::load_all() const {
    std::vector<RegistryEntry> out;
    std::error_code ec;
    for (const auto& d : fs::directory_iterator(state_dir_ / "functions", ec)) {
        fs::path current = d.path() / "current.json";
        if (!fs::exists(current)) continue;
        try {
            out.push_back(from_json(json::parse(sys::read_file(current))));
        } catch (const std::exception& e) {
            spdlog::error("event=registry-unreadable path={} error=\"{}\"", current.string(), e.what());
        }
    }
    return out;
}

void Registry::remove_leftovers() const {
    std::error_code ec;
    std::vector<std::string> current_versions;
    for (const auto& d : fs::directory_iterator(state_dir_ / "functions", ec)) {
        std::string current;
        try {
            current = fs::path(json::parse(sys::read_file(d.path() / "current.json"))
                                   .at("version_dir")
                                   .get<std::string>())
                          .filename()
                          .string();
        } catch (const std::exception&) {
        }
        bool any = false;
        for (const auto& v : fs::directory_iterator(d.path(), ec)) {
            std::string n = v.path().filename().string();
            if (n.rfind("v-", 0) != 0) continue;
            if (n == current) {
                any = true;
                continue;
            }
            spdlog::info("event=registry-leftover removed={}", v.path().string());
            remove_quietly(v.path());
        }
        if (!any && current.empty()) {
            spdlog::info("event=registry-leftover removed={}", d.path().string());
            remove_quietly(d.path());
        }
        current_versions.push_back(d.path().filename().string() + "/" + current);
    }
    for (const auto& fn : fs::directory_iterator(tmpfs_root_, ec))
        for (const auto& v : fs::directory_iterator(fn.path(), ec)) {
            std::string key = fn.path().filename().string() + "/" + v.path().filename().string();
            if (std::find(current_versions.begin(), current_versions.end(), key) == current_versions.end())
                remove_quietly(v.path());
        }
}

StagedEntry Registry::stage(const spec::FunctionSpec& source) const {
    StagedEntry s;
    auto& e = s.entry;
    e.name = source.name;
    std::string version = new_version_id();
    e.version_dir = function_dir(e.name) / version;
    e.code_dir = e.version_dir / "code";
    e.image_dir = tmpfs_images_ ? image_root(e.name) / version : e.version_dir / "image";
    e.deployed_at = utc_now();
    try {
        fs::create_directories(e.version_dir);
        if (tmpfs_images_) fs::create_directories(e.image_dir.parent_path());
        sys::copy_tree(source.dir, e.code_dir);
    } catch (const std::exception& ex) {
        discard(s);
        throw Error(fmt::format("copy {} into the registry: {}", source.dir.string(), ex.what()));
    }
    return s;
}

RegistryEntry Registry::commit(const StagedEntry& staged) const {
    RegistryEntry previous;
    fs::path current = function_dir(staged.entry.name) / "current.json";
    try {
        previous = from_json(json::parse(sys::read_file(current)));
    } catch (const std::exception&) {
    }
    sys::write_file_atomic(current, to_json(staged.entry).dump(2));
    return previous;
}

void Registry::discard(const StagedEntry& staged) const {
    remove_version(staged.entry);
    fs::path dir = function_dir(staged.entry.name);
    if (!fs::exists(dir / "current.json")) remove_quietly(dir);
}

void Registry::remove_version(const RegistryEntry& entry) const {
    if (entry.name.empty()) return;
    remove_quietly(entry.version_dir);
    if (tmpfs_images_ || !entry.image_dir.string().starts_with(entry.version_dir.string()))
        remove_quietly(entry.image_dir);
}

void Registry::remove_function(const RegistryEntry& entry) const {
    remove_version(entry);
    remove_quietly(function_dir(entry.name));
    if (tmpfs_images_) {
        remove_quietly(image_root(entry.name));
        std::error_code ec;
        fs::remove(tmpfs_root_, ec);                // only when no other function's images are left in it
        fs::remove(tmpfs_root_.parent_path(), ec);  // and no other state dir's
    }
}

void Registry::unregister(const std::string& name) const {
    std::error_code ec;
    fs::remove(function_dir(name) / "current.json", ec);
    fs::remove(log_path(name), ec);
}

fs::path Registry::log_path(const std::string& name) const {
    return function_dir(name) / "log";
}

void Registry::append_log(const std::string& name, const std::string& data, uint64_t max_bytes) const {
    fs::path path = log_path(name);
    if (!fs::exists(path.parent_path())) return;
    sys::UniqueFd fd = sys::open_file(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    sys::write_all(fd.get(), data.data(), data.size());
    std::error_code ec;
    auto size = fs::file_size(path, ec);
    if (!ec && size > max_bytes) {
        std::string all = sys::read_file(path);
        sys::write_file_atomic(path, all.substr(all.size() / 2));
    }
}

}  // namespace initless::controller
