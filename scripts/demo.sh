#!/usr/bin/env bash
# The main job, on a fresh machine: set up and build, then boot an example function in a sandbox and
# answer one request, printing where the time went.
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

# Next (later issues): snapshot the initialised function and restore it, printing the same timings
# for each restore strategy, so plain boot and restore can be compared here.
