#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the whole test suite with ctest. Exits non-zero on any failure.
# The sandbox tests need root (namespaces, cgroups, overlayfs); run as root.
#   scripts/test.sh               everything
#   scripts/test.sh -R Spec       extra arguments go to ctest
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

"$ROOT/scripts/setup.sh"

if [[ $(id -u) -ne 0 ]]; then
    echo "test: the sandbox tests need root (namespaces, cgroups, overlayfs); run as root" >&2
    exit 1
fi

cd "$BUILD_DIR"
ctest --output-on-failure --no-tests=error -j"$(nproc)" --timeout 300 "$@"
