#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's demo command: set up, build, start the whole stack in a sandbox
# folder (private system-type bus with the real policies, the five daemons, the
# DDI test server behind nginx with mutual TLS, a test CA), provision the device,
# build and sign a bundle (rootfs + OCI app), deploy it from the server and show
# the device carrying it out to closed/success (tests/e2e/demo_main.cpp).
# --keep leaves it running for busctl and mblctl until Ctrl-C.
# --device runs the same deployment on the QEMU device of tests/device instead
# (real GRUB, real reboot, the serial console and the bootloader's choice shown;
# the first run builds the device image: debootstrap, several minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh

BUILD=${MBL_DEMO_BUILD_DIR:-build-demo}
# Quiet, but never silent about a failure: meson's output is shown if it fails,
# and ninja --quiet still prints each failing command and the compiler's errors.
if [ ! -f "$BUILD/build.ninja" ]; then
  log=$(mktemp)
  meson setup "$BUILD" --buildtype=release >"$log" 2>&1 || {
    cat "$log" >&2
    echo "demo: meson setup failed (above)" >&2
    exit 1
  }
  rm -f "$log"
fi
ninja --quiet -C "$BUILD" || { echo "demo: the build failed (above)" >&2; exit 1; }

keep=()
[ "${1:-}" = "--keep" ] && keep=(--keep)
export MBL_BUILD_ROOT="$PWD/$BUILD" MBL_POLICY_DIR="$PWD/$BUILD/dbus-policy"
export MBL_SOURCE_ROOT="$PWD"
if [ "${1:-}" = "--device" ]; then
  exec "$BUILD/tests/device/device-tests" "[demo-device]"
fi
exec "$BUILD/tests/e2e/mbl-demo" "${keep[@]}"
