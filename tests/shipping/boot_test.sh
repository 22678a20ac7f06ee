#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Boot test: the build, installed with `meson install --destdir` into a Debian 12
# root filesystem (debootstrap, cached by make-rootfs.sh), booted with real
# systemd and the real system bus under systemd-nspawn. Checks that every MBL
# unit reaches active, `busctl --system tree` shows every service, `mblctl
# status` is green, the bus policies deny an unprivileged user, D-Bus
# activation starts a stopped service, and the coordinator's unprivileged
# reboot request reboots the machine. Prints `systemd-analyze security` of each
# unit (measured inside the guest, where a manager runs).
#
# Exit 0 pass, 1 fail, 77 skip (with the reason) where this machine cannot run
# it: not root, no systemd-nspawn/debootstrap/nsenter, no network to the
# Debian archive on the first run. Env: MBL_BUILD_ROOT (meson sets it),
# MBL_BOOT_CACHE (rootfs cache, default /var/cache/mbl-boot-test),
# MBL_BOOT_KEEP=1 keeps the guest's folder for inspection, MBL_BOOT_OVERLAY=DIR
# is copied over the installed tree before the boot.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BUILD=${MBL_BUILD_ROOT:?MBL_BUILD_ROOT not set (run through meson test)}
UNITS=(mbl-device-identity mbl-update mbl-container-manager mbl-cloud-client mbl-coordinator)
declare -A BUS=([mbl-device-identity]=org.mbl.DeviceIdentity1 [mbl-update]=org.mbl.Update1
                [mbl-container-manager]=org.mbl.ContainerManager1 [mbl-cloud-client]=org.mbl.CloudClient1
                [mbl-coordinator]=org.mbl.Coordinator1)

skip() { echo "SKIP: $*"; exit 77; }
failures=0
check() { # check "what" command...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; failures=$((failures + 1)); fi
}

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, systemd-nspawn)"
for t in systemd-nspawn nsenter systemctl; do
  command -v "$t" >/dev/null || skip "$t is not installed (apt-get install systemd-container util-linux systemd)"
done
[ -d /proc/self/ns ] || skip "no namespaces in this kernel"
# The units' PrivateUsers= needs user namespaces in the guest, which has them
# only where this test has them: the kernel refuses them to a chrooted process
# (and to everyone with user.max_user_namespaces=0); the daemons would fail with
# 217/USER. A root filesystem checked by hand is entered with pivot_root in a
# mount namespace of its own (unshare -m, then pivot_root), not with chroot.
userns=$(unshare --user true 2>&1) ||
  skip "no user namespaces here (unshare --user: $userns); a chroot has none: enter the root with pivot_root instead"

t0=$(date +%s)
rc=0; tarball=$(bash "$here/make-rootfs.sh") || rc=$?
[ $rc -eq 77 ] && skip "cannot make the Debian root filesystem (see above)"
[ $rc -eq 0 ] || { echo "FAIL: make-rootfs.sh failed"; exit 1; }
echo "rootfs: $tarball ($(( $(date +%s) - t0 )) s)"

work=$(mktemp -d /var/tmp/mbl-boot.XXXXXX)
root=$work/root
runner_pid=   # unshare: the guest's outer PID namespace (see the start below)
nspawn_pid=
mounted_nspawn_tmpfs=0
cleanup() {
  local rc=$?
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" 2>/dev/null || true   # nspawn shuts the guest down
    for _ in $(seq 1 30); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 1; done
  fi
  # Whatever is left: killing the runner kills nspawn (its parent-death
  # signal) and with it every process of the PID namespace, the guest's too.
  if [ -n "$runner_pid" ]; then
    kill -KILL "$runner_pid" 2>/dev/null || true
    wait "$runner_pid" 2>/dev/null || true
  fi
  if [ "$mounted_nspawn_tmpfs" = 1 ]; then umount /run/systemd/nspawn 2>/dev/null || true; fi
  if [ "$rc" -ne 0 ] && [ "$console_shown" = 0 ] && [ -s "$work/console.log" ]; then
    echo "--- guest console (tail)"; tail -n 40 "$work/console.log"
  fi
  if [ "${MBL_BOOT_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
console_shown=0
trap cleanup EXIT

mkdir -p "$root"
tar -C "$root" -xf "$tarball"
meson install -C "$BUILD" --destdir "$root" --no-rebuild --quiet >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; echo "FAIL: meson install --destdir"; exit 1; }

# MBL_BOOT_OVERLAY=DIR: copied over the installed tree, e.g. to try a daemon
# built elsewhere (DIR/usr/local/libexec/mbl/mbl-update) under the real units.
if [ -n "${MBL_BOOT_OVERLAY:-}" ]; then cp -a "$MBL_BOOT_OVERLAY/." "$root/"; fi

opts=$(meson introspect "$BUILD" --buildoptions)
opt() { python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]==sys.argv[1]))' "$1" <<<"$opts"; }
prefix=$(opt prefix)
datadir=$(opt datadir)
case "$datadir" in /*) ;; *) datadir=$prefix/$datadir ;; esac
bindir=$(opt bindir)
case "$bindir" in /*) ;; *) bindir=$prefix/$bindir ;; esac
# dbus-daemon reads policies from /usr/share/dbus-1/system.d and /etc; a build
# for another prefix (the CI build is /usr/local) needs its folder named, as an
# administrator installing to /usr/local would do.
if [ "$datadir/dbus-1/system.d" != /usr/share/dbus-1/system.d ]; then
  cat >"$root/etc/dbus-1/system-local.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><includedir>$datadir/dbus-1/system.d</includedir></busconfig>
XML
fi
# A sanitized build: LeakSanitizer's ptrace and ASan's setrlimit are system
# calls the units' filters refuse, so turn those two features off (the
# sandbox itself stays as shipped).
if [ "$(opt b_sanitize)" != none ]; then
  for u in "${UNITS[@]}"; do
    mkdir -p "$root/etc/systemd/system/$u.service.d"
    printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0:disable_coredump=0\n' \
      >"$root/etc/systemd/system/$u.service.d/sanitizer.conf"
  done
fi
# What the image build does: enable the units (and the reboot path).
systemctl --root="$root" enable "${UNITS[@]/%/.service}" mbl-reboot.path >"$work/enable.log" 2>&1 ||
  { cat "$work/enable.log"; echo "FAIL: systemctl --root enable"; exit 1; }
# Quiet boot on a pipe console.
systemctl --root="$root" mask console-getty.service getty@.service >/dev/null 2>&1 || true

mkdir -p /run/systemd/nspawn
if ! mountpoint -q /run/systemd/nspawn; then
  mount -t tmpfs tmpfs /run/systemd/nspawn
  mounted_nspawn_tmpfs=1
fi

t1=$(date +%s)
# nspawn runs as PID 1 of a PID namespace of its own, under unshare
# --kill-child: however this test ends (meson's timeout sends SIGTERM, then
# SIGKILL half a second later; a user's kill -9), the runner's death kills nspawn
# and the kernel then kills every process of that namespace, the guest's
# included. A guest under a plain nspawn outlives a killed nspawn.
# --mount-proc: a /proc of that namespace for nspawn (with the machine's /proc,
# nspawn's "/proc/<its own pid>/ns/net" names another process or none, and the
# reboot fails: "Failed to open parent network namespace").
unshare --pid --fork --mount-proc --kill-child=SIGKILL \
  systemd-nspawn -q --keep-unit --register=no --private-network -M "mbl-boot-$$" -D "$root" -b --console=pipe \
  >"$work/console.log" 2>&1 </dev/null &
runner_pid=$!

# nspawn: the runner's child. The guest's init: nspawn's child whose innermost
# pid is 1 in a PID namespace below nspawn's (NSpid: host, nspawn's, guest's).
guest=
for _ in $(seq 1 100); do
  [ -n "$nspawn_pid" ] || nspawn_pid=$(ps -o pid= --ppid "$runner_pid" 2>/dev/null | head -n 1 | tr -d ' ')
  if [ -n "$nspawn_pid" ]; then
    for c in $(ps -o pid= --ppid "$nspawn_pid" 2>/dev/null); do
      if awk '/^NSpid:/{exit !($NF == 1 && NF > 3)}' "/proc/$c/status" 2>/dev/null; then guest=$c; break 2; fi
    done
  fi
  kill -0 "$runner_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$guest" ]; then
  cat "$work/console.log"; console_shown=1
  if grep -qiE "Failed to (create|mount|set up).*(cgroup|namespace)|Operation not permitted" "$work/console.log"; then
    skip "systemd-nspawn cannot boot a container on this machine (console above)"
  fi
  echo "FAIL: the guest did not start"; exit 1
fi
# -r -w: the guest's root and working folder. nsenter -a alone takes the root
# of the guest's mount namespace, which is the guest's root only when this test
# runs at the root of its own: in a chroot (a bind-mounted folder as /, which
# nspawn moves the guest's tree onto) it is the machine's real root, and every
# command below would run there ("offline", "No journal files").
g() { nsenter -t "$guest" -a -r -w "$@"; }

# Wait for nspawn's inner child to become systemd, then for the boot to end.
for _ in $(seq 1 100); do
  case "$(readlink "/proc/$guest/exe" 2>/dev/null)" in */systemd) break ;; esac
  sleep 0.1
done
state=
deadline=$(( $(date +%s) + 180 ))
while [ "$(date +%s)" -lt $deadline ] && kill -0 "$nspawn_pid" 2>/dev/null; do
  state=$(timeout 60 nsenter -t "$guest" -a -r -w systemctl is-system-running --wait 2>/dev/null || true)
  case "$state" in running|degraded|maintenance|stopping) break ;; esac
  sleep 0.5
done
echo "guest (init pid $guest) is $state after $(( $(date +%s) - t1 )) s"
check "the guest boots to running (is: $state)" test "$state" = running
if [ "$state" != running ]; then g systemctl --failed --no-pager || true; fi

for u in "${UNITS[@]}"; do
  s=$(g systemctl is-active "$u.service" || true)
  check "$u.service is active (is: $s)" test "$s" = active
  [ "$s" = active ] || g journalctl -b -u "$u.service" --no-pager -n 30 || true
done
# Each daemon runs as its service user, with its state folder private to it.
declare -A USER_OF=([mbl-device-identity]=mbl-identity [mbl-update]=root [mbl-container-manager]=root
                    [mbl-cloud-client]=mbl-cloud [mbl-coordinator]=mbl-coordinator)
declare -A STATE_OF=([mbl-device-identity]=identity [mbl-update]=update [mbl-container-manager]=apps
                     [mbl-cloud-client]=cloud [mbl-coordinator]=coordinator)
# Private (700), but the apps folder is 711: an app runs as its own user-namespace
# ids, which must traverse it to their rootfs (listing it stays root's).
declare -A MODE_OF=([mbl-device-identity]=700 [mbl-update]=700 [mbl-container-manager]=711
                    [mbl-cloud-client]=700 [mbl-coordinator]=700)
for u in "${UNITS[@]}"; do
  pid=$(g systemctl show -P MainPID "$u.service" 2>/dev/null || echo 0)
  who=$(g stat -c %U "/proc/$pid" 2>/dev/null || true)   # owner of /proc/PID: its effective user
  check "$u runs as ${USER_OF[$u]} (is: ${who:-no process})" test "$who" = "${USER_OF[$u]}"
  st=$(g stat -c '%U %a' "/var/lib/mbl/${STATE_OF[$u]}" 2>/dev/null || true)
  check "/var/lib/mbl/${STATE_OF[$u]} is '${USER_OF[$u]} ${MODE_OF[$u]}' (is: $st)" test "$st" = "${USER_OF[$u]} ${MODE_OF[$u]}"
done
check "mbl-reboot.path is active" test "$(g systemctl is-active mbl-reboot.path || true)" = active

for u in "${UNITS[@]}"; do
  name=${BUS[$u]}
  tree=$(g busctl --system tree "$name" 2>&1 || true)
  check "busctl --system tree $name shows /${name//./\/}" grep -q "/${name//./\/}" <<<"$tree"
done

status=0; out=$(g "$bindir/mblctl" status 2>&1) || status=$?
echo "$out"
check "mblctl status is green (exit $status)" test "$status" = 0

# Policy: the unprivileged user 'nobody' may read but not mutate.
deny=$(g setpriv --reuid=65534 --regid=65534 --clear-groups \
        busctl --system call org.mbl.Update1 /org/mbl/Update1 org.mbl.Update1 Commit 2>&1 || true)
check "an unprivileged caller of Update1.Commit gets Access denied ($deny)" grep -qi "access denied" <<<"$deny"
read_ok=$(g setpriv --reuid=65534 --regid=65534 --clear-groups \
        busctl --system introspect org.mbl.Coordinator1 /org/mbl/Coordinator1 2>&1 || true)
check "an unprivileged caller may still introspect" grep -q "org.mbl.Coordinator1" <<<"$read_ok"
deny=$(g setpriv --reuid=65534 --regid=65534 --clear-groups \
        busctl --system call org.mbl.ContainerManager1 /org/mbl/ContainerManager1 org.mbl.ContainerManager1 \
        RemoveApp s web 2>&1 || true)
check "an unprivileged caller of ContainerManager1.RemoveApp gets Access denied ($deny)" grep -qi "access denied" <<<"$deny"

# A member of the sysusers.d group mbl-admin passes the policy: whatever
# Commit answers, it is not Access denied.
check "useradd mbl-test-admin (in mbl-admin) in the guest" \
  g useradd --system --no-create-home --shell /usr/sbin/nologin -G mbl-admin mbl-test-admin
adm=$(g setpriv --reuid=mbl-test-admin --regid=mbl-test-admin --init-groups \
        busctl --system call org.mbl.Update1 /org/mbl/Update1 org.mbl.Update1 Commit 2>&1 || true)
check "a member of mbl-admin may call Update1.Commit (answer: ${adm:-success})" \
  bash -c '! grep -qi "access denied" <<<"$1"' _ "$adm"

# D-Bus activation: a call to a stopped service starts its unit.
check "systemctl stop mbl-device-identity.service" g systemctl stop mbl-device-identity.service
g busctl --system introspect org.mbl.DeviceIdentity1 /org/mbl/DeviceIdentity1 >/dev/null 2>&1 || true
check "a call to org.mbl.DeviceIdentity1 starts the stopped mbl-device-identity.service" \
  test "$(g systemctl is-active mbl-device-identity.service || true)" = active

# Sandboxing exposure of each unit, from the running manager.
echo "systemd-analyze security (exposure, lower is better):"
for u in "${UNITS[@]}"; do
  line=$(g systemd-analyze security --no-pager "$u.service" 2>/dev/null | tail -n 1)
  printf '  %-28s %s\n' "$u.service" "${line#*exposure level for $u.service: }"
done

# The coordinator's reboot path: its user writes the request, systemd reboots.
check "mbl-coordinator writes /run/mbl/coordinator/reboot-request" \
  g setpriv --reuid=mbl-coordinator --regid=mbl-coordinator --clear-groups \
  touch /run/mbl/coordinator/reboot-request
rebooted=0
for _ in $(seq 1 60); do
  if ! kill -0 "$runner_pid" 2>/dev/null; then rebooted=1; break; fi
  sleep 1
done
nrc=0; if [ $rebooted = 1 ]; then wait "$runner_pid" || nrc=$?; runner_pid=; nspawn_pid=; fi
# systemd-nspawn exits with 133 when the guest asked for a reboot (unshare
# exits with its child's status).
check "the coordinator's reboot request reboots the machine (nspawn exit $nrc)" test "$nrc" = 133

# The shutdown that reboot caused stopped every daemon cleanly: each one
# stops before the bus goes away (After=dbus.service), so none lost its bus
# and failed.
if [ $rebooted = 1 ] && [ -d "$root/var/log/journal" ]; then
  failed=$(journalctl -D "$root/var/log/journal" --no-pager -o cat 2>/dev/null |
           grep -E '^mbl-[a-z-]+\.service: (Failed with result|Main process exited, code=(exited|killed|dumped), status=[1-9])' || true)
  check "every MBL daemon stopped cleanly at shutdown${failed:+ ($failed)}" test -z "$failed"
fi

echo "boot test took $(( $(date +%s) - t0 )) s"
if [ $failures -ne 0 ]; then
  echo "--- guest console (tail)"; tail -n 40 "$work/console.log"; console_shown=1
fi
echo "$failures failure(s)"
[ $failures -eq 0 ]
