#include "initless/cli/verbs.h"
#include "initless/sys/error.h"

namespace initless::cli {

void add_snapshot(CLI::App& app) {
    auto* cmd = app.add_subcommand("snapshot", "not built yet");
    cmd->callback([] { throw Error("'snapshot' is not implemented yet"); });
}

}  // namespace initless::cli
