#!/usr/bin/env bash
# From `docker run` (or `docker start`) to the first HTTP response of a Flask hello, under runc and
# initless: runc, initless booting (no CHECKPOINT_MSG), initless restoring (CHECKPOINT_MSG, snapshot
# made by a first run), and `docker start` of a container `docker create`d beforehand (pre-started).
# Starts a containerd and a dockerd of its own as tests/docker/docker_test.sh does (own roots, sockets,
# bridge), builds the image from the host's Debian packages, stops everything afterwards.
#   bench/docker/docker_bench.sh BUILD_DIR [REPEATS (5)] [CSV (docs/bench/docker.csv)]
# Prints the medians; one CSV row per run. Numbers only: tests/docker checks behaviour.
set -uo pipefail
BUILD_DIR="$(cd "${1:?usage: docker_bench.sh BUILD_DIR [REPEATS] [CSV]}" && pwd)"
REPEATS="${2:-5}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CSV="${3:-$ROOT/docs/bench/docker.csv}"
INITLESS="$BUILD_DIR/initless"
DOCKER=/usr/bin/docker
T="$(mktemp -d /tmp/ilb.XXXXXX)"
BRIDGE="ilb$$"
PORT=$((20000 + RANDOM % 20000))
dk() { "$DOCKER" -H "unix://$T/docker.sock" "$@"; }

cleanup() {
    set +e
    ids=$(dk ps -aq 2>/dev/null)
    [[ -n $ids ]] && dk rm -f $ids >/dev/null 2>&1
    for p in docker containerd; do
        [[ -f $T/$p.pid ]] || continue
        pid=$(cat "$T/$p.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    for pid in $(pgrep -f -- "$T/"); do kill -9 "$pid" 2>/dev/null; done
    awk -v t="$T" '$2 ~ "^"t {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
    for d in $(find /sys/fs/cgroup/*/initless-bench -depth -type d 2>/dev/null); do
        grep -q . "$d/cgroup.procs" 2>/dev/null || rmdir "$d" 2>/dev/null
    done
    ip link del "$BRIDGE" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

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
containerd --config "$T/containerd.toml" >"$T/containerd.log" 2>&1 &
echo $! >"$T/containerd.pid"
for _ in $(seq 100); do [[ -S $T/containerd.sock ]] && break; sleep 0.1; done
cat >"$T/daemon.json" <<JSON
{ "runtimes": { "initless": { "path": "$INITLESS", "runtimeArgs": ["--snapshot-store", "$T/store"] } } }
JSON
ip link add name "$BRIDGE" type bridge && ip addr add "10.$((200 + RANDOM % 50)).$((RANDOM % 250)).1/24" dev "$BRIDGE" &&
    ip link set "$BRIDGE" up || { echo "cannot make bridge $BRIDGE"; exit 1; }
dockerd --config-file "$T/daemon.json" --containerd "$T/containerd.sock" --data-root "$T/docker" --exec-root "$T/dx" \
    --pidfile "$T/docker.pid.daemon" -H "unix://$T/docker.sock" --bridge "$BRIDGE" --cgroup-parent /initless-bench \
    >"$T/dockerd.log" 2>&1 &
echo $! >"$T/docker.pid"
for _ in $(seq 300); do dk version >/dev/null 2>&1 && break; sleep 0.1; done
dk version >/dev/null 2>&1 || { echo "dockerd did not start"; tail "$T/dockerd.log"; exit 1; }

# The image: as tests/docker/docker_test.sh builds it (python3-flask and its dependencies from dpkg -L).
pkgs=$(apt-cache depends --recurse --installed --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances python3-flask dash coreutils 2>/dev/null | grep -E '^[a-z0-9]' | sort -u)
for p in $pkgs; do dpkg -L "$p" 2>/dev/null; done | sort -u | while read -r f; do
    [[ -e $f || -L $f ]] || continue
    if [[ -d $f && ! -L $f ]]; then readlink -f "$f"; else echo "$(readlink -f "$(dirname "$f")")/$(basename "$f")"; fi
done | sed 's|^/*||' | grep -vxE '|\.|bin|lib|lib64|sbin|usr' | sort -u >"$T/files"
mkdir -p "$T/extra/app" "$T/extra/tmp" "$T/extra/etc"
chmod 1777 "$T/extra/tmp"
cat >"$T/extra/app/hello.py" <<'PY'
from flask import Flask
from werkzeug.serving import make_server
app = Flask("hello")
@app.route("/")
def hello():
    return "hello\n"
server = make_server("0.0.0.0", 8080, app)
print("hello: ready", flush=True)
server.serve_forever()
PY
echo "root:x:0:0:root:/root:/bin/sh" >"$T/extra/etc/passwd"
tar -C / -cf "$T/rootfs.tar" --no-recursion usr bin lib lib64 sbin -T "$T/files" 2>/dev/null
tar -C "$T/extra" -rf "$T/rootfs.tar" app tmp etc/passwd
dk import --change 'CMD ["python3", "/app/hello.py"]' "$T/rootfs.tar" bench-plain >/dev/null
dk import --change 'CMD ["python3", "/app/hello.py"]' --change 'ENV CHECKPOINT_MSG="hello: ready"' "$T/rootfs.tar" \
    bench-initless >/dev/null

now_ms() { echo $(($(date +%s%N) / 1000000)); }
first_response() {  # START_MS: ms from START_MS to the first answer on $PORT (polled every 5 ms)
    for _ in $(seq 6000); do
        curl -fsS --max-time 1 "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && { echo $(($(now_ms) - $1)); return; }
        sleep 0.005
    done
    echo -1
}
run_once() {  # KIND: one measurement, printed as ms
    local kind=$1 t0
    case $kind in
    runc | initless-boot | initless-restore)
        local runtime=initless image=bench-initless
        [[ $kind == runc ]] && runtime=runc image=bench-plain
        [[ $kind == initless-boot ]] && image=bench-plain
        t0=$(now_ms)
        dk run -d --runtime "$runtime" --name bench -p "127.0.0.1:$PORT:8080" "$image" >/dev/null
        first_response "$t0"
        ;;
    initless-start-precreated)
        dk create --runtime initless --name bench -p "127.0.0.1:$PORT:8080" bench-initless >/dev/null
        t0=$(now_ms)
        dk start bench >/dev/null
        first_response "$t0"
        ;;
    esac
    dk rm -f bench >/dev/null 2>&1
}

# The snapshot, made by a first run (not measured).
dk run -d --runtime initless --name first -p "127.0.0.1:$PORT:8080" bench-initless >/dev/null
first_response "$(now_ms)" >/dev/null
for _ in $(seq 200); do [[ -n $(find "$T/store" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{64}' 2>/dev/null) ]] && break; sleep 0.1; done
dk rm -f first >/dev/null 2>&1

KINDS="runc initless-boot initless-restore initless-start-precreated"
mkdir -p "$(dirname "$CSV")"
{
    echo "# docker_bench.sh, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null), $(nproc) CPUs, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kind,repeat,ms"
} >"$CSV"
for r in $(seq "$REPEATS"); do
    for k in $KINDS; do  # alternated, so load changes spread over every kind
        echo "$k,$r,$(run_once "$k")" >>"$CSV"
    done
done
echo "# load at the end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$CSV"
echo "medians of $REPEATS (ms, docker CLI to first HTTP response):"
for k in $KINDS; do
    printf '%-28s %s\n' "$k" "$(grep "^$k," "$CSV" | cut -d, -f3 | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')"
done
