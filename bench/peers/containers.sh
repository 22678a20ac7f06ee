#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The container manager beside containerd (Debian 12's containerd 1.6, runc v2
# shim) and bare runc, in the same rounds, rotated: bench/containers/bench-containers
# starts a containerd of its own (own root, state and socket; stopped at the end)
# when containerd and ctr are installed.
#   bench/peers/containers.sh BUILD_DIR [ROUNDS]      (root; release build)
# --install first: apt-get install containerd from Debian's mirror.
set -e
if [ "$1" = "--install" ]; then
    shift
    command -v containerd >/dev/null || apt-get install -y --no-install-recommends containerd
fi
build=${1:?usage: containers.sh [--install] BUILD_DIR [ROUNDS]}
rounds=${2:-9}
command -v ctr >/dev/null || { echo "containerd is not installed (run with --install)"; exit 77; }
echo "machine: $(nproc) CPUs, $(uptime)"
cd "$build"
./bench/containers/bench-containers "$rounds"
echo "after: $(uptime)"
