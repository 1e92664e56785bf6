#include <cstdio>

#include "initless/cli/verbs.h"
#include "initless/sandbox/sandbox.h"

namespace initless::cli {

void add_gc(CLI::App& app) {
    auto* cmd =
        app.add_subcommand("gc", "remove sandboxes, cgroups and dirs left by initless processes that died");
    cmd->callback([] {
        for (const auto& line : sandbox::collect_garbage()) std::printf("%s\n", line.c_str());
    });
}

}  // namespace initless::cli
