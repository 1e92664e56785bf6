// The image loader and the page-cache helpers under it, on a real file on disk: evicted with
// POSIX_FADV_DONTNEED (this file only: the rest of the machine's page cache stays), then read back.
#include "initless/pages/image_loader.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "initless/sys/file.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using initless::pages::ImageLoader;

// A 48 MiB file of non-zero data on the disk (/var/tmp: tmpfs pages cannot be evicted), out of the
// page cache when made.
class PageCacheFile : public ::testing::Test {
  protected:
    static constexpr uint64_t kSize = 48 << 20;
    void SetUp() override {
        char tmpl[] = "/var/tmp/initless-loader-XXXXXX";
        int fd = ::mkstemp(tmpl);
        ASSERT_GE(fd, 0);
        path_ = tmpl;
        file_ = initless::sys::UniqueFd(fd);
        std::vector<char> block(1 << 20, 'x');
        for (uint64_t at = 0; at < kSize; at += block.size())
            initless::sys::write_all(fd, block.data(), block.size());
        ASSERT_EQ(::fdatasync(fd), 0);  // dirty pages cannot be dropped
        evict();
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove(path_, ec);
    }
    void evict() { ASSERT_EQ(::posix_fadvise(file_.get(), 0, kSize, POSIX_FADV_DONTNEED), 0); }
    fs::path path_;
    initless::sys::UniqueFd file_;
};

TEST_F(PageCacheFile, ReadIntoPageCacheReadsWhatItIsAskedAndNoMoreIsClaimed) {
    if (initless::sys::in_page_cache(file_.get(), 0, kSize))
        GTEST_SKIP()
            << "the kernel kept the file cached after POSIX_FADV_DONTNEED: eviction cannot be tested here";
    initless::sys::read_into_page_cache(file_.get(), 8 << 20, 3 << 20);
    EXPECT_TRUE(initless::sys::in_page_cache(file_.get(), 8 << 20, 3 << 20));
    evict();
    EXPECT_FALSE(initless::sys::in_page_cache(file_.get(), 8 << 20, 3 << 20));
    // Unaligned offsets and lengths cover the pages they touch.
    initless::sys::read_into_page_cache(file_.get(), 4097, 10);
    EXPECT_TRUE(initless::sys::in_page_cache(file_.get(), 4096, 4096));
}

TEST_F(PageCacheFile, ALoadBringsTheWholeFileInAndItsThreadEnds) {
    if (initless::sys::in_page_cache(file_.get(), 0, kSize))
        GTEST_SKIP()
            << "the kernel kept the file cached after POSIX_FADV_DONTNEED: eviction cannot be tested here";
    ImageLoader loader;
    loader.load(file_.get());
    ASSERT_TRUE(loader.wait_idle(30s)) << "a 48 MiB pass did not end in 30 s";
    EXPECT_TRUE(initless::sys::in_page_cache(file_.get(), 0, kSize)) << "the pass left pages out";
    EXPECT_FALSE(loader.thread_running());
    auto first = loader.counters();
    EXPECT_EQ(first.passes, 1u);
    EXPECT_GT(first.chunks_read, 0u);

    // A second pass over the cached file reads nothing.
    loader.load(file_.get());
    ASSERT_TRUE(loader.wait_idle(30s));
    auto second = loader.counters();
    EXPECT_EQ(second.passes, 2u);
    EXPECT_EQ(second.chunks_read, first.chunks_read);
    EXPECT_GT(second.chunks_resident, first.chunks_resident);
}

TEST_F(PageCacheFile, AFileIsNotQueuedTwiceAndTheDestructorStopsAPass) {
    {
        ImageLoader loader;
        loader.load(file_.get());
        loader.load(file_.get());  // queued or being read: not again
        auto c = loader.counters();
        EXPECT_EQ(c.duplicates + c.passes, 1u)
            << "the second load was neither a duplicate nor after the first's end";
        evict();
        loader.load(file_.get());
    }  // the destructor returns (joins) without waiting for a whole pass
    SUCCEED();
}

}  // namespace
