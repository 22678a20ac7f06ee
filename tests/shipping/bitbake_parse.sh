#!/usr/bin/env bash
# The layer parses with real BitBake: `bitbake -p` over poky plus meta-layer/
# reports no error, the recipes resolve (the meson options, the unit folder of
# the release, the source folder), and the example bundle recipe skips itself
# with its reason while no signing key is set.
#
# Needs a poky checkout (kirkstone or scarthgap) named by MBL_POKY_DIR; skips
# (77) without one, or without the host tools BitBake insists on. meta-oe and
# meta-virtualization are not needed to parse: LAYERDEPENDS is reduced to core
# in a scratch copy and nlohmann-json is assumed provided.
set -euo pipefail
skip() { echo "SKIP: $*"; exit 77; }
SRC=${MBL_SOURCE_ROOT:?run through meson test}
POKY=${MBL_POKY_DIR:-}
[ -n "$POKY" ] || skip "MBL_POKY_DIR is not set (a poky checkout of kirkstone or scarthgap)"
[ -x "$POKY/bitbake/bin/bitbake" ] || skip "$POKY has no bitbake/bin/bitbake"
missing=$(for t in chrpath cpio diffstat gawk python3 localedef; do command -v $t >/dev/null || echo $t; done)
[ -z "$missing" ] || skip "BitBake's host tools missing: $missing (apt-get install chrpath cpio diffstat gawk)"
# BitBake refuses to run as root.
runas=()
if [ "$(id -u)" -eq 0 ]; then
  id mbl-test-user >/dev/null 2>&1 || skip "running as root and there is no mbl-test-user to run BitBake as (tests/setup.sh)"
  runas=(setpriv --reuid=mbl-test-user --regid=mbl-test-user --clear-groups)
fi

work=$(mktemp -d /var/tmp/mbl-bitbake.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -a "$SRC/meta-layer" "$work/meta-mbl"
sed -i 's/^LAYERDEPENDS_mbl = .*/LAYERDEPENDS_mbl = "core"/' "$work/meta-mbl/conf/layer.conf"
mkdir -p "$work/locale"
localedef -i en_US -f UTF-8 "$work/locale/en_US.UTF-8" 2>/dev/null || true
cat >"$work/run.sh" <<SH
set -e
export LANG=en_US.UTF-8 LOCPATH=$work/locale BB_ENV_PASSTHROUGH_ADDITIONS=LOCPATH HOME=$work
cd $work
source "$POKY/oe-init-build-env" build >/dev/null
cat >>conf/local.conf <<'CONF'
INHERIT:remove = "sanity"
BB_NUMBER_THREADS = "2"
BB_NUMBER_PARSE_THREADS = "2"
INIT_MANAGER = "systemd"
ASSUME_PROVIDED += "nlohmann-json nlohmann-json-native"
PACKAGECONFIG:pn-mbl-device-services = "uboot"
CONF
echo 'MBL_SOURCE_DIR = "$SRC"' >>conf/local.conf
bitbake-layers add-layer $work/meta-mbl >/dev/null
bitbake -p >$work/parse.log 2>&1 || { cat $work/parse.log; exit 1; }
bitbake -e mbl-device-services >$work/env.log 2>&1 || { grep -E "^ERROR" $work/env.log; exit 1; }
bitbake-layers show-recipes mbl-bundle-example >$work/skip.log 2>&1 || true
SH
chown -R mbl-test-user "$work" 2>/dev/null || true
if ! "${runas[@]}" bash "$work/run.sh" >"$work/run.out" 2>&1; then
  grep -v "make sure locale" "$work/run.out" | tail -n 40
  echo "FAIL: bitbake could not parse the layer"; exit 1
fi
failures=0
check() { if "${@:2}"; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
summary=$(grep "Parsing of" "$work/parse.log" || true)
echo "$summary"
check "bitbake -p reports 0 errors" grep -q " 0 errors" <<<"$summary"
var() { sed -n "s/^$1=\"\\(.*\\)\"\$/\\1/p" "$work/env.log"; }
check "S is the checkout (externalsrc): $(var S)" test "$(var S)" = "$SRC"
check "the unit folder comes from the release: $(var EXTRA_OEMESON | grep -o -- '-Dsystemdsystemunitdir=[^ ]*')" \
  bash -c 'grep -qE -- "-Dsystemdsystemunitdir=/(usr/)?lib/systemd/system( |$)" <<<"$1"' _ "$(var EXTRA_OEMESON)"
check "the example bundle recipe skips itself without a key" grep -q "skipped: MBL_BUNDLE_KEY is not set" "$work/skip.log"
echo "$failures failure(s)"
[ $failures -eq 0 ]
