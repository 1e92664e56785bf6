// sys/inspect.h: what the checkpoint asks of copies of a process's fds, on real pipes and sockets.
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "initless/sys/error.h"
#include "initless/sys/file.h"
#include "initless/sys/inspect.h"
#include "initless/sys/unique_fd.h"

using namespace initless;

TEST(SysInspect, PipeSizeAndUnreadData) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    sys::UniqueFd r(p[0]), w(p[1]);
    EXPECT_EQ(sys::pipe_size(r.get()), 65536u);
    EXPECT_TRUE(sys::read_available(r.get()).empty());
    sys::write_all(w.get(), "abc", 3);
    EXPECT_EQ(sys::read_available(r.get()), (std::vector<uint8_t>{'a', 'b', 'c'}));
    EXPECT_TRUE(sys::read_available(r.get()).empty()) << "the data was read out";
}

TEST(SysInspect, SocketPairEndsAndOrphans) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sys::UniqueFd a(sv[0]), b(sv[1]);
    EXPECT_EQ(sys::socket_option(a.get(), SOL_SOCKET, SO_DOMAIN), AF_UNIX);
    EXPECT_EQ(sys::socket_name(a.get()).size(), sizeof(sa_family_t)) << "unnamed";
    EXPECT_TRUE(sys::peer_is_unnamed(a.get()));
    EXPECT_FALSE(sys::peer_gone(a.get()));
    b.reset();
    EXPECT_TRUE(sys::peer_gone(a.get()));
    EXPECT_THROW(sys::socket_option(-1, SOL_SOCKET, SO_TYPE), sys::SysError);
}

TEST(SysInspect, TcpListenerBacklog) {
    sys::UniqueFd s(::socket(AF_INET, SOCK_STREAM, 0));
    ASSERT_TRUE(s);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(s.get(), 17), 0);
    EXPECT_EQ(sys::tcp_listen_backlog(s.get()), 17);
    EXPECT_EQ(sys::socket_name(s.get()).size(), sizeof(sockaddr_in));
}

TEST(SysInspect, LimitsAndStat) {
    auto limits = sys::process_rlimits(::getpid());
    ASSERT_EQ(limits.size(), static_cast<size_t>(RLIM_NLIMITS));
    rlimit nofile{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &nofile), 0);
    EXPECT_EQ(limits[RLIMIT_NOFILE].first, nofile.rlim_cur);
    EXPECT_EQ(limits[RLIMIT_NOFILE].second, nofile.rlim_max);
    EXPECT_TRUE(S_ISDIR(sys::stat_path("/proc/self").st_mode));
    EXPECT_THROW(sys::stat_path("/no/such/path"), sys::SysError);
    EXPECT_GT(sys::clock_ns(CLOCK_MONOTONIC), 0);
}
