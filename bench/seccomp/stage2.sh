#!/usr/bin/env bash
# Restore stage 2 (restore_ms, the request path) with the seccomp filter (seccomp = "default") and
# without it (seccomp = "unconfined"), same build, same run, restores interleaved so that load from
# other users of the machine falls on both alike. The only stage-2 difference between the two is the
# filter's installation (one injected seccomp(TSYNC) per process).
#   bench/seccomp/stage2.sh BUILD_DIR [REPEATS] [FUNCTIONS...]   (functions: dirs with function.toml)
set -euo pipefail
BUILD="${1:?build dir}"; REPEATS="${2:-15}"; shift 2 || true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FUNCS=("$@")
((${#FUNCS[@]})) || FUNCS=("$ROOT/examples/python-hello" "$ROOT/examples/node-hello" "$BUILD/examples/java-hello")
WORK="$(mktemp -d /tmp/initless-bench-seccomp-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export INITLESS_STATE_DIR="$WORK/state"
echo "function,mode,repeat,restore_ms,layout_ms,threads_ms,finish_ms,seccomp_ms"
for f in "${FUNCS[@]}"; do
    name="$(basename "$f")"
    for mode in default unconfined; do
        cp -r "$f" "$WORK/$name-$mode"
        grep -v '^seccomp' "$f/function.toml" | sed "0,/^\[env\]/s//seccomp = \"$mode\"\n\n[env]/" > "$WORK/$name-$mode/function.toml"
        grep -q "^seccomp" "$WORK/$name-$mode/function.toml" || echo "seccomp = \"$mode\"" >> "$WORK/$name-$mode/function.toml"
        "$BUILD/initless" snapshot "$WORK/$name-$mode" --image "$WORK/$name-$mode.img" --json > /dev/null
    done
    for ((i = 0; i < REPEATS; i++)); do
        for mode in default unconfined; do
            out="$("$BUILD/initless" restore "$WORK/$name-$mode.img" --strategy prefetch --instances 1 --request / --json --no-fallback)"
            python3 -c '
import json, sys
r = json.loads(sys.argv[1])["instances"][0]
b = r.get("breakdown", r)
print(",".join([sys.argv[2], sys.argv[3], sys.argv[4]] + [str(r.get("restore_ms"))] + [str(b.get(k, "")) for k in ("layout_ms", "threads_ms", "finish_ms", "seccomp_ms")]))
' "$out" "$name" "$mode" "$i"
        done
    done
done
