#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# update-uboot-script: the project's U-Boot A/B script
# (services/update/u-boot/mbl-ab.cmd) run by the real U-Boot (Debian's 32-bit
# qemu-x86 ROM, the QEMU device's firmware) against the redundant environment
# (uboot.env + uboot-redund.env on the FAT boot partition), read back and
# continued by the real libubootenv tools (fw_printenv/fw_setenv with a
# two-line fw_env.config). No root, no loop device, no debootstrap: the disk is
# an MBR made by sfdisk on a file, the boot partition a FAT made by mkfs.vfat
# in a separate file and put in place with dd, then read and written in place
# by mtools (DISK@@1M); the slots are empty (after the choice the script's
# ext4load fails: the test reads the console line and the environment, the
# bootloader's whole part of the contract).
#
# Each boot: QEMU (TCG) with the serial console on a pipe; the test reads it
# line by line until "mbl: booting slot" or "mbl: no slot" (an event, with a
# deadline of MBL_UBOOT_DEADLINE seconds, default 180), then kills QEMU
# (SIGKILL: what is on the disk file is what U-Boot wrote) and reads the two
# copies back with mcopy.
#
# MBL_UBOOT_ONLY=<text>: run only the cases whose name contains it;
# MBL_UBOOT_KEEP=1: keep the work folder.
#
# Exit 77 with the reason when a tool is missing (tests/setup.sh installs them).
set -euo pipefail

SRC=${MBL_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
SCRIPT=$SRC/services/update/u-boot/mbl-ab.cmd
ROM=/usr/lib/u-boot/qemu-x86/u-boot.rom
DEADLINE=${MBL_UBOOT_DEADLINE:-180}

skip() { echo "SKIP: $*"; exit 77; }
for t in qemu-system-x86_64:qemu-system-x86 mkimage:u-boot-tools mkenvimage:u-boot-tools \
    fw_printenv:libubootenv-tool fw_setenv:libubootenv-tool mcopy:mtools mdir:mtools \
    mkfs.vfat:dosfstools fsck.fat:dosfstools sfdisk:fdisk od:coreutils; do
  command -v "${t%%:*}" >/dev/null || skip "${t%%:*} is not installed (apt-get install ${t#*:}; tests/setup.sh installs it)"
done
[ -f "$ROM" ] || skip "$ROM is not there (apt-get install u-boot-qemu; tests/setup.sh installs it)"
[ -f "$SCRIPT" ] || { echo "FAIL: $SCRIPT does not exist"; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/mbl-uboot-script.XXXXXX")
QPID=
cleanup() {
  if [ -n "$QPID" ]; then kill -9 "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; fi
  if [ -n "${MBL_UBOOT_KEEP:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

failures=0
CASE=
fail() { echo "FAIL [$CASE]: $*"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "  ok: $1"; else fail "$1"; fi
}
eq() { # eq DESCRIPTION GOT WANT
  if [ "$2" = "$3" ]; then echo "  ok: $1 = '$3'"; else fail "$1: got '$2', want '$3'"; fi
}

# --- the disk: MBR (layout/partitions.conf's order: boot FAT bootable, slot A,
# slot B, data), small; the FAT at 1 MiB, addressed by mtools as DISK@@1M.
mkimage -A x86 -O linux -T script -C none -n "MBL A/B" -d "$SCRIPT" "$W/boot.scr" >/dev/null
truncate -s 14M "$W/template.raw"
sfdisk -q "$W/template.raw" >/dev/null <<'EOF'
label: dos
start=2048, size=16384, type=c, bootable
start=18432, size=2048, type=83
start=20480, size=2048, type=83
start=22528, size=2048, type=83
EOF
mkfs.vfat -C -n MBL-BOOT "$W/boot.vfat" 8192 >/dev/null
mcopy -i "$W/boot.vfat" "$W/boot.scr" ::/
dd if="$W/boot.vfat" of="$W/template.raw" bs=1M seek=1 conv=notrunc status=none
DISK=$W/disk.raw
FAT="$DISK@@1M"

# mkcopy FILE FLAG NAME=VALUE...: one copy as mkenvimage -r makes it (flag 1),
# then its flag byte set (the CRC covers the data only, so it stays valid).
mkcopy() {
  local f=$1 flag=$2
  shift 2
  printf '%s\n' "$@" >"$W/env.txt"
  mkenvimage -r -s 0x4000 -o "$f" "$W/env.txt"
  setflag "$f" "$flag"
}
# PADX/PADY: long values, so that each copy's data spans several sectors and
# the two copies differ in every one of them (a cut at a sector boundary then
# always leaves a mix of new and old bytes).
PADX=MBL_PAD=$(printf 'x%.0s' $(seq 1500))
PADY=MBL_PAD=$(printf 'y%.0s' $(seq 1500))
setflag() { printf "\\x$(printf %02x "$2")" | dd of="$1" bs=1 seek=4 conv=notrunc status=none; }
flag() { od -An -tu1 -j4 -N1 "$1" | tr -d ' '; }
# corrupt FILE: one data byte changed (the CRC no longer matches).
corrupt() { printf '\xff' | dd of="$1" bs=1 seek=5 conv=notrunc status=none; }

# newdisk [FILE...]: a fresh disk whose boot partition holds boot.scr and the
# given files (named uboot.env / uboot-redund.env in $W/in).
newdisk() {
  cp "$W/template.raw" "$DISK"
  local f
  for f in "$@"; do mcopy -o -i "$FAT" "$f" ::/; done
}
# readback: the two copies as they are on the disk now, into $W/out.
readback() {
  rm -rf "$W/out"; mkdir -p "$W/out"
  local f
  for f in uboot.env uboot-redund.env; do
    if mdir -i "$FAT" "::/$f" >/dev/null 2>&1; then mcopy -i "$FAT" "::/$f" "$W/out/$f"; fi
  done
  printf '%s 0x0 0x4000\n%s 0x0 0x4000\n' "$W/out/uboot.env" "$W/out/uboot-redund.env" >"$W/fw_env.config"
}
# fwget NAME: the variable as the real fw_printenv reads it from the pair
# (from its full listing: libubootenv 0.3.2's "-n NAME" prints an empty line
# for a variable that is not set); "<unset>" when it is not there,
# "<unreadable>" when fw_printenv fails.
fwget() {
  local all
  all=$(fw_printenv -c "$W/fw_env.config" 2>&1) || { echo "<unreadable>"; return; }
  local line
  while IFS= read -r line; do
    if [ "${line%%=*}" = "$1" ]; then echo "${line#*=}"; return; fi
  done <<<"$all"
  echo "<unset>"
}

# boot: one U-Boot boot of $DISK; sets CHOICE (the "mbl: booting slot" or
# "mbl: no slot" line) and CONSOLE (everything before it).
BOOT_MS=()
boot() {
  CONSOLE= CHOICE=
  local start=$EPOCHREALTIME line
  coproc QEMU { exec qemu-system-x86_64 -machine pc,accel=tcg -m 1024 -nodefaults -no-user-config \
      -display none -bios "$ROM" -serial stdio -drive "file=$DISK,if=virtio,format=raw" </dev/null 2>&1; }
  QPID=$QEMU_PID
  local fd=${QEMU[0]}
  while :; do
    local left=$(( DEADLINE - (${EPOCHREALTIME%.*} - ${start%.*}) ))
    [ "$left" -gt 0 ] || break
    IFS= read -r -t "$left" line <&"$fd" || break
    line=${line//$'\r'/}
    CONSOLE+=$line$'\n'
    case "$line" in
      *"mbl: booting slot "*|*"mbl: no slot "*) CHOICE=$line; break ;;
    esac
  done
  kill -9 "$QPID" 2>/dev/null || true
  wait "$QPID" 2>/dev/null || true
  QPID=
  local ms=$(( (${EPOCHREALTIME/./} - ${start/./}) / 1000 ))
  BOOT_MS+=("$ms")
  if [ -z "$CHOICE" ]; then
    fail "no 'mbl: booting slot' / 'mbl: no slot' line within ${DEADLINE}s; console:"
    printf '%s' "$CONSOLE" | tail -n 40 | sed 's/^/  console| /'
  else
    echo "  console| $CHOICE (${ms} ms)"
  fi
  readback
}
# fatclean: the boot partition passes fsck.fat (read-only check).
fatclean() {
  dd if="$DISK" of="$W/fat.img" bs=1M skip=1 count=8 status=none
  fsck.fat -n "$W/fat.img" >"$W/fsck.log" 2>&1 || { cat "$W/fsck.log"; return 1; }
}
said() { [[ "$CONSOLE" == *"$1"* ]]; }
notsaid() { [[ "$CONSOLE" != *"$1"* ]]; }
same() { cmp -s "$1" "$2"; }

# begin NAME: announces a case; false when MBL_UBOOT_ONLY leaves it out.
begin() {
  CASE=$1
  [ -z "${MBL_UBOOT_ONLY:-}" ] || [[ "$CASE" == *"$MBL_UBOOT_ONLY"* ]] || return 1
  echo "== $CASE"
}

mkdir -p "$W/in"
IN1=$W/in/uboot.env
IN2=$W/in/uboot-redund.env

case1() {
  begin "both good, the higher flag wins, counter decremented in the other copy" || return 0
  mkcopy "$IN1" 5 "BOOT_ORDER=B A" BOOT_A_LEFT=0 BOOT_B_LEFT=3 MBL_B_STATE=trial MBL_SECURITY_VERSION_FLOOR=7
  mkcopy "$IN2" 4 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
  newdisk "$IN1" "$IN2"
  boot
  eq "console" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  check "the current copy (uboot.env, flag 5) is not touched" same "$W/out/uboot.env" "$IN1"
  eq "flag of the copy written (uboot-redund.env)" "$(flag "$W/out/uboot-redund.env")" 6
  eq "fw_printenv BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 2
  eq "fw_printenv BOOT_ORDER" "$(fwget BOOT_ORDER)" "B A"
  eq "fw_printenv MBL_B_STATE (kept)" "$(fwget MBL_B_STATE)" trial
  eq "fw_printenv MBL_SECURITY_VERSION_FLOOR (kept)" "$(fwget MBL_SECURITY_VERSION_FLOOR)" 7
  check "no copy reported corrupted" notsaid "missing or corrupted"
  # U-Boot's own variables never reach the file.
  eq "fw_printenv bootcmd (U-Boot's own, not written)" "$(fwget bootcmd)" "<unset>"
}

case2() {
  begin "fw_setenv continues from the flag U-Boot wrote, and U-Boot from fw_setenv's" || return 0
  # The disk of the previous case: uboot.env flag 5, uboot-redund.env flag 6.
  fw_setenv -c "$W/fw_env.config" MBL_B_STATE committed
  eq "fw_setenv wrote the other copy (uboot.env) with flag 7" "$(flag "$W/out/uboot.env")" 7
  eq "fw_printenv after fw_setenv: MBL_B_STATE" "$(fwget MBL_B_STATE)" committed
  eq "fw_printenv after fw_setenv: BOOT_B_LEFT (U-Boot's decrement kept)" "$(fwget BOOT_B_LEFT)" 2
  mcopy -o -i "$FAT" "$W/out/uboot.env" ::/
  boot
  eq "console" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  eq "U-Boot wrote uboot-redund.env with flag 8" "$(flag "$W/out/uboot-redund.env")" 8
  eq "fw_printenv MBL_B_STATE (fw_setenv's value, kept by U-Boot)" "$(fwget MBL_B_STATE)" committed
  eq "fw_printenv BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 1
}

case3() {
  begin "flags 255 and 0: the copy with 0 is current (uboot-redund.env)" || return 0
  mkcopy "$IN1" 255 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
  mkcopy "$IN2" 0 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=3 MBL_B_STATE=trial
  newdisk "$IN1" "$IN2"
  boot
  eq "console" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  check "uboot-redund.env (flag 0) not touched" same "$W/out/uboot-redund.env" "$IN2"
  eq "flag written to uboot.env" "$(flag "$W/out/uboot.env")" 1
  eq "fw_printenv BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 2
}

case4() {
  begin "flags 0 and 255: the copy with 0 is current (uboot.env)" || return 0
  mkcopy "$IN1" 0 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=3
  mkcopy "$IN2" 255 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
  newdisk "$IN1" "$IN2"
  boot
  eq "console" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  check "uboot.env (flag 0) not touched" same "$W/out/uboot.env" "$IN1"
  eq "flag written to uboot-redund.env" "$(flag "$W/out/uboot-redund.env")" 1
}

case5() {
  begin "current flag 255: U-Boot writes 0, which both readers then take" || return 0
  mkcopy "$IN1" 255 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=3
  mkcopy "$IN2" 254 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
  newdisk "$IN1" "$IN2"
  boot
  eq "console" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  eq "flag written to uboot-redund.env (255 + 1)" "$(flag "$W/out/uboot-redund.env")" 0
  eq "fw_printenv takes it: BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 2
  boot
  eq "console (next boot from the copy with flag 0)" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  eq "flag written to uboot.env (0 + 1)" "$(flag "$W/out/uboot.env")" 1
  eq "fw_printenv BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 1
}

case6() {
  begin "equal flags (both copies as the image builder makes them): the first is current" || return 0
  mkcopy "$IN1" 1 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
  cp "$IN1" "$IN2"
  newdisk "$IN1" "$IN2"
  boot
  eq "console" "$CHOICE" "mbl: booting slot A (BOOT_ORDER=A)"
  check "uboot.env not touched" same "$W/out/uboot.env" "$IN1"
  eq "flag written to uboot-redund.env" "$(flag "$W/out/uboot-redund.env")" 2
  eq "fw_printenv BOOT_A_LEFT" "$(fwget BOOT_A_LEFT)" 2
}

case7() {
  begin "the current copy corrupted: the other one is used, and said" || return 0
  mkcopy "$IN1" 9 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=3 MBL_B_STATE=trial
  corrupt "$IN1"
  mkcopy "$IN2" 8 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0 MBL_SECURITY_VERSION_FLOOR=4
  newdisk "$IN1" "$IN2"
  boot
  check "console says uboot.env is corrupted and uboot-redund.env used" \
    said "mbl: uboot.env is missing or corrupted: using uboot-redund.env"
  eq "console" "$CHOICE" "mbl: booting slot A (BOOT_ORDER=A)"
  check "uboot-redund.env (the good one) not touched" same "$W/out/uboot-redund.env" "$IN2"
  eq "flag written to uboot.env (8 + 1)" "$(flag "$W/out/uboot.env")" 9
  eq "fw_printenv BOOT_A_LEFT" "$(fwget BOOT_A_LEFT)" 2
  eq "fw_printenv MBL_SECURITY_VERSION_FLOOR (kept)" "$(fwget MBL_SECURITY_VERSION_FLOOR)" 4
}

case8() {
  begin "the older copy missing: the current one is used, and said; the missing file is created" || return 0
  mkcopy "$IN1" 3 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=2
  newdisk "$IN1"
  boot
  check "console says uboot-redund.env is missing" said "mbl: uboot-redund.env is missing or corrupted: using uboot.env"
  eq "console" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  eq "flag of the created uboot-redund.env" "$(flag "$W/out/uboot-redund.env")" 4
  check "the FAT is clean after U-Boot created the file (fsck.fat -n)" fatclean
  eq "fw_printenv BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 1
}

case14() {
  begin "a short copy (truncated file): the other one is used; the short one rewritten whole" || return 0
  mkcopy "$IN1" 7 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=3
  head -c 100 "$IN1" >"$W/short" && mv "$W/short" "$IN1"
  mkcopy "$IN2" 6 "BOOT_ORDER=A" BOOT_A_LEFT=2 BOOT_B_LEFT=0
  newdisk "$IN1" "$IN2"
  boot
  check "console says uboot.env is corrupted" said "mbl: uboot.env is missing or corrupted: using uboot-redund.env"
  eq "console" "$CHOICE" "mbl: booting slot A (BOOT_ORDER=A)"
  eq "size of the rewritten uboot.env" "$(stat -c %s "$W/out/uboot.env")" 16384
  eq "flag written to uboot.env (6 + 1)" "$(flag "$W/out/uboot.env")" 7
  eq "fw_printenv BOOT_A_LEFT" "$(fwget BOOT_A_LEFT)" 1
  check "the FAT is clean after U-Boot grew the file (fsck.fat -n)" fatclean
}

case9() {
  begin "both copies corrupted: the factory environment" || return 0
  mkcopy "$IN1" 2 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=3 MBL_B_STATE=trial
  mkcopy "$IN2" 1 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
  corrupt "$IN1"; corrupt "$IN2"
  newdisk "$IN1" "$IN2"
  boot
  check "console says both are corrupted" \
    said "mbl: uboot.env and uboot-redund.env are missing or corrupted: using the factory environment (BOOT_ORDER=A B)"
  eq "console" "$CHOICE" "mbl: booting slot A (BOOT_ORDER=A B)"
  eq "flag written to uboot.env" "$(flag "$W/out/uboot.env")" 1
  eq "fw_printenv BOOT_ORDER" "$(fwget BOOT_ORDER)" "A B"
  eq "fw_printenv BOOT_A_LEFT" "$(fwget BOOT_A_LEFT)" 2
  eq "fw_printenv BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 3
  eq "fw_printenv bootcmd (U-Boot's own, not written)" "$(fwget bootcmd)" "<unset>"
}

case10() {
  begin "a power cut during U-Boot's write: the old copy stays current" || return 0
  # U-Boot writes the copy that is not current (uboot-redund.env here). The cut
  # is simulated on the bytes: the copy as U-Boot wrote it up to a sector
  # boundary, the old bytes after (what a medium holds after a cut mid-write).
  mkcopy "$IN1" 3 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=1 MBL_B_STATE=trial "$PADX"
  mkcopy "$IN2" 2 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0 "$PADY"
  newdisk "$IN1" "$IN2"
  boot
  eq "console" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  eq "U-Boot wrote uboot-redund.env with flag 4" "$(flag "$W/out/uboot-redund.env")" 4
  for cut in 512 1024; do
    mkdir -p "$W/torn"
    { head -c "$cut" "$W/out/uboot-redund.env"; tail -c +$((cut + 1)) "$IN2"; } >"$W/torn/uboot-redund.env"
    newdisk "$IN1" "$W/torn/uboot-redund.env"
    readback
    eq "cut at byte $cut: fw_printenv reads the old copy, BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 1
    boot
    check "cut at byte $cut: the next boot says the torn copy is corrupted" \
      said "mbl: uboot-redund.env is missing or corrupted: using uboot.env"
    eq "cut at byte $cut: the next boot (the uncounted attempt again)" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
    eq "cut at byte $cut: uboot-redund.env rewritten with flag 4" "$(flag "$W/out/uboot-redund.env")" 4
    eq "cut at byte $cut: BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 0
    eq "cut at byte $cut: MBL_B_STATE kept" "$(fwget MBL_B_STATE)" trial
  done
}

case13() {
  begin "a power cut during fw_setenv: U-Boot boots from the old copy" || return 0
  mkcopy "$IN1" 4 "BOOT_ORDER=B A" BOOT_A_LEFT=3 BOOT_B_LEFT=2 MBL_B_STATE=trial "$PADX"
  mkcopy "$IN2" 3 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0 "$PADY"
  cp "$IN1" "$W/old1.env"; cp "$IN2" "$W/old2.env"
  printf '%s 0x0 0x4000\n%s 0x0 0x4000\n' "$IN1" "$IN2" >"$W/in.config"
  # What mbl-update's MarkBad would write (slot B out of BOOT_ORDER).
  fw_setenv -c "$W/in.config" BOOT_ORDER A
  eq "fw_setenv wrote uboot-redund.env with flag 5" "$(flag "$IN2")" 5
  check "fw_setenv left uboot.env alone" same "$IN1" "$W/old1.env"
  # The cut: fw_setenv's copy up to a sector boundary, the old bytes after.
  mkdir -p "$W/torn"
  { head -c 1024 "$IN2"; tail -c +1025 "$W/old2.env"; } >"$W/torn/uboot-redund.env"
  newdisk "$IN1" "$W/torn/uboot-redund.env"
  printf '%s 0x0 0x4000\n%s 0x0 0x4000\n' "$IN1" "$W/torn/uboot-redund.env" >"$W/in.config"
  eq "fw_printenv after the cut: BOOT_ORDER (the old copy)" \
    "$(fw_printenv -c "$W/in.config" -n BOOT_ORDER 2>/dev/null)" "B A"
  boot
  check "the boot says the torn copy is corrupted" said "mbl: uboot-redund.env is missing or corrupted: using uboot.env"
  eq "console (the state before the cut write)" "$CHOICE" "mbl: booting slot B (BOOT_ORDER=B A)"
  eq "flag written to uboot-redund.env (4 + 1)" "$(flag "$W/out/uboot-redund.env")" 5
  eq "fw_printenv BOOT_B_LEFT" "$(fwget BOOT_B_LEFT)" 1
  eq "fw_printenv MBL_B_STATE" "$(fwget MBL_B_STATE)" trial
}

case11() {
  begin "no slot with attempts left: nothing written" || return 0
  mkcopy "$IN1" 6 "BOOT_ORDER=B" BOOT_A_LEFT=0 BOOT_B_LEFT=0
  mkcopy "$IN2" 5 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
  newdisk "$IN1" "$IN2"
  boot
  eq "console" "$CHOICE" "mbl: no slot of BOOT_ORDER (B) has boot attempts left"
  check "uboot.env not touched" same "$W/out/uboot.env" "$IN1"
  check "uboot-redund.env not touched" same "$W/out/uboot-redund.env" "$IN2"
}

case12() {
  begin "the write fails (boot partition full, the other copy missing): no slot" || return 0
  mkcopy "$IN1" 6 "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
  newdisk "$IN1"
  free=$(mdir -i "$FAT" ::/ | sed -n 's/^ *\([0-9 ]*\) bytes free.*/\1/p' | tr -d ' ')
  head -c "$free" /dev/zero >"$W/filler"
  mcopy -i "$FAT" "$W/filler" ::/
  boot
  check "console says the write failed" said "mbl: cannot write uboot-redund.env: not booting a slot whose attempt was not counted"
  eq "console" "$CHOICE" "mbl: no slot of BOOT_ORDER (A) has boot attempts left"
  check "uboot.env not touched" same "$W/out/uboot.env" "$IN1"
}

# case2 continues on the disk of case1.
for c in case1 case2 case3 case4 case5 case6 case7 case8 case14 case9 case10 case13 case11 case12; do
  "$c"
done

echo "U-Boot boots (QEMU start to the choice line, ms): ${BOOT_MS[*]}"
if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
