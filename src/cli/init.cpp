#include "initless/cli/verbs.h"
#include "initless/sys/error.h"

namespace initless::cli {

void add_init(CLI::App& app) {
    auto* cmd = app.add_subcommand("__init", "not built yet");
    cmd->group("");
    cmd->callback([] { throw Error("'init' is not implemented yet"); });
}

}  // namespace initless::cli
