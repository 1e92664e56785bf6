#include <algorithm>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "initless/oci/spec.h"
#include "initless/sandbox/function_config.h"
#include "initless/sys/error.h"

using namespace initless;
using json = nlohmann::json;

namespace {

json minimal() {
    return json::parse(R"({
      "ociVersion": "1.0.2",
      "process": {"args": ["/bin/sh"], "cwd": "/", "env": ["PATH=/usr/bin"],
                  "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
                  "capabilities": {"bounding": ["CAP_NET_BIND_SERVICE"], "effective": [], "permitted": []},
                  "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
                  "noNewPrivileges": true},
      "root": {"path": "rootfs", "readonly": true},
      "hostname": "box",
      "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                 {"destination": "/data/", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]}],
      "hooks": {"prestart": [{"path": "/usr/bin/setkey", "args": ["setkey", "x"], "timeout": 5}]},
      "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "user"},
                               {"type": "network", "path": "/var/run/netns/x"}],
                "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 100},
                              "cpu": {"quota": 50000, "period": 100000}},
                "cgroupsPath": "/docker/abc",
                "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"},
                "sysctl": {"net.ipv4.ip_forward": "0"}},
      "annotations": {"io.initless.network": "none"},
      "someFutureProperty": {"anything": 1}
    })");
}

std::string error_of(const json& j) {
    try {
        oci::parse(j);
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "parsed: " << j.dump();
    return {};
}

}  // namespace

TEST(OciSpec, ParsesWhatDockerWritesAndIgnoresUnknownProperties) {
    oci::RuntimeSpec s = oci::parse(minimal());
    EXPECT_EQ(s.process.args, std::vector<std::string>{"/bin/sh"});
    EXPECT_EQ(s.process.user.uid, 1000u);
    EXPECT_EQ(s.process.user.additional_gids, std::vector<uint32_t>{5});
    EXPECT_EQ(oci::capability_mask(s.process.capabilities.bounding), 1ULL << 10);
    ASSERT_EQ(s.process.rlimits.size(), 1u);
    EXPECT_EQ(s.process.rlimits[0].hard, 4096u);
    EXPECT_TRUE(s.root.readonly);
    EXPECT_EQ(s.mounts[1].destination, "/data");
    EXPECT_EQ(s.hooks.prestart.at(0).timeout, 5);
    EXPECT_EQ(s.linux_settings.find_namespace("network")->path, "/var/run/netns/x");
    EXPECT_EQ(oci::to_host(s.linux_settings.uid_mappings, 5), 100005u);
    EXPECT_EQ(oci::to_container(s.linux_settings.uid_mappings, 100005), 5u);
    EXPECT_FALSE(oci::to_host(s.linux_settings.uid_mappings, 70000));
    EXPECT_EQ(s.linux_settings.resources.pids_limit, 100);
    EXPECT_EQ(s.linux_settings.seccomp->at("defaultAction"), "SCMP_ACT_ERRNO");
    EXPECT_EQ(s.annotation("io.initless.network"), "none");
}

TEST(OciSpec, RoundTripsThroughJson) {
    oci::RuntimeSpec s = oci::parse(minimal());
    json again = oci::to_json(s);
    EXPECT_EQ(oci::to_json(oci::parse(again)), again);
}

TEST(OciSpec, ErrorsNameThePropertyPath) {
    json j = minimal();
    j["linux"]["namespaces"][1]["type"] = "net";
    EXPECT_EQ(error_of(j), "config.json: linux.namespaces[1].type: 'net' is not a namespace type");
    j = minimal();
    j["process"]["user"]["uid"] = "root";
    EXPECT_EQ(error_of(j), "config.json: process.user.uid: has the wrong type (string)");
    j = minimal();
    j["process"]["capabilities"]["effective"] = {"CAP_FLY"};
    EXPECT_EQ(error_of(j), "config.json: process.capabilities: unknown capability CAP_FLY");
    j = minimal();
    j["process"]["rlimits"][0]["soft"] = 9999;
    EXPECT_EQ(error_of(j), "config.json: process.rlimits[0]: soft is above hard");
    j = minimal();
    j["linux"]["uidMappings"].push_back({{"containerID", 10}, {"hostID", 1}, {"size", 1}});
    EXPECT_EQ(error_of(j), "config.json: linux.uidMappings[1]: overlaps another mapping's containerID range");
    j = minimal();
    j["mounts"][0]["destination"] = "proc";
    EXPECT_EQ(error_of(j), "config.json: mounts[0].destination: must be an absolute path");
    j = minimal();
    j["ociVersion"] = "2.0.0";
    EXPECT_EQ(error_of(j).rfind("config.json: ociVersion:", 0), 0u);
    j = minimal();
    j.erase("root");
    EXPECT_EQ(error_of(j), "config.json: root: is required");
}

TEST(FunctionConfig, HardenedDefaultsMeetDockersAndMore) {
    spec::FunctionSpec fn;
    fn.name = "hardened";
    fn.dir = "/srv/fn";
    fn.command = {"./server"};
    fn.rootfs = "/srv/rootfs";  // not the host-runtimes root: nothing is built for this test
    oci::RuntimeSpec s = sandbox::function_runtime_spec(fn);
    const auto& l = s.linux_settings;
    for (const char* ns : {"pid", "network", "ipc", "uts", "mount", "user", "cgroup"})
        EXPECT_TRUE(l.has_namespace(ns)) << ns;
    ASSERT_EQ(l.uid_mappings.size(), 1u);
    EXPECT_EQ(l.uid_mappings[0].container_id, 0u);
    EXPECT_GE(l.uid_mappings[0].host_id, sandbox::kIdRangesStart);  // root inside is no one on the host
    EXPECT_EQ(l.uid_mappings[0].host_id, sandbox::function_host_id_base("hardened"));
    EXPECT_NE(sandbox::function_host_id_base("hardened"), sandbox::function_host_id_base("other"));
    EXPECT_TRUE(s.process.capabilities.bounding.empty());
    EXPECT_TRUE(s.process.capabilities.effective.empty());
    EXPECT_TRUE(s.process.no_new_privileges);
    for (const auto& p : oci::default_masked_paths())
        EXPECT_NE(std::find(l.masked_paths.begin(), l.masked_paths.end(), p), l.masked_paths.end()) << p;
    for (const auto& p : oci::default_readonly_paths())
        EXPECT_NE(std::find(l.readonly_paths.begin(), l.readonly_paths.end(), p), l.readonly_paths.end())
            << p;
    EXPECT_EQ(l.resources.pids_limit, 1024);
    EXPECT_EQ(l.resources.memory_limit, 512LL << 20);
    EXPECT_EQ(s.root.path, "/srv/rootfs");
    EXPECT_EQ(s.annotation("io.initless.network"), "none");
    // The function dir is bound read-only; no mount of the host's root.
    bool function_ro = false;
    for (const auto& m : s.mounts) {
        EXPECT_NE(m.source, "/") << m.destination;
        if (m.destination == "/function")
            function_ro = std::find(m.options.begin(), m.options.end(), "ro") != m.options.end();
    }
    EXPECT_TRUE(function_ro);
    // What function_runtime_spec makes is a valid config.json.
    EXPECT_EQ(oci::to_json(oci::parse(oci::to_json(s))), oci::to_json(s));
}
