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
    for c in c1 il1 il2 il3 il4 il5 il6 il7; do rt delete --force $c >/dev/null 2>&1; done
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
             {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]},
             {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}],
  "hooks": {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > $T/hook.state"]}]},
  "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}],
            "cgroupsPath": "/initless-runtime-test/c1", "resources": {"memory": {"limit": 67108864}}}
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
# No cgroup namespace (Docker's default on cgroup v1): the cgroup mount shows the container's own group
# as each hierarchy's root, as under runc (a JVM sizes its heap from memory.limit_in_bytes), read-only.
echo '{"args": ["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; wc -l < /sys/fs/cgroup/pids/cgroup.procs; echo 1 > /sys/fs/cgroup/pids/pids.max || echo ro"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 0, "gid": 0}}' >"$T/proc.json"
read -r limit procs refused <<<"$(rt exec --process "$T/proc.json" c1 2>/dev/null | tr '\n' ' ')"
# cgroup.procs: init, sleep, the exec's sh and its wc (the host's root group would list every process).
[[ $limit == 67108864 && $procs -ge 3 && $procs -le 6 && $refused == ro ]] &&
    pass "the cgroup mount shows the container's own groups, read-only" ||
    fail "cgroup mount: limit '$limit', $procs in cgroup.procs, write: '$refused'"
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

# --- init-less containers (CHECKPOINT_MSG) without the daemons: the test is the shim (stdio files) ------
# The app draws a token at init, keeps it in memory and in its RW_DIR, prints the phrase, and on SIGUSR1
# prints the token on stdout and stderr. The root is the host's, read-only; /tmp, /dev/shm and /mnt (the
# RW_DIR) are the container's tmpfs, the app is bound at /srv.
STORE="$T/store"
mkdir -p "$T/ib"
cat >"$T/ib/app.py" <<'PY'
import os, secrets, signal, sys, time
token = secrets.token_hex(8)
open("/mnt/boot", "w").write(token)
def show(*_):
    print("token", token, flush=True)
    print("err", token, file=sys.stderr, flush=True)
signal.signal(signal.SIGUSR1, show)
print("app: ready", flush=True)
while True:
    time.sleep(100)
PY
cat >"$T/ib/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {"args": ["python3", "/srv/app.py"], "cwd": "/",
              "env": ["PATH=/usr/bin:/bin", "CHECKPOINT_MSG=app: ready", "RW_DIRS=/mnt"], "user": {"uid": 0, "gid": 0}},
  "root": {"path": "/", "readonly": true},
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
             {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
             {"destination": "/dev/shm", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
             {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
             {"destination": "/srv", "type": "bind", "source": "$T/ib", "options": ["rbind", "ro"]}],
  "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]}
}
JSON
ilrt() { rt --snapshot-store "$STORE" "$@"; }
images() { find "$STORE" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{64}' 2>/dev/null; }
wait_for() {  # FILE TEXT
    for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    return 1
}
helpers() { pgrep -f -- "--root $T/root" | wc -l; }
poke() {  # ID OUT: the token the container prints on SIGUSR1
    ilrt kill "$1" USR1
    wait_for "$2" '^token ' && sed -n 's/^token //p' "$2" | tail -1
}
ilrt create --bundle "$T/ib" il1 >"$T/il1.out" 2>"$T/il1.err" && ilrt start il1 || fail "create/start il1: $(tail -2 "$T/log.json")"
wait_for "$T/il1.out" "app: ready" && pass "a booted init-less container's stdout is relayed by init" || fail "il1 stdout: $(cat "$T/il1.out")"
for _ in $(seq 100); do [[ -n $(images) ]] && break; sleep 0.1; done
[[ $(images | wc -l) -eq 1 ]] && pass "the phrase made a snapshot in the store" || fail "no snapshot: $(tail -2 "$T/log.json")"
t1=$(poke il1 "$T/il1.out")
[[ -n $t1 ]] && pass "the booted container goes on after its snapshot (token $t1)" || fail "il1 after the snapshot: $(cat "$T/il1.out")"
ilrt create --bundle "$T/ib" il2 >"$T/il2.out" 2>"$T/il2.err" || fail "create il2: $(tail -2 "$T/log.json")"
keeper=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["keeper_pid"])' "$T/root/il2/state.json" 2>/dev/null)
[[ -n $keeper && $keeper != 0 ]] && kill -0 "$keeper" 2>/dev/null && pass "create of a second one leaves a pre-started restore (keeper $keeper)" ||
    fail "no keeper after create il2: $(cat "$T/il2.err") $(tail -2 "$T/log.json")"
ilrt start il2 || fail "start il2: $(tail -2 "$T/log.json")"
t2=$(poke il2 "$T/il2.out")
[[ -n $t1 && $t2 == "$t1" ]] && pass "start restores it: the snapshot's token $t2 on the new container's stdout" ||
    fail "il2 token '$t2' (snapshot's '$t1'): $(cat "$T/il2.out" "$T/il2.err")"
wait_for "$T/il2.err" "^err $t1" && pass "and on its stderr" || fail "il2 stderr: $(cat "$T/il2.err")"
! grep -q "app: ready" "$T/il2.out" && pass "the restored process did not run its init again" || fail "il2 printed its phrase"
echo '{"args": ["cat", "/mnt/boot"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 0, "gid": 0}}' >"$T/cat.json"
[[ $(ilrt exec --process "$T/cat.json" il2 2>&1) == "$t1" ]] && pass "its RW_DIR /mnt holds the snapshot's copy" ||
    fail "il2 /mnt/boot: $(ilrt exec --process "$T/cat.json" il2 2>&1)"
ilrt kill il2 KILL
for _ in $(seq 100); do [[ $(ilrt state il2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') == stopped ]] && break; sleep 0.05; done
ilrt delete il2 && ilrt delete --force il1 && pass "kill and delete of the restored and the booted one" || fail "delete: $(tail -2 "$T/log.json")"
sleep 0.2
[[ $(helpers) -eq 0 ]] && pass "no keeper or watcher left" || fail "helpers left: $(pgrep -af -- "--root $T/root")"
# A corrupted snapshot: the next container boots, says why on its stderr and in the log, and snapshots.
img=$(images | head -1)
printf 'corrupt' | dd of="$img/pages.img" bs=1 seek=100 conv=notrunc 2>/dev/null
ilrt create --bundle "$T/ib" il3 >"$T/il3.out" 2>"$T/il3.err" && ilrt start il3 || fail "create/start il3: $(tail -2 "$T/log.json")"
wait_for "$T/il3.out" "app: ready" && grep -q "not usable.*booting instead" "$T/il3.err" &&
    grep -q '"level":"warning".*not usable' "$T/log.json" && pass "a corrupted snapshot falls back to a boot, said on stderr and in the log" ||
    fail "il3: out '$(cat "$T/il3.out")' err '$(cat "$T/il3.err")'"
for _ in $(seq 100); do [[ -n $(images) ]] && break; sleep 0.1; done
[[ $(images | wc -l) -eq 1 ]] && pass "the fallback boot made a new snapshot" || fail "no new snapshot after the fallback"
# Stage 1 runs in the keeper while create runs the hooks (and after create): a slow prestart hook still
# gets a restore,
# and a failing one fails create with nothing left (the keeper in stage 1 killed, state and cgroup gone).
mkdir -p "$T/ibh"
hooked() {  # HOOK_SCRIPT: ib's config with a prestart hook
    python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["hooks"]={"prestart":[{"path":"/bin/sh","args":["sh","-c",sys.argv[2]]}]}; json.dump(c,open(sys.argv[3],"w"))' \
        "$T/ib/config.json" "$1" "$T/ibh/config.json"
}
hooked "sleep 0.3"
ilrt --debug create --bundle "$T/ibh" il5 >"$T/il5.out" 2>"$T/il5.err" &&
    [[ $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["keeper_pid"])' "$T/root/il5/state.json") != 0 ]] &&
    grep -q 'create il5: .*restore stage 1 begun [0-9.]* ms, .*hooks [0-9.]* ms' "$T/log.json" &&
    pass "a slow prestart hook: stage 1 runs beside it, the container is pre-started for a restore" ||
    fail "il5 with a slow hook: $(cat "$T/il5.err") $(tail -2 "$T/log.json")"
ilrt delete --force il5
hooked "exit 3"
ilrt create --bundle "$T/ibh" il6 >"$T/il6.out" 2>"$T/il6.err" && fail "create with a failing prestart hook succeeded" ||
    { sleep 0.2; [[ $(helpers) -eq 0 && ! -e $T/root/il6 && ! -d /sys/fs/cgroup/pids/initless-oci/il6 ]] &&
          pass "a failing prestart hook fails create during stage 1, and leaves nothing" ||
          fail "after il6: $(pgrep -af -- "--root $T/root") $(ls "$T/root")"; }
# Stage 1 failing (after the restorer is seized) once create has returned: start boots the container and
# says why.
INITLESS_TEST_FAULT=restore:prepare ilrt create --bundle "$T/ib" il7 >"$T/il7.out" 2>"$T/il7.err" && ilrt start il7 ||
    fail "create/start il7: $(tail -2 "$T/log.json")"
wait_for "$T/il7.out" "app: ready" && grep -q "restore stage 1: injected fault.*booting instead" "$T/il7.err" &&
    pass "a restore failing in stage 1 boots the container at start, which says why" ||
    fail "il7: out '$(cat "$T/il7.out")' err '$(cat "$T/il7.err")'"
for _ in $(seq 100); do [[ -n $(images) ]] && break; sleep 0.1; done  # its boot's new snapshot
ilrt delete --force il7
# Stage 2 failing (a fault injected into the restore's tables at create): start boots it instead, and it runs.
INITLESS_TEST_FAULT=restore:stub-op ilrt create --bundle "$T/ib" il4 >"$T/il4.out" 2>"$T/il4.err" && ilrt start il4 ||
    fail "create/start il4: $(tail -2 "$T/log.json")"
wait_for "$T/il4.out" "app: ready" && grep -q "restore stage 2.*booting instead" "$T/il4.err" &&
    [[ $(ilrt state il4 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') == running && -n $(poke il4 "$T/il4.out") ]] &&
    pass "a restore failing in stage 2 boots the container instead, which runs" ||
    fail "il4: out '$(cat "$T/il4.out")' err '$(cat "$T/il4.err")' state $(ilrt state il4 2>&1 | tr -d '\n ')"
ilrt delete --force il4
ilrt delete --force il3
# A process that exits while a child it left keeps writing to the relayed stdout: the container stops
# (init drained the relay before it killed the rest, so it read for as long as the child wrote).
mkdir -p "$T/isp"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["process"]["args"]=["sh","-c","echo up; yes spam & sleep 0.3; exit 7"]; c["process"]["env"]=["PATH=/usr/bin:/bin","CHECKPOINT_MSG=never printed","RW_DIRS=/mnt"]; json.dump(c,open(sys.argv[2],"w"))' \
    "$T/ib/config.json" "$T/isp/config.json"
# Its stdout is read slowly (as a shim's may be), so the child fills the relay faster than init empties it.
slow_reader() { python3 -c 'import sys, time
out = open(sys.argv[1], "wb")
while True:
    d = sys.stdin.buffer.read1(4096)
    if not d: break
    out.write(d); out.flush(); time.sleep(0.001)' "$1"; }
ilrt create --bundle "$T/isp" sp1 > >(slow_reader "$T/sp1.out") 2>"$T/sp1.err" && ilrt start sp1 || fail "create/start sp1: $(tail -2 "$T/log.json")"
for _ in $(seq 100); do [[ $(ilrt state sp1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') == stopped ]] && break; sleep 0.05; done
sleep 0.3
relayed=$(wc -c <"$T/sp1.out")
sleep 0.5
[[ $(ilrt state sp1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') == stopped ]] && grep -q '^up$' "$T/sp1.out" &&
    [[ $(wc -c <"$T/sp1.out") == "$relayed" ]] &&
    pass "a process that exits while its child writes on: the container stops, its relay too ($relayed bytes)" ||
    fail "sp1 $(ilrt state sp1 2>&1 | tr -d '\n ') after its process exited; relayed $relayed bytes, then $(wc -c <"$T/sp1.out")"
ilrt delete --force sp1
sleep 0.2
[[ $(helpers) -eq 0 && -z $(find "$STORE" -name '*.tmp.*' -o -name '*.discarded.*') ]] && pass "nothing left (helpers, staged images)" ||
    fail "left: $(pgrep -af -- "--root $T/root") $(ls "$STORE")"
rmdir /sys/fs/cgroup/*/initless-runtime-test 2>/dev/null
exit $FAILED
