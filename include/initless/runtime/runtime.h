// An OCI runtime with runc's command-line contract, as containerd's runc shim (v2) drives it:
// create, start, state, kill, delete, exec, ps, pause, resume, update, features. Each verb is a
// short-lived `initless` process; a container lives between them as
//   <root>/<id>/state.json   id, bundle, init's pid and start time, the started process's pid,
//                            cgroup path, created time (rewritten atomically by each verb)
//   <root>/<id>/config.json  the bundle's config.json as read at create (hooks run from it later)
//   <root>/<id>/sandbox/     the sandbox's instance dir; init.sock in it is init's control socket
// and its init (the sandbox's detached init, init.h): `create` forks it, writes its pid to the pid
// file and exits, so init is reparented to the shim (a child subreaper) which reaps it; `start`
// asks init over init.sock to start the spec's process, and init exits with that process's status.
// Status is derived, never stored: stopped once init is gone (or a zombie), paused when the
// freezer says FROZEN, running once started, else created.
// Hooks run as the spec says: createRuntime and prestart in create (runtime namespace, after the
// namespaces and root are made), createContainer in create inside the container's mount namespace,
// startContainer likewise in start before the process starts, poststart after it, poststop in
// delete; each gets the state JSON on stdin and is killed at its timeout.
// Init-less containers: with CHECKPOINT_MSG in the process env, `create` computes the container's
// snapshot key (src/runtime/initless_container.h) and looks in the snapshot store. Without a usable
// snapshot the container boots and `start` leaves a watcher that checkpoints it when init, which then
// relays the process's stdout, sees the phrase. With one, `create` also starts the restore's stage 1 in
// a keeper process, which goes on while create runs the hooks and after it returns (the container is
// pre-started once it is done), and `start` asks the keeper for stage 2, waiting for stage 1 if need be;
// `create` loads the snapshot on a second thread while init builds the sandbox. The restored
// process is init's child like a started one. A snapshot that fails to load or restore is discarded and
// the container boots instead, saying so on its stderr and in --log.
// Not applied yet: process.terminal and --console-socket (refused), systemd cgroups (refused), joining
// pid/mount/user namespaces by path.
// Single-threaded callers; concurrent verbs on one container are not serialised (the shim does not
// issue them).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace initless::runtime {

// A signal by name ("TERM", "SIGTERM", "sigkill") or number; throws for an unknown one.
int parse_signal(const std::string& text);

struct CreateOptions {
    std::filesystem::path bundle;
    std::optional<std::filesystem::path> pid_file;
    std::optional<std::filesystem::path> console_socket;
};

struct ExecOptions {
    std::filesystem::path process_json;  // an OCI process object
    std::optional<std::filesystem::path> pid_file;
    bool detach = false;
};

// One line of the runtime's --log, as containerd's shim reads it: JSON {level, msg, time}, or runc's
// text format (time="..." level=... msg="...").
std::string log_line(const std::string& level, const std::string& message, bool json);

struct RuntimeOptions {
    std::filesystem::path snapshot_store;  // init-less containers' snapshots; empty: default_store()
    std::filesystem::path log;             // runc's --log: warnings and notes go there too ("": none)
    bool log_json = false;                 // --log-format json
    bool debug = false;                    // --debug: create and start log their steps' times (level debug)
};

class Runtime {
  public:
    // `root`: where containers' state lives (runc's --root); made if missing.
    explicit Runtime(std::filesystem::path root, RuntimeOptions options = {});

    void create(const std::string& id, const CreateOptions& options);
    void start(const std::string& id);
    nlohmann::json state(const std::string& id) const;  // the OCI state JSON
    void kill(const std::string& id, int signal, bool all);
    void remove(const std::string& id, bool force);  // `delete`
    std::vector<pid_t> pids(const std::string& id) const;
    // The exit status of the process when not detached; 0 once it is started when detached.
    int exec(const std::string& id, const ExecOptions& options);
    void pause(const std::string& id);
    void resume(const std::string& id);
    void update(const std::string& id, const nlohmann::json& resources);
    std::vector<nlohmann::json> list() const;

    static nlohmann::json features();

  private:
    std::filesystem::path dir(const std::string& id) const;
    std::filesystem::path root_;
    RuntimeOptions options_;
};

}  // namespace initless::runtime
