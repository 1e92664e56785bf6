// The image format: manifest round trip, checksums that catch corruption, atomic publication.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "initless/image/image.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"

using namespace initless;
namespace fs = std::filesystem;

namespace {
struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/initless-image-test-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { sys::remove_tree(path); }
};

image::Manifest sample_manifest() {
    image::Manifest m;
    m.function = "f";
    m.function_dir = "/tmp/f";
    m.kernel = image::kernel_release();
    m.vdso_size = image::current_vdso_size();
    image::Process p;
    p.pid = 2;
    p.exe = "/usr/bin/true";
    p.cwd = "/function";
    image::Thread t;
    t.tid = 2;
    t.regs.rip = 0x401000;
    t.regs.fs_base = 0x7f0000001000;
    t.xstate = {1, 2, 3, 255};
    t.sigmask = 1ULL << 9;
    t.rseq = {0x7f00, 32, 0x53053053};
    p.threads.push_back(t);
    image::Vma v;
    v.start = 0x10000;
    v.end = 0x12000;
    v.prot = 3;
    v.saved_pages = 1;
    p.vmas.push_back(v);
    image::Fd fd;
    fd.fd = 3;
    fd.kind = image::FdKind::Epoll;
    fd.targets = {{4, 0x80000001u, 0xdeadbeefcafeULL}};
    fd.pipe_data = {0, 1, 2};
    p.fds.push_back(fd);
    p.actions.push_back({10, 0x401234, 0x14000000, 0x401000, 0});
    p.mm.auxv = {9, 8, 7};
    m.processes.push_back(p);
    return m;
}

// Writes a one-VMA image with one page of 0xab bytes.
void write_image(const fs::path& dir) {
    image::ImageWriter w(dir);
    auto m = sample_manifest();
    std::vector<uint8_t> page(image::kPageSize, 0xab);
    m.processes[0].vmas[0].pages_crc = image::crc32c(0, page.data(), page.size());
    m.pages_file_size = 2 * image::kPageSize;
    sys::UniqueFd fd = sys::open_file(w.pages_path(), O_WRONLY | O_CREAT, 0644);
    ASSERT_EQ(::pwrite(fd.get(), page.data(), page.size(), 0), static_cast<ssize_t>(page.size()));
    ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(m.pages_file_size)), 0);
    w.publish(m, {{0x10000, 1, 0}});
}
}  // namespace

TEST(Image, ManifestRoundTrip) {
    auto m = sample_manifest();
    auto back = image::from_json(image::to_json(m));
    ASSERT_EQ(back.processes.size(), 1u);
    const auto& t = back.processes[0].threads[0];
    EXPECT_EQ(t.regs.rip, 0x401000u);
    EXPECT_EQ(t.regs.fs_base, 0x7f0000001000u);
    EXPECT_EQ(t.xstate, (std::vector<uint8_t>{1, 2, 3, 255}));
    EXPECT_EQ(t.rseq.signature, 0x53053053u);
    const auto& fd = back.processes[0].fds[0];
    EXPECT_EQ(fd.kind, image::FdKind::Epoll);
    ASSERT_EQ(fd.targets.size(), 1u);
    EXPECT_EQ(fd.targets[0].events, 0x80000001u);
    EXPECT_EQ(fd.targets[0].data, 0xdeadbeefcafeULL);
    EXPECT_EQ(fd.pipe_data, (std::vector<uint8_t>{0, 1, 2}));
    EXPECT_EQ(back.processes[0].actions[0].flags, 0x14000000u);
}

TEST(Image, RejectsOtherFormatVersions) {
    std::string text = image::to_json(sample_manifest());
    std::string current = "\"format\": " + std::to_string(image::kFormatVersion);
    ASSERT_NE(text.find(current), std::string::npos);
    text.replace(text.find(current), current.size(), "\"format\": 99");
    EXPECT_THROW(image::from_json(text), Error);
}

TEST(Image, Crc32cKnownValue) {
    // The standard check value of CRC-32C.
    const char* s = "123456789";
    EXPECT_EQ(image::crc32c(0, s, 9), 0xE3069283u);
}

TEST(Image, PublishedImageLoadsAndVerifies) {
    TempDir tmp;
    write_image(tmp.path / "img");
    auto img = image::load(tmp.path / "img");
    EXPECT_EQ(img.runs.size(), 1u);
    EXPECT_EQ(img.manifest.function, "f");
    // Nothing of the staging dir is left beside it.
    int entries = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp.path)) ++entries;
    EXPECT_EQ(entries, 1);
}

TEST(Image, CorruptedPagesAreDetected) {
    TempDir tmp;
    write_image(tmp.path / "img");
    sys::UniqueFd fd = sys::open_file(tmp.path / "img/pages.img", O_WRONLY);
    ASSERT_EQ(::pwrite(fd.get(), "x", 1, 100), 1);
    try {
        image::load(tmp.path / "img");
        FAIL() << "a flipped byte in pages.img must be caught";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("corrupted"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(image::load(tmp.path / "img", /*verify_pages=*/false));
}

TEST(Image, CorruptedManifestIsDetected) {
    TempDir tmp;
    write_image(tmp.path / "img");
    std::string text = sys::read_file(tmp.path / "img/manifest.json");
    text[text.find("\"f\"") + 1] = 'g';
    sys::write_file(tmp.path / "img/manifest.json", text);
    EXPECT_THROW(image::load(tmp.path / "img"), Error);
}

TEST(Image, WriterLeavesNothingWhenNotPublished) {
    TempDir tmp;
    {
        image::ImageWriter w(tmp.path / "img");
        sys::write_file(w.pages_path(), "partial");
    }
    EXPECT_TRUE(fs::is_empty(tmp.path));
    write_image(tmp.path / "img");
    EXPECT_THROW(image::ImageWriter(tmp.path / "img"), Error);  // published images are never overwritten
}
