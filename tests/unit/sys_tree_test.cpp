// sys::copy_tree_at and open_at (openat2): a tree holding symlinks that point out of it, a FIFO and
// device nodes is copied without following a link, without opening the FIFO, and a device node other
// than an overlay whiteout is refused by name.
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <future>

#include <gtest/gtest.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/tree.h"

using namespace initless;
namespace fs = std::filesystem;

namespace {
struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/initless-tree-test-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { sys::remove_tree(path); }
};

// Records what a walk reports.
struct Recorder : sys::TreeVisitor {
    std::vector<std::string> entries;
    std::string bytes;
    void entry(const std::string& path, const struct stat&, std::string_view link) override {
        entries.push_back(link.empty() ? path : path + " -> " + std::string(link));
    }
    void data(std::string_view chunk) override { bytes += chunk; }
};

void copy_into(const fs::path& from, const fs::path& to, sys::TreeVisitor* visitor = nullptr) {
    fs::create_directories(to);
    sys::UniqueFd f = sys::open_file(from, O_RDONLY | O_DIRECTORY);
    sys::UniqueFd t = sys::open_file(to, O_RDONLY | O_DIRECTORY);
    sys::copy_tree_at(f.get(), t.get(), visitor, from.string());
}
}  // namespace

TEST(SysTree, SymlinksOutOfTheTreeAreCopiedAsLinksNeverFollowed) {
    TempDir tmp;
    fs::path src = tmp.path / "src";
    fs::create_directories(src / "dir");
    sys::write_file(src / "dir/file", "inside");
    fs::create_symlink("/etc/shadow", src / "shadow");
    fs::create_symlink("../../..", src / "dir/up");
    fs::create_symlink("/proc/self/root/etc/passwd", src / "proc-root");
    fs::create_symlink("/etc", src / "etc-dir");
    Recorder rec;
    copy_into(src, tmp.path / "dst", &rec);
    EXPECT_EQ(fs::read_symlink(tmp.path / "dst/shadow"), "/etc/shadow");
    EXPECT_EQ(fs::read_symlink(tmp.path / "dst/dir/up"), "../../..");
    EXPECT_EQ(fs::read_symlink(tmp.path / "dst/proc-root"), "/proc/self/root/etc/passwd");
    EXPECT_EQ(fs::read_symlink(tmp.path / "dst/etc-dir"), "/etc");
    EXPECT_EQ(sys::read_file(tmp.path / "dst/dir/file"), "inside");
    // Nothing but the one regular file was read; entries come sorted, a directory before its contents.
    EXPECT_EQ(rec.bytes, "inside");
    std::vector<std::string> want = {"",
                                     "dir",
                                     "dir/file",
                                     "dir/up -> ../../..",
                                     "etc-dir -> /etc",
                                     "proc-root -> /proc/self/root/etc/passwd",
                                     "shadow -> /etc/shadow"};
    EXPECT_EQ(rec.entries, want);
}

TEST(SysTree, FifoIsCopiedAsAFifoWithoutBlocking) {
    TempDir tmp;
    fs::path src = tmp.path / "src";
    fs::create_directories(src);
    ASSERT_EQ(::mkfifo((src / "fifo").c_str(), 0644), 0);
    sys::write_file(src / "after", "x");
    // No writer ever opens the FIFO: a copy that opened it for reading would wait forever.
    auto done = std::async(std::launch::async, [&] { copy_into(src, tmp.path / "dst"); });
    ASSERT_EQ(done.wait_for(std::chrono::seconds(5)), std::future_status::ready)
        << "the copy blocked on a FIFO";
    done.get();
    EXPECT_TRUE(fs::is_fifo(fs::symlink_status(tmp.path / "dst/fifo")));
    EXPECT_EQ(sys::read_file(tmp.path / "dst/after"), "x");
}

TEST(SysTree, DeviceNodesAreRefusedByNameButWhiteoutsCopied) {
    TempDir tmp;
    fs::path src = tmp.path / "src";
    fs::create_directories(src);
    ASSERT_EQ(::mknod((src / "whiteout").c_str(), S_IFCHR | 0, 0), 0);
    copy_into(src, tmp.path / "dst");
    struct stat st {};
    ASSERT_EQ(::lstat((tmp.path / "dst/whiteout").c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_EQ(st.st_rdev, 0u);

    ASSERT_EQ(::mknod((src / "disk").c_str(), S_IFBLK | 0600, makedev(8, 0)), 0);
    try {
        copy_into(src, tmp.path / "dst2");
        ADD_FAILURE() << "a block device was copied";
    } catch (const Error& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("/disk is a device node (block 8:0)"), std::string::npos) << what;
    }
}

TEST(SysTree, OpenAtStaysBeneathItsDirectory) {
    TempDir tmp;
    fs::create_directories(tmp.path / "root/sub");
    fs::create_symlink("/etc/passwd", tmp.path / "root/abs");
    fs::create_symlink("../../", tmp.path / "root/sub/up");
    sys::UniqueFd root = sys::open_file(tmp.path / "root", O_PATH | O_DIRECTORY);
    EXPECT_THROW(sys::open_at(root.get(), "abs", O_RDONLY, RESOLVE_BENEATH), sys::SysError);
    EXPECT_THROW(sys::open_at(root.get(), "sub/up/etc", O_RDONLY, RESOLVE_BENEATH), sys::SysError);
    EXPECT_THROW(sys::open_at(root.get(), "../root", O_RDONLY, RESOLVE_BENEATH), sys::SysError);
    EXPECT_NO_THROW(sys::open_at(root.get(), "sub", O_RDONLY | O_DIRECTORY, RESOLVE_BENEATH));
    // RESOLVE_IN_ROOT: an absolute link resolves inside the directory, as in a chroot.
    sys::write_file(tmp.path / "root/inside", "in");
    fs::create_symlink("/inside", tmp.path / "root/abs-inside");
    sys::UniqueFd fd =
        sys::open_at(root.get(), "abs-inside", O_RDONLY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
    char buf[2];
    EXPECT_EQ(::read(fd.get(), buf, 2), 2);
    EXPECT_EQ(std::string(buf, 2), "in");
}
