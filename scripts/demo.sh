#!/usr/bin/env bash
# The main job, on a fresh machine: set up and build, start the initless daemon, deploy an example
# function (its snapshot is built while you watch), invoke it cold (restored from the snapshot into a
# pre-started sandbox) and warm, print where the time went, and stop the daemon cleanly.
#   scripts/demo.sh [FUNCTION_DIR]      default: examples/python-bigdict
#   DEMO_PORT=8080 DEMO_STATE=dir        where the daemon listens and keeps its registry
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
FUNCTION="$(realpath "${1:-$ROOT/examples/python-bigdict}")"
PORT="${DEMO_PORT:-18080}"

"$ROOT/scripts/setup.sh"
INITLESS="$BUILD_DIR/initless"
SCRATCH="$(mktemp -d /tmp/initless-demo-XXXXXX)"
STATE="${DEMO_STATE:-$SCRATCH/state}"
export INITLESS_SERVER="127.0.0.1:$PORT"
NAME="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$FUNCTION/function.toml" | head -1)"
[[ -n "$NAME" ]] || NAME="$(basename "$FUNCTION")"

daemon=""
cleanup() {
    if [[ -n "$daemon" ]] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon"
        wait "$daemon" || true
    fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

echo "== initless serve --listen $INITLESS_SERVER --state $STATE (log: $SCRATCH/daemon.log)"
"$INITLESS" serve --listen "$INITLESS_SERVER" --state "$STATE" 2>"$SCRATCH/daemon.log" &
daemon=$!
for _ in $(seq 1 200); do
    curl -sf "http://$INITLESS_SERVER/healthz" >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { cat "$SCRATCH/daemon.log"; exit 1; }
    sleep 0.05
done

echo
echo "== initless deploy $FUNCTION: boot once, wait for the ready phrase, snapshot"
"$INITLESS" deploy "$FUNCTION"
# The pool is refilled in the background after a deploy: wait until a sandbox is pre-started.
for _ in $(seq 1 200); do
    curl -sf "http://$INITLESS_SERVER/system/function/$NAME" | grep -q '"pool":[1-9]' && break
    sleep 0.05
done

show() {
    /usr/bin/python3 - "$1" <<'PY'
import re, sys
headers = {}
for line in open(sys.argv[1]):
    k, _, v = line.partition(":")
    headers[k.strip().lower()] = v.strip()
t = dict((m.group(1), float(m.group(2))) for m in re.finditer(r"(\w+);dur=([\d.]+)", headers.get("server-timing", "")))
print(f"  start: {headers.get('x-initless-start')} on {headers.get('x-initless-instance')}")
print(f"  queue {t.get('queue', 0):.2f} ms + sandbox {t.get('sandbox', 0):.2f} ms + restore {t.get('restore', 0):.2f} ms"
      f" + exec {t.get('exec', 0):.2f} ms (Server-Timing)")
PY
}

for kind in cold warm warm; do
    echo
    echo "== $kind request: curl http://$INITLESS_SERVER/function/$NAME/"
    curl -sS -D "$SCRATCH/headers" -o "$SCRATCH/body" -w '  %{http_code} in %{time_total} s (client side)\n' \
        "http://$INITLESS_SERVER/function/$NAME/"
    echo "  body: $(head -c 200 "$SCRATCH/body")"
    show "$SCRATCH/headers"
done

echo
echo "== initless ls"
"$INITLESS" ls
echo
echo "== initless stats"
"$INITLESS" stats
echo
echo "== stopping the daemon (SIGTERM: drain, tear down, exit 0)"
kill -TERM "$daemon"
rc=0
wait "$daemon" || rc=$?
daemon=""
echo "  daemon exited with status $rc"
exit $rc
