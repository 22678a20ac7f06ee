#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the QEMU device's disk image (tests/device/README.md), cached and
# rebuilt only when an input changes:
#
#   1. Debian 12 root file system: debootstrap (tests/shipping/make-rootfs.sh)
#      with Debian's generic kernel (linux-image-amd64: it has the i6300esb
#      watchdog driver), systemd, udev, runc, libubootenv, grub-common and the
#      QEMU guest agent (the tests' way into the guest; a test image only).
#   2. The device's system: kernel and a small initrd at fixed names in /boot,
#      kernel modules the machine has no hardware for removed, fstab from
#      layout/partitions.conf, static network for QEMU's user-mode network.
#   3. The project built on the host (release, not sanitized, --prefix=/usr)
#      and installed with `meson install --destdir`; the device's
#      configuration (tests/device/image/etc) and the firmware trust CA; the
#      units enabled. The slot image: an ext4 file system of that tree.
#   4. The disk: the partition table of layout/partitions.conf (MBR), the boot
#      partition (FAT) with the bootloader's files and its environment, the
#      slot image in slot A, slot B empty, the data partition blank (the
#      fstab's x-systemd.makefs formats it on the first boot, as after a
#      factory data reset).
#
# Usage: build-image.sh grub|uboot
# Prints KEY=VALUE lines: DISK (raw base image, never written by a test: each
# test boots a qcow2 overlay of it), ROOTFS (the slot image, for bundles), PKI
# (firmware signing CA, intermediate and signer), BUILD (the release build).
# Exit 77 with the reason when this machine cannot build it.
#
# Env: MBL_SOURCE_ROOT, MBL_DEVICE_CACHE (default /var/cache/mbl-device),
# MBL_DEVICE_BUILD_DIR (the release build, default <source>/build-device),
# MBL_DEVICE_DATA_MIB (data partition of the QEMU disk, default 512).
set -euo pipefail

FLAVOUR=${1:?usage: build-image.sh grub|uboot}
case "$FLAVOUR" in grub|uboot) ;; *) echo "build-image: unknown bootloader '$FLAVOUR'" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)
SRC=${MBL_SOURCE_ROOT:-$(cd "$here/../.." && pwd)}
CACHE=${MBL_DEVICE_CACHE:-/var/cache/mbl-device}
BUILD=${MBL_DEVICE_BUILD_DIR:-$SRC/build-device}
DATA_MIB=${MBL_DEVICE_DATA_MIB:-512}
LAYOUT=$SRC/layout/partitions.conf

skip() { echo "build-image: SKIP: $*" >&2; exit 77; }
say() { echo "build-image: $*" >&2; }
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot, file ownership in the image)"
for t in sfdisk mkfs.vfat mcopy mmd mke2fs meson ninja openssl; do
  command -v "$t" >/dev/null || skip "$t is not installed (tests/setup.sh installs it)"
done
if [ "$FLAVOUR" = grub ]; then
  command -v grub-mkimage >/dev/null && [ -f /usr/lib/grub/i386-pc/boot.img ] ||
    skip "GRUB for i386-pc is not installed (apt-get install grub-pc-bin)"
else
  command -v mkimage >/dev/null && command -v mkenvimage >/dev/null ||
    skip "mkimage/mkenvimage are not installed (apt-get install u-boot-tools)"
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/build.lock"
flock 9   # one builder at a time; readers of finished images need no lock

hash_of() { openssl dgst -sha256 -r "$@" | cut -c1-64; }
key_of() { printf '%s' "$*" | openssl dgst -sha256 -r | cut -c1-16; }

# --- 1. Debian root file system ------------------------------------------------
PACKAGES=systemd,systemd-sysv,dbus,udev,kmod,linux-image-amd64,libsdbus-c++1,libcurl4,libarchive13,libssl3,openssl,ca-certificates,runc,libubootenv-tool,grub-common,util-linux,iproute2,qemu-guest-agent,e2fsprogs,dosfstools
rc=0
base=$(MBL_BOOT_CACHE=$CACHE MBL_ROOTFS_PACKAGES=$PACKAGES bash "$SRC/tests/shipping/make-rootfs.sh") || rc=$?
[ $rc -eq 77 ] && skip "cannot debootstrap the device's Debian root file system (above)"
[ $rc -eq 0 ] || { echo "build-image: make-rootfs.sh failed" >&2; exit 1; }

# --- firmware signing PKI (made once: its CA is in every slot image) -----------
PKI=$CACHE/pki
if [ ! -s "$PKI/signer.pem" ]; then
  say "firmware signing PKI in $PKI"
  rm -rf "$PKI.tmp"; mkdir -p "$PKI.tmp"
  (
    cd "$PKI.tmp"
    ec() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" "${@:2}" 2>/dev/null; }
    ec ca -x509 -days 3650 -subj "/CN=MBL QEMU device firmware CA" -out ca.pem \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    ec int -subj "/CN=MBL QEMU device firmware intermediate" -out int.csr
    printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >int.ext
    openssl x509 -req -in int.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile int.ext -out int.pem 2>/dev/null
    ec signer -subj "/CN=MBL QEMU device firmware signer" -out signer.csr
    printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n' >signer.ext
    openssl x509 -req -in signer.csr -CA int.pem -CAkey int.key -CAcreateserial -days 3650 -extfile signer.ext -out signer.pem 2>/dev/null
  )
  rm -rf "$PKI"; mv "$PKI.tmp" "$PKI"
fi

# --- 2. the device's system (system.sh: kernel, initrd, modules, fstab, network)
SYSTEM_KEY=$(key_of "$(basename "$base")" "$(hash_of "$here/system.sh" "$LAYOUT")")
SYSTEM=$CACHE/system-$SYSTEM_KEY.tar
work=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ ! -s "$SYSTEM" ]; then
  say "device system from $(basename "$base")"
  mkdir -p "$work/sys"
  tar -C "$work/sys" -xf "$base"
  bash "$here/system.sh" "$work/sys" "$LAYOUT" "$work"
  tar -C "$work/sys" --numeric-owner -cf "$work/system.tar" .
  mv "$work/system.tar" "$SYSTEM"
  rm -rf "$work/sys"
fi

# --- 3. the project, installed; the slot image --------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
  say "release build in $BUILD"
  meson setup "$BUILD" "$SRC" --buildtype=release -Doptimization=s -Db_sanitize=none -Dtests=false --prefix=/usr >"$work/setup.log" 2>&1 ||
    { cat "$work/setup.log" >&2; exit 1; }
fi
# Another ninja on the same folder (a build by hand) would race this one.
while pgrep -f "ninja .*$(basename "$BUILD")( |\$)" >/dev/null; do sleep 5; done
nice -n 10 ninja -C "$BUILD" >"$work/ninja.log" 2>&1 || { tail -n 40 "$work/ninja.log" >&2; echo "build-image: build failed" >&2; exit 1; }
inst=$work/install
meson install -C "$BUILD" --destdir "$inst" --no-rebuild --quiet >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; exit 1; }
inst_hash=$( (cd "$inst" && find . -type f -print0 | sort -z | xargs -0 openssl dgst -sha256 -r) | openssl dgst -sha256 -r | cut -c1-64)
etc_hash=$( (cd "$here/image" && find . -type f -print0 | sort -z | xargs -0 openssl dgst -sha256 -r) | openssl dgst -sha256 -r | cut -c1-64)
ROOTFS_KEY=$(key_of "$SYSTEM_KEY" "$FLAVOUR" "$inst_hash" "$etc_hash" "$(hash_of "$0" "$PKI/ca.pem")")
ROOTFS=$CACHE/rootfs-$FLAVOUR-$ROOTFS_KEY.ext4
if [ ! -s "$ROOTFS" ]; then
  say "slot image ($FLAVOUR) with the build of $BUILD"
  r=$work/root
  mkdir -p "$r"
  tar -C "$r" -xf "$SYSTEM"
  cp -a "$inst/." "$r/"
  install -d -m 0755 "$r/etc/mbl/trust"
  install -m 0644 "$PKI/ca.pem" "$r/etc/mbl/trust/mbl-qemu-firmware-ca.pem"
  for f in cloud coordinator containers; do install -m 0644 "$here/image/etc/$f.json" "$r/etc/mbl/$f.json"; done
  install -m 0644 "$here/image/etc/update-$FLAVOUR.json" "$r/etc/mbl/update.json"
  if [ "$FLAVOUR" = uboot ]; then
    install -m 0644 "$here/image/etc/uboot-env.defaults" "$r/etc/mbl/uboot-env.defaults"
    grep -v '^#' "$SRC/services/systemd/fw_env.config.example" | grep -v '^$' >"$r/etc/fw_env.config"
  fi
  echo "$ROOTFS_KEY" >"$r/etc/mbl-image-id"
  chroot "$r" systemctl enable mbl-device-identity.service mbl-update.service mbl-container-manager.service \
    mbl-cloud-client.service mbl-coordinator.service mbl-reboot.path mbl-data-layout.service \
    var-lib-mbl.mount var-log-mbl.mount >"$work/enable.log" 2>&1 ||
    { cat "$work/enable.log" >&2; echo "build-image: systemctl enable failed" >&2; exit 1; }
  # Service users and the layout, as systemd-sysusers/tmpfiles would at boot.
  chroot "$r" systemd-sysusers >/dev/null
  # As small as the tree allows plus room to run (the slot is mounted
  # read-write): a firmware bundle carries the whole image.
  used_kib=$(du -sk "$r" | cut -f1)
  size_mib=$(( (used_kib * 115 / 100) / 1024 + 64 ))
  mke2fs -q -t ext4 -i 8192 -L mbl-root -d "$r" "$work/rootfs.ext4" "${size_mib}M"
  mv "$work/rootfs.ext4" "$ROOTFS"
  rm -rf "$r"
fi

# --- 4. the disk ---------------------------------------------------------------
boot_files=("$here/image/grub.cfg" "$SRC/services/update/grub/mbl-ab.cfg" "$SRC/services/update/u-boot/mbl-ab.cmd")
DISK_KEY=$(key_of "$ROOTFS_KEY" "$DATA_MIB" "$(hash_of "$0" "$LAYOUT" "${boot_files[@]}")")
DISK=$CACHE/disk-$FLAVOUR-$DISK_KEY.raw
if [ ! -s "$DISK" ]; then
  say "disk ($FLAVOUR) from layout/partitions.conf"
  img=$work/disk.raw
  declare -A START SIZE
  script="label: dos"$'\n'
  pos=1  # MiB: the first partition starts at 1 MiB (GRUB's core image before it)
  n=0
  while read -r idx label fstype size mnt role; do
    n=$((n + 1))
    [ "$idx" = "$n" ] || { echo "build-image: partitions.conf: index $idx out of order" >&2; exit 1; }
    [ "$size" = rest ] && size=$DATA_MIB
    START[$idx]=$pos; SIZE[$idx]=$size
    type=83; boot=
    [ "$fstype" = vfat ] && type=c
    [ "$role" = boot ] && boot=", bootable"
    script+="start=$((pos * 2048)), size=$((size * 2048)), type=$type$boot"$'\n'
    case "$role" in boot) BOOT_IDX=$idx ;; rootfs:A) A_IDX=$idx ;; esac
    pos=$((pos + size))
  done < <(grep -Ev '^[[:space:]]*(#|$)' "$LAYOUT")
  [ "$n" -le 4 ] || { echo "build-image: an MBR holds 4 primary partitions" >&2; exit 1; }
  truncate -s "$((pos + 1))M" "$img"
  sfdisk -q "$img" <<<"$script" >/dev/null
  slot_mib=${SIZE[$A_IDX]}
  rootfs_mib=$(( $(stat -c %s "$ROOTFS") / 1048576 ))
  [ "$rootfs_mib" -le "$slot_mib" ] || { echo "build-image: the slot image ($rootfs_mib MiB) is larger than slot A ($slot_mib MiB)" >&2; exit 1; }

  # Boot partition: FAT with the bootloader's files and environment.
  fat=$work/boot.vfat
  mkfs.vfat -C -n MBL-BOOT "$fat" $(( ${SIZE[$BOOT_IDX]} * 1024 )) >/dev/null
  if [ "$FLAVOUR" = grub ]; then
    mmd -i "$fat" ::/grub
    mcopy -i "$fat" "$here/image/grub.cfg" "$SRC/services/update/grub/mbl-ab.cfg" ::/grub/
    grub-editenv "$work/grubenv" create
    grub-editenv "$work/grubenv" set "BOOT_ORDER=A" BOOT_A_LEFT=3 BOOT_B_LEFT=0
    mcopy -i "$fat" "$work/grubenv" ::/grub/grubenv
  else
    mkimage -A x86 -O linux -T script -C none -n "MBL A/B" -d "$SRC/services/update/u-boot/mbl-ab.cmd" "$work/boot.scr" >/dev/null
    printf 'BOOT_ORDER=A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\n' >"$work/env.txt"
    # The redundant environment (mbl-ab.cmd, fw_env.config.example): two
    # copies with the same flag, the first current.
    mkenvimage -r -s 0x4000 -o "$work/uboot.env" "$work/env.txt"
    cp "$work/uboot.env" "$work/uboot-redund.env"
    mcopy -i "$fat" "$work/boot.scr" "$work/uboot.env" "$work/uboot-redund.env" ::/
  fi
  dd if="$fat" of="$img" bs=1M seek="${START[$BOOT_IDX]}" conv=notrunc status=none
  dd if="$ROOTFS" of="$img" bs=1M seek="${START[$A_IDX]}" conv=notrunc,sparse status=none
  if [ "$FLAVOUR" = grub ]; then
    # GRUB without grub-install (no loop partition devices here): the core
    # image with its modules at sector 1, boot.img's code in the MBR.
    grub-mkimage -O i386-pc -p "(hd0,msdos$BOOT_IDX)/grub" -o "$work/core.img" \
      biosdisk part_msdos fat ext2 normal configfile loadenv test echo linux serial terminal regexp eval sleep reboot
    core_sectors=$(( ($(stat -c %s "$work/core.img") + 511) / 512 ))
    [ "$core_sectors" -lt $(( START[$BOOT_IDX] * 2048 - 1 )) ] || { echo "build-image: GRUB's core image does not fit before the first partition" >&2; exit 1; }
    dd if=/usr/lib/grub/i386-pc/boot.img of="$img" bs=440 count=1 conv=notrunc status=none
    dd if="$work/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
  fi
  chmod 0444 "$img"
  mv "$img" "$DISK"
fi

# Old images that no process holds open (a test's overlay holds its base).
prune() { # prune GLOB KEEP
  local f n=0
  while read -r f; do
    n=$((n + 1))
    [ $n -le "$2" ] && continue
    if ! ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -qF -- "$f"; then rm -f "$f"; fi
  done < <(ls -t $1 2>/dev/null)
}
prune "$CACHE/disk-$FLAVOUR-*.raw" 2
prune "$CACHE/rootfs-$FLAVOUR-*.ext4" 2
prune "$CACHE/system-*.tar" 1

echo "DISK=$DISK"
echo "ROOTFS=$ROOTFS"
echo "PKI=$PKI"
echo "BUILD=$BUILD"
