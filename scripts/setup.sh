#!/usr/bin/env bash
# Sets up a fresh machine (Debian 12, root) and builds initless into build/.
# Idempotent and fast when everything is present: apt runs only for packages that are missing.
#   scripts/setup.sh            install what is missing, configure, build
#   BUILD_DIR=dir scripts/setup.sh   build elsewhere (default: build/ in the repo)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

PACKAGES=(
    g++ cmake ninja-build ccache
    libtomlplusplus-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libgtest-dev libboost-dev
    libssl-dev  # libcrypto: the images' HMAC-SHA256 (DESIGN.md, "Image format")
    libseccomp-dev pkg-config
    python3 python3-flask python3-numpy python3-matplotlib
    wrk socat prometheus curl slirp4netns
    nginx-light haproxy  # bench/gateway: established HTTP proxies measured beside the gateway
    # tests/docker: the real daemons initless runs under as an OCI runtime (started by the tests, not systemd).
    docker.io containerd runc
    nftables  # scripts/host-iptables.sh: deletes the nat/filter tables dockerd made (iptables cannot)
    openjdk-17-jdk-headless
    # The frameworks under examples/ (examples/README.md, "Frameworks"): all from Debian, no other registry.
    gunicorn python3-uvicorn python3-fastapi python3-django python3-torch
    libspring-core-java libspring-beans-java libspring-context-java libspring-web-java libspring-web-servlet-java
    libjetty9-java libnetty-java node-express
)
# Node.js: the machine may already have a newer nodejs (e.g. from another repository); never replace it
# (node-express accepts it).
if [[ ! -x /usr/bin/node ]]; then PACKAGES+=(nodejs); fi

missing=()
for p in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: need root to install packages" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

# ccache: worktrees and CI clones on one machine compile the same sources once (paths made relative).
# The build dir is left out of the hash too (debug info then names the first clone's dir).
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$ROOT")}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
ninja -C "$BUILD_DIR"
