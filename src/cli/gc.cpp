#include "initless/cli/verbs.h"
#include "initless/sys/error.h"

namespace initless::cli {

void add_gc(CLI::App& app) {
    auto* cmd = app.add_subcommand("gc", "not built yet");
    cmd->callback([] { throw Error("'gc' is not implemented yet"); });
}

}  // namespace initless::cli
