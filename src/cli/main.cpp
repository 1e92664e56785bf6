#include <cstdio>
#include <exception>

#include "initless/cli/verbs.h"

int main(int argc, char** argv) {
    CLI::App app{"initless: serverless functions that start from a snapshot of their initialised process"};
    app.require_subcommand(1);
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
