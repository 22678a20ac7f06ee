#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Yocto layer with real BitBake, nothing relaxed: poky, meta-openembedded
# and meta-virtualization (scarthgap, the offline archive of ../shared/yocto),
# BitBake's sanity checks on, the layer's full LAYERDEPENDS, no network,
# INIT_MANAGER systemd, DISTRO_FEATURES virtualization, the two example
# machines (mbl-qemux86-64: GRUB; mbl-qemuarm64: U-Boot, as a multiconfig),
# run as an unprivileged user on a clean clone of the project (its working
# tree) owned by that user. One parse (`bitbake -p`), then `bitbake -g` of the
# image, the packagegroup, the services, the build-host bundle tool and the
# example bundle for each machine on the warm cache; the dependency graphs are
# checked for the real providers (tests/shipping/check_layer.py --graph).
# Prints the time of each step.
#
# Skips (77) only when the layer archive is absent: MBL_YOCTO_DIR, else
# ../shared/yocto beside the source root, else /work/shared/yocto. Anything
# else missing (BitBake's host tools, the en_US.UTF-8 locale, the user to run
# BitBake as when run by root) is a failure: tests/setup.sh installs them.
# MBL_BB_THREADS / MBL_BB_PARSE_THREADS (default 2) bound BitBake's threads;
# MBL_BITBAKE_WORK is where its folder goes (default /var/tmp), MBL_BITBAKE_KEEP=1
# keeps it.
set -euo pipefail
SRC=${MBL_SOURCE_ROOT:?run through meson test}
SRC=$(cd "$SRC" && pwd)
skip() { echo "SKIP: $*"; exit 77; }
die() { echo "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

YOCTO=${MBL_YOCTO_DIR:-}
if [ -z "$YOCTO" ]; then
  for c in "$SRC/../shared/yocto" /work/shared/yocto; do
    if [ -f "$c/scarthgap-layers.tar.zst" ]; then YOCTO=$c; break; fi
  done
fi
[ -n "$YOCTO" ] && [ -f "$YOCTO/scarthgap-layers.tar.zst" ] ||
  skip "no Yocto layer archive (scarthgap-layers.tar.zst) in ${MBL_YOCTO_DIR:-$SRC/../shared/yocto or /work/shared/yocto}"

missing=$(for t in chrpath cpio diffstat gawk git lz4c patch pzstd rpcgen wget file zstd localedef setpriv python3; do
  command -v $t >/dev/null || echo $t; done)
[ -z "$missing" ] || die "BitBake's host tools are missing: $missing (tests/setup.sh installs them)"
locale -a 2>/dev/null | grep -qiE '^en_US\.utf-?8$' || die "no en_US.UTF-8 locale (tests/setup.sh generates it)"

# BitBake refuses to run as root.
runas=()
BBUSER=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
  BBUSER=${MBL_BITBAKE_USER:-mbl-test-user}
  id "$BBUSER" >/dev/null 2>&1 || die "running as root and there is no user $BBUSER to run BitBake as (tests/setup.sh)"
  runas=(setpriv --reuid="$BBUSER" --regid="$(id -g "$BBUSER")" --clear-groups)
fi
as_user() { "${runas[@]}" env HOME="$work/home" LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8 "$@"; }

work=$(mktemp -d "${MBL_BITBAKE_WORK:-/var/tmp}/mbl-bitbake.XXXXXX")
cleanup() {
  if [ -n "${MBL_BITBAKE_KEEP:-}" ]; then echo "kept: $work"; return; fi
  # The BitBake server of this build (it idles out on its own; do not wait).
  [ -f "$work/build/bitbake.lock" ] && as_user bash -c "cd '$work/build' && . '$work/layers/poky/oe-init-build-env' . >/dev/null && bitbake -m" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/home" "$work/layers"
t0=$(now)
tar --zstd -xf "$YOCTO/scarthgap-layers.tar.zst" -C "$work/layers"

# A clean clone of the project: what its working tree holds (tracked and new
# files, not ignored ones such as build folders), committed to a repository of
# its own (externalsrc hashes the tree through git and writes into .git).
mkdir -p "$work/src"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -xf - -C "$work/src"
else
  die "$SRC is not a git checkout: the test parses a clean clone of one"
fi
chown -R "$BBUSER" "$work"
as_user git -C "$work/src" init -q
as_user git -C "$work/src" add -A
as_user git -C "$work/src" -c user.name=mbl-test -c user.email=mbl-test@localhost commit -qm "working tree under test"

# A signing key and certificate for the example bundle (only named: -g runs no task).
mkdir -p "$work/keys"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mbl-test-signer \
  -keyout "$work/keys/signer.key" -out "$work/keys/signer.crt" -days 1 2>/dev/null
# A layer of the test's own: a bundle recipe that is the example without a key,
# which must skip itself with its reason.
mkdir -p "$work/meta-mbl-test/conf" "$work/meta-mbl-test/recipes-test/bundles"
cat >"$work/meta-mbl-test/conf/layer.conf" <<'CONF'
BBPATH .= ":${LAYERDIR}"
BBFILES += "${LAYERDIR}/recipes-*/*/*.bb"
BBFILE_COLLECTIONS += "mbl-test"
BBFILE_PATTERN_mbl-test = "^${LAYERDIR}/"
BBFILE_PRIORITY_mbl-test = "8"
LAYERDEPENDS_mbl-test = "mbl"
LAYERSERIES_COMPAT_mbl-test = "scarthgap"
CONF
cat >"$work/meta-mbl-test/recipes-test/bundles/mbl-bundle-unsigned.bb" <<'BB'
require recipes-mbl/bundles/mbl-bundle-example.bb
MBL_BUNDLE_KEY = ""
BB
chown -R "$BBUSER" "$work"

L=$work/layers
cat >"$work/setup.sh" <<SH
set -e
cd "$work"
. "$L/poky/oe-init-build-env" build >/dev/null
SH
as_user bash -c ". '$work/setup.sh'"
cat >"$work/build/conf/bblayers.conf" <<CONF
POKY_BBLAYERS_CONF_VERSION = "2"
BBPATH = "\${TOPDIR}"
BBFILES ?= ""
BBLAYERS ?= " \\
  $L/poky/meta \\
  $L/poky/meta-poky \\
  $L/poky/meta-yocto-bsp \\
  $L/meta-openembedded/meta-oe \\
  $L/meta-openembedded/meta-python \\
  $L/meta-openembedded/meta-networking \\
  $L/meta-openembedded/meta-filesystems \\
  $L/meta-virtualization \\
  $work/src/meta-layer \\
  $work/meta-mbl-test \\
  "
CONF
cat >>"$work/build/conf/local.conf" <<CONF
# tests/shipping/bitbake_parse.sh
MACHINE = "mbl-qemux86-64"
BBMULTICONFIG = "arm"
INIT_MANAGER = "systemd"
DISTRO_FEATURES:append = " virtualization"
BB_NO_NETWORK = "1"
BB_NUMBER_THREADS = "${MBL_BB_THREADS:-2}"
BB_NUMBER_PARSE_THREADS = "${MBL_BB_PARSE_THREADS:-2}"
MBL_BUNDLE_KEY = "$work/keys/signer.key"
MBL_BUNDLE_CERT = "$work/keys/signer.crt"
CONF
mkdir -p "$work/build/conf/multiconfig"
cat >"$work/build/conf/multiconfig/arm.conf" <<'CONF'
MACHINE = "mbl-qemuarm64"
TMPDIR = "${TOPDIR}/tmp-arm"
CONF
chown -R "$BBUSER" "$work"
t1=$(now)
echo "setup (extract, clone, build folder): $(secs "$t0" "$t1") s"

bb() { as_user bash -c ". '$work/setup.sh' && BB_SERVER_TIMEOUT=120 $*"; }

if ! bb bitbake -p >"$work/parse.log" 2>&1; then
  grep -E "^(ERROR|WARNING)|Parsing of" "$work/parse.log" | tail -n 60
  die "bitbake -p failed"
fi
t2=$(now)
summary=$(grep -a "Parsing of" "$work/parse.log" | tail -n 1 || true)
echo "parse (bitbake -p, both machines, cold): $(secs "$t1" "$t2") s: $summary"
failures=0
check() { if "${@:2}"; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
check "bitbake -p: 0 errors" grep -q " 0 errors" <<<"$summary"
# Warnings about this layer's recipes fail the test as errors would.
ours=$(grep -aE "^WARNING:" "$work/parse.log" | grep -E "meta-layer|mbl" || true)
check "bitbake -p: no warning about the mbl layer${ours:+: $ours}" test -z "$ours"

TARGETS="mbl-image packagegroup-mbl mbl-device-services mbl-bundle-native mbl-bundle-example"
for mc in "" arm; do
  name=${mc:-x86}
  machine=mbl-qemux86-64
  [ -z "$mc" ] || machine="mbl-qemuarm64, multiconfig $mc"
  prefix=${mc:+mc:$mc:}
  list=$(for t in $TARGETS; do printf '%s%s ' "$prefix" "$t"; done)
  ta=$(now)
  if bb "bitbake -g $list && mkdir -p '$work/graph-$name' && mv task-depends.dot pn-buildlist '$work/graph-$name/'" \
       >"$work/graph-$name.log" 2>&1; then
    tb=$(now)
    echo "bitbake -g ($name: $TARGETS) on the warm cache: $(secs "$ta" "$tb") s"
    check "bitbake -g resolves every dependency for $name (MACHINE $machine)" true
    if python3 "$SRC/tests/shipping/check_layer.py" --graph "$work/graph-$name" --machine "$name" \
         --layer "$work/src/meta-layer" --layers "$L"; then
      echo "ok: $name: the graph has the real providers"
    else
      echo "FAIL: $name: the graph lacks a real provider (above)"; failures=$((failures + 1))
    fi
  else
    grep -aE "^ERROR|^NOTE: Runtime target|was skipped|^Missing or unbuildable" "$work/graph-$name.log" | head -n 40
    check "bitbake -g resolves every dependency for $name" false
  fi
done

# Without a key the example's copy skips itself, saying why.
if bb "bitbake -g mbl-bundle-unsigned" >"$work/unsigned.log" 2>&1; then
  check "a bundle recipe without MBL_BUNDLE_KEY is skipped" false
else
  check "a bundle recipe without MBL_BUNDLE_KEY is skipped with its reason" \
    grep -q "MBL_BUNDLE_KEY is not set, nor MBL_BUNDLE_SIGN_CMD" "$work/unsigned.log"
fi
t3=$(now)
# The CPU time of the BitBake server and its parser processes (the same server
# served every command): what the test costs on an idle machine, whatever the
# load while it ran.
cpu=""
srv=$(head -n 1 "$work/build/bitbake.lock" 2>/dev/null || true)
if [ -n "$srv" ] && [ -r "/proc/$srv/stat" ]; then
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($14 + $15 + $16 + $17) / hz }' "/proc/$srv/stat")
fi
echo "total: $(secs "$t0" "$t3") s (parse $(secs "$t1" "$t2") s, the graphs $(secs "$t2" "$t3") s)${cpu:+; BitBake used $cpu CPU-seconds}, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$failures failure(s)"
[ "$failures" -eq 0 ]
