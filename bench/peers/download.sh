#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Download of the same artifact from the same hawkBit DDI test server behind
# nginx with mutual TLS, by our cloud client beside SWUpdate's suricatta and
# bare curl, in the same rounds, the order rotated every round; medians, paired
# per-round ratios (ours / peer) and each downloader's peak RSS.
#   bench/peers/download.sh [--install] BUILD_DIR [ROUNDS] [SIZE_MiB]
#   e.g. bench/peers/download.sh build-rel 3 256   (root, Debian 12, release build)
# --install: apt-get install whichever of swupdate, nginx-light, cpio, time is
# missing (Debian's mirror). suricatta is left out, and said so, when swupdate
# is missing.
#
# The server: the cloud tests' world (tests/cloud CloudEnv, as bench/cloud's
# cloud-bench starts it) through bench/peers/peer-cloud: the DDI test server
# (tests/cloud/ddi_server.py) behind real nginx terminating mutual TLS (TLS 1.3
# on loopback, client certificates from one test CA). nginx serves the artifact
# file itself (the server's X-Accel-Redirect: cloud-bench's "static" mode), so
# the server costs every side the same little CPU. HTTP/1.1 on every side.
# The artifact: one SWUpdate image (.swu: cpio with sw-description, its CMS
# signature and a random image of SIZE MiB), the same file for every side.
#
#  ours      mbl-cloud-client (the daemon, as mbl-cloud, its key and certificate
#            from the real identity service) through peer-cloud, a client that
#            stays connected: CloudClient1.Download(artifact {url, size, sha256})
#            returns a pipe; the daemon downloads with libcurl (mTLS as dev-01),
#            hashes with SHA-256 and holds back the last byte until the hash and
#            size match; peer-cloud splices the pipe into a file. Timed from the
#            request to the file complete (all bytes, so the hash matched). No fsync.
#  curl      `curl --http1.1 --cert/--key (dev-01's) -o FILE URL` then
#            `openssl dgst -sha256 FILE` compared with the artifact's SHA-256
#            (two passes, the hash over the page cache). No fsync.
#  suricatta SWUpdate 2022.12 (Debian), `swupdate -u` in hawkBit mode, its own
#            config file (tenant DEFAULT, id dev-02: a certificate of its own
#            from the same test CA; cafile/sslcert/sslkey: mTLS), -k CA with
#            --cert-purpose codeSigning (Debian builds it for signed images
#            only), bootloader none, hardware bench-board:1.0. Each round the
#            script assigns a deployment (forced) of the artifact to dev-02;
#            suricatta finds it on its next poll (untimed: the server's sleep is
#            2 s), GETs deploymentBase, streams the .swu into its installer: CMS
#            check of sw-description, SHA-256 of the image while the raw handler
#            writes it into a preallocated file (zeroed, untimed, between rounds),
#            then POSTs its feedback (no fsync: strace of its install shows none). Timed on the server's clock, from its first
#            deploymentBase GET to its "All Chunks Installed." feedback: so it
#            includes a second deploymentBase GET and three small feedback POSTs
#            (one carries its log) that the other sides do not do, each a few ms
#            on loopback. With no bootloader to reboot through, suricatta leaves
#            the action "proceeding", waiting for the new firmware's test result;
#            between rounds (untimed) swupdate is started again with `-c 2`
#            (success), which closes it, as after a reboot.
# Peak RSS: ours, the daemon's VmHWM (fresh daemon per run); curl and openssl,
# /usr/bin/time's maximum RSS; suricatta, the VmHWM of each swupdate process
# (main, suricatta, downloader, installer), largest and sum, the highest seen
# after any round (a new swupdate each round).
set -euo pipefail
# median, ratios, mb, print_medians
. "$(dirname "$0")/stats.sh"
. "$(dirname "$0")/peer_config.sh"

want_install=0
if [ "${1:-}" = "--install" ]; then
    want_install=1
    shift
fi
build=$(realpath "${1:?usage: download.sh [--install] BUILD_DIR [ROUNDS] [SIZE_MiB]}")
rounds=${2:-3}
mib=${3:-256}
src=$(realpath "$(dirname "$0")/../..")
[ "$(id -u)" = 0 ] || { echo "download.sh: run as root"; exit 77; }
if [ $want_install = 1 ]; then
    missing=""
    command -v swupdate >/dev/null || missing="$missing swupdate"
    command -v nginx >/dev/null || missing="$missing nginx-light"
    command -v cpio >/dev/null || missing="$missing cpio"
    [ -x /usr/bin/time ] || missing="$missing time"
    if [ -n "$missing" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    fi
fi
for t in nginx cpio curl python3; do
    command -v $t >/dev/null || { echo "download.sh: $t is missing (--install)"; exit 77; }
done
[ -x /usr/bin/time ] || { echo "download.sh: /usr/bin/time is missing (--install)"; exit 77; }
helper=$build/bench/peers/peer-cloud
for f in "$helper" "$build/services/cloud-client/mbl-cloud-client" "$build/services/device-identity/mbl-device-identity"; do
    [ -x "$f" ] || { echo "download.sh: $f is not built (ninja -C $build bench/peers/peer-cloud services/cloud-client/mbl-cloud-client services/device-identity/mbl-device-identity)"; exit 77; }
done
sides="ours curl"
if command -v swupdate >/dev/null; then
    sides="$sides suricatta"
else
    echo "left out: suricatta (swupdate is not installed; try --install)"
fi

W=$(mktemp -d /var/tmp/mbl-peers-dl.XXXXXX)
chmod 755 "$W"   # nginx's workers read the artifact
helper_pid="" sw_pid=""
cleanup() {
    set +e
    [ -n "$sw_pid" ] && { kill -- -"$sw_pid" 2>/dev/null; wait "$sw_pid" 2>/dev/null; }
    [ -n "$helper_pid" ] && { exec 8>&- 9<&-; wait "$helper_pid" 2>/dev/null; }
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
now_ns() { date +%s%N; }

# --- the artifact: a signed .swu (the same PKI shape as the firmware bench) ---
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" -out "$W/ca.pem" \
    -days 30 -subj "/CN=Bench CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/s.key" -out "$W/s.csr" -subj "/CN=Bench Signer" 2>/dev/null
printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n' >"$W/s.ext"
openssl x509 -req -in "$W/s.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -out "$W/s.pem" -days 30 \
    -extfile "$W/s.ext" 2>/dev/null
mkdir -p "$W/swu"
openssl rand -out "$W/swu/rootfs.img" $((mib << 20))
imgsha=$(openssl dgst -sha256 -r "$W/swu/rootfs.img" | cut -d' ' -f1)
cat >"$W/swu/sw-description" <<EOF
software =
{
    version = "2.0.0";
    hardware-compatibility: [ "1.0" ];
    images: (
        {
            filename = "rootfs.img";
            device = "$W/suricatta-target.img";
            type = "raw";
            sha256 = "$imgsha";
        }
    );
}
EOF
openssl cms -sign -in "$W/swu/sw-description" -out "$W/swu/sw-description.sig" -signer "$W/s.pem" -inkey "$W/s.key" \
    -outform DER -nosmimecap -binary
(cd "$W/swu" && printf 'sw-description\nsw-description.sig\nrootfs.img\n' | cpio -o -H crc --quiet >"$W/fw.swu")
dd if=/dev/zero of="$W/suricatta-target.img" bs=1M count="$mib" conv=fsync status=none

# --- the server and our side (stdin 8 -> peer-cloud, 9 <- its replies) ---
declare -A info=()
coproc HELPER { MBL_BUILD_ROOT=$build MBL_SOURCE_ROOT=$src MBL_POLICY_DIR=$build/dbus-policy \
    exec "$helper" "$W/fw.swu" 2>>"$W/ours.log"; }
helper_pid=$HELPER_PID
exec 8>&"${HELPER[1]}" 9<&"${HELPER[0]}"
eval "exec ${HELPER[1]}>&- ${HELPER[0]}<&-"
while read -r k v <&9; do
    [ "$k" = ready ] && break
    info[$k]=$v
done
[ -n "${info[url]:-}" ] || { echo "download.sh: peer-cloud did not start:"; cat "$W/ours.log"; exit 1; }
size=${info[size]}
helper_ask() { echo "$1" >&8; local line; read -r line <&9; echo "$line"; }

# --- suricatta: its own config, its own temporary folder (IPC sockets) ---
sw_start() {
    mkdir -p "$W/swtmp"
    write_swupdate_conf "$W/swupdate.cfg" "$W" dev-02 "${info[server]}" 2 "${info[ca]}" "${info[cert02]}" "${info[key02]}"
    TMPDIR=$W/swtmp setsid swupdate -f "$W/swupdate.cfg" -k "$W/ca.pem" --cert-purpose codeSigning \
        -H bench-board:1.0 -u "$*" >>"$W/swupdate.log" 2>&1 &
    sw_pid=$!
}
# suricatta's install of action AID, on the server's clock: "TIME_OF_FIRST_DEPLOYMENTBASE_GET
# TIME_OF_ITS_ALL_CHUNKS_INSTALLED_FEEDBACK" once that feedback came, "pending" before,
# "failed ..." when it closed otherwise. (With no bootloader to reboot through, suricatta
# leaves the action "proceeding" there, waiting for the new firmware's test result.)
action_times() {   # AID
    admin GET /admin/state | python3 -c '
import json, sys
a = json.load(sys.stdin)["actions"].get(sys.argv[1])
done = [f["time"] for f in a["feedback"] if "All Chunks Installed." in (f.get("details") or [])]
got = [h["time"] for h in a["status_history"] if h["status"] == "RETRIEVED"]
if done and got:
    print(got[0], done[0])
elif a["status"] not in ("RUNNING", "DOWNLOAD", "RETRIEVED"):
    print("failed", a["status"], [f.get("details", [])[-1:] for f in a["feedback"]])
else:
    print("pending")
' "$1"
}
action_status() {   # AID
    admin GET /admin/state | python3 -c 'import json, sys; print(json.load(sys.stdin)["actions"][sys.argv[1]]["status"])' "$1"
}
# Untimed, between rounds: the "reboot" that suricatta waits for. swupdate is
# started again with -c 2 (test result: success), which closes the open action
# with closed/success on its first poll; then the next action can be assigned.
sw_confirm() {   # AID
    local i
    kill -- -"$sw_pid"; wait "$sw_pid" 2>/dev/null || true
    sw_start -c 2
    for i in $(seq 150); do
        [ "$(action_status "$1")" = FINISHED ] && return 0
        sleep 0.2
    done
    echo "download.sh: suricatta did not close action $1 after a restart with -c 2:" >&2
    tail -20 "$W/swupdate.log" >&2
    exit 1
}
sw_hwm() {   # the swupdate processes' VmHWM (KiB): largest and sum so far
    local p k sum=0
    for p in $(ps -o pid= -s "$sw_pid"); do
        k=$(awk '/VmHWM/ {print $2}' /proc/"$p"/status 2>/dev/null || true)
        sum=$((sum + ${k:-0}))
        [ "${k:-0}" -gt "${sw_max:-0}" ] && sw_max=$k
    done
    [ "$sum" -gt "${sw_sum:-0}" ] && sw_sum=$sum
    return 0
}
sw_action=""

run_side() {   # SIDE -> sets ms
    local t0 t1 r
    case "$1" in
    ours)
        rm -f "$W/ours.out"
        t0=$(now_ns)
        r=$(helper_ask "download $W/ours.out")
        t1=$(now_ns)
        [ "$r" = ok ] || { echo "download.sh: ours failed: $r" >&2; tail -20 "$W/ours.log" >&2; exit 1; }
        ms=$(((t1 - t0) / 1000000))
        ;;
    curl)
        rm -f "$W/curl.out"
        t0=$(now_ns)
        /usr/bin/time -f %M -o "$W/rss.curl" curl -sS --fail --http1.1 --cacert "${info[ca]}" \
            --cert "${info[cert01]}" --key "${info[key01]}" -o "$W/curl.out" "${info[url]}"
        r=$(/usr/bin/time -f %M -o "$W/rss.dgst" openssl dgst -sha256 -r "$W/curl.out" | cut -d' ' -f1)
        t1=$(now_ns)
        [ "$r" = "${info[sha256]}" ] || { echo "download.sh: curl: wrong SHA-256" >&2; exit 1; }
        ms=$(((t1 - t0) / 1000000))
        for r in $(cat "$W/rss.curl" "$W/rss.dgst"); do
            [ "$r" -gt "${peak_curl:-0}" ] && peak_curl=$r
        done
        ;;
    suricatta)
        local aid st i
        [ -n "$sw_action" ] && sw_confirm "$sw_action"
        aid=$(admin POST /admin/deployments \
            '{"target": "dev-02", "type": "forced", "chunks": [{"part": "os", "name": "fw", "version": "2", "artifacts": ["fw.swu"]}]}' |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        sw_action=$aid
        for i in $(seq 300); do
            st=$(action_times "$aid")
            [ "$st" != pending ] && break
            kill -0 "$sw_pid" 2>/dev/null || { echo "download.sh: swupdate exited:" >&2; tail -30 "$W/swupdate.log" >&2; exit 1; }
            sleep 0.2
        done
        case "$st" in
        pending | failed*) echo "download.sh: suricatta: action $aid: $st" >&2; tail -30 "$W/swupdate.log" >&2; exit 1 ;;
        esac
        read -r t0 t1 <<<"$st"
        ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%d", (b - a) * 1000}')
        sw_hwm
        cmp "$W/swu/rootfs.img" "$W/suricatta-target.img" >/dev/null ||
            { echo "download.sh: suricatta: the target differs from the image" >&2; exit 1; }
        dd if=/dev/zero of="$W/suricatta-target.img" bs=1M count="$mib" conv=fsync,notrunc status=none
        ;;
    esac
    return 0
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "before: $(uptime)"
echo "ours: $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?') ($build); nginx: $(nginx -v 2>&1 | cut -d/ -f2); curl: $(curl --version | head -1 | cut -d' ' -f2)"
case " $sides " in *" suricatta "*) echo "suricatta: swupdate $(dpkg-query -W -f '${Version}' swupdate 2>/dev/null)" ;; esac
echo "sides: $sides; rounds: $rounds; artifact: $size bytes (.swu with a $mib MiB image)"
case " $sides " in *" suricatta "*) sw_start ;; esac

declare -A times=()
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
    echo "${line%,}"
done

# Untimed: what each side left on disk.
cmp "$W/fw.swu" "$W/ours.out" >/dev/null || { echo "ours: the file differs from the artifact"; exit 1; }
h=$(helper_ask hwm)

echo "medians of $rounds rounds (ms, MB/s), paired per-round ratio ours/side: median (min–max)"
print_medians 9 "$size" "$sides"
echo "peak RSS (MB): ours daemon $(mb "${h#hwm }"), curl/openssl (largest) $(mb "${peak_curl:-0}")" \
    "$(case " $sides " in *" suricatta "*) echo ", swupdate processes largest $(mb "$sw_max"), sum $(mb "$sw_sum")" ;; esac)"
echo "after: $(uptime)"
