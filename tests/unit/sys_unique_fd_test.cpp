#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/unique_fd.h"

using namespace initless;

TEST(UniqueFd, ClosesOnceAndMoves) {
    int raw = ::open("/dev/null", O_RDONLY);
    ASSERT_GE(raw, 0);
    {
        sys::UniqueFd a(raw);
        sys::UniqueFd b(std::move(a));
        EXPECT_FALSE(a);
        EXPECT_EQ(b.get(), raw);
        EXPECT_NE(::fcntl(raw, F_GETFD), -1);
    }
    EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
    EXPECT_EQ(errno, EBADF);
}

TEST(SysError, CarriesErrnoAndContext) {
    try {
        sys::open_file("/nonexistent/initless", O_RDONLY);
        FAIL() << "open of a missing file must throw";
    } catch (const sys::SysError& e) {
        EXPECT_EQ(e.code(), ENOENT);
        EXPECT_NE(std::string(e.what()).find("/nonexistent/initless"), std::string::npos);
    }
}

TEST(File, AtomicWriteReplacesWhole) {
    char dir[] = "/tmp/initless-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    std::filesystem::path p = std::filesystem::path(dir) / "f";
    sys::write_file_atomic(p, "first");
    sys::write_file_atomic(p, "second");
    EXPECT_EQ(sys::read_file(p), "second");
    sys::remove_tree(dir);
    EXPECT_FALSE(std::filesystem::exists(dir));
}
