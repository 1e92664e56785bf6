// The image format: manifest round trip, authentication (AUTH, its MAC) that refuses a changed,
// truncated or foreign image naming the file, the key file, atomic publication.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "initless/image/auth.h"
#include "initless/image/image.h"
#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/inspect.h"

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
    fd.object = image::EpollFd{{{4, 0x80000001u, 0xdeadbeefcafeULL}}};
    p.fds.push_back(fd);
    image::Fd pipe;
    pipe.fd = 4;
    pipe.shared_id = 7;
    pipe.object = image::PipeFd{.pipe_id = 99, .end = 0, .pipe_size = 65536, .unread = {0, 1, 2}};
    p.fds.push_back(pipe);
    p.threads[0].pending = {{10, 0, 0, 0}};
    p.actions.push_back({10, 0x401234, 0x14000000, 0x401000, 0});
    p.mm.auxv = {9, 8, 7};
    m.processes.push_back(p);
    return m;
}

image::Key test_key(char fill = 'k') {
    return image::Key::from_bytes(std::string(image::Key::kSize, fill));
}

// Writes a one-VMA image with one page of 0xab bytes (pages.img has a second page, a hole), a
// writable layer (a file, a directory, a symlink), a saved /tmp and a working set.
void write_image(const fs::path& dir, const image::Key& key = test_key()) {
    image::ImageWriter w(dir, key);
    auto m = sample_manifest();
    std::vector<uint8_t> page(image::kPageSize, 0xab);
    m.processes[0].vmas[0].pages_crc = image::crc32c(0, page.data(), page.size());
    m.pages_file_size = 2 * image::kPageSize;
    sys::UniqueFd fd = sys::open_file(w.pages_path(), O_WRONLY | O_CREAT, 0644);
    ASSERT_EQ(::pwrite(fd.get(), page.data(), page.size(), 0), static_cast<ssize_t>(page.size()));
    ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(m.pages_file_size)), 0);
    fs::create_directories(w.staging() / "rootfs-upper/etc");
    sys::write_file(w.staging() / "rootfs-upper/etc/app.conf", "port = 9000\n");
    fs::create_symlink("/etc/shadow", w.staging() / "rootfs-upper/shadow-link");
    fs::create_directories(w.staging() / "tmpfs-tmp");
    sys::write_file(w.staging() / "tmpfs-tmp/cache", "cached bytes");
    w.publish(m, {{0x10000, 1, 0}}, [&](const fs::path& staging) {
        image::write_working_set(staging, {{0x10000, 1, 1, 0}}, key);
    });
}

// Overwrites one byte of a file in place (its size, owner and mode unchanged).
void flip_byte(const fs::path& file, off_t at) {
    sys::UniqueFd fd = sys::open_file(file, O_RDWR);
    char c = 0;
    ASSERT_EQ(::pread(fd.get(), &c, 1, at), 1);
    c = static_cast<char>(c ^ 0x20);
    ASSERT_EQ(::pwrite(fd.get(), &c, 1, at), 1);
}

// image::load must refuse with NotAuthenticated naming the image and `names`.
void expect_refused(const fs::path& dir, const std::string& names, const image::Key& key = test_key()) {
    try {
        image::load(dir, key);
        ADD_FAILURE() << "an image whose " << names << " changed was loaded";
    } catch (const image::NotAuthenticated& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("image " + dir.string() + " is not authenticated"), std::string::npos) << what;
        EXPECT_NE(what.find(names), std::string::npos) << what;
    }
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
    EXPECT_EQ(t.pending, (std::vector<std::vector<uint8_t>>{{10, 0, 0, 0}}));
    const auto* epoll = back.processes[0].fds[0].as<image::EpollFd>();
    ASSERT_NE(epoll, nullptr);
    ASSERT_EQ(epoll->targets.size(), 1u);
    EXPECT_EQ(epoll->targets[0].events, 0x80000001u);
    EXPECT_EQ(epoll->targets[0].data, 0xdeadbeefcafeULL);
    const auto& pipe_fd = back.processes[0].fds[1];
    EXPECT_EQ(pipe_fd.shared_id, 7u);
    const auto* pipe = pipe_fd.as<image::PipeFd>();
    ASSERT_NE(pipe, nullptr);
    EXPECT_EQ(pipe->unread, (std::vector<uint8_t>{0, 1, 2}));
    EXPECT_EQ(pipe->pipe_size, 65536u);
    EXPECT_EQ(back.processes[0].actions[0].flags, 0x14000000u);
}

// Every fd kind is stored under its own name and comes back as the same type with the same fields
// (the manifest written again from what was read is the same text).
TEST(Image, EveryFdKindRoundTrips) {
    auto m = sample_manifest();
    auto& fds = m.processes[0].fds;
    fds.clear();
    std::vector<image::FdObject> objects = {
        image::LogFd{},
        image::FileFd{"/tmp/app.log",
                      8192,
                      {{image::FileLock::Ofd, F_WRLCK, 0, 10}, {image::FileLock::Lease, F_RDLCK, 0, 0}}},
        image::CharDeviceFd{"/dev/urandom", 0},
        image::TcpListenFd{AF_INET6, SOCK_STREAM, {10, 0, 35, 40}, {{6, 1, 1}, {41, 26, 0}}, 511},
        image::TcpConnectionFd{
            AF_INET, SOCK_STREAM, 1, {2, 0, 35, 41, 127, 0, 0, 1}, {2, 0, 0, 80, 10, 0, 0, 1}},
        image::TcpUnconnectedFd{AF_INET6, SOCK_STREAM, {10, 0, 35, 42}, {{1, 2, 1}}},
        image::UdpFd{AF_INET, {2, 0, 35, 43}, {}, {{1, 6, 1}}},
        image::UnixListenFd{SOCK_STREAM, {1, 0, 47, 116}, "/tmp/s", 1},
        image::UnixPairFd{SOCK_DGRAM, 77, 1, {{1, 7, 425984}}, {1, 2, 3, 4, 5}, {2, 3}, 2},
        image::UnixOrphanFd{},
        image::PipeFd{55, 1, 4096, {}},
        image::FifoFd{"/tmp/f", 65536, {7, 8}},
        image::EpollFd{{{5, 1, 2}}},
        image::EventFd{42, true},
        image::TimerFd{1, 500000000, 250000000, 3},
        image::SignalFd{0x4000},
        image::InotifyFd{{{1, 0x80000100, "/tmp/dir", false}, {2, 0x4, "/tmp/link", true}}},
    };
    ASSERT_EQ(objects.size(), std::variant_size_v<image::FdObject>) << "a kind is missing from this test";
    int n = 3;
    for (auto& o : objects) {
        image::Fd f;
        f.fd = n++;
        f.flags = 04000;
        f.cloexec = n % 2;
        f.object = o;
        fds.push_back(f);
    }
    std::string text = image::to_json(m);
    auto back = image::from_json(text);
    ASSERT_EQ(back.processes[0].fds.size(), objects.size());
    for (size_t i = 0; i < objects.size(); ++i) {
        const auto& f = back.processes[0].fds[i];
        EXPECT_EQ(f.object.index(), objects[i].index()) << "fd kind " << fds[i].kind();
        EXPECT_NE(text.find(std::string("\"") + fds[i].kind() + "\""), std::string::npos) << fds[i].kind();
        EXPECT_EQ(f.fd, fds[i].fd);
        EXPECT_EQ(f.cloexec, fds[i].cloexec);
    }
    EXPECT_EQ(image::to_json(back), text);
    const auto* pair = back.processes[0].fds[8].as<image::UnixPairFd>();
    ASSERT_NE(pair, nullptr);
    EXPECT_EQ(pair->message_sizes, (std::vector<uint32_t>{2, 3}));
    EXPECT_EQ(pair->options.at(0).value, 425984);
    EXPECT_EQ(pair->shutdown, 2);
    const auto* file = back.processes[0].fds[1].as<image::FileFd>();
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(file->locks.size(), 2u);
    EXPECT_EQ(file->locks[0].kind, image::FileLock::Ofd);
    EXPECT_EQ(file->locks[0].length, 10u);
    EXPECT_EQ(file->locks[1].kind, image::FileLock::Lease);
    const auto* fifo = back.processes[0].fds[11].as<image::FifoFd>();
    ASSERT_NE(fifo, nullptr);
    EXPECT_EQ(fifo->unread, (std::vector<uint8_t>{7, 8}));
    const auto* connection = back.processes[0].fds[4].as<image::TcpConnectionFd>();
    ASSERT_NE(connection, nullptr);
    EXPECT_EQ(connection->peer, (std::vector<uint8_t>{2, 0, 0, 80, 10, 0, 0, 1}));
    const auto* timer = back.processes[0].fds[14].as<image::TimerFd>();
    ASSERT_NE(timer, nullptr);
    EXPECT_EQ(timer->ticks, 3u);
    EXPECT_EQ(timer->interval_ns, 250000000u);
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

TEST(Image, Sha256AndHmacMatchLibcryptosEvp) {
    // Images made before auth.cpp left EVP must still verify: the same digests, byte for byte.
    image::Sha256 abc;
    abc.update("abc");
    EXPECT_EQ(abc.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    std::string key_bytes(image::Key::kSize, '\0');
    for (size_t i = 0; i < key_bytes.size(); ++i) key_bytes[i] = static_cast<char>(0xa0 + i);
    image::Key key = image::Key::from_bytes(key_bytes);
    for (size_t n : {0, 1, 55, 64, 65, 1000, 100000}) {
        std::string data(n, '\0');
        for (size_t i = 0; i < n; ++i) data[i] = static_cast<char>(i * 7 + 3);
        unsigned char out[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        ASSERT_TRUE(HMAC(EVP_sha256(), key.data(), image::Key::kSize,
                         reinterpret_cast<const unsigned char*>(data.data()), n, out, &len));
        std::string expected;
        for (unsigned i = 0; i < len; ++i) expected += fmt::format("{:02x}", out[i]);
        EXPECT_EQ(image::hmac_sha256_hex(key, data), expected) << n << " bytes";
    }
}

TEST(Image, PublishedImageLoadsAndVerifies) {
    TempDir tmp;
    write_image(tmp.path / "img");
    auto img = image::load(tmp.path / "img", test_key());
    EXPECT_EQ(img.runs.size(), 1u);
    EXPECT_EQ(img.working_set.size(), 1u);
    EXPECT_EQ(img.manifest.function, "f");
    EXPECT_TRUE(img.has_tree("rootfs-upper"));
    EXPECT_TRUE(img.has_tree("tmpfs-tmp"));
    EXPECT_FALSE(img.has_tree("tmpfs-shm"));
    // The image is root's alone (it holds a process's memory).
    EXPECT_EQ(sys::stat_path(tmp.path / "img").st_mode & 0777, 0700u);
    // Nothing of the staging dir is left beside it.
    int entries = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp.path)) ++entries;
    EXPECT_EQ(entries, 1);
}

// One byte changed in any file a restore reads: refused, naming the file.
TEST(Image, OneChangedByteInAnyFileIsRefusedNamingIt) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"manifest.json", "manifest.json does not match its MAC"},
        {"pages.idx", "pages.idx does not match its MAC"},
        {"pages.img", "pages.img does not match its MAC"},
        {"workingset.idx", "workingset.idx does not match its MAC"},
        {"rootfs-upper/etc/app.conf", "rootfs-upper does not match its MAC"},
        {"tmpfs-tmp/cache", "tmpfs-tmp does not match its MAC"},
        {"AUTH", "AUTH"},
    };
    for (const auto& [file, message] : cases) {
        SCOPED_TRACE(file);
        TempDir tmp;
        fs::path dir = tmp.path / "img";
        write_image(dir);
        flip_byte(dir / file, file == "AUTH" ? 60 : 5);
        expect_refused(dir, message);
    }
}

TEST(Image, DataInAHoleOfPagesIsRefused) {
    // A restore maps whole VMA ranges from pages.img: the unsaved pages (holes) must stay zero.
    TempDir tmp;
    write_image(tmp.path / "img");
    sys::UniqueFd fd = sys::open_file(tmp.path / "img/pages.img", O_WRONLY);
    ASSERT_EQ(::pwrite(fd.get(), "x", 1, static_cast<off_t>(image::kPageSize + 100)), 1);
    expect_refused(tmp.path / "img", "pages.img does not match its MAC (data at offset 0x1064");
}

TEST(Image, ChangedTreeMetadataIsRefused) {
    TempDir tmp;
    fs::path dir = tmp.path / "img";
    write_image(dir);
    ASSERT_EQ(::chmod((dir / "rootfs-upper/etc/app.conf").c_str(), 04755), 0);
    expect_refused(dir, "rootfs-upper does not match its MAC");

    TempDir tmp2;
    dir = tmp2.path / "img";
    write_image(dir);
    fs::remove(dir / "rootfs-upper/shadow-link");
    fs::create_symlink("/etc/passwd", dir / "rootfs-upper/shadow-link");
    expect_refused(dir, "rootfs-upper does not match its MAC");

    TempDir tmp3;
    dir = tmp3.path / "img";
    write_image(dir);
    fs::create_directories(dir / "tmpfs-shm");  // a tree the snapshot did not write
    expect_refused(dir, "tmpfs-shm is not covered by its MAC");
}

TEST(Image, TruncatedFilesAreRefused) {
    for (const std::string file : {"pages.img", "manifest.json", "pages.idx", "workingset.idx", "AUTH"}) {
        SCOPED_TRACE(file);
        TempDir tmp;
        fs::path dir = tmp.path / "img";
        write_image(dir);
        ASSERT_EQ(::truncate((dir / file).c_str(), file == "pages.img" ? 4096 : 10), 0);
        expect_refused(dir, file == "AUTH" ? "AUTH" : file);
    }
    TempDir tmp;
    write_image(tmp.path / "img");
    fs::remove(tmp.path / "img/pages.idx");
    expect_refused(tmp.path / "img", "pages.idx is missing");
}

TEST(Image, ImageOfAnotherKeyIsRefused) {
    TempDir tmp;
    write_image(tmp.path / "img", test_key('a'));
    expect_refused(tmp.path / "img", "made with another key", test_key('b'));
    EXPECT_THROW(image::load_manifest(tmp.path / "img", test_key('b')), image::NotAuthenticated);
    EXPECT_NO_THROW(image::load(tmp.path / "img", test_key('a')));
}

TEST(Image, VerifyPagesFalseStillChecksTheSmallFiles) {
    TempDir tmp;
    write_image(tmp.path / "img");
    flip_byte(tmp.path / "img/pages.img", 100);
    EXPECT_NO_THROW(image::load(tmp.path / "img", test_key(), /*verify_pages=*/false));
    flip_byte(tmp.path / "img/pages.idx", 0);
    EXPECT_THROW(image::load(tmp.path / "img", test_key(), /*verify_pages=*/false), image::NotAuthenticated);
}

// The OCI runtime's verbs load an image once per container: the pages are read in full the first time
// only, and again whenever the file is not the one verified.
TEST(Image, VerifiedOnceUntilThePagesFileChanges) {
    TempDir tmp;
    fs::path dir = tmp.path / "img";
    write_image(dir);
    bool read_all = false;
    image::load_verified_once(dir, test_key(), &read_all);
    EXPECT_TRUE(read_all);
    EXPECT_TRUE(fs::exists(dir / image::kVerifiedStamp));
    image::load_verified_once(dir, test_key(), &read_all);
    EXPECT_FALSE(read_all) << "the stamp of the same file was not trusted";
    // Written in place (same inode and size): the stamp no longer matches, the check finds the change.
    flip_byte(dir / "pages.img", 5);
    EXPECT_THROW(image::load_verified_once(dir, test_key(), &read_all), image::NotAuthenticated);
    // The stamp under another key, or edited, is not trusted: the pages are read again.
    TempDir tmp2;
    fs::path dir2 = tmp2.path / "img";
    write_image(dir2);
    image::load_verified_once(dir2, test_key(), &read_all);
    std::string stamp = sys::read_file(dir2 / image::kVerifiedStamp);
    stamp[stamp.find("size ") + 5] ^= 1;
    sys::write_file(dir2 / image::kVerifiedStamp, stamp);
    image::load_verified_once(dir2, test_key(), &read_all);
    EXPECT_TRUE(read_all) << "an edited stamp was trusted";
    // A pages file swapped for another of the same size (another inode): read in full, and refused.
    image::load_verified_once(dir2, test_key(), &read_all);
    EXPECT_FALSE(read_all);
    fs::copy_file(dir2 / "pages.img", tmp2.path / "other");
    flip_byte(tmp2.path / "other", 5);
    fs::rename(tmp2.path / "other", dir2 / "pages.img");
    EXPECT_THROW(image::load_verified_once(dir2, test_key(), &read_all), image::NotAuthenticated);
    // The maker's stamp (stamp_verified right after publish) is trusted like a check's.
    TempDir tmp3;
    write_image(tmp3.path / "img");
    image::stamp_verified(tmp3.path / "img", test_key());
    image::load_verified_once(tmp3.path / "img", test_key(), &read_all);
    EXPECT_FALSE(read_all);
}

// A tree changed after load (the daemon loaded the image at start, then it was edited): the copy
// into a sandbox checks what it copies and refuses.
TEST(Image, TreeChangedAfterLoadIsRefusedWhileCopied) {
    TempDir tmp;
    fs::path dir = tmp.path / "img";
    write_image(dir);
    auto img = image::load(dir, test_key());
    fs::create_directories(tmp.path / "good");
    image::copy_tree(img, "rootfs-upper", tmp.path / "good");
    EXPECT_EQ(sys::read_file(tmp.path / "good/etc/app.conf"), "port = 9000\n");
    EXPECT_EQ(fs::read_symlink(tmp.path / "good/shadow-link"), "/etc/shadow");
    flip_byte(dir / "rootfs-upper/etc/app.conf", 0);
    try {
        image::copy_tree(img, "rootfs-upper", tmp.path / "bad");
        ADD_FAILURE() << "a tree changed after load was copied";
    } catch (const image::NotAuthenticated& e) {
        EXPECT_NE(std::string(e.what()).find("rootfs-upper does not match its MAC"), std::string::npos)
            << e.what();
    }
}

// pages.img is opened once by load: a file renamed over it later is not what restores map.
TEST(Image, RestoresMapThePagesFileLoadVerified) {
    TempDir tmp;
    fs::path dir = tmp.path / "img";
    write_image(dir);
    auto img = image::load(dir, test_key());
    sys::write_file(tmp.path / "other", std::string(2 * image::kPageSize, 'z'));
    fs::rename(tmp.path / "other", dir / "pages.img");
    sys::UniqueFd fd = img.open_pages();
    char c = 0;
    ASSERT_EQ(::pread(fd.get(), &c, 1, 0), 1);
    EXPECT_EQ(static_cast<unsigned char>(c), 0xab);
}

TEST(Image, OlderFormatsAskToMakeTheImageAgain) {
    TempDir tmp;
    fs::path dir = tmp.path / "img";
    write_image(dir);
    fs::remove(dir / "AUTH");  // format 3 had CHECKSUMS instead
    std::string text = sys::read_file(dir / "manifest.json");
    std::string current = "\"format\": " + std::to_string(image::kFormatVersion);
    text.replace(text.find(current), current.size(), "\"format\": 3");
    sys::write_file(dir / "manifest.json", text);
    try {
        image::load(dir, test_key());
        ADD_FAILURE() << "a format-3 image was loaded";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("make the image again"), std::string::npos) << e.what();
    }
}

TEST(ImageKey, CreatedOnceWithMode0600AndReadAgain) {
    TempDir tmp;
    fs::path state = tmp.path / "state";
    auto a = image::Key::of_state_dir(state);
    struct stat st = sys::stat_path(state / "image.key");
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_size, 32);
    auto b = image::Key::of_state_dir(state);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), image::Key::kSize), 0);
    // No temp file is left beside it.
    int entries = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(state)) ++entries;
    EXPECT_EQ(entries, 1);
    // An image made under a's key loads under b's.
    write_image(tmp.path / "img", a);
    EXPECT_NO_THROW(image::load(tmp.path / "img", b));
}

TEST(ImageKey, KeyOthersCanReadOrASymlinkIsRefused) {
    TempDir tmp;
    fs::path state = tmp.path / "state";
    image::Key::of_state_dir(state);
    ASSERT_EQ(::chmod((state / "image.key").c_str(), 0644), 0);
    try {
        image::Key::of_state_dir(state);
        ADD_FAILURE() << "a key readable by others was used";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("mode 0644"), std::string::npos) << e.what();
    }
    fs::remove(state / "image.key");
    sys::write_file(tmp.path / "elsewhere", std::string(32, 'x'));
    ::chmod((tmp.path / "elsewhere").c_str(), 0600);
    fs::create_symlink(tmp.path / "elsewhere", state / "image.key");
    EXPECT_THROW(image::Key::of_state_dir(state), Error);
}

TEST(Image, WriterLeavesNothingWhenNotPublished) {
    TempDir tmp;
    {
        image::ImageWriter w(tmp.path / "img", test_key());
        sys::write_file(w.pages_path(), "partial");
    }
    EXPECT_TRUE(fs::is_empty(tmp.path));
    write_image(tmp.path / "img");
    EXPECT_THROW(image::ImageWriter(tmp.path / "img", test_key()),
                 Error);  // published images are never overwritten
}
