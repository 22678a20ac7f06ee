#!/usr/bin/env bash
# Makes (once) the Debian 12 root filesystem the boot test boots, and caches it
# as a tarball outside the repository so reruns take seconds:
#   debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,<runtime libs> bookworm
# Prints the tarball's path. Exit 77 with the reason when it cannot be made here.
# MBL_ROOTFS_PACKAGES=pkg,pkg replaces the package list (the QEMU device of
# tests/device adds the kernel, udev and the guest agent and leaves out the
# sanitizer runtimes); the cache key covers the list.
set -euo pipefail

CACHE=${MBL_BOOT_CACHE:-/var/cache/mbl-boot-test}
MIRROR=${MBL_BOOT_MIRROR:-http://deb.debian.org/debian}
# What the daemons and the checks need at run time. libasan8/libubsan1 let the
# sanitized CI build run in the guest; setpriv (util-linux) drives the policy check.
PACKAGES=${MBL_ROOTFS_PACKAGES:-systemd,systemd-sysv,dbus,libsdbus-c++1,libcurl4,libarchive13,libssl3,openssl,ca-certificates,runc,libubootenv-tool,libasan8,libubsan1,util-linux,iproute2}
key=$(printf '%s|%s' "$PACKAGES" bookworm | sha256sum | cut -c1-16)
TARBALL="$CACHE/rootfs-bookworm-$key.tar"

if [ -s "$TARBALL" ]; then
  echo "$TARBALL"
  exit 0
fi
skip() { echo "make-rootfs: SKIP: $*" >&2; exit 77; }
command -v debootstrap >/dev/null || skip "debootstrap is not installed (apt-get install debootstrap)"
mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "make-rootfs: debootstrap bookworm into $work/root (a few minutes, once)" >&2
if ! debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/root" "$MIRROR" >"$work/log" 2>&1; then
  tail -n 20 "$work/log" >&2
  if grep -qiE 'Failed getting release file|Temporary failure|Could not resolve|Connection (refused|timed out)' "$work/log"; then
    skip "debootstrap cannot reach $MIRROR (no network to the Debian archive)"
  fi
  echo "make-rootfs: debootstrap failed (log above)" >&2
  exit 1
fi
# A guest that boots quietly: no getty on the pipe console, no machine-id races.
rm -f "$work/root/etc/machine-id"
: > "$work/root/etc/machine-id"
tar -C "$work/root" --numeric-owner -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$TARBALL"
echo "$TARBALL"
