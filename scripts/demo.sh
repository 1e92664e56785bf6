#!/usr/bin/env bash
# The main job, on a fresh machine: set up and build, deploy an example function, boot it once normally
# (the baseline), snapshot it when it is ready, then serve cold requests from that snapshot with each
# restore strategy (eager, cow, and prefetch: the default), printing where the time went.
#   scripts/demo.sh [FUNCTION_DIR]      default: examples/python-bigdict
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
FUNCTION="${1:-$ROOT/examples/python-bigdict}"

"$ROOT/scripts/setup.sh"
INITLESS="$BUILD_DIR/initless"

echo
echo "== plain boot: $FUNCTION"
out="$("$INITLESS" run "$FUNCTION" --request / --json)"
echo "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"status {r['status']}: sandbox prepare {r['prepare_ms']:.1f} ms + init {r['init_ms']:.1f} ms"
      f" + exec {r['exec_ms']:.1f} ms = {r['total_ms']:.1f} ms")
sys.exit(0 if r["status"] == 200 else 1)
PY


IMAGE="$(mktemp -d /tmp/initless-demo-XXXXXX)"
trap 'rm -rf "$IMAGE"' EXIT
echo
echo "== snapshot: boot, wait for the ready phrase, checkpoint"
"$INITLESS" snapshot "$FUNCTION" --image "$IMAGE/image"

for strategy in eager cow prefetch; do
    echo
    echo "== cold request from the snapshot ($strategy): a pre-started sandbox, restore, GET /"
    out="$("$INITLESS" restore "$IMAGE/image" --strategy "$strategy" --request / --json)"
    /usr/bin/python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
for i in r["instances"]:
    b = i.get("breakdown", {})
    print(f"status {i['status']} ({i['mode']}): prepared in {i['prepare_ms']:.1f} ms before the request;"
          f" on the request: restore {i['restore_ms']:.1f} ms + exec {i['exec_ms']:.1f} ms"
          f" = {i['restore_ms'] + i['exec_ms']:.1f} ms")
    if b:
        print(f"  restore: layout {b['layout_ms']:.1f} ms, threads {b['threads_ms']:.1f} ms,"
              f" registers+detach {b['finish_ms']:.1f} ms ({b['ops']} syscalls in the stub)")
    if i["status"] != 200 or i["mode"] != "restore":
        sys.exit(1)
PY
done
