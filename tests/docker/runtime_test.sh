#!/usr/bin/env bash
# The runc command-line contract without the daemons: a bundle over the host's root, driven through
# create/state/start/ps/exec/pause/resume/kill/delete as containerd's shim would, and the error path
# (an error line in --log's JSON, a non-zero exit).
#   tests/docker/runtime_test.sh BUILD_DIR
set -uo pipefail
BUILD_DIR="$(cd "${1:?usage: runtime_test.sh BUILD_DIR}" && pwd)"
T="$(mktemp -d /tmp/ilr.XXXXXX)"
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; }
pass() { echo "ok: $*"; }
rt() { "$BUILD_DIR/initless" --root "$T/root" --log "$T/log.json" --log-format json "$@"; }
cleanup() {
    rt delete --force c1 >/dev/null 2>&1
    # The parent group the runtime made for a container without cgroupsPath (kept while in use).
    rmdir /sys/fs/cgroup/*/initless-oci 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "$T/bundle"
cat >"$T/bundle/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {"args": ["sh", "-c", "echo started \$\$; exec sleep 1000"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"],
              "user": {"uid": 0, "gid": 0}},
  "root": {"path": "/", "readonly": true},
  "hostname": "c1host",
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
             {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]}],
  "hooks": {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > $T/hook.state"]}]},
  "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}],
            "cgroupsPath": "/initless-runtime-test/c1"}
}
JSON

rt create --bundle "$T/bundle" --pid-file "$T/init.pid" c1 >"$T/out" 2>&1 || fail "create: $(cat "$T/out" "$T/log.json")"
pid=$(cat "$T/init.pid" 2>/dev/null)
[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && pass "create leaves init ($pid) running and writes its pid" || fail "no live init in the pid file"
[[ $(rt state c1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') == created ]] && pass "state: created" || fail "state after create: $(rt state c1)"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["status"]=="creating" and s["pid"]>0' "$T/hook.state" 2>/dev/null &&
    pass "createRuntime hook got the state on stdin" || fail "hook state: $(cat "$T/hook.state" 2>&1)"
[[ -d /sys/fs/cgroup/pids/initless-runtime-test/c1 ]] && grep -qx "$pid" /sys/fs/cgroup/pids/initless-runtime-test/c1/cgroup.procs &&
    pass "init is in cgroupsPath" || fail "init not in /sys/fs/cgroup/pids/initless-runtime-test/c1"
rt start c1 || fail "start: $(tail -1 "$T/log.json")"
for _ in $(seq 50); do grep -q started "$T/out" && break; sleep 0.05; done
[[ $(cat "$T/out") == "started 2" ]] && pass "the process runs as pid 2 with create's stdout" || fail "process output: $(cat "$T/out")"
[[ $(rt state c1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') == running ]] && pass "state: running" || fail "state after start"
n=$(rt ps --format json c1 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[[ $n -eq 2 ]] && pass "ps lists init and the process" || fail "ps: $(rt ps --format json c1)"
echo '{"args": ["sh", "-c", "hostname; echo $$"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 0, "gid": 0}}' >"$T/proc.json"
out=$(rt exec --process "$T/proc.json" c1 2>&1 | tr '\n' ' ')
[[ $out == "c1host 3 " || $out == "c1host "* ]] && pass "exec runs in the container's namespaces: $out" || fail "exec: $out"
rt pause c1 && [[ $(rt state c1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') == paused ]] && rt resume c1 &&
    pass "pause/resume" || fail "pause/resume: $(tail -1 "$T/log.json")"
rt delete c1 2>/dev/null && fail "delete of a running container succeeded" || pass "delete of a running container is refused"
rt kill c1 TERM || fail "kill: $(tail -1 "$T/log.json")"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
[[ $(rt state c1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') == stopped ]] && pass "kill TERM stops it" || fail "state after kill: $(rt state c1)"
rt delete c1 && [[ ! -e $T/root/c1 && ! -d /sys/fs/cgroup/pids/initless-runtime-test/c1 ]] && pass "delete removes state and cgroup" || fail "delete"
rmdir /sys/fs/cgroup/*/initless-runtime-test 2>/dev/null
: >"$T/log.json"
rt start nosuch 2>/dev/null && fail "start of a missing container succeeded"
python3 -c 'import json,sys; l=json.loads(open(sys.argv[1]).readlines()[-1]); assert l["level"]=="error" and "does not exist" in l["msg"] and l["time"]' "$T/log.json" &&
    pass "errors go to --log as JSON lines" || fail "log: $(cat "$T/log.json")"
[[ $("$BUILD_DIR/initless" --version | head -1) == "initless version "* ]] && pass "--version" || fail "--version"
"$BUILD_DIR/initless" features | python3 -c 'import json,sys; f=json.load(sys.stdin); assert "createRuntime" in f["hooks"]' && pass "features" || fail "features"
exit $FAILED
