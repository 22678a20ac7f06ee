#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Firmware install of the same rootfs image into a preallocated slot, by our
# update daemon beside RAUC 1.8, Mender 3.4 and the bare tools, in the same
# rounds, the order of the sides rotated every round; medians, paired per-round
# ratios (ours / peer) and each installer's peak RSS.
#   bench/peers/firmware.sh [--install] BUILD_DIR [ROUNDS] [SIZES_MiB]
#   e.g. bench/peers/firmware.sh build-rel 3 256   (root, Debian 12, release build)
# SIZES_MiB: space- or comma-separated, default "256 1024"; any size ≥ 1 for a
# quick run. --install: apt-get install whichever of rauc, rauc-service,
# mender-client, mender-artifact, squashfs-tools, e2fsprogs, libubootenv-tool is
# missing (Debian's mirror). A peer whose tools are missing is left out, and said so.
#
# Same input on every side: one random image (openssl rand) of SIZE MiB, packed
# and signed with one test PKI (a P-256 CA and a signer with codeSigning), each
# side into its own format. Each side writes its own preallocated, zero-filled
# target of SIZE MiB (allocated and synced before the rounds, never truncated).
# Every side is timed the same way by this script: from the command (or, for
# ours, the request line to our client) to the side saying the slot is written.
# After the rounds (untimed) each target is compared with the image (cmp).
#
#  ours   mbl-update, the real daemon on a private dbus-daemon with our policy
#         files (tests/harness TestStack, through bench/peers/peer-update, a
#         client that stays connected, as RAUC's service is already running):
#         Install(fd of an mbl-bundle bundle) -> Completed signal. The daemon
#         checks the CMS signature of the manifest against its trust store,
#         streams the image once through SHA-256 (EVP) and compares it with the
#         signed manifest, writes the inactive slot (a plain file) with O_DIRECT,
#         reads every range back and compares it (readBack on, the default; pass
#         READBACK=false to leave it out), fsyncs the slot, then records the
#         update in a file bootloader environment (written atomically). No mount.
#  rauc   RAUC 1.8 (rauc + rauc-service from Debian): `rauc service` on a
#         private dbus-daemon of its own (bus policy: root owns and calls
#         everything), --override-boot-slot=A, system.conf: bootloader=noop,
#         central statusfile, two `type=raw` slots that are plain files (no loop
#         device for the slots: RAUC's raw handler opens the path and writes).
#         `rauc install BUNDLE` (a CLI client over D-Bus, waits for the end).
#         Bundle format `plain` (squashfs + CMS signature): `verity` needs
#         device-mapper, which this machine's kernel lacks (no /dev/mapper).
#         RAUC reads the whole bundle once to check the CMS signature (keyring =
#         the CA, check-purpose=codesign), loop-mounts the squashfs read-only,
#         copies the image to slot B (read/write, page cache), fsyncs the slot,
#         writes and fsyncs its status file; in plain format the image is covered
#         by the bundle signature, so it is not hashed a second time while copied
#         (strace: one fsync of the slot, two of the status file and its dir).
#         It does not read the slot back. Its mount/umount are timed.
#  mender Mender 3.4 (mender-client) standalone: `mender install ARTIFACT`, a
#         process of its own (no daemon), artifact made with `mender-artifact
#         write rootfs-image`, signed with the same signer's key (ECDSA P-256),
#         checked with ArtifactVerifyKey. Mender's dual-rootfs installer needs
#         (a) a running root it can identify as RootfsPartA and (b) a block
#         device as the inactive partition: so it runs chrooted into a small
#         ext4 image mounted from a loop device (/usr bound read-only from the
#         host), that loop device is RootfsPartA, and the target file is behind
#         a second loop device (RootfsPartB, buffered loop: its writes go through
#         the loop driver into the file). Bootloader: a U-Boot environment in a
#         file (libubootenv's fw_setenv). Mender checks the signature and the
#         payload's SHA-256 while streaming, writes in 1 MiB chunks, compares
#         each chunk with what the partition holds and skips equal ones (so its
#         target is zeroed, untimed, before each of its rounds), fsyncs the
#         device, sets mender_boot_part/upgrade_available; `mender rollback`
#         (untimed) after each round resets that state. Its time includes the Go
#         process start.
#  bare   `openssl dgst -sha256 IMG` then `dd if=IMG of=TARGET bs=1M
#         conv=fsync,notrunc`: the hash read and the write are two passes, no
#         signature check, no bootloader.
# Peak RSS: ours and rauc, the daemon's VmHWM (a fresh daemon per size; VmHWM
# counts the file pages it maps too); rauc also its CLI's; mender, openssl and
# dd: /usr/bin/time's maximum resident set size of the process.
set -euo pipefail
# median, ratios, mb, print_medians
. "$(dirname "$0")/stats.sh"
. "$(dirname "$0")/peer_config.sh"

want_install=0
if [ "${1:-}" = "--install" ]; then
    want_install=1
    shift
fi
build=$(realpath "${1:?usage: firmware.sh [--install] BUILD_DIR [ROUNDS] [SIZES_MiB]}")
rounds=${2:-3}
sizes=$(echo "${3:-256 1024}" | tr ',' ' ')
readback=${READBACK:-true}
[ "$(id -u)" = 0 ] || { echo "firmware.sh: run as root"; exit 77; }

if [ $want_install = 1 ]; then
    missing=""
    command -v rauc >/dev/null || missing="$missing rauc"
    [ -e /usr/share/dbus-1/system.d/de.pengutronix.rauc.conf ] || missing="$missing rauc-service"
    command -v mksquashfs >/dev/null || missing="$missing squashfs-tools"
    command -v mender >/dev/null || missing="$missing mender-client"
    command -v mender-artifact >/dev/null || missing="$missing mender-artifact"
    command -v fw_setenv >/dev/null || missing="$missing libubootenv-tool"
    command -v mke2fs >/dev/null || missing="$missing e2fsprogs"
    [ -x /usr/bin/time ] || missing="$missing time"
    if [ -n "$missing" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    fi
fi
[ -x /usr/bin/time ] || { echo "firmware.sh: /usr/bin/time is missing (apt-get install time, or --install)"; exit 77; }
helper=$build/bench/peers/peer-update
bundletool=$build/services/mbl-bundle/mbl-bundle
for f in "$helper" "$bundletool" "$build/services/update/mbl-update"; do
    [ -x "$f" ] || { echo "firmware.sh: $f is not built (ninja -C $build bench/peers/peer-update services/mbl-bundle/mbl-bundle services/update/mbl-update)"; exit 77; }
done

sides="ours bare"
if command -v rauc >/dev/null && command -v mksquashfs >/dev/null && [ -e /dev/loop-control ]; then
    sides="$sides rauc"
else
    echo "left out: rauc (needs rauc, rauc-service, squashfs-tools and loop devices; try --install)"
fi
if command -v mender >/dev/null && command -v mender-artifact >/dev/null && command -v fw_setenv >/dev/null &&
    command -v mke2fs >/dev/null && [ -e /dev/loop-control ]; then
    sides="$sides mender"
else
    echo "left out: mender (needs mender-client, mender-artifact, libubootenv-tool, e2fsprogs and loop devices; try --install)"
fi

W=$(mktemp -d /var/tmp/mbl-peers-fw.XXXXXX)
rauc_bus_pid="" rauc_pid="" helper_pid="" mroot_loop="" mslot_loop=""
cleanup() {
    set +e
    [ -n "$helper_pid" ] && { exec 8>&- 9<&-; wait "$helper_pid" 2>/dev/null; }
    [ -n "$rauc_pid" ] && { kill "$rauc_pid"; wait "$rauc_pid" 2>/dev/null; }
    [ -n "$rauc_bus_pid" ] && kill "$rauc_bus_pid"
    # RAUC stopped in the middle of an install leaves its bundle mounted.
    mountpoint -q "$W/rauc/mnt/bundle" && umount "$W/rauc/mnt/bundle"
    for m in work dev proc usr ""; do
        mountpoint -q "$W/mroot/$m" && umount "$W/mroot/$m"
    done
    [ -n "$mslot_loop" ] && losetup -d "$mslot_loop"
    [ -n "$mroot_loop" ] && losetup -d "$mroot_loop"
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
maxrss() { /usr/bin/time -f %M -o "$W/rss" "$@" && cat "$W/rss"; }

# --- one test PKI for every side ---
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" -out "$W/ca.pem" \
    -days 30 -subj "/CN=Bench CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/s.key" -out "$W/s.csr" -subj "/CN=Bench Signer" 2>/dev/null
printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n' >"$W/s.ext"
openssl x509 -req -in "$W/s.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -out "$W/s.pem" -days 30 \
    -extfile "$W/s.ext" 2>/dev/null
openssl ec -in "$W/s.key" -out "$W/s-sec1.key" 2>/dev/null   # mender-artifact reads SEC1 EC keys
openssl pkey -in "$W/s.key" -pubout -out "$W/s.pub" 2>/dev/null

# --- RAUC: its own bus and service (restarted per size for a fresh VmHWM) ---
rauc_start() {
    mkdir -p "$W/rauc/mnt"
    cat >"$W/rauc/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$W/rauc/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
    write_rauc_conf "$W/rauc" "$W"
    if [ -z "$rauc_bus_pid" ]; then
        dbus-daemon --config-file="$W/rauc/bus.conf" --fork --print-pid >"$W/rauc/bus.pid" </dev/null
        rauc_bus_pid=$(cat "$W/rauc/bus.pid")
    fi
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=$W/rauc/bus.sock rauc service --conf="$W/rauc/system.conf" \
        --override-boot-slot=A >>"$W/rauc/service.log" 2>&1 &
    rauc_pid=$!
    local i
    for i in $(seq 100); do
        DBUS_SYSTEM_BUS_ADDRESS=unix:path=$W/rauc/bus.sock timeout 2 busctl --system status de.pengutronix.rauc \
            >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "firmware.sh: rauc service did not come up:"; cat "$W/rauc/service.log"; exit 1
}
rauc_stop() {
    [ -n "$rauc_pid" ] && { kill "$rauc_pid"; wait "$rauc_pid" 2>/dev/null || true; }
    rauc_pid=""
}

# --- Mender: a small root of its own on a loop device, the target behind another ---
mender_setup() {   # SIZE_MiB
    local r=$W/mroot-content
    mkdir -p "$r"/etc/mender "$r"/usr "$r"/proc "$r"/dev "$r"/work "$r"/var/lib/mender "$r"/tmp "$r"/run
    for l in bin lib lib64 sbin; do ln -sfn usr/$l "$r/$l"; done
    cp /etc/passwd /etc/group "$r/etc/"
    echo "/work/uboot.env 0x0 0x4000" >"$r/etc/fw_env.config"
    echo "artifact_name=bench-1" >"$r/etc/mender/artifact_info"
    echo "device_type=bench-board" >"$r/var/lib/mender/device_type"
    dd if=/dev/zero of="$W/mender-root.img" bs=1M count=64 status=none
    mke2fs -q -t ext4 -d "$r" "$W/mender-root.img"
    mroot_loop=$(losetup -f --show "$W/mender-root.img")
    mslot_loop=$(losetup -f --show "$W/mender-b.img")
    mkdir -p "$W/mroot"
    mount "$mroot_loop" "$W/mroot"
    mount --bind /usr "$W/mroot/usr"
    mount -o remount,bind,ro "$W/mroot/usr"
    mount -t proc proc "$W/mroot/proc"
    mount --bind /dev "$W/mroot/dev"
    mount --bind "$W" "$W/mroot/work"
    local part=${mroot_loop##*loop}
    cat >"$W/mroot/etc/mender/mender.conf" <<EOF
{
  "RootfsPartA": "$mroot_loop",
  "RootfsPartB": "$mslot_loop",
  "ArtifactVerifyKey": "/work/s.pub",
  "ServerURL": "https://localhost.invalid"
}
EOF
    printf 'mender_boot_part=%s\nmender_boot_part_hex=%x\nupgrade_available=0\nbootcount=0\n' "$part" "$part" >"$W/env-defaults"
    dd if=/dev/zero of="$W/uboot.env" bs=16k count=1 status=none
    chroot "$W/mroot" fw_setenv -f /work/env-defaults 2>/dev/null
}
mender_teardown() {
    local m
    for m in work dev proc usr ""; do
        mountpoint -q "$W/mroot/$m" && umount "$W/mroot/$m"
    done
    losetup -d "$mslot_loop"; mslot_loop=""
    losetup -d "$mroot_loop"; mroot_loop=""
}

# --- ours: the daemon through peer-update (stdin 8 -> its requests, 9 <- its replies) ---
helper_start() {
    coproc HELPER { MBL_BUILD_ROOT=$build MBL_POLICY_DIR=$build/dbus-policy \
        exec "$helper" "$W/ours-a.img" "$W/ours-b.img" "$W/ca.pem" bench-board "$readback" 2>>"$W/ours.log"; }
    helper_pid=$HELPER_PID
    # Our own copies of the coprocess's pipes; bash's are closed so that closing
    # ours gives the helper its EOF.
    exec 8>&"${HELPER[1]}" 9<&"${HELPER[0]}"
    eval "exec ${HELPER[1]}>&- ${HELPER[0]}<&-"
    local line
    read -r line <&9 || { echo "firmware.sh: peer-update did not start:"; cat "$W/ours.log"; exit 1; }
    case "$line" in ready*) ;; *) echo "firmware.sh: peer-update: $line"; exit 1 ;; esac
}
helper_ask() {   # REQUEST -> reply on stdout
    echo "$1" >&8
    local line
    read -r line <&9
    echo "$line"
}
helper_stop() {
    exec 8>&- 9<&-
    wait "$helper_pid" 2>/dev/null || true
    helper_pid=""
}

# --- one timed run of a side; sets ms (called in this shell, not a subshell, so
# peak[] keeps what it records) ---
run_side() {   # SIDE
    local t0 t1 rss
    case "$1" in
    ours)
        t0=$(now_ns)
        local r
        r=$(helper_ask "install $W/fw.mblb")
        t1=$(now_ns)
        [ "$r" = ok ] || { echo "firmware.sh: ours failed: $r" >&2; exit 1; }
        ;;
    rauc)
        t0=$(now_ns)
        DBUS_SYSTEM_BUS_ADDRESS=unix:path=$W/rauc/bus.sock /usr/bin/time -f %M -o "$W/rss.rauc" \
            rauc install --conf="$W/rauc/system.conf" "$W/fw.raucb" >"$W/rauc/install.log" 2>&1 ||
            { echo "firmware.sh: rauc install failed:" >&2; cat "$W/rauc/install.log" "$W/rauc/service.log" >&2; exit 1; }
        t1=$(now_ns)
        rss=$(cat "$W/rss.rauc"); [ "$rss" -gt "${peak[rauc-cli]:-0}" ] && peak[rauc-cli]=$rss
        ;;
    mender)
        dd if=/dev/zero of="$mslot_loop" bs=1M count="$mib" conv=fsync status=none
        t0=$(now_ns)
        /usr/bin/time -f %M -o "$W/rss.mender" chroot "$W/mroot" mender --no-syslog install /work/fw.mender \
            >"$W/mender.log" 2>&1 || { echo "firmware.sh: mender install failed:" >&2; tail -20 "$W/mender.log" >&2; exit 1; }
        t1=$(now_ns)
        chroot "$W/mroot" mender --no-syslog rollback >>"$W/mender.log" 2>&1 || true
        rss=$(cat "$W/rss.mender"); [ "$rss" -gt "${peak[mender]:-0}" ] && peak[mender]=$rss
        ;;
    bare)
        t0=$(now_ns)
        /usr/bin/time -f %M -o "$W/rss.dgst" openssl dgst -sha256 "$W/rootfs.img" >/dev/null
        /usr/bin/time -f %M -o "$W/rss.dd" dd if="$W/rootfs.img" of="$W/bare.img" bs=1M conv=fsync,notrunc status=none
        t1=$(now_ns)
        for rss in $(cat "$W/rss.dgst" "$W/rss.dd"); do
            [ "$rss" -gt "${peak[bare]:-0}" ] && peak[bare]=$rss
        done
        ;;
    esac
    ms=$(((t1 - t0) / 1000000))
    return 0
}


echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "before: $(uptime)"
echo "ours: $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo '?') ($build, $(grep -m1 buildtype "$build/meson-info/intro-buildoptions.json" >/dev/null 2>&1 && python3 -c "import json,sys; print([o['value'] for o in json.load(open('$build/meson-info/intro-buildoptions.json')) if o['name']=='buildtype'][0])" 2>/dev/null || echo '?') build), readBack=$readback"
case " $sides " in *" rauc "*) echo "rauc: $(rauc --version)" ;; esac
case " $sides " in *" mender "*) echo "mender: $(mender --version 2>&1 | head -1), mender-artifact $(mender-artifact --version 2>&1 | awk '{print $3}')" ;; esac
echo "sides: $sides; rounds: $rounds; sizes (MiB): $sizes"

for mib in $sizes; do
    declare -A peak=()
    declare -A times=()
    bytes=$((mib << 20))
    openssl rand -out "$W/rootfs.img" "$bytes"
    # The same image in each side's signed format.
    "$bundletool" create --key "$W/s.key" --cert "$W/s.pem" --version 2.0.0 --security-version 1 \
        --compatible bench-board --rootfs "$W/rootfs.img" -o "$W/fw.mblb" >/dev/null
    case " $sides " in *" rauc "*)
        rm -rf "$W/rauc-in" "$W/fw.raucb"; mkdir -p "$W/rauc-in"
        ln "$W/rootfs.img" "$W/rauc-in/rootfs.img"
        printf '[update]\ncompatible=bench-board\nversion=2.0.0\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n' \
            >"$W/rauc-in/manifest.raucm"
        rauc bundle --cert="$W/s.pem" --key="$W/s.key" "$W/rauc-in" "$W/fw.raucb" >/dev/null 2>&1
        ;; esac
    case " $sides " in *" mender "*)
        rm -f "$W/fw.mender"
        mender-artifact write rootfs-image -f "$W/rootfs.img" -n bench-2 -t bench-board -k "$W/s-sec1.key" \
            -o "$W/fw.mender" >/dev/null 2>&1
        ;; esac
    # Preallocated, zero-filled targets, synced before anything is timed.
    for f in ours-a ours-b rauc-a rauc-b mender-b bare; do
        dd if=/dev/zero of="$W/$f.img" bs=1M count="$mib" conv=fsync status=none
    done
    sync
    helper_start
    case " $sides " in *" rauc "*) rauc_start ;; esac
    case " $sides " in *" mender "*) mender_setup "$mib" ;; esac
    sync

    read -r -a order <<<"$sides"
    n=${#order[@]}
    for ((r = 0; r < rounds; r++)); do
        line="round $((r + 1)):"
        for ((k = 0; k < n; k++)); do
            s=${order[$(((r + k) % n))]}
            run_side "$s"
            times[$s]="${times[$s]:-} $ms"
            line="$line $s ${ms} ms,"
        done
        echo "${mib} MiB ${line%,}"
    done

    # Untimed: every target holds the image.
    cmp -n "$bytes" "$W/rootfs.img" "$W/ours-b.img" >/dev/null || { echo "ours: slot b differs from the image"; exit 1; }
    cmp -n "$bytes" "$W/rootfs.img" "$W/bare.img" >/dev/null || { echo "bare: target differs from the image"; exit 1; }
    case " $sides " in *" rauc "*) cmp -n "$bytes" "$W/rootfs.img" "$W/rauc-b.img" >/dev/null ||
        { echo "rauc: slot B differs from the image"; exit 1; } ;; esac
    case " $sides " in *" mender "*)
        # The last round's write is there (the rollback only changes the environment).
        cmp -n "$bytes" "$W/rootfs.img" "$mslot_loop" >/dev/null || { echo "mender: partition B differs from the image"; exit 1; } ;; esac

    h=$(helper_ask hwm); peak[ours]=${h#hwm }
    case " $sides " in *" rauc "*)
        peak[rauc]=$(awk '/VmHWM/ {print $2}' /proc/"$rauc_pid"/status)
        rauc_stop ;; esac
    helper_stop
    case " $sides " in *" mender "*) mender_teardown ;; esac

    echo "${mib} MiB: medians of $rounds rounds (ms, MB/s), paired per-round ratio ours/side: median (min–max)"
    print_medians 7 "$bytes" "$sides"
    echo "${mib} MiB: peak RSS (MB): ours daemon $(awk -v k="${peak[ours]}" 'BEGIN {printf "%.1f", k * 1.024 / 1000}')" \
        "$(case " $sides " in *" rauc "*) echo ", rauc service $(awk -v k="${peak[rauc]}" 'BEGIN {printf "%.1f", k * 1.024 / 1000}') + rauc install CLI $(awk -v k="${peak[rauc-cli]}" 'BEGIN {printf "%.1f", k * 1.024 / 1000}')" ;; esac)" \
        "$(case " $sides " in *" mender "*) echo ", mender $(awk -v k="${peak[mender]}" 'BEGIN {printf "%.1f", k * 1.024 / 1000}')" ;; esac)" \
        ", bare (largest of openssl, dd) $(awk -v k="${peak[bare]}" 'BEGIN {printf "%.1f", k * 1.024 / 1000}')"
    unset peak times
done
echo "after: $(uptime)"
