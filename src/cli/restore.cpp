#include "initless/cli/verbs.h"
#include "initless/sys/error.h"

namespace initless::cli {

void add_restore(CLI::App& app) {
    auto* cmd = app.add_subcommand("restore", "not built yet");
    cmd->callback([] { throw Error("'restore' is not implemented yet"); });
}

}  // namespace initless::cli
