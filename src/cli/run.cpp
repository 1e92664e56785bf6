#include "initless/cli/verbs.h"
#include "initless/sys/error.h"

namespace initless::cli {

void add_run(CLI::App& app) {
    auto* cmd = app.add_subcommand("run", "not built yet");
    cmd->callback([] { throw Error("'run' is not implemented yet"); });
}

}  // namespace initless::cli
