#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The QEMU device's system on top of the debootstrapped Debian (stage 2 of
# build-image.sh, cached by a hash of this file and the layout): kernel and a
# small initrd at fixed names in /boot, kernel modules for hardware the
# machine lacks removed, fstab from layout/partitions.conf, the static
# address of QEMU's user-mode network, quiet consoles.
# Usage: system.sh ROOT LAYOUT LOGDIR (as root; ROOT is changed in place)
set -euo pipefail
r=${1:?root}
LAYOUT=${2:?layout}
work=${3:?log folder}

kver=$(ls "$r/lib/modules" | sort -V | tail -n 1)
# Modules for what the QEMU machine has (virtio, i6300esb, TPM TIS, FAT,
# ext4, netfilter and bridges for containers); the rest (GPUs, Wi-Fi,
# sound, ...) only makes slot images bigger. depmod afterwards.
m=$r/lib/modules/$kver/kernel
for d in drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet drivers/infiniband \
         drivers/staging drivers/scsi drivers/usb drivers/hid drivers/input drivers/bluetooth \
         drivers/isdn drivers/iio drivers/mtd drivers/nfc drivers/platform drivers/hwmon \
         drivers/video drivers/net/can drivers/net/usb drivers/atm drivers/target drivers/md \
         drivers/edac drivers/thunderbolt drivers/misc drivers/mmc drivers/spi drivers/i2c \
         drivers/firewire drivers/pcmcia drivers/leds drivers/power drivers/regulator drivers/rtc \
         drivers/net/wwan drivers/net/ieee802154 drivers/net/hamradio drivers/net/fddi drivers/net/arcnet \
         sound net/wireless net/mac80211 net/bluetooth net/sunrpc net/ceph net/rds net/tipc net/sctp \
         net/mac802154 net/ieee802154 net/nfc net/rxrpc net/smc net/ax25 net/netrom net/rose \
         fs/nfs fs/nfsd fs/ceph fs/cifs fs/smbfs_common fs/ocfs2 fs/gfs2 fs/xfs fs/btrfs fs/f2fs \
         fs/jfs fs/nilfs2 fs/ubifs fs/reiserfs fs/udf fs/ntfs3 fs/hfsplus fs/hfs fs/dlm fs/afs \
         fs/coda fs/orangefs fs/9p fs/bcachefs fs/erofs fs/ksmbd fs/lockd fs/nfs_common fs/cachefiles \
         arch/x86/kvm; do
  rm -rf "${m:?}/$d"
done
chroot "$r" depmod "$kver"
# A small initrd: the root file system is on virtio-blk (a module).
printf 'MODULES=list\nCOMPRESS=zstd\n' >"$r/etc/initramfs-tools/conf.d/mbl.conf"
printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic i6300esb >"$r/etc/initramfs-tools/modules"
rm -f "$r"/boot/initrd.img-*
chroot "$r" update-initramfs -c -k "$kver" >"$work/initramfs.log" 2>&1 ||
  { cat "$work/initramfs.log" >&2; echo "build-image: update-initramfs failed" >&2; exit 1; }
cp "$r/boot/vmlinuz-$kver" "$r/boot/vmlinuz"
cp "$r/boot/initrd.img-$kver" "$r/boot/initrd.img"
# Mount points and fstab from the layout: the boot partition (bootloader
# environment), the data partition (formatted when blank).
{
  echo "# From layout/partitions.conf (tests/device/build-image.sh). The root file"
  echo "# system is the slot the bootloader chose (root= on the kernel command line)."
  while read -r idx label fstype size mnt role; do
    case "$role" in
      boot) echo "/dev/vda$idx $mnt $fstype defaults,noatime,flush 0 0" ;;
      data) echo "/dev/vda$idx $mnt $fstype defaults,noatime,x-systemd.makefs 0 2" ;;
    esac
    case "$role" in boot|data) mkdir -p "$r$mnt" ;; esac
  done < <(grep -Ev '^[[:space:]]*(#|$)' "$LAYOUT")
} >"$r/etc/fstab"
echo mbl-device >"$r/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 mbl-device\n' >"$r/etc/hosts"
# QEMU's user-mode network (restrict=on): the guest's address; the DDI
# server (nginx on the host's loopback) is forwarded to 10.0.2.100.
mkdir -p "$r/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nAddress=10.0.2.15/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
  >"$r/etc/systemd/network/10-qemu-user.network"
chroot "$r" systemctl enable systemd-networkd.service >/dev/null 2>&1
chroot "$r" systemctl mask getty@tty1.service serial-getty@ttyS0.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer >/dev/null 2>&1 || true
# debootstrap leaves every package it installed in apt's archive cache: 131 MB
# of the 450 MB slot image, downloaded again with every firmware bundle.
rm -rf "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/locale/* "$r"/var/cache/apt/*.bin \
  "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/boot/initrd.img-* "$r"/boot/vmlinuz-*
: >"$r/etc/machine-id"
