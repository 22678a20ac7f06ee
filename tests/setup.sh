#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what the build, the tests, the demo and the benchmarks run on Debian 12
# (from minbase up: tests/shipping/check_setup_programs.py checks the list), and creates
# the service users and test users. Idempotent; needs root.
set -euo pipefail

PACKAGES=(
  build-essential meson ninja-build pkg-config
  libsdbus-c++-dev libsdbus-c++-bin libsystemd-dev
  libcurl4-openssl-dev libssl-dev openssl nlohmann-json3-dev libarchive-dev catch2
  dbus util-linux
  runc crun umoci skopeo busybox-static
  nginx-light curl python3
  libubootenv-tool grub-common grub-emu e2fsprogs
  zstd gzip tar
  stress-ng
  systemd systemd-container debootstrap
  qemu-system-x86 qemu-utils seabios u-boot-qemu u-boot-tools grub-pc-bin
  swtpm swtpm-tools mtools dosfstools fdisk socat
  procps iproute2 iptables       # ps (boot test), tc and ip (cloud bench link shaping), ip and iptables (app networks)
  stress-ng                      # the loaded runs: tests beside stress-ng --cpu 2 (no timing races)
  clang libclang-rt-14-dev       # the fuzzers of tests/fuzz (fuzz suite: ci_fuzz.sh)
  chrpath cpio diffstat file gawk git locales lz4 patch rpcsvc-proto wget bzip2   # BitBake's host tools (yocto suite)
  u-boot-tools                   # mkimage (the layer's boot-script test)
  tpm2-openssl                   # the identity key in a TPM 2.0 (swtpm) through the OpenSSL 3 provider (identity-tpm suite)
  libnss-systemd                 # app uids resolve through /run/userdb records (the bus refuses uids it cannot look up)
  containerd podman              # the peers of the container benchmarks (bench/peers/containers.sh, bench-containers)
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs packages and creates users)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# nss-systemd in passwd and group: the container manager names each app's host
# uid with a userdb record in /run/userdb, and dbus-daemon refuses a connection
# whose uid it cannot look up (an app_api app inside its user namespace).
# Debian 12's libnss-systemd adds it on install; put it back if it was removed.
for db in passwd group; do
  if ! grep -Eq "^${db}:.*[[:space:]]systemd([[:space:]]|\$)" /etc/nsswitch.conf; then
    sed -i -E "s/^(${db}:[[:space:]].*)\$/\1 systemd/" /etc/nsswitch.conf
  fi
done

# BitBake (tests/shipping/bitbake_parse.sh): its sanity check needs the host
# tools above (HOSTTOOLS of poky's bitbake.conf) and an en_US.UTF-8 locale.
if ! locale -a 2>/dev/null | grep -qiEx 'en_US\.utf-?8'; then
  sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
  grep -qx 'en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
  locale-gen >/dev/null
fi

# Service users as on a device (sysusers.d in the shipped image), the admin group,
# and two users for the policy tests: one in mbl-admin, one with no privilege.
getent group mbl-admin >/dev/null || groupadd --system mbl-admin
for u in mbl-identity mbl-cloud mbl-coordinator mbl-test-user; do
  id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
done
id mbl-test-admin >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin -G mbl-admin mbl-test-admin
id -nG mbl-test-admin | grep -qw mbl-admin || usermod -aG mbl-admin mbl-test-admin
