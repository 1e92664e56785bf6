#include "initless/sandbox/init.h"
#include "initless/cli/verbs.h"

namespace initless::cli {

void add_init(CLI::App& app) {
    auto* cmd = app.add_subcommand("__init", "the sandbox's pid 1 (internal)");
    cmd->group("");
    static int control_fd = -1;
    cmd->add_option("--control", control_fd)->required();
    cmd->callback([] { sandbox::run_init(control_fd); });
}

}  // namespace initless::cli
