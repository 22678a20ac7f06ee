#!/usr/bin/env bash
# The README's demo command: set up, build, and start the whole stack on a
# private system-type bus in a temporary folder, then show `mblctl status`.
# --keep leaves it running for busctl and mblctl until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh

BUILD=${MBL_DEMO_BUILD_DIR:-build-demo}
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" >/dev/null

keep=()
[ "${1:-}" = "--keep" ] && keep=(--keep)
export MBL_BUILD_ROOT="$PWD/$BUILD" MBL_POLICY_DIR="$PWD/$BUILD/dbus-policy"
exec "$BUILD/tests/mbl-dev-stack" "${keep[@]}" -- "$BUILD/services/mblctl/mblctl" status
