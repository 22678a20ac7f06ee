#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's test command: set up a Debian 12 machine, build with ASan+UBSan
# (warnings are errors) and run every test. Prints the runner's summary and a
# closing "N passed, N failed, N skipped" line.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh

BUILD=${MBL_BUILD_DIR:-build-asan}
# -O1 with line tables only (-g1): the sanitizers' reports keep file:line, and
# the build takes about half the time of meson's default -O2 -g (measured on
# coordinator.cpp under load: 50 s against 95-125 s), which is most of CI's budget.
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" -Db_sanitize=address,undefined -Db_lundef=false \
    -Doptimization=1 -Ddebug=false -Dcpp_args=-g1
fi
ninja -C "$BUILD"

# The QEMU device suites (tests/device) boot a debootstrapped image under TCG:
# the first image takes tens of minutes and each scenario several more, beyond
# CI's time budget. They run with MBL_DEVICE_TESTS=1 (or by hand:
# meson test -C build-asan --suite device), never silently: the summary says so.
skip_suites=()
if [ "${MBL_DEVICE_TESTS:-0}" != 1 ]; then
  skip_suites=(--no-suite device --no-suite device-extra)
  echo "run-all: the QEMU device suites are not run (MBL_DEVICE_TESTS=1 runs them; tests/device/README.md)"
fi

rc=0
meson test -C "$BUILD" --print-errorlogs --num-processes "${MBL_TEST_JOBS:-2}" "${skip_suites[@]}" "$@" || rc=$?

python3 - "$BUILD/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0, "TIMEOUT": 0, "ERROR": 0, "EXPECTEDFAIL": 0, "UNEXPECTEDPASS": 0}
for line in open(sys.argv[1]):
    line = line.strip()
    if line:
        r = json.loads(line).get("result", "ERROR")
        counts[r] = counts.get(r, 0) + 1
passed = counts["OK"] + counts["EXPECTEDFAIL"]
failed = counts["FAIL"] + counts["TIMEOUT"] + counts["ERROR"] + counts["UNEXPECTEDPASS"]
print(f"{passed} passed, {failed} failed, {counts['SKIP']} skipped")
PY
exit $rc
