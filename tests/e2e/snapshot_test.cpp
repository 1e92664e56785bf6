// Snapshot and restore through the CLI, and what they do with bad input: a full disk during the
// snapshot, a corrupted image, a binary that changed since the snapshot. Real sandboxes, real HTTP.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "e2e.h"

using json = nlohmann::json;

namespace e2e {
namespace {

class SnapshotE2e : public E2eTest {
  protected:
    // Snapshots `function` into scratch/<name>; returns the image path.
    fs::path snapshot(const fs::path& function, const std::string& name = "image") {
        fs::path image = scratch_ / name;
        auto r = cli({"snapshot", function.string(), "--image", image.string(), "--json"});
        EXPECT_EQ(r.exit_code(), 0) << r.describe();
        return image;
    }
    json restore(const fs::path& image, const std::string& strategy, int instances, CliResult* raw = nullptr,
                 std::vector<std::string> extra = {}) {
        std::vector<std::string> args = {"restore",     image.string(),
                                         "--strategy",  strategy,
                                         "--instances", std::to_string(instances),
                                         "--request",   "/",
                                         "--json"};
        args.insert(args.end(), extra.begin(), extra.end());
        auto r = cli(args);
        if (raw) *raw = r;
        EXPECT_EQ(r.exit_code(), 0) << r.describe();
        try {
            return json::parse(r.out);
        } catch (const std::exception&) {
            ADD_FAILURE() << "restore printed no JSON: " << r.describe();
            return {};
        }
    }
    // A private copy of the built c-hello function, so a test may change it.
    fs::path copy_of_c_hello() {
        fs::path dir = scratch_ / "c-hello";
        fs::copy(example_dir("c-hello"), dir, fs::copy_options::recursive);
        return dir;
    }
};

TEST_F(SnapshotE2e, RestoredInstancesAnswerWithBothStrategies) {
    fs::path image = snapshot(example_dir("c-hello"));
    for (const std::string strategy : {"eager", "cow"}) {
        json out = restore(image, strategy, 2);
        ASSERT_EQ(out["instances"].size(), 2u) << out.dump();
        for (const auto& i : out["instances"]) {
            EXPECT_EQ(i["mode"], "restore") << i.dump();
            EXPECT_EQ(i["status"], 200) << i.dump();
            EXPECT_NE(i["body"].get<std::string>().find("hello from c"), std::string::npos) << i.dump();
            // Orders of magnitude only: a restore is milliseconds, never seconds.
            EXPECT_LT(i["restore_ms"].get<double>(), 5000) << i.dump();
        }
    }
}

TEST_F(SnapshotE2e, FullDiskFailsCleanlyAndLeavesNothing) {
    // Not under the scratch dir: its path says "initless", and tests running beside this one count
    // every such mount as a leak.
    char tmpl[] = "/tmp/e2e-small-disk-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    fs::path small = tmpl;
    ASSERT_EQ(::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=2m"), 0) << "mount a 2 MiB tmpfs: " << errno;
    auto r = cli({"snapshot", example_dir("python-bigdict").string(), "--image", (small / "image").string()});
    std::vector<fs::path> left;
    for (const auto& e : fs::directory_iterator(small)) left.push_back(e.path());
    ::umount2(small.c_str(), MNT_DETACH);
    ::rmdir(small.c_str());
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(r.err.find("No space left"), std::string::npos) << r.describe();
    EXPECT_TRUE(left.empty()) << "left on the full disk: " << left.front();
}

// An image changed on disk is not authenticated: `restore` refuses it naming the file, and boots
// nothing (not even with fallback allowed: its manifest cannot be trusted to name the function).
TEST_F(SnapshotE2e, TamperedImageIsRefusedNamingTheFile) {
    fs::path image = snapshot(example_dir("c-hello"));
    {
        int fd = ::open((image / "pages.img").c_str(), O_WRONLY);
        ASSERT_GE(fd, 0);
        // Flip bytes inside the first saved run (offset 0 holds the first VMA with pages).
        ASSERT_EQ(::pwrite(fd, "\xff\xfe\xfd\xfc", 4, 16), 4);
        ::close(fd);
    }
    for (const std::vector<std::string>& extra : {std::vector<std::string>{}, {"--no-fallback"}}) {
        std::vector<std::string> args = {"restore", image.string(), "--request", "/", "--json"};
        args.insert(args.end(), extra.begin(), extra.end());
        auto r = cli(args);
        EXPECT_EQ(r.exit_code(), 1) << r.describe();
        EXPECT_NE(
            r.err.find("image " + image.string() + " is not authenticated: pages.img does not match its MAC"),
            std::string::npos)
            << r.describe();
        EXPECT_EQ(r.err.find("booting"), std::string::npos) << r.describe();
    }
}

// An image made under another state dir's key (a foreign image dropped into this one's store).
TEST_F(SnapshotE2e, ImageOfAnotherKeyIsRefused) {
    fs::path image = snapshot(example_dir("c-hello"));
    fs::path other = scratch_ / "other-state";
    fs::create_directories(other);
    ::setenv("INITLESS_STATE_DIR", other.c_str(), 1);
    auto r = cli({"restore", image.string(), "--request", "/", "--json"});
    ::setenv("INITLESS_STATE_DIR", state_dir_.c_str(), 1);
    EXPECT_EQ(r.exit_code(), 1) << r.describe();
    EXPECT_NE(
        r.err.find("is not authenticated: its AUTH file does not match its MAC (the image was made with "
                   "another key"),
        std::string::npos)
        << r.describe();
    // The same image under its own key still restores.
    json out = restore(image, "cow", 1);
    ASSERT_EQ(out["instances"].size(), 1u);
    EXPECT_EQ(out["instances"][0]["mode"], "restore");
}

TEST_F(SnapshotE2e, ChangedBinaryIsNotRestored) {
    fs::path fn = copy_of_c_hello();
    fs::path image = snapshot(fn);
    // Same bytes, new mtime: the engine cannot know the file is unchanged, so it must refuse.
    fs::last_write_time(fn / "c-hello", fs::file_time_type::clock::now() + std::chrono::seconds(5));
    CliResult raw;
    json out = restore(image, "cow", 1, &raw);
    ASSERT_EQ(out["instances"].size(), 1u) << raw.describe();
    EXPECT_EQ(out["instances"][0]["mode"], "boot-fallback") << out.dump();
    EXPECT_NE(out["instances"][0]["fallback_reason"].get<std::string>().find("changed since the snapshot"),
              std::string::npos)
        << out.dump();
    EXPECT_EQ(out["instances"][0]["status"], 200);
}

TEST_F(SnapshotE2e, ExistingImageIsNeverOverwritten) {
    fs::path image = snapshot(example_dir("c-hello"));
    auto again = cli({"snapshot", example_dir("c-hello").string(), "--image", image.string()});
    EXPECT_EQ(again.exit_code(), 1) << again.describe();
    EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.describe();
}

}  // namespace
}  // namespace e2e
