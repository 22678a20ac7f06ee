#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The container manager beside its peers and bare runc, in the same rounds, the
# sides rotating who goes first every round; medians and paired per-round ratios
# (bench/containers/bench-containers, whose header says what each side does):
#  - containerd 1.6 (Debian 12): a containerd of the bench's own (own root,
#    state and socket; stopped at the end), `ctr run --rm` (runc v2 shim,
#    overlayfs snapshotter, ctr's default config: no seccomp profile, no user
#    namespace, host network namespace unless asked).
#  - podman 4.3 (Debian 12): no daemon; a storage of the bench's own (--root,
#    --runroot, overlay), `podman run --rm` with our app's confinement (no
#    network, read-only root, a 65536-id user namespace, the same four
#    capabilities, no-new-privileges, podman's default seccomp profile), runc as
#    its runtime (crun refuses this machine's hybrid cgroups), cgroupfs. Its time
#    includes the podman CLI (the engine itself) and conmon.
#  - ours: StartApp over D-Bus from a client already connected, until the
#    container is removed (the manager generates the config with seccomp and a
#    user namespace, starts it through its shim, reaps it and deletes it).
#  - bare: `runc run` of the same bundle and config.json as ours.
# Neither peer's images are pulled from a registry: both load the bench's
# umoci-made archive.
#   bench/peers/containers.sh [--install] BUILD_DIR [ROUNDS]   (root; release build)
# --install first: apt-get install whichever of containerd and podman is missing
# (Debian's mirror). A peer that is not installed is left out, and said so.
set -e
if [ "$1" = "--install" ]; then
    shift
    missing=""
    command -v containerd >/dev/null || missing="$missing containerd"
    command -v podman >/dev/null || missing="$missing podman"
    if [ -n "$missing" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    fi
fi
build=${1:?usage: containers.sh [--install] BUILD_DIR [ROUNDS]}
rounds=${2:-9}
if ! command -v ctr >/dev/null && ! command -v podman >/dev/null; then
    echo "neither containerd nor podman is installed (run with --install)"
    exit 77
fi
echo "machine: $(nproc) CPUs, $(uptime)"
command -v containerd >/dev/null && echo "containerd: $(containerd --version)"
command -v podman >/dev/null && echo "podman: $(podman --version)"
cd "$build"
./bench/containers/bench-containers "$rounds"
echo "after: $(uptime)"
