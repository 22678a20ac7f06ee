#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Idle memory (RSS, PSS from /proc/PID/smaps_rollup) of the container manager
# with no app and with APPS apps running, and of each app's shim; see the
# header of bench/containers/idle_memory.cpp for what is measured.
#   bench/containers/idle_pss.sh BUILD_DIR [APPS] [SAMPLES]     (root; release build:
#   meson setup build-rel --buildtype=release && ninja -C build-rel
#   services/container-manager/mbl-container-manager services/container-manager/mbl-container-shim
#   bench/containers/bench-containers-idle)
set -e
build=${1:?usage: idle_pss.sh BUILD_DIR [APPS] [SAMPLES]}
apps=${2:-20}
samples=${3:-5}
[ "$(id -u)" -eq 0 ] || { echo "idle_pss.sh: needs root (runs containers)"; exit 77; }
build=$(cd "$build" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
echo "machine: $(nproc) CPUs, $(uptime)"
echo "build: $(python3 -c 'import json,sys; print([o["value"] for o in json.load(open(sys.argv[1])) if o["name"] in ("buildtype",)][0])' "$build/meson-info/intro-buildoptions.json" 2>/dev/null || echo unknown) build type"
MBL_BUILD_ROOT=$build MBL_SOURCE_ROOT=$src MBL_POLICY_DIR=$build/dbus-policy \
    "$build/bench/containers/bench-containers-idle" "$apps" "$samples"
