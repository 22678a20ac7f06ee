#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The fuzzers of tests/fuzz for a bounded time, as CI runs them: a clang build
# of the six libFuzzer harnesses (its own build folder, inside the calling
# build's), then each harness for MBL_FUZZ_SECONDS (default 60) from its seeds
# with its dictionary. A finding fails the test; the input is kept in
# <build>/fuzz-artifacts/ and printed in hex, to be minimised and added to
# tests/fuzz/regressions/<harness>/ with the fix (README.md, "Findings").
# Exit 77 (skip) where clang or libFuzzer's runtime is missing, saying which.
set -euo pipefail

SRC=${MBL_SOURCE_ROOT:?run through meson test}
BUILD=${MBL_BUILD_ROOT:?run through meson test}
SECONDS_EACH=${MBL_FUZZ_SECONDS:-60}
FBUILD=$BUILD/fuzz-clang
ART=$BUILD/fuzz-artifacts

skip() { echo "SKIP: $*"; exit 77; }
command -v clang++ >/dev/null || skip "clang++ is not installed (apt-get install clang)"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' > "$probe/p.cpp"
clang++ -fsanitize=fuzzer "$probe/p.cpp" -o "$probe/p" 2>"$probe/err" ||
  skip "clang cannot link libFuzzer (apt-get install libclang-rt-14-dev): $(head -n 1 "$probe/err")"

t0=$(date +%s)
if [ ! -f "$FBUILD/build.ninja" ]; then
  CC=clang CXX=clang++ meson setup "$FBUILD" "$SRC" -Dfuzz=true -Dtests=false \
    -Db_sanitize=address,undefined -Db_lundef=false -Doptimization=1 -Ddebug=false \
    '-Dcpp_args=-fsanitize=fuzzer-no-link -g1' >"$probe/setup.log" 2>&1 ||
    { cat "$probe/setup.log"; echo "FAIL: meson setup of the clang build"; exit 1; }
fi
targets=(tests/fuzz/fuzz_ddi tests/fuzz/fuzz_bundle tests/fuzz/fuzz_manifest tests/fuzz/fuzz_oci
         tests/fuzz/fuzz_oci_layout tests/fuzz/fuzz_app_config)
ninja -C "$FBUILD" "${targets[@]}" >"$probe/build.log" 2>&1 ||
  { tail -n 60 "$probe/build.log"; echo "FAIL: clang build of the fuzzers"; exit 1; }
echo "clang build of the fuzzers: $(( $(date +%s) - t0 )) s"

# harness  seeds  dictionary  max_len  sandboxed
plan=(
  "ddi ddi ddi.dict 8192 no"
  "bundle bundle manifest.dict 32768 no"
  "manifest manifest manifest.dict 8192 no"
  "oci oci oci.dict 65536 yes"
  "oci_layout oci_layout oci.dict 65536 yes"
  "app_config app_config app_config.dict 4096 no"
)
mkdir -p "$ART"
failed=0
for line in "${plan[@]}"; do
  read -r name seeds dict maxlen sandbox <<<"$line"
  work=$(mktemp -d "$BUILD/fuzz-work-$name.XXXXXX") # not under /tmp: the sandbox mounts a tmpfs there
  mkdir -p "$work/corpus" "$work/art"
  cp "$SRC/tests/fuzz/seeds/$seeds"/* "$work/corpus/"
  if [ -d "$SRC/tests/fuzz/regressions/$seeds" ]; then cp "$SRC/tests/fuzz/regressions/$seeds"/* "$work/corpus/"; fi
  cmd=("$FBUILD/tests/fuzz/fuzz_$name" "$work/corpus" "-dict=$SRC/tests/fuzz/$dict" "-max_len=$maxlen"
       "-max_total_time=$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 "-artifact_prefix=$work/art/"
       -print_final_stats=1)
  rc=0
  if [ "$sandbox" = yes ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
    # The OCI harnesses unpack hostile archives as root: only the work folder
    # and a private /tmp are writable (README.md, "Run").
    MBL_FUZZ_TMP=/tmp UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      unshare -m sh -c 'mount --make-rprivate / && mount --bind "$0" "$0" && mount --bind / / &&
        mount -o remount,bind,ro / && mount -t tmpfs tmpfs /tmp && mount -o remount,bind,rw "$0" &&
        exec "$@"' "$work" "${cmd[@]}" >"$work/log" 2>&1 || rc=$?
  else
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "${cmd[@]}" >"$work/log" 2>&1 || rc=$?
  fi
  stats=$(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$work/log" | tr '\n' ' ')
  if [ $rc -ne 0 ]; then
    echo "FAIL: fuzz_$name (exit $rc) $stats"
    tail -n 40 "$work/log"
    for a in "$work/art"/*; do
      [ -f "$a" ] || continue
      cp "$a" "$ART/$name-$(basename "$a")"
      echo "input kept as $ART/$name-$(basename "$a"):"
      od -A x -t x1z "$a" | head -n 16
    done
    failed=$((failed + 1))
  else
    echo "ok: fuzz_$name ${SECONDS_EACH} s $stats"
  fi
  rm -rf "$work"
done
echo "fuzzing: $(( $(date +%s) - t0 )) s in all"
[ $failed -eq 0 ]
