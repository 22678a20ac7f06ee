#!/usr/bin/env bash
# The README's test command: set up a Debian 12 machine, build with ASan+UBSan
# (warnings are errors) and run every test. Prints the runner's summary and a
# closing "N passed, N failed, N skipped" line.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh

BUILD=${MBL_BUILD_DIR:-build-asan}
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" -Db_sanitize=address,undefined -Db_lundef=false
fi
ninja -C "$BUILD"

rc=0
meson test -C "$BUILD" --print-errorlogs --num-processes "${MBL_TEST_JOBS:-2}" "$@" || rc=$?

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
