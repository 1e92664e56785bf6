#!/usr/bin/env bash
# initless as an OCI runtime under the real daemons (issue 12): starts a containerd
# and a dockerd of its own (own roots, sockets, pid files; no systemd), registers build/initless as
# the runtime "initless", builds a Flask image from the host's Debian packages (no registry), and
# checks docker run/exec/stop/kill/rm and ctr run --runc-binary, for plain containers and init-less
# ones (CHECKPOINT_MSG: snapshot, restore) under both. Stops its daemons by pid afterwards
# and unmounts what they left. A check that cannot run here fails with the reason.
#   tests/docker/docker_test.sh BUILD_DIR
set -uo pipefail

BUILD_DIR="$(cd "${1:?usage: docker_test.sh BUILD_DIR}" && pwd)"
INITLESS="$BUILD_DIR/initless"
DOCKER=/usr/bin/docker  # Debian's CLI, matching its daemon (a newer one may shadow it on PATH)
T="$(mktemp -d /tmp/ild.XXXXXX)"  # short: unix socket paths live under it
FAILED=0
PORT=$((20000 + RANDOM % 20000))

fail() { echo "FAIL: $*"; FAILED=1; }
pass() { echo "ok: $*"; }
need() { command -v "$1" >/dev/null || { echo "FAIL: $1 is missing (scripts/setup.sh installs docker.io, containerd, runc)"; exit 1; }; }
for b in dockerd containerd ctr containerd-shim-runc-v2 runc iptables curl; do need "$b"; done
[[ -x $DOCKER ]] || { echo "FAIL: $DOCKER is missing (docker.io)"; exit 1; }
[[ -x $INITLESS ]] || { echo "FAIL: $INITLESS is not built"; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "FAIL: needs root (daemons, namespaces)"; exit 1; }

# A bridge of the test's own (dockerd --bridge), not docker0: another dockerd on this machine (a system one,
# another worktree's test or bench) makes and removes docker0 as it starts and stops.
BRIDGE="ild$$"
# What the daemons may leave on the host, as it was before: cgroups under the parents containers get
# (Docker's /docker, containerd's namespace initless-test, initless's default /initless-oci) and mounts
# outside $T (libnetwork's /run/docker/netns/*). The cleanup removes what appeared since, then fails the
# test if anything of it, or any process started under $T, is still there.
CG_PARENTS="docker initless-test initless-oci"
host_cgroups() { for p in $CG_PARENTS; do find /sys/fs/cgroup/*/"$p" -depth -type d 2>/dev/null; done; }
host_mounts() { awk '$2 ~ "^/(var/)?run/docker/" {print $2}' /proc/self/mounts; }
# initless-test is this test's own containerd namespace: whatever is under it is ours, even from an
# earlier run that was killed before its cleanup (its groups would otherwise count as the host's, and
# stay for good).
host_cgroups | grep -v '/initless-test' | sort >"/tmp/ild-cg-before.$$"
host_mounts | sort >"/tmp/ild-mnt-before.$$"
# dockerd's firewall rules, chains and policies for the bridge, which it never removes (the cleanup puts
# the tables back with scripts/host-iptables.sh).
# One dockerd of ours at a time (this test, bench/docker): the restore undoes whatever changed meanwhile.
exec 9>/run/lock/initless-dockerd.lock
flock -w 900 9 || { echo "FAIL: another dockerd of ours (tests/docker or bench/docker) held the lock for 15 min"; exit 1; }
IPT="$(dirname "${BASH_SOURCE[0]}")/../../scripts/host-iptables.sh"
"$IPT" save "/tmp/ild-ipt-before.$$" || { echo "FAIL: cannot read the host's iptables"; exit 1; }

cleanup() {
    local rc=$?
    set +e
    [[ -n ${WATCHDOG:-} ]] && kill "$WATCHDOG" 2>/dev/null
    if [[ -S $T/docker.sock ]]; then
        ids=$(dk ps -aq 2>/dev/null)
        [[ -n $ids ]] && dk rm -f $ids >/dev/null 2>&1
    fi
    for c in $(ct containers ls -q 2>/dev/null); do ct task kill -s 9 "$c" >/dev/null 2>&1; ct task rm -f "$c" >/dev/null 2>&1; ct containers rm "$c" >/dev/null 2>&1; done
    for p in docker containerd; do
        if [[ -f $T/$p.pid ]]; then
            pid=$(cat "$T/$p.pid")
            kill "$pid" 2>/dev/null
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null
        fi
    done
    # Shims and containers the daemons left (their command lines name $T), by pid.
    for pid in $(pgrep -f -- "$T/"); do kill -9 "$pid" 2>/dev/null; done
    # What the daemons leave mounted (netns files, shm, overlays), deepest first.
    awk -v t="$T" '$2 ~ "^"t {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
    host_mounts | sort | comm -13 "/tmp/ild-mnt-before.$$" - | sort -r | while read -r m; do umount -l "$m"; done
    # Cgroups made since the start (containers', and the parents runtimes make and never remove), deepest
    # first; each is empty once the processes above are gone.
    host_cgroups | sort | comm -13 "/tmp/ild-cg-before.$$" - | sort -r | while read -r d; do
        for _ in $(seq 20); do rmdir "$d" 2>/dev/null && break; [[ -d $d ]] || break; sleep 0.1; done
    done
    ip link del "$BRIDGE" 2>/dev/null
    "$IPT" restore "/tmp/ild-ipt-before.$$" >/dev/null
    local left=""
    l=$(host_cgroups | sort | comm -13 "/tmp/ild-cg-before.$$" -); [[ -n $l ]] && left+=$'\ncgroups: '"$(echo $l)"
    l=$(host_mounts | sort | comm -13 "/tmp/ild-mnt-before.$$" -); [[ -n $l ]] && left+=$'\nmounts: '"$(echo $l)"
    l=$(awk -v t="$T" '$2 ~ "^"t {print $2}' /proc/self/mounts); [[ -n $l ]] && left+=$'\nmounts: '"$(echo $l)"
    l=$(pgrep -f -- "$T/"); [[ -n $l ]] && left+=$'\nprocesses: '"$(echo $l)"
    l=$("$IPT" diff "/tmp/ild-ipt-before.$$"); [[ -n $l ]] && left+=$'\niptables: '"$l"
    rm -rf "$T" "/tmp/ild-cg-before.$$" "/tmp/ild-mnt-before.$$" "/tmp/ild-ipt-before.$$"*
    if [[ -n $left ]]; then
        echo "FAIL: left on the host after the daemons stopped:$left"
        exit 1
    fi
    echo "ok: nothing left on the host (cgroups, mounts, processes, iptables)"
    [[ $FAILED -ne 0 ]] && rc=1
    exit $rc
}
trap cleanup EXIT
# ctest kills the test at its TIMEOUT (600 s) without a chance to clean up, leaving the daemons, shims,
# mounts, cgroups and the bridge: a watchdog ends it first, through the cleanup above (TERM -> exit ->
# the EXIT trap, once the command running then returns).
trap 'echo "FAIL: the test ran past its 540 s deadline"; exit 1' TERM
( trap 'kill $nap 2>/dev/null; exit 0' TERM; sleep 540 & nap=$!; wait $nap && kill -TERM $$ 2>/dev/null ) >/dev/null 2>&1 &
WATCHDOG=$!

dk() { "$DOCKER" -H "unix://$T/docker.sock" "$@"; }
ct() { ctr --address "$T/containerd.sock" -n initless-test "$@"; }

# --- daemons -----------------------------------------------------------------------------------
cat >"$T/containerd.toml" <<TOML
version = 2
root = "$T/containerd/root"
state = "$T/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$T/containerd.sock"
[ttrpc]
  address = "$T/containerd.sock.ttrpc"
[debug]
  address = ""
TOML
containerd --config "$T/containerd.toml" >"$T/containerd.log" 2>&1 9>&- &  # (9: the lock, not for the daemons to keep)
echo $! >"$T/containerd.pid"
for _ in $(seq 100); do [[ -S $T/containerd.sock ]] && break; sleep 0.1; done
[[ -S $T/containerd.sock ]] || { echo "FAIL: containerd did not start:"; tail -20 "$T/containerd.log"; exit 1; }

# The init-less containers' snapshots go to the test's own store (runtimeArgs: a global flag).
STORE="$T/store"
cat >"$T/daemon.json" <<JSON
{ "runtimes": { "initless": { "path": "$INITLESS", "runtimeArgs": ["--snapshot-store", "$STORE"] } } }
JSON
ip link add name "$BRIDGE" type bridge &&
    ip addr add "10.$((200 + RANDOM % 50)).$((RANDOM % 250)).1/24" dev "$BRIDGE" && ip link set "$BRIDGE" up ||
    { echo "FAIL: cannot make the test's bridge $BRIDGE"; exit 1; }
dockerd --config-file "$T/daemon.json" --containerd "$T/containerd.sock" --data-root "$T/docker" \
    --exec-root "$T/dx" --pidfile "$T/docker.pid.daemon" -H "unix://$T/docker.sock" --bridge "$BRIDGE" \
    >"$T/dockerd.log" 2>&1 9>&- &
echo $! >"$T/docker.pid"
for _ in $(seq 300); do dk version >/dev/null 2>&1 && break; sleep 0.1; done
dk version >/dev/null 2>&1 || { echo "FAIL: dockerd did not start:"; tail -30 "$T/dockerd.log"; exit 1; }
# (Not `| grep -q`: under pipefail grep's early exit fails the pipeline when docker info gets SIGPIPE.)
[[ $(dk info 2>/dev/null) == *initless* ]] || fail "dockerd does not list the initless runtime"

# --- image: a Flask hello from the host's Debian packages --------------------------------------
pkgs=$(apt-cache depends --recurse --installed --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances python3-flask dash coreutils 2>/dev/null | grep -E '^[a-z0-9]' | sort -u)
: >"$T/files"
for p in $pkgs; do dpkg -L "$p" 2>/dev/null; done | sort -u | while read -r f; do
    [[ -e $f || -L $f ]] || continue
    if [[ -d $f && ! -L $f ]]; then readlink -f "$f"; else echo "$(readlink -f "$(dirname "$f")")/$(basename "$f")"; fi
done | sed 's|^/*||' | grep -vxE '|\.|bin|lib|lib64|sbin|usr' | sort -u >"$T/files"
mkdir -p "$T/extra/app" "$T/extra/tmp" "$T/extra/etc"
chmod 1777 "$T/extra/tmp"
cat >"$T/extra/app/app.py" <<'PY'
import os
from flask import Flask
app = Flask("hello")
@app.route("/")
def hello():
    return "hello from initless pid %d\n" % os.getpid()
print("ready", flush=True)
app.run(host="0.0.0.0", port=8080)
PY
# The init-less app: a token drawn at init (only a snapshot of this process holds it), a counter in
# memory, its RW_DIR /data, and the phrase printed once it listens.
cat >"$T/extra/app/tokenapp.py" <<'PY'
import os, secrets
from flask import Flask
from werkzeug.serving import make_server
token = secrets.token_hex(8)
os.makedirs("/data", exist_ok=True)
with open("/data/boot.txt", "w") as f:
    f.write(token)
journal = open("/data/journal", "a")  # open for writing at the snapshot: in the RW_DIR, so allowed
app = Flask("token")
@app.route("/")
def hello():
    return "token %s\n" % token
@app.route("/write/<value>")
def write(value):
    with open("/data/mark", "w") as f:
        f.write(value)
    return "ok\n"
hits = 0
@app.route("/count")
def count():
    global hits
    hits += 1
    return "%d\n" % hits
@app.route("/read")
def read():
    return open("/data/mark").read() if os.path.exists("/data/mark") else "none"
server = make_server("0.0.0.0", 8080, app)
print("token-app: ready", flush=True)
server.serve_forever()
PY
# An init-less app that holds a file open for writing in its writable layer, outside RW_DIRS, when
# ready: a restored container would not have that file (its writable layer is fresh), so no snapshot.
cat >"$T/extra/app/heldapp.py" <<'PY'
import time
held = open("/app/held.log", "a")
print("held-app: ready", flush=True)
while True:
    time.sleep(100)
PY
mkdir -p "$T/extra/data"
echo "from the image" >"$T/extra/data/image.txt"
echo "root:x:0:0:root:/root:/bin/sh" >"$T/extra/etc/passwd"
tar -C / -cf "$T/rootfs.tar" --no-recursion usr bin lib lib64 sbin -T "$T/files" 2>"$T/tar.err"
tar -C "$T/extra" -rf "$T/rootfs.tar" app tmp etc/passwd data
dk import --change 'CMD ["python3", "/app/app.py"]' "$T/rootfs.tar" initless-flask:test >/dev/null ||
    { echo "FAIL: docker import"; exit 1; }
dk import --change 'CMD ["python3", "/app/tokenapp.py"]' --change 'ENV CHECKPOINT_MSG="token-app: ready"' \
    --change 'ENV RW_DIRS=/data' "$T/rootfs.tar" initless-token:test >/dev/null || { echo "FAIL: docker import"; exit 1; }
dk import --change 'CMD ["python3", "/app/tokenapp.py"]' "$T/rootfs.tar" initless-token-plain:test >/dev/null ||
    { echo "FAIL: docker import"; exit 1; }
dk import --change 'CMD ["python3", "/app/heldapp.py"]' --change 'ENV CHECKPOINT_MSG="held-app: ready"' \
    --change 'ENV RW_DIRS=/data' "$T/rootfs.tar" initless-held:test >/dev/null || { echo "FAIL: docker import"; exit 1; }

wait_http() {  # URL SECONDS
    for _ in $(seq $(($2 * 20))); do curl -fsS --max-time 1 "$1" 2>/dev/null && return 0; sleep 0.05; done
    return 1
}

# --- docker run -p through the bridge ----------------------------------------------------------
start_ns=$(date +%s%N)
if dk run -d --runtime initless --name web -p "127.0.0.1:$PORT:8080" initless-flask:test >"$T/web.id" 2>"$T/run.err"; then
    body=$(wait_http "http://127.0.0.1:$PORT/" 20)
    end_ns=$(date +%s%N)
    if [[ $body == "hello from initless pid"* ]]; then
        pass "docker run --runtime initless -p answers on the published port ($(((end_ns - start_ns) / 1000000)) ms to first response): $body"
    else
        fail "no answer on published port $PORT; container log: $(dk logs web 2>&1 | tail -5); dockerd: $(tail -5 "$T/dockerd.log")"
    fi
    ip=$(dk inspect -f '{{.NetworkSettings.IPAddress}}' web)
    [[ -n $ip ]] && [[ $(curl -fsS --max-time 2 "http://$ip:8080/") == hello* ]] && pass "answers at its bridge address $ip" ||
        fail "no answer at bridge address '$ip'"
    out=$(dk exec web python3 -c 'import os, socket; print(socket.gethostname(), os.getpid())' 2>&1)
    [[ $out == "$(cut -c1-12 "$T/web.id") "* ]] && pass "docker exec runs in the container: $out" || fail "docker exec: $out"
    [[ $(dk top web 2>/dev/null | wc -l) -ge 2 ]] && pass "docker top lists processes" || fail "docker top: $(dk top web 2>&1)"
    dk pause web >/dev/null 2>&1 && [[ $(dk inspect -f '{{.State.Status}}' web) == paused ]] &&
        dk unpause web >/dev/null 2>&1 && wait_http "http://127.0.0.1:$PORT/" 5 >/dev/null &&
        pass "docker pause/unpause" || fail "docker pause/unpause"
    t0=$(date +%s)
    dk stop web >/dev/null 2>"$T/stop.err" || fail "docker stop: $(cat "$T/stop.err")"
    [[ $(dk inspect -f '{{.State.Status}}' web) == exited ]] && pass "docker stop ($(($(date +%s) - t0)) s, exit code $(dk inspect -f '{{.State.ExitCode}}' web))" ||
        fail "after docker stop the container is $(dk inspect -f '{{.State.Status}}' web)"
    dk rm web >/dev/null 2>&1 && ! dk inspect web >/dev/null 2>&1 && pass "docker rm" || fail "docker rm"
else
    fail "docker run --runtime initless: $(cat "$T/run.err")"
fi

# The same with runc, for comparison (printed, not asserted: numbers come from bench/).
rport=$((PORT + 2))
start_ns=$(date +%s%N)
if dk run -d --runtime runc --name web-runc -p "127.0.0.1:$rport:8080" initless-flask:test >/dev/null 2>&1 &&
    wait_http "http://127.0.0.1:$rport/" 20 >/dev/null; then
    echo "info: runc: docker run to first response $((($(date +%s%N) - start_ns) / 1000000)) ms"
fi
dk rm -f web-runc >/dev/null 2>&1

if dk run -d --runtime initless --name victim initless-flask:test >/dev/null 2>"$T/run2.err"; then
    sleep 1
    dk kill victim >/dev/null 2>&1
    for _ in $(seq 50); do [[ $(dk inspect -f '{{.State.Status}}' victim) == exited ]] && break; sleep 0.1; done
    code=$(dk inspect -f '{{.State.ExitCode}}' victim)
    [[ $(dk inspect -f '{{.State.Status}}' victim) == exited && $code == 137 ]] && pass "docker kill (exit code 137)" ||
        fail "docker kill: status $(dk inspect -f '{{.State.Status}}' victim) code $code"
    dk rm victim >/dev/null 2>&1 || fail "docker rm after kill"
else
    fail "docker run (kill test): $(cat "$T/run2.err")"
fi

out=$(dk run --rm --runtime initless initless-flask:test sh -c 'echo out-line; exit 7' 2>&1)
rc=$?
[[ $out == out-line && $rc -eq 7 ]] && pass "docker run --rm: stdout and exit status 7 pass through" || fail "docker run --rm: rc $rc, output '$out'"

if dk run -d --runtime initless --name forced initless-flask:test >/dev/null 2>&1; then
    dk rm -f forced >/dev/null 2>&1 && ! dk inspect forced >/dev/null 2>&1 && pass "docker rm -f of a running container" || fail "docker rm -f"
fi

# --- isolation Docker asks for in config.json ---------------------------------------------------
# The devices cgroup: Docker keeps CAP_MKNOD, so a node of a host block device can be made; opening it
# must fail (EPERM from the devices controller), while the devices Docker allows work. The device is one
# the host itself can open (on this machine even host root cannot open the disk, vda, so it would prove
# nothing): the first of /sys/block, disks first, that opens here.
disk=""
for name in $(ls /sys/block | grep -vE '^(loop|ram|zram|nbd|sr)') $(ls /sys/block | grep -E '^(loop|ram|zram|nbd|sr)'); do
    [[ -b /dev/$name ]] && python3 -c "import os; os.close(os.open('/dev/$name', os.O_RDONLY))" 2>/dev/null &&
        { disk="$(stat -c '%t %T' "/dev/$name")"; disk="$((16#${disk% *})) $((16#${disk#* }))"; break; }
done
if [[ -n $disk ]]; then
    read -r dmaj dmin <<<"$disk"
    out=$(dk run --rm --runtime initless initless-flask:test python3 -c "
import os, errno
os.mknod('/tmp/disk', 0o600 | 0o060000, os.makedev($dmaj, $dmin))
print('made')
try:
    os.close(os.open('/tmp/disk', os.O_RDONLY)); print('opened')
except OSError as e:
    print(errno.errorcode[e.errno])
with open('/dev/null', 'w') as f: f.write('x')
print(len(open('/dev/zero', 'rb').read(4)), len(open('/dev/urandom', 'rb').read(4)))
" 2>&1)
    [[ $out == $'made\nEPERM\n4 4' ]] && pass "devices cgroup: a mknod'ed node of a host block device ($dmaj:$dmin) cannot be opened (EPERM); /dev/null, zero, urandom work" ||
        fail "devices cgroup: '$out'"
    # The rule list is what decides: allowing that node to be read (--device-cgroup-rule) lets it open.
    out=$(dk run --rm --runtime initless --device-cgroup-rule "b $dmaj:$dmin r" initless-flask:test python3 -c "
import os
os.mknod('/tmp/disk', 0o600 | 0o060000, os.makedev($dmaj, $dmin))
os.close(os.open('/tmp/disk', os.O_RDONLY)); print('opened')" 2>&1)
    [[ $out == opened ]] && pass "devices cgroup: with --device-cgroup-rule 'b $dmaj:$dmin r' the same node opens" ||
        fail "devices cgroup with an allow rule: '$out'"
else
    fail "no block device in /proc/partitions that the host can open, for the devices check"
fi
# Docker's default seccomp profile (linux.seccomp): unshare(CLONE_NEWUSER) and keyctl are denied with
# EPERM. The same calls under --security-opt seccomp=unconfined succeed, which shows the check bites.
probe='import ctypes
libc = ctypes.CDLL(None, use_errno=True)
r = libc.keyctl(0, -3, 0) if hasattr(libc, "keyctl") else libc.syscall(250, 0, -3, 0)
print("keyctl", r, ctypes.get_errno())
r = libc.unshare(0x10000000)
print("unshare", r, ctypes.get_errno())'
out=$(dk run --rm --runtime initless initless-flask:test python3 -c "$probe" 2>&1)
[[ $out == $'keyctl -1 1\nunshare -1 1' ]] && pass "seccomp: Docker's default profile denies keyctl and unshare(CLONE_NEWUSER) with EPERM" ||
    fail "seccomp under the default profile: '$out'"
out=$(dk run --rm --runtime initless --security-opt seccomp=unconfined initless-flask:test python3 -c "$probe" 2>&1)
[[ $out == *"unshare 0 "* ]] && pass "seccomp=unconfined: the same unshare succeeds (the check above can fail)" ||
    fail "seccomp=unconfined: '$out'"
# What the sandbox cannot apply is refused with the reason, not ignored.
out=$(dk run --rm --runtime initless --cpuset-cpus 0 initless-flask:test true 2>&1)
[[ $out == *"linux.resources.cpu.cpus is set"* ]] && pass "a setting initless does not apply (--cpuset-cpus) is refused with the reason" ||
    fail "--cpuset-cpus: '$out'"

# --- ctr run --runc-binary ---------------------------------------------------------------------
if dk save initless-flask:test | ct images import - >/dev/null 2>"$T/ctr-import.err"; then
    cport=$((PORT + 1))
    if ct run -d --runc-binary "$INITLESS" --net-host docker.io/library/initless-flask:test ctr1 \
        python3 -c "import sys; sys.argv=['app', '$cport']; exec(open('/app/app.py').read().replace('8080', '$cport'))" \
        >/dev/null 2>"$T/ctr-run.err"; then
        body=$(wait_http "http://127.0.0.1:$cport/" 20)
        [[ $body == hello* ]] && pass "ctr run --runc-binary answers: $body" || fail "ctr run: no answer on $cport"
        out=$(ct task exec --exec-id e1 ctr1 python3 -c 'print("exec-ok")' 2>&1)
        [[ $out == exec-ok ]] && pass "ctr task exec" || fail "ctr task exec: $out"
        [[ $(ct task ps ctr1 | wc -l) -ge 2 ]] && pass "ctr task ps" || fail "ctr task ps"
        ct task kill -s SIGKILL ctr1 >/dev/null 2>&1
        for _ in $(seq 50); do ct task ls | grep 'ctr1.*STOPPED' >/dev/null && break; sleep 0.1; done
        ct task ls | grep 'ctr1.*STOPPED' >/dev/null && pass "ctr task kill stops it" || fail "ctr task kill: $(ct task ls)"
        ct task rm ctr1 >/dev/null 2>&1 && ct containers rm ctr1 >/dev/null 2>&1 && pass "ctr task rm, container rm" ||
            fail "ctr rm"
    else
        fail "ctr run --runc-binary: $(cat "$T/ctr-run.err")"
    fi
else
    fail "ctr images import: $(cat "$T/ctr-import.err")"
fi

# --- init-less containers (CHECKPOINT_MSG) -------------------------------------------------------
images() {  # [STORE]: the published images of a store (default: Docker's, $STORE)
    find "${1:-$STORE}" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{64}' 2>/dev/null
}
wait_images() {  # COUNT SECONDS [STORE]: until the store holds COUNT published images
    for _ in $(seq $(($2 * 10))); do [[ $(images "${3:-$STORE}" | wc -l) -ge $1 ]] && return 0; sleep 0.1; done
    return 1
}
keylog() {  # NAME: what the runtime logged of the container's snapshot key (its log.json, in its bundle)
    local id
    id=$(dk inspect -f '{{.Id}}' "$1" 2>/dev/null)
    [[ -n $id ]] && grep -h 'init-less' $(find "$T/containerd/state" -path "*$id*" -name log.json 2>/dev/null) 2>/dev/null | tr '\n' ' '
}
token_of() { curl -fsS --max-time 2 "$1" 2>/dev/null | sed -n 's/^token //p'; }
ip_of() { dk inspect -f '{{.NetworkSettings.IPAddress}}' "$1"; }
P1=$((PORT + 10)) P2=$((PORT + 11)) P3=$((PORT + 12)) t1=""
if dk run -d --runtime initless --name il1 -p "127.0.0.1:$P1:8080" initless-token:test >/dev/null 2>"$T/il1.err"; then
    wait_http "http://127.0.0.1:$P1/" 20 >/dev/null
    t1=$(token_of "http://127.0.0.1:$P1/")
    if wait_images 1 20; then
        pass "first docker run of an image with CHECKPOINT_MSG boots (token $t1) and is snapshotted at its phrase: $(images | wc -l) image"
    else
        fail "no snapshot in $STORE after the phrase; log.json: $(cat "$T"/dx/containerd/daemon/io.containerd.runtime.v2.task/moby/*/log.json 2>/dev/null | tail -3)"
    fi
    [[ -n $t1 && $(token_of "http://127.0.0.1:$P1/") == "$t1" ]] && pass "the snapshotted container goes on serving" ||
        fail "the first container after its snapshot: '$(token_of "http://127.0.0.1:$P1/")'"
    [[ $(dk logs il1 2>&1) == *"token-app: ready"* ]] && pass "docker logs of the booted one holds its stdout (relayed)" ||
        fail "docker logs il1: $(dk logs il1 2>&1 | tail -3)"
else
    fail "docker run il1: $(cat "$T/il1.err")"
fi

start_ns=$(date +%s%N)
if dk run -d --runtime initless --name il2 -p "127.0.0.1:$P2:8080" initless-token:test >/dev/null 2>"$T/il2.err"; then
    wait_http "http://127.0.0.1:$P2/" 20 >/dev/null
    ms=$((($(date +%s%N) - start_ns) / 1000000))
    t2=$(token_of "http://127.0.0.1:$P2/")
    [[ -n $t1 && $t2 == "$t1" ]] && pass "a second docker run restores: it answers on its published port with the snapshot's token $t2 ($ms ms to first response)" ||
        fail "second docker run answered token '$t2', the snapshot's is '$t1'; runtime: $(dk logs il2 2>&1 | grep initless); il1: $(keylog il1); il2: $(keylog il2)"
    ip=$(ip_of il2)
    [[ -n $ip && $(token_of "http://$ip:8080/") == "$t1" ]] && pass "the restored container answers at its bridge address $ip" ||
        fail "restored container at bridge address '$ip'"
    [[ $(dk logs il2 2>&1) == *'"GET / HTTP/1.1" 200'* ]] && pass "docker logs of the restored container shows what it writes since (its stderr)" ||
        fail "docker logs il2: '$(dk logs il2 2>&1 | tail -3)'"
    out=$(dk exec il2 cat /data/boot.txt 2>&1)
    [[ $out == "$t1" ]] && pass "docker exec in the restored container; its RW_DIR /data is the snapshot's copy" || fail "docker exec il2: '$out'"
else
    fail "docker run il2: $(cat "$T/il2.err")"
fi

if dk create --runtime initless --name il3 -p "127.0.0.1:$P3:8080" initless-token:test >/dev/null 2>"$T/il3.err"; then
    start_ns=$(date +%s%N)
    dk start il3 >/dev/null 2>>"$T/il3.err"
    wait_http "http://127.0.0.1:$P3/" 20 >/dev/null
    ms=$((($(date +%s%N) - start_ns) / 1000000))
    t3=$(token_of "http://127.0.0.1:$P3/")
    # (dockerd calls the runtime's create only at docker start: both stages run then. runtime_test.sh checks
    # that the runtime's create leaves a pre-started container.)
    [[ -n $t1 && $t3 == "$t1" ]] && pass "docker create then docker start restores ($ms ms to first response)" ||
        fail "docker create + start answered '$t3'; $(cat "$T/il3.err"); $(dk logs il3 2>&1 | tail -3)"
else
    fail "docker create il3: $(cat "$T/il3.err")"
fi

# Two restored containers are independent: a write to the RW_DIR of one is not seen by the other.
curl -fsS --max-time 2 "http://127.0.0.1:$P2/write/from-il2" >/dev/null 2>&1
r2=$(curl -fsS --max-time 2 "http://127.0.0.1:$P2/read" 2>&1)
r3=$(curl -fsS --max-time 2 "http://127.0.0.1:$P3/read" 2>&1)
x3=$(dk exec il3 sh -c 'cat /data/mark 2>/dev/null || echo absent' 2>&1)
[[ $r2 == from-il2 && $r3 == none && $x3 == absent ]] && pass "two restored containers are independent (RW_DIR write in one is not in the other)" ||
    fail "independence: il2 reads '$r2', il3 reads '$r3', exec in il3 '$x3'"

dk stop il2 >/dev/null 2>&1
[[ $(dk inspect -f '{{.State.Status}}' il2) == exited ]] && pass "docker stop of a restored container (exit code $(dk inspect -f '{{.State.ExitCode}}' il2))" ||
    fail "docker stop il2: $(dk inspect -f '{{.State.Status}}' il2)"
dk kill il3 >/dev/null 2>&1
for _ in $(seq 50); do [[ $(dk inspect -f '{{.State.Status}}' il3) == exited ]] && break; sleep 0.1; done
[[ $(dk inspect -f '{{.State.Status}}' il3) == exited && $(dk inspect -f '{{.State.ExitCode}}' il3) == 137 ]] &&
    pass "docker kill of a restored container (exit code 137)" || fail "docker kill il3: $(dk inspect -f '{{.State.Status}} {{.State.ExitCode}}' il3)"
dk rm il2 il3 >/dev/null 2>&1 && ! dk inspect il2 >/dev/null 2>&1 && pass "docker rm of restored containers" || fail "docker rm il2 il3"
dk rm -f il1 >/dev/null 2>&1

# A corrupted snapshot: the next container boots (a new token) and says why in its log, then a new
# snapshot replaces it.
img=$(images | head -1)
if [[ -n $img ]]; then
    printf 'corrupt' | dd of="$img/pages.img" bs=1 seek=4096 conv=notrunc 2>/dev/null
    if dk run -d --runtime initless --name il4 -p "127.0.0.1:$P1:8080" initless-token:test >/dev/null 2>"$T/il4.err"; then
        wait_http "http://127.0.0.1:$P1/" 20 >/dev/null
        t4=$(token_of "http://127.0.0.1:$P1/")
        [[ -n $t4 && $t4 != "$t1" && $(dk logs il4 2>&1) == *"not usable"*"booting instead"* ]] &&
            pass "a corrupted snapshot falls back to a boot (new token $t4) and says so: $(dk logs il4 2>&1 | grep -m1 'not usable' | cut -c1-150)" ||
            fail "corrupted snapshot: token '$t4' (snapshot's $t1); logs: $(dk logs il4 2>&1 | tail -3)"
        wait_images 1 20 && pass "the fallback boot made a new snapshot" || fail "no new snapshot after the fallback boot"
        dk rm -f il4 >/dev/null 2>&1
    else
        fail "docker run il4: $(cat "$T/il4.err")"
    fi
fi

# Two first containers of one key at once (a key of their own: another env): both boot, one image is
# published, nothing half-written is left.
before=$(images | wc -l)
dk run -d --runtime initless --name il5 -e PAIR=1 initless-token:test >/dev/null 2>&1 &
pair1=$!
dk run -d --runtime initless --name il6 -e PAIR=1 initless-token:test >/dev/null 2>&1 &
wait $pair1 $!  # (not a bare wait: the daemons are this shell's jobs too)
wait_images $((before + 1)) 30
sleep 1
after=$(images | wc -l)
staged=$(find "$STORE" -mindepth 1 -maxdepth 1 -name '*.tmp.*' | wc -l)
[[ $after -eq $((before + 1)) && $staged -eq 0 ]] && pass "two first containers of one key at once: one image published, nothing staged left" ||
    fail "concurrent first containers: images $before -> $after, staged $staged"
dk rm -f il5 il6 >/dev/null 2>&1

# Without CHECKPOINT_MSG the same app is a plain container, as under runc: every run boots.
before=$(images | wc -l)
ta=$(dk run -d --runtime initless --name il7 -p "127.0.0.1:$P2:8080" initless-token-plain:test >/dev/null 2>&1 &&
    wait_http "http://127.0.0.1:$P2/" 20 >/dev/null && token_of "http://127.0.0.1:$P2/")
tb=$(dk run -d --runtime initless --name il8 -p "127.0.0.1:$P3:8080" initless-token-plain:test >/dev/null 2>&1 &&
    wait_http "http://127.0.0.1:$P3/" 20 >/dev/null && token_of "http://127.0.0.1:$P3/")
tr=$(dk run -d --runtime runc --name il9 -p "127.0.0.1:$((PORT + 13)):8080" initless-token-plain:test >/dev/null 2>&1 &&
    wait_http "http://127.0.0.1:$((PORT + 13))/" 20 >/dev/null && token_of "http://127.0.0.1:$((PORT + 13))/")
[[ -n $ta && -n $tb && -n $tr && $ta != "$tb" && $(images | wc -l) -eq $before ]] &&
    pass "without CHECKPOINT_MSG every run boots as under runc (tokens $ta, $tb; runc $tr), no snapshot" ||
    fail "without CHECKPOINT_MSG: tokens '$ta' '$tb' runc '$tr', images $before -> $(images | wc -l)"
dk rm -f il7 il8 il9 >/dev/null 2>&1

# Nothing of the init-less helpers is left: no keeper or watcher, nothing staged in the store.
sleep 0.5
l=$(pgrep -f -- "$T/dx/runtime-initless" | wc -l)
staged=$(find "$STORE" -mindepth 1 -maxdepth 1 -regextype egrep ! -regex '.*/[0-9a-f]{64}' ! -name image.key | wc -l)
[[ $l -eq 0 && $staged -eq 0 ]] && pass "no init-less helper process nor staged image left" ||
    fail "left: $l processes ($(pgrep -af -- "$T/dx/runtime-initless" | cut -c1-150)), $staged store entries"

leftover=$(find "$T/dx/runtime-initless" -mindepth 2 -maxdepth 2 2>/dev/null)
[[ -z $leftover ]] && pass "no container state left under the runtime root" || fail "state left: $leftover"

# --- init-less containers via ctr ---------------------------------------------------------------
# ctr hands the runc shim a binary and a root (its options BinaryName and Root) but no global flags such
# as daemon.json's runtimeArgs: a wrapper as the binary gives the runtime its snapshot store. The store is
# one of its own (containerd's rootfs layers are not Docker's: another key anyway), so the first ctr run
# is seen making its snapshot; the root is under $T, so the runtime's state and helpers (their command
# lines name it) are the test's. ctr containers publish no ports: without --net-host each has a network
# namespace of its own, reached from the host by curl under nsenter into its init's, and from inside by
# ctr task exec. Their stdout and stderr go to $T/NAME.log (--log-uri file://).
CSTORE="$T/ctr-store"
printf '#!/bin/sh\nexec %q --snapshot-store %q "$@"\n' "$INITLESS" "$CSTORE" >"$T/initless-ctr"
chmod +x "$T/initless-ctr"
crun() {  # NAME IMAGE
    ct run -d --runc-binary "$T/initless-ctr" --runc-root "$T/cr" --log-uri "file://$T/$1.log" \
        "docker.io/library/$2" "$1" >/dev/null 2>"$T/$1.err"
}
cfield() { ct task ls 2>/dev/null | awk -v n="$1" -v f="$2" '$1 == n {print $f}'; }  # NAME FIELD (2 pid, 3 status)
cget() {  # NAME PATH: GET http://127.0.0.1:8080/PATH in the container's network namespace
    local pid
    pid=$(cfield "$1" 2)
    [[ -n $pid && $pid != 0 ]] && nsenter -t "$pid" -n curl -fsS --max-time 2 "http://127.0.0.1:8080/$2" 2>/dev/null
}
cwait() { for _ in $(seq $(($2 * 20))); do cget "$1" "" >/dev/null && return 0; sleep 0.05; done; return 1; }
ctoken() { cget "$1" "" | sed -n 's/^token //p'; }
cstopped() { for _ in $(seq 100); do [[ $(cfield "$1" 3) == STOPPED ]] && return 0; sleep 0.1; done; return 1; }
ckeylog() { grep -h init-less "$T/containerd/state/io.containerd.runtime.v2.task/initless-test/$1/log.json" 2>/dev/null | tr '\n' ' '; }
cwhy() { echo "$(cat "$T/$1.err" 2>/dev/null) log: $(grep -m3 initless "$T/$1.log" 2>/dev/null | tr '\n' ' ') $(tail -2 "$T/$1.log" 2>/dev/null | tr '\n' ' ')"; }

# containerd's task exit events (ctr task rm does not say the status): killed by pid at the end.
ct events >"$T/ctr-events" 2>&1 &
events_pid=$!
exit_status() {  # NAME: its task's exit status, from the /tasks/exit event
    for _ in $(seq 50); do
        grep -m1 "/tasks/exit {\"container_id\":\"$1\",\"id\":\"$1\"," "$T/ctr-events" | grep -o '"exit_status":[0-9]*' | cut -d: -f2 | grep . && return 0
        sleep 0.1
    done
    return 1
}
c1=""
if dk save initless-token:test initless-token-plain:test initless-held:test | ct images import - >/dev/null 2>"$T/ctr-import2.err"; then
    if crun cil1 initless-token:test; then
        cwait cil1 20
        c1=$(ctoken cil1)
        if [[ -n $c1 ]] && wait_images 1 20 "$CSTORE"; then
            pass "first ctr run of the image with CHECKPOINT_MSG boots (token $c1) and is snapshotted at its phrase: $(images "$CSTORE" | wc -l) image"
        else
            fail "first ctr run: token '$c1', images in $CSTORE: $(images "$CSTORE" | wc -l); $(cwhy cil1)"
        fi
        [[ -n $c1 && $(ctoken cil1) == "$c1" ]] && pass "the snapshotted ctr container goes on serving" ||
            fail "cil1 after its snapshot: '$(ctoken cil1)'"
        grep -q "token-app: ready" "$T/cil1.log" 2>/dev/null && pass "its stdout reaches ctr's log (relayed by init)" ||
            fail "cil1's log: $(cwhy cil1)"
    else
        fail "ctr run cil1: $(cwhy cil1)"
    fi
    start_ns=$(date +%s%N)
    if crun cil2 initless-token:test; then
        cwait cil2 20
        ms=$((($(date +%s%N) - start_ns) / 1000000))
        c2=$(ctoken cil2)
        [[ -n $c1 && $c2 == "$c1" ]] && pass "a second ctr run restores: it answers the snapshot's token $c2 ($ms ms from ctr run to first response)" ||
            fail "second ctr run answered token '$c2', the snapshot's is '$c1'; $(cwhy cil2); cil1: $(ckeylog cil1); cil2: $(ckeylog cil2)"
        out=$(ct task exec --exec-id x1 cil2 python3 -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:8080/").read().decode().strip())' 2>&1)
        [[ -n $c1 && $out == "token $c1" ]] && pass "ctr task exec in the restored container reaches it in its network namespace: $out" ||
            fail "ctr task exec cil2 (urllib): '$out'"
        out=$(ct task exec --exec-id x2 cil2 cat /data/boot.txt 2>&1)
        [[ -n $c1 && $out == "$c1" ]] && pass "ctr task exec: its RW_DIR /data is the snapshot's copy" || fail "ctr task exec cil2 cat: '$out'"
        grep -q '"GET / HTTP/1.1" 200' "$T/cil2.log" 2>/dev/null && pass "the restored one's stderr since the restore reaches ctr's log" ||
            fail "cil2's log: $(cwhy cil2)"
    else
        fail "ctr run cil2: $(cwhy cil2)"
    fi
    if crun cil3 initless-token:test; then
        cwait cil3 20
        c3=$(ctoken cil3)
        [[ -n $c1 && $c3 == "$c1" ]] && pass "a third ctr run restores too (token $c3)" || fail "third ctr run: token '$c3'; $(cwhy cil3)"
    else
        fail "ctr run cil3: $(cwhy cil3)"
    fi
    # Two restored ctr containers are independent: each goes on from the snapshot's state on its own (an
    # in-memory counter, the RW_DIR).
    cget cil2 count >/dev/null; cget cil2 count >/dev/null
    n2=$(cget cil2 count) n3=$(cget cil3 count)
    cget cil2 write/from-cil2 >/dev/null
    r2=$(cget cil2 read) r3=$(cget cil3 read)
    x3=$(ct task exec --exec-id x3 cil3 sh -c 'cat /data/mark 2>/dev/null || echo absent' 2>&1)
    [[ $n2 == 3 && $n3 == 1 && $r2 == from-cil2 && $r3 == none && $x3 == absent ]] &&
        pass "two restored ctr containers are independent (counters 3 and 1 from the snapshot's 0; RW_DIR write in one is not in the other)" ||
        fail "ctr independence: counts '$n2' '$n3', cil2 reads '$r2', cil3 reads '$r3', exec in cil3 '$x3'"
    [[ $(ct task ps cil2 2>/dev/null | wc -l) -ge 2 ]] && pass "ctr task ps of a restored container" || fail "ctr task ps cil2: $(ct task ps cil2 2>&1)"
    # ctr task kill: SIGTERM (the default) to one, SIGKILL to the other; ctr task rm exits with the status.
    ct task kill cil2 >/dev/null 2>&1
    cstopped cil2 && pass "ctr task kill (SIGTERM) stops a restored container" || fail "ctr task kill cil2: $(cfield cil2 3)"
    ct task kill -s SIGKILL cil3 >/dev/null 2>&1
    cstopped cil3 && pass "ctr task kill -s SIGKILL stops a restored container" || fail "ctr task kill -s SIGKILL cil3: $(cfield cil3 3)"
    s2=$(exit_status cil2) s3=$(exit_status cil3)
    [[ $s2 == 143 && $s3 == 137 ]] && pass "exit statuses of the killed restored containers: 143 (SIGTERM), 137 (SIGKILL)" ||
        fail "exit statuses of cil2, cil3: '$s2' '$s3' (want 143 137); events: $(grep -c . "$T/ctr-events")"
    ct task rm cil2 >/dev/null 2>&1
    ct task rm cil3 >/dev/null 2>&1
    ct containers rm cil2 cil3 >/dev/null 2>&1
    [[ -z $(ct task ls -q 2>/dev/null | grep -x 'cil[23]') && -z $(ct containers ls -q | grep -x 'cil[23]') ]] &&
        pass "ctr task rm and ctr containers rm of restored containers" ||
        fail "ctr rm: tasks: $(ct task ls -q | tr '\n' ' '); containers: $(ct containers ls -q | tr '\n' ' ')"
    ct task kill -s SIGKILL cil1 >/dev/null 2>&1
    cstopped cil1
    ct task rm cil1 >/dev/null 2>&1
    ct containers rm cil1 >/dev/null 2>&1

    # Without CHECKPOINT_MSG every ctr run boots, and nothing is snapshotted.
    before=$(images "$CSTORE" | wc -l)
    ca="" cb=""
    crun cpl1 initless-token-plain:test && cwait cpl1 20 && ca=$(ctoken cpl1)
    crun cpl2 initless-token-plain:test && cwait cpl2 20 && cb=$(ctoken cpl2)
    sleep 0.5
    [[ -n $ca && -n $cb && $ca != "$cb" && $(images "$CSTORE" | wc -l) -eq $before ]] &&
        pass "without CHECKPOINT_MSG every ctr run boots (tokens $ca, $cb), no snapshot" ||
        fail "ctr without CHECKPOINT_MSG: tokens '$ca' '$cb', images $before -> $(images "$CSTORE" | wc -l); $(cwhy cpl1)"
    for c in cpl1 cpl2; do ct task kill -s SIGKILL $c >/dev/null 2>&1; cstopped $c; ct task rm $c >/dev/null 2>&1; ct containers rm $c >/dev/null 2>&1; done

    # A file open for writing in the container's writable layer outside RW_DIRS when the phrase goes by:
    # no snapshot (a restored container would miss that file), said in the container's log; the first
    # ctr run of the token app above holds /data/journal open (an RW_DIR) and was snapshotted.
    before=$(images "$CSTORE" | wc -l)
    if crun chl initless-held:test; then
        for _ in $(seq 300); do grep -q "no snapshot taken" "$T/chl.log" 2>/dev/null && break; sleep 0.1; done
        [[ $(grep -m1 "no snapshot taken" "$T/chl.log" 2>/dev/null) == *"/app/held.log"*"open for writing outside"* &&
            $(images "$CSTORE" | wc -l) -eq $before ]] &&
            pass "a file open for writing in the writable layer outside RW_DIRS at the phrase: no snapshot, and the log says why: $(grep -m1 -o 'no snapshot taken.*open for writing' "$T/chl.log" | cut -c1-120)" ||
            fail "held file: images $before -> $(images "$CSTORE" | wc -l); $(cwhy chl)"
        ct task kill -s SIGKILL chl >/dev/null 2>&1
        cstopped chl
        ct task rm chl >/dev/null 2>&1
        ct containers rm chl >/dev/null 2>&1
    else
        fail "ctr run chl: $(cwhy chl)"
    fi

    sleep 0.5
    l=$(pgrep -f -- "$T/cr/" | wc -l)
    staged=$(find "$CSTORE" -mindepth 1 -maxdepth 1 -regextype egrep ! -regex '.*/[0-9a-f]{64}' ! -name image.key 2>/dev/null | wc -l)
    leftover=$(find "$T/cr" -mindepth 2 -maxdepth 2 2>/dev/null)
    [[ $l -eq 0 && $staged -eq 0 && -z $leftover ]] && pass "ctr: no init-less helper process, staged image nor container state left" ||
        fail "ctr left: $l processes ($(pgrep -af -- "$T/cr/" | cut -c1-150)), $staged store entries, state: $leftover"
else
    fail "ctr images import of the token images: $(cat "$T/ctr-import2.err")"
fi
kill "$events_pid" 2>/dev/null
wait "$events_pid" 2>/dev/null

[[ $FAILED -eq 0 ]] && echo "docker_test: all passed" || { echo "--- dockerd log tail"; tail -15 "$T/dockerd.log"; }
exit $FAILED
