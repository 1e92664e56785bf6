#include <cstdio>

#include <nlohmann/json.hpp>

#include "initless/cli/verbs.h"
#include "initless/oci/spec.h"
#include "initless/sandbox/function_config.h"
#include "initless/spec/function_spec.h"

namespace initless::cli {

void add_spec(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "spec",
        "print the OCI runtime spec (config.json) a function's sandbox is made from: function.toml over "
        "the hardened defaults");
    static std::string dir;
    cmd->add_option("DIR", dir, "function directory (holding function.toml)")->required();
    cmd->callback([] {
        auto fn = spec::load(dir);
        std::printf("%s\n", oci::to_json(sandbox::function_runtime_spec(fn)).dump(2).c_str());
    });
}

}  // namespace initless::cli
