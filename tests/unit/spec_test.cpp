#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "initless/spec/function_spec.h"
#include "initless/sys/error.h"

using namespace initless;
namespace fs = std::filesystem;

namespace {

// A scratch tree per test; the function directory is named "myfn" so the default name is known.
class SpecTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/initless-spec-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        dir_ = root_ / "myfn";
        fs::create_directory(dir_);
    }
    void TearDown() override { fs::remove_all(root_); }

    fs::path write(const std::string& text, const std::string& name = "function.toml") {
        fs::path p = dir_ / name;
        std::ofstream(p) << text;
        return p;
    }

    // Loads `text` and returns the error message; fails the test if it loads.
    std::string error_of(const std::string& text) {
        fs::path p = write(text);
        try {
            spec::load(p);
        } catch (const Error& e) {
            return e.what();
        }
        ADD_FAILURE() << "spec loaded but should not have:\n" << text;
        return {};
    }

    std::string file() const { return (dir_ / "function.toml").string(); }

    fs::path root_;
    fs::path dir_;
};

constexpr const char* kMinimal = "command = [\"./server\"]\nready = \"ready\"\n";

}  // namespace

TEST_F(SpecTest, MinimalGetsDefaults) {
    fs::path p = write(kMinimal);
    spec::FunctionSpec s = spec::load(p);
    EXPECT_EQ(s.dir, fs::canonical(dir_));
    EXPECT_TRUE(s.dir.is_absolute());
    EXPECT_EQ(s.name, "myfn");
    EXPECT_EQ(s.command, std::vector<std::string>{"./server"});
    EXPECT_TRUE(s.env.empty());
    EXPECT_EQ(s.ready, "ready");
    EXPECT_EQ(s.port, 9000);
    EXPECT_TRUE(s.rootfs.empty());
    EXPECT_EQ(s.pids_max, 1024u);
    EXPECT_EQ(s.network, "none");
    EXPECT_TRUE(s.rw_dirs.empty());
    EXPECT_EQ(s.memory_mb, 512u);
    EXPECT_DOUBLE_EQ(s.cpus, 1.0);
    EXPECT_EQ(s.concurrency, 1u);
    EXPECT_EQ(s.max_instances, 10u);
    EXPECT_EQ(s.timeout_s, 60u);
    EXPECT_EQ(s.prestart, 1u);
    EXPECT_EQ(s.restore, "auto");
    EXPECT_EQ(s.warmup, 0u);
    EXPECT_FALSE(s.refuse_tcp_connections);
}

TEST_F(SpecTest, EveryKeySet) {
    write(R"(name = "other-name_2"
command = ["/usr/bin/python3", "app.py"]
ready = "app ready"
port = 8080
rootfs = "/srv/rootfs/"
rw_dirs = ["/tmp", "/var/cache/app/"]
memory_mb = 2048
cpus = 2
concurrency = 4
max_instances = 3
timeout_s = 5
prestart = 0
restore = "lazy"
warmup = 2
refuse_tcp_connections = true

[env]
PYTHONDONTWRITEBYTECODE = "1"
GREETING = "hi there"
)");
    spec::FunctionSpec s = spec::load(dir_);
    EXPECT_EQ(s.name, "other-name_2");
    EXPECT_EQ(s.command, (std::vector<std::string>{"/usr/bin/python3", "app.py"}));
    EXPECT_EQ(s.ready, "app ready");
    EXPECT_EQ(s.port, 8080);
    EXPECT_EQ(s.rootfs, "/srv/rootfs");
    EXPECT_EQ(s.rw_dirs, (std::vector<fs::path>{"/tmp", "/var/cache/app"}));
    EXPECT_EQ(s.memory_mb, 2048u);
    EXPECT_DOUBLE_EQ(s.cpus, 2.0);
    EXPECT_EQ(s.concurrency, 4u);
    EXPECT_EQ(s.max_instances, 3u);
    EXPECT_EQ(s.timeout_s, 5u);
    EXPECT_EQ(s.prestart, 0u);
    EXPECT_EQ(s.restore, "lazy");
    EXPECT_EQ(s.warmup, 2u);
    EXPECT_TRUE(s.refuse_tcp_connections);
    EXPECT_EQ(s.env.size(), 2u);
    EXPECT_EQ(s.env.at("GREETING"), "hi there");
}

TEST_F(SpecTest, DirectoryAndFileGiveTheSameSpec) {
    fs::path p = write(kMinimal);
    spec::FunctionSpec from_dir = spec::load(dir_);
    spec::FunctionSpec from_file = spec::load(p);
    EXPECT_EQ(from_dir.dir, from_file.dir);
    EXPECT_EQ(from_dir.name, from_file.name);

    // A spec file with another name still belongs to the directory that holds it.
    fs::path other = write(kMinimal, "alt.toml");
    EXPECT_EQ(spec::load(other).dir, fs::canonical(dir_));
}

TEST_F(SpecTest, RelativePathBecomesAbsoluteDir) {
    write(kMinimal);
    fs::path old = fs::current_path();
    fs::current_path(root_);
    spec::FunctionSpec s = spec::load("myfn");
    fs::current_path(old);
    EXPECT_EQ(s.dir, fs::canonical(dir_));
}

TEST_F(SpecTest, MissingFileNamesPath) {
    fs::path empty = root_ / "empty";
    fs::create_directory(empty);
    try {
        spec::load(empty);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find((empty / "function.toml").string()), std::string::npos)
            << e.what();
    }
}

TEST_F(SpecTest, UnknownKeyNamesFileLineAndKey) {
    std::string msg = error_of("command = [\"x\"]\nready = \"r\"\nmemry_mb = 100\n");
    EXPECT_EQ(msg.rfind(file() + ":3: key 'memry_mb' is unknown (known keys: name, command,", 0), 0u) << msg;
    EXPECT_NE(msg.find("memory_mb"), std::string::npos) << msg;
}

TEST_F(SpecTest, UnknownTableIsUnknownKey) {
    std::string msg = error_of("command = [\"x\"]\nready = \"r\"\n\n[limits]\nmemory_mb = 1\n");
    EXPECT_EQ(msg.rfind(file() + ":4: key 'limits' is unknown", 0), 0u) << msg;
}

TEST_F(SpecTest, UnknownKeyReportedBeforeMissingKey) {
    std::string msg = error_of("comand = [\"x\"]\nready = \"r\"\n");
    EXPECT_EQ(msg.rfind(file() + ":1: key 'comand' is unknown", 0), 0u) << msg;
}

TEST_F(SpecTest, WrongTypeNamesFileLineAndKey) {
    EXPECT_EQ(error_of("command = [\"x\"]\nready = \"r\"\nport = \"9000\"\n"),
              file() + ":3: key 'port' must be an integer, not a string");
    EXPECT_EQ(error_of("command = \"./server\"\nready = \"r\"\n"),
              file() + ":1: key 'command' must be an array, not a string");
    EXPECT_EQ(error_of("command = [\"x\", 1]\nready = \"r\"\n"),
              file() + ":1: key 'command[1]' must be a string, not an integer");
    EXPECT_EQ(error_of("command = [\"x\"]\nready = \"r\"\nenv = [\"A=1\"]\n"),
              file() + ":3: key 'env' must be a table, not an array");
    EXPECT_EQ(error_of("command = [\"x\"]\nready = \"r\"\n[env]\nA = \"1\"\nB = 2\n"),
              file() + ":5: key 'env.B' must be a string, not an integer");
    EXPECT_EQ(error_of("command = [\"x\"]\nready = \"r\"\ncpus = \"2\"\n"),
              file() + ":3: key 'cpus' must be a number, not a string");
    EXPECT_EQ(error_of("command = [\"x\"]\nready = \"r\"\nmemory_mb = 1.5\n"),
              file() + ":3: key 'memory_mb' must be an integer, not a float");
    EXPECT_EQ(error_of("command = [\"x\"]\nready = \"r\"\nrefuse_tcp_connections = \"yes\"\n"),
              file() + ":3: key 'refuse_tcp_connections' must be a boolean, not a string");
}

TEST_F(SpecTest, OutOfRangeNamesFileLineAndKey) {
    const std::string head = "command = [\"x\"]\nready = \"r\"\n";
    EXPECT_EQ(error_of(head + "memory_mb = 8\n"), file() + ":3: key 'memory_mb' must be at least 16 (got 8)");
    EXPECT_EQ(error_of(head + "port = 0\n"), file() + ":3: key 'port' must be between 1 and 65535 (got 0)");
    EXPECT_EQ(error_of(head + "port = 70000\n"),
              file() + ":3: key 'port' must be between 1 and 65535 (got 70000)");
    EXPECT_EQ(error_of(head + "timeout_s = 0\n"),
              file() + ":3: key 'timeout_s' must be between 1 and 3600 (got 0)");
    // Every wait on a function is bounded by these: a function may not make them practically endless.
    EXPECT_EQ(error_of(head + "timeout_s = 4294967295\n"),
              file() + ":3: key 'timeout_s' must be between 1 and 3600 (got 4294967295)");
    EXPECT_EQ(error_of(head + "queue_timeout_ms = 3600001\n"),
              file() + ":3: key 'queue_timeout_ms' must be between 1 and 3600000 (got 3600001)");
    EXPECT_EQ(error_of(head + "cpus = 0\n"), file() + ":3: key 'cpus' must be greater than 0 (got 0)");
    EXPECT_EQ(error_of(head + "cpus = -0.5\n"), file() + ":3: key 'cpus' must be greater than 0 (got -0.5)");
    EXPECT_EQ(error_of(head + "cpus = nan\n"), file() + ":3: key 'cpus' must be greater than 0 (got nan)");
    EXPECT_EQ(error_of(head + "prestart = -1\n"),
              file() + ":3: key 'prestart' must be between 0 and 4294967295 (got -1)");
}

TEST_F(SpecTest, BadValuesNameFileLineAndKey) {
    const std::string head = "command = [\"x\"]\nready = \"r\"\n";
    std::string msg = error_of(head + "restore = \"fast\"\n");
    EXPECT_EQ(msg, file() + ":3: key 'restore' 'fast' is not one of auto|eager|cow|lazy|prefetch");
    msg = error_of(head + "name = \"My_Fn\"\n");
    EXPECT_EQ(msg.rfind(file() + ":3: key 'name' 'My_Fn' must match", 0), 0u) << msg;
    msg = error_of(head + "name = \"" + std::string(64, 'a') + "\"\n");
    EXPECT_EQ(msg.rfind(file() + ":3: key 'name'", 0), 0u) << msg;
    msg = error_of(head + "rw_dirs = [\"/tmp\",\n  \"var/x\"]\n");
    EXPECT_EQ(msg, file() + ":4: key 'rw_dirs[1]' must be an absolute path (got 'var/x')");
    msg = error_of(head + "rw_dirs = [\"/function/cache\"]\n");
    EXPECT_EQ(msg.rfind(file() + ":3: key 'rw_dirs[0]'", 0), 0u) << msg;
    msg = error_of(head + "rw_dirs = [\"/tmp\", \"/tmp/\"]\n");
    EXPECT_EQ(msg, file() + ":3: key 'rw_dirs[1]' '/tmp' is listed twice");
    msg = error_of(head + "rootfs = \"rootfs\"\n");
    EXPECT_EQ(msg, file() + ":3: key 'rootfs' must be an absolute path (got 'rootfs')");
    msg = error_of(head + "rootfs = \"/\"\n");
    EXPECT_EQ(msg.rfind(file() + ":3: key 'rootfs' must not be the host's root", 0), 0u) << msg;
    msg = error_of(head + "network = \"host\"\n");
    EXPECT_EQ(msg, file() + ":3: key 'network' 'host' is not one of none|egress");
    msg = error_of(head + "pids_max = 2\n");
    EXPECT_EQ(msg.rfind(file() + ":3: key 'pids_max' must be between 8", 0), 0u) << msg;
    msg = error_of("command = []\nready = \"r\"\n");
    EXPECT_EQ(msg, file() + ":1: key 'command' must not be empty");
    msg = error_of("command = [\"x\"]\nready = \"\"\n");
    EXPECT_EQ(msg, file() + ":2: key 'ready' must not be empty");
    msg = error_of("command = [\"x\"]\nready = \"a\\nb\"\n");
    EXPECT_EQ(msg, file() + ":2: key 'ready' must be a single line");
}

TEST_F(SpecTest, MissingRequiredKeyNamesFileAndKey) {
    EXPECT_EQ(error_of("ready = \"r\"\n"), file() + ": required key 'command' is missing");
    EXPECT_EQ(error_of("command = [\"x\"]\n"), file() + ": required key 'ready' is missing");
}

TEST_F(SpecTest, InvalidDirectoryNameNeedsExplicitName) {
    fs::path bad = root_ / "Bad.Dir";
    fs::create_directory(bad);
    std::ofstream(bad / "function.toml") << kMinimal;
    try {
        spec::load(bad);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("'Bad.Dir'"), std::string::npos) << e.what();
    }
    std::ofstream(bad / "function.toml") << kMinimal << "name = \"good\"\n";
    EXPECT_EQ(spec::load(bad).name, "good");
}

TEST_F(SpecTest, SyntaxErrorNamesFileLineAndColumn) {
    std::string msg = error_of("command = [\"x\"]\nready = \"r\"\nport = = 3\n");
    EXPECT_EQ(msg.rfind(file() + ":3:", 0), 0u) << msg;
    // file:line:column: description
    std::string rest = msg.substr(file().size() + 3);
    EXPECT_TRUE(!rest.empty() && std::isdigit(static_cast<unsigned char>(rest[0]))) << msg;

    msg = error_of("command = [\"x\"]\nready = \"r\"\nport = 1\nport = 2\n");
    EXPECT_EQ(msg.rfind(file() + ":4:", 0), 0u) << msg;
}

TEST(SpecExamples, EveryExampleParses) {
    fs::path examples = fs::path(INITLESS_SOURCE_DIR) / "examples";
    int count = 0;
    for (const auto& entry : fs::directory_iterator(examples)) {
        if (!fs::exists(entry.path() / "function.toml")) continue;
        SCOPED_TRACE(entry.path().string());
        spec::FunctionSpec s;
        ASSERT_NO_THROW(s = spec::load(entry.path()));
        EXPECT_EQ(s.name, entry.path().filename().string());
        EXPECT_EQ(s.dir, fs::canonical(entry.path()));
        EXPECT_FALSE(s.command.empty());
        EXPECT_FALSE(s.ready.empty());
        ++count;
    }
    EXPECT_GE(count, 5);
}

TEST_F(SpecTest, SeccompDefaultsToTheDefaultProfileAndAcceptsUnconfined) {
    EXPECT_EQ(spec::load(write(kMinimal)).seccomp, "default");
    EXPECT_EQ(spec::load(write(std::string(kMinimal) + "seccomp = \"unconfined\"\n")).seccomp, "unconfined");
    std::string e = error_of(std::string(kMinimal) + "seccomp = \"strict\"\n");
    EXPECT_NE(e.find("key 'seccomp'"), std::string::npos) << e;
    EXPECT_NE(e.find("'strict' is not one of default|unconfined"), std::string::npos) << e;
}

// A deploy directory is the user's: what stands as function.toml is not trusted to be a small file.
// A FIFO is refused at once (a plain open would wait for a writer for ever), a link to a device and
// an oversized file are refused before they are read.
TEST_F(SpecTest, OnlyASmallRegularFileIsReadAsTheSpec) {
    auto load_error = [&](const fs::path& path) -> std::string {
        try {
            spec::load(path);
        } catch (const Error& e) {
            return e.what();
        }
        ADD_FAILURE() << path << " loaded";
        return {};
    };
    ASSERT_EQ(::mkfifo(file().c_str(), 0644), 0);
    EXPECT_NE(load_error(dir_).find("function.toml is not a regular file"), std::string::npos);
    fs::remove(file());
    fs::create_symlink("/dev/zero", file());
    EXPECT_NE(load_error(dir_).find("function.toml is not a regular file"), std::string::npos);
    fs::remove(file());
    write(std::string(kMinimal) + "# " + std::string(2 << 20, 'x') + "\n");
    EXPECT_NE(load_error(dir_).find("more than the 1048576 allowed"), std::string::npos) << load_error(dir_);
    write(kMinimal);
    EXPECT_NO_THROW(spec::load(dir_));
}
