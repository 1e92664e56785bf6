#include <cstdio>
#include <exception>
#include <string_view>

#include "initless/cli/verbs.h"

namespace {

// Whether this run is a verb of the OCI runtime (containerd's shim execs one per step of a container)
// or the sandbox's init: the first word that is not a global option, skipping their values.
bool runtime_verb(int argc, char** argv) {
    static constexpr std::string_view kWithValue[] = {"--root",     "--log",  "--log-format",
                                                      "--rootless", "--criu", "--snapshot-store"};
    static constexpr std::string_view kVerbs[] = {"create",   "start",  "state", "kill", "delete",
                                                  "features", "ps",     "list",  "exec", "pause",
                                                  "resume",   "update", "__init"};
    for (int i = 1; i < argc; ++i) {
        std::string_view word = argv[i];
        if (word.empty() || word[0] != '-') {
            for (auto verb : kVerbs)
                if (word == verb) return true;
            return false;
        }
        for (auto option : kWithValue)
            if (word == option) ++i;  // its value ("--root=DIR" carries it within)
    }
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"initless: serverless functions that start from a snapshot of their initialised process"};
    app.require_subcommand(1);
    if (runtime_verb(argc, argv)) {
        // Only the verbs that can run: CLI11 builds every option of every verb before it parses, ~0.2 ms
        // of each exec, and the runtime is exec'd twice per container (create, start) and its init once.
        initless::cli::add_init(app);
        initless::cli::add_oci_runtime(app);
    } else {
        initless::cli::add_run(app);
        initless::cli::add_gc(app);
        initless::cli::add_snapshot(app);
        initless::cli::add_restore(app);
        initless::cli::add_page_server(app);
        initless::cli::add_sim(app);
        initless::cli::add_serve(app);
        initless::cli::add_deploy(app);
        initless::cli::add_invoke(app);
        initless::cli::add_ls(app);
        initless::cli::add_logs(app);
        initless::cli::add_rm(app);
        initless::cli::add_stats(app);
        initless::cli::add_spec(app);
        initless::cli::add_init(app);
        initless::cli::add_oci_runtime(app);
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "initless: error: %s\n", e.what());
        initless::cli::log_runtime_error(e.what());
        return 1;
    }
    return 0;
}
