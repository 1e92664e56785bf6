#include "initless/cli/verbs.h"
#include "initless/sys/error.h"

namespace initless::cli {

void add_sim(CLI::App& app) {
    auto* cmd = app.add_subcommand("sim", "not built yet");
    cmd->callback([] { throw Error("'sim' is not implemented yet"); });
}

}  // namespace initless::cli
