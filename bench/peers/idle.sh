#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Idle, all at the same moment: our five daemons beside RAUC's service, SWUpdate's
# suricatta, the Mender client daemon and containerd, all started by this script
# and left idle together; then
#  1. bytes per idle poll: our cloud client and suricatta poll the same hawkBit DDI
#     test server behind nginx with mutual TLS at the same sleep; the IP-level bytes
#     and packets of each client's connections counted apart (iptables on lo), and
#     the HTTP bytes of each from nginx's access log, over POLLS polls of each;
#  2. memory, measured after that window with every side still running: per
#     process RSS, PSS and USS (Private_Clean + Private_Dirty), and per side the
#     distinct resident pages of its processes as a set (bench/footprint/footprint.py:
#     the union of the physical frames in /proc/PID/pagemap).
#   bench/peers/idle.sh [--install] BUILD_DIR [POLLS]
#   e.g. bench/peers/idle.sh build-rel 30   (root, Debian 12, release build)
# POLLS: polls counted per client (default 30). POLL_SLEEP: the server's polling
# sleep in seconds (default 10: 30 polls take 5 minutes). WARMUP: polls of each
# client let pass before its window opens (default 2). PEER_IDLE: the helper
# (default BUILD_DIR/bench/peers/peer-idle). --install: apt-get install whichever
# of rauc, rauc-service, swupdate, mender-client, containerd, nginx-light is
# missing (Debian's mirror). A peer that is missing is left out, and said so.
#
# PSS splits a shared page among the processes that map it, so a side's PSS
# depends on who else runs (every side here maps libc, most map libcrypto, libssl
# or libcurl): measuring all at the same moment is the fair way to compare PSS,
# and it is what this script does. USS (pages only this process maps) and a side's
# distinct resident pages (shared libraries counted once within the side, whoever
# else maps them) are what each side would cost alone.
#
#  ours       bench/peers/peer-idle: the whole stack as footprint-idle starts it
#             (tests/e2e/world.h): mbl-device-identity, mbl-update,
#             mbl-container-manager, mbl-cloud-client and mbl-coordinator on a
#             private bus as their real users, each with its systemd unit's
#             Environment=; the identity provisioned (controller id
#             mbl-device-0001); the cloud client polls the DDI test server
#             (tests/cloud/ddi_server.py) behind real nginx terminating mutual TLS
#             (TLS 1.3 on loopback) on its kept connection, sending If-None-Match.
#             Nothing deployed, no app running. The side is the five daemons (not
#             the bus daemon, nginx or the server).
#  rauc       RAUC 1.8: `rauc service` on a private dbus-daemon (as firmware.sh
#             runs it: noop bootloader, two raw slots that are plain files,
#             --override-boot-slot=A; the bus is shared with Mender's daemon and
#             not counted). RAUC has no server client: idle, it waits on D-Bus.
#  suricatta  SWUpdate 2022.12 (`swupdate -u`, hawkBit mode, as download.sh
#             configures it: its own config, tenant DEFAULT, mTLS with a
#             certificate of its own from the same test CA, -k CA with
#             --cert-purpose codeSigning, hardware bench-board:1.0), controller id
#             mbl-device-0002 (the same length as ours, so the URL path costs the
#             same), polling the same server at the same sleep. The side is every
#             process of its session (main, suricatta, and the helpers it forks).
#  mender     Mender client 3.4 (Debian's mender-client): `mender daemon` with its
#             own config and data folder, on the peers' private bus (it serves its
#             auth-token API there), in a mount namespace where its artifact_info
#             and device identity script are given (see below). It has no hawkBit
#             client and there is no Mender server here: its ServerURL is
#             https://localhost.invalid, which does not resolve, so every
#             RetryPollIntervalSeconds (= the sleep) it runs its identity script and
#             tries to authorize (a DNS query that fails), for its inventory and its
#             update check alike (its last log lines are printed); its device key
#             (RSA) is made on its first start. It sends nothing to nginx, so it is
#             not in the bytes count.
#  containerd containerd 1.6 as bench/containers' bench-containers starts its own:
#             own root, state, socket and config (the CRI plugin disabled), no
#             container, no image. It talks to no server.
# Bytes: nginx's TLS port offers HTTP/1.1 only (ALPN http/1.1, no h2), so both
# clients use HTTP/1.1 (the access log's request line says which each used). An
# iptables chain on lo marks each TCP connection to nginx's TLS port by the uid of
# the socket that opened it (our cloud client runs as its own user, swupdate as
# root; nothing else connects to that port: the script's control requests go to
# the server's own HTTP port) and counts the packets and IP bytes both ways per
# mark (TCP/IP headers, TLS records, handshakes, ACKs, FINs). The window of each
# client runs from the moment its poll k appears in nginx's log to the moment its
# poll k+POLLS appears (checked every 0.2 s), so it holds POLLS whole poll cycles
# and their closing packets. Ethernet would add 14 B per packet, not counted on lo.
# kB/day at a 5-minute sleep = bytes/poll × 288 / 1000: it assumes a poll costs
# at 300 s what it costs at POLL_SLEEP, which holds only when POLL_SLEEP is 300.
# At a short sleep both clients keep one connection; at 300 s suricatta opens a
# new one for every poll (libcurl's default 118 s connection age limit; ours sets
# its own to a day), with a resumed TLS session: run POLL_SLEEP=300 WARMUP=1
# idle.sh BUILD_DIR 2 (about 20 minutes) for the 5-minute figure. The connection
# counts printed say what each client did in its window.
set -euo pipefail
# mb
. "$(dirname "$0")/stats.sh"
. "$(dirname "$0")/peer_config.sh"

want_install=0
if [ "${1:-}" = "--install" ]; then
    want_install=1
    shift
fi
build=$(realpath "${1:?usage: idle.sh [--install] BUILD_DIR [POLLS]}")
polls=${2:-30}
sleep_s=${POLL_SLEEP:-10}
helper=${PEER_IDLE:-$build/bench/peers/peer-idle}
src=$(realpath "$(dirname "$0")/../..")
footprint=$src/bench/footprint/footprint.py
[ "$(id -u)" = 0 ] || { echo "idle.sh: run as root"; exit 77; }
if [ $want_install = 1 ]; then
    missing=""
    command -v rauc >/dev/null || missing="$missing rauc"
    [ -e /usr/share/dbus-1/system.d/de.pengutronix.rauc.conf ] || missing="$missing rauc-service"
    command -v swupdate >/dev/null || missing="$missing swupdate"
    command -v mender >/dev/null || missing="$missing mender-client"
    command -v containerd >/dev/null || missing="$missing containerd"
    command -v nginx >/dev/null || missing="$missing nginx-light"
    if [ -n "$missing" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    fi
fi
for t in nginx curl python3 iptables openssl; do
    command -v $t >/dev/null || { echo "idle.sh: $t is missing"; exit 77; }
done
[ -x "$helper" ] || { echo "idle.sh: $helper is not built (ninja -C $build bench/peers/peer-idle)"; exit 77; }
for d in mbl-device-identity:device-identity mbl-update:update mbl-container-manager:container-manager \
    mbl-cloud-client:cloud-client mbl-coordinator:coordinator; do
    f=$build/services/${d#*:}/${d%%:*}
    [ -x "$f" ] || { echo "idle.sh: $f is not built"; exit 77; }
done
sides="ours"
if command -v rauc >/dev/null && [ -e /usr/share/dbus-1/system.d/de.pengutronix.rauc.conf ] &&
    command -v dbus-daemon >/dev/null; then
    sides="$sides rauc"
else
    echo "left out: rauc (needs rauc and rauc-service; try --install)"
fi
if command -v swupdate >/dev/null; then
    sides="$sides suricatta"
else
    echo "left out: suricatta (swupdate is not installed; try --install)"
fi
if command -v mender >/dev/null; then
    sides="$sides mender"
else
    echo "left out: mender (mender-client is not installed; try --install)"
fi
if command -v containerd >/dev/null; then
    sides="$sides containerd"
else
    echo "left out: containerd (not installed; try --install)"
fi
has() { case " $sides " in *" $1 "*) return 0 ;; esac; return 1; }

W=$(mktemp -d /var/tmp/mbl-peers-idle.XXXXXX)
chain=MBLIDLE$$
helper_pid="" bus_pid="" rauc_pid="" sw_pid="" mender_pid="" ctr_pid="" chain_on=0
cleanup() {
    set +e
    if [ $chain_on = 1 ]; then
        iptables -w -D OUTPUT -o lo -j "$chain"
        iptables -w -F "$chain"
        iptables -w -X "$chain"
    fi
    [ -n "$sw_pid" ] && { kill -- -"$sw_pid" 2>/dev/null; wait "$sw_pid" 2>/dev/null; }
    [ -n "$mender_pid" ] && { kill -- -"$mender_pid" 2>/dev/null; wait "$mender_pid" 2>/dev/null; }
    [ -n "$ctr_pid" ] && { kill "$ctr_pid"; wait "$ctr_pid" 2>/dev/null; }
    [ -n "$rauc_pid" ] && { kill "$rauc_pid"; wait "$rauc_pid" 2>/dev/null; }
    [ -n "$bus_pid" ] && kill "$bus_pid"
    [ -n "$helper_pid" ] && { exec 8>&- 9<&-; wait "$helper_pid" 2>/dev/null; }
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "before: $(uptime)"
echo "ours: $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?') ($build; helper $helper)"
has rauc && echo "rauc: $(rauc --version)"
has suricatta && echo "suricatta: swupdate $(dpkg-query -W -f '${Version}' swupdate 2>/dev/null)"
has mender && echo "mender: $(mender --version 2>&1 | head -1)"
has containerd && echo "containerd: $(containerd --version | cut -d' ' -f3)"
echo "sides: $sides; polls: $polls per client at a $sleep_s s sleep"

# --- ours, and the server (stdin 8 -> peer-idle, 9 <- its replies) ---
declare -A info=()
coproc HELPER { MBL_BUILD_ROOT=$build MBL_SOURCE_ROOT=$src MBL_POLICY_DIR=$build/dbus-policy \
    exec "$helper" 2>>"$W/ours.log"; }
helper_pid=$HELPER_PID
exec 8>&"${HELPER[1]}" 9<&"${HELPER[0]}"
eval "exec ${HELPER[1]}>&- ${HELPER[0]}<&-"
while read -r k v <&9; do
    [ "$k" = ready ] && break
    info[$k]=$v
done
[ -n "${info[server]:-}" ] || { echo "idle.sh: peer-idle did not start:"; cat "$W/ours.log"; exit 1; }
helper_ask() { echo "$1" >&8; local line; read -r line <&9; echo "$line"; }
admin POST /admin/config "$(printf '{"sleep": "%02d:%02d:%02d"}' $((sleep_s / 3600)) $((sleep_s / 60 % 60)) $((sleep_s % 60)))" >/dev/null
labels="device-identity update container-manager cloud-client coordinator"
ours_uid=$(awk '/^Uid:/ {print $2}' /proc/"${info[pid-cloud-client]}"/status)
[ "$ours_uid" != 0 ] || { echo "idle.sh: the cloud client runs as root: its connections cannot be told from suricatta's"; exit 1; }

# --- the peers' private system bus (RAUC's service and Mender's daemon serve on it) ---
if has rauc || has mender; then
    cat >"$W/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$W/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
    dbus-daemon --config-file="$W/bus.conf" --fork --print-pid >"$W/bus.pid" </dev/null
    bus_pid=$(cat "$W/bus.pid")
fi

# --- rauc: its service ---
if has rauc; then
    mkdir -p "$W/rauc/mnt"
    write_rauc_conf "$W/rauc" "$W"
fi
# One code-signing CA for the peers that want a trust anchor (RAUC's keyring,
# swupdate's -k): nothing is installed, it is only loaded.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" -out "$W/ca.pem" \
    -days 30 -subj "/CN=Bench CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
if has rauc; then
    truncate -s 1M "$W/rauc-a.img" "$W/rauc-b.img"
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=$W/bus.sock rauc service --conf="$W/rauc/system.conf" \
        --override-boot-slot=A >>"$W/rauc/service.log" 2>&1 &
    rauc_pid=$!
    for i in $(seq 100); do
        DBUS_SYSTEM_BUS_ADDRESS=unix:path=$W/bus.sock timeout 2 busctl --system status de.pengutronix.rauc \
            >/dev/null 2>&1 && break
        [ "$i" = 100 ] && { echo "idle.sh: rauc service did not come up:"; cat "$W/rauc/service.log"; exit 1; }
        sleep 0.1
    done
fi

# --- suricatta: its own config and temporary folder (IPC sockets) ---
if has suricatta; then
    mkdir -p "$W/swtmp"
    write_swupdate_conf "$W/swupdate.cfg" "$W" "${info[peerid]}" "${info[server]}" "$sleep_s" "${info[ca]}" \
        "${info[peercert]}" "${info[peerkey]}"
    TMPDIR=$W/swtmp setsid swupdate -f "$W/swupdate.cfg" -k "$W/ca.pem" --cert-purpose codeSigning \
        -H bench-board:1.0 -u "" >>"$W/swupdate.log" 2>&1 &
    sw_pid=$!
fi

# --- mender: its own config and data folder, a server that does not resolve ---
# In a mount namespace of its own, two folders of Debian's package are replaced
# for it alone: /etc/mender (artifact_info: Mender refuses to check for updates
# without an artifact name) and /usr/share/mender/identity (Debian ships the
# device identity script only as an example; without it Mender cannot even
# build its authorization request). The host's files are not touched.
if has mender; then
    mkdir -p "$W/mender/data" "$W/mender/etc" "$W/mender/identity"
    cat >"$W/mender/mender.conf" <<EOF
{
  "ServerURL": "https://localhost.invalid",
  "UpdatePollIntervalSeconds": $sleep_s,
  "InventoryPollIntervalSeconds": $sleep_s,
  "RetryPollIntervalSeconds": $sleep_s
}
EOF
    echo "device_type=bench-board" >"$W/mender/data/device_type"
    echo "artifact_name=bench-1" >"$W/mender/etc/artifact_info"
    ex=/usr/share/doc/mender-client/examples/mender-device-identity
    if [ -e $ex ]; then cp $ex "$W/mender/identity/"; else zcat $ex.gz >"$W/mender/identity/mender-device-identity"; fi
    chmod 755 "$W/mender/identity/mender-device-identity"
    # shellcheck disable=SC2016
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=$W/bus.sock setsid unshare --mount --propagation private sh -c '
        mount --bind "$1/etc" /etc/mender && mount --bind "$1/identity" /usr/share/mender/identity &&
        exec mender --config "$1/mender.conf" --fallback-config "$1/none.conf" --data "$1/data" \
            --no-syslog --log-file "$1/mender.log" daemon' sh "$W/mender" >>"$W/mender/stderr.log" 2>&1 &
    mender_pid=$!
fi

# --- containerd: its own root, state, socket (as bench-containers starts it) ---
if has containerd; then
    printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' >"$W/containerd.toml"
    containerd --root "$W/containerd-root" --state "$W/containerd-state" --address "$W/containerd.sock" \
        --config "$W/containerd.toml" >>"$W/containerd.log" 2>&1 &
    ctr_pid=$!
    for i in $(seq 100); do
        ctr -a "$W/containerd.sock" version >/dev/null 2>&1 && break
        [ "$i" = 100 ] && { echo "idle.sh: containerd did not answer:"; tail "$W/containerd.log"; exit 1; }
        sleep 0.1
    done
fi

# --- 1. bytes per idle poll ---
port=${info[port]}
log=${info[log]}
iptables -w -N "$chain"
chain_on=1
for r in \
    "-p tcp --dport $port -m connmark --mark 0/0x30000 -m owner --uid-owner $ours_uid -j CONNMARK --set-mark 0x10000/0x30000" \
    "-p tcp --dport $port -m connmark --mark 0/0x30000 -m owner --uid-owner 0 -j CONNMARK --set-mark 0x20000/0x30000" \
    "-p tcp --dport $port -m connmark --mark 0x10000/0x30000" \
    "-p tcp --sport $port -m connmark --mark 0x10000/0x30000" \
    "-p tcp --dport $port -m connmark --mark 0x20000/0x30000" \
    "-p tcp --sport $port -m connmark --mark 0x20000/0x30000" \
    "-p tcp --dport $port -m connmark --mark 0/0x30000" \
    "-p tcp --sport $port -m connmark --mark 0/0x30000"; do
    # shellcheck disable=SC2086
    iptables -w -A "$chain" $r
done
iptables -w -I OUTPUT -o lo -j "$chain"
# "packets bytes" of counting rule N (3..8) of the chain
counters() { iptables -w -L "$chain" -v -x -n | awk 'NR > 2 {print $1, $2}' | sed -n "$1p"; }
# "pk_up by_up pk_down by_down" of a client (1 ours, 2 suricatta)
client_counts() {
    local up down
    up=$(counters $((2 * $1 + 1)))
    down=$(counters $((2 * $1 + 2)))
    echo "$up $down"
}
poll_re() { echo "\"GET /DEFAULT/controller/v1/$1 HTTP/"; }
nlines() { grep -c -F "$(poll_re "$1")" "$log" || true; }

clients="ours"
has suricatta && clients="$clients suricatta"
declare -A cid=([ours]=${info[id]} [suricatta]=${info[peerid]}) cno=([ours]=1 [suricatta]=2)
declare -A k0=() c0=() c1=() done_=()
# Warm-up (untimed): each client's first WARMUP polls (suricatta sends its config
# data, ours learns the sleep) pass before the window, which opens at the next one.
warmup=${WARMUP:-2}
for c in $clients; do k0[$c]=$(($(nlines "${cid[$c]}") + warmup + 1)); done
echo "$(date +%T) all started; warm-up of $warmup polls, then the window"
limit=$(((polls + 6) * sleep_s * 2 + 120))
t0=$(date +%s)
while :; do
    all=1
    for c in $clients; do
        [ -n "${done_[$c]:-}" ] && continue
        all=0
        n=$(nlines "${cid[$c]}")
        if [ -z "${c0[$c]:-}" ] && [ "$n" -ge "${k0[$c]}" ]; then
            c0[$c]=$(client_counts "${cno[$c]}")
        elif [ -n "${c0[$c]:-}" ] && [ "$n" -ge $((k0[$c] + polls)) ]; then
            c1[$c]=$(client_counts "${cno[$c]}")
            done_[$c]=1
        fi
    done
    [ $all = 1 ] && break
    if [ $(($(date +%s) - t0)) -gt $limit ]; then
        echo "idle.sh: not every client polled $polls times in ${limit} s:"
        for c in $clients; do echo "  $c: $(($(nlines "${cid[$c]}") - k0[$c])) polls"; done
        tail -20 "$W/swupdate.log" 2>/dev/null
        exit 1
    fi
    sleep 0.2
done
echo "$(date +%T) window closed for every client"
[ "$(helper_ask running)" = ok ] || { echo "idle.sh: a daemon of ours stopped or restarted:"; tail -30 "$W/ours.log"; exit 1; }

echo
echo "1. idle poll, both clients against the same server at a $sleep_s s sleep, $polls polls each (HTTP/1.1 on nginx's TLS port)"
printf '  %-10s %9s %9s %10s %11s %9s %9s  %s\n' client "IP B/poll" "pk/poll" "up/down B" "HTTP B/poll" \
    "kB/day@5m" "TCP conn" "statuses, HTTP version, TLS"
declare -A perpoll=()
for c in $clients; do
    read -r pu bu pd bd <<<"${c0[$c]}"
    read -r pu1 bu1 pd1 bd1 <<<"${c1[$c]}"
    # The HTTP requests of the client in its window: after its poll k, up to its poll k+polls.
    stats=$(awk -v id="/DEFAULT/controller/v1/${cid[$c]}" -v k="${k0[$c]}" -v n="$polls" '
        { poll = index($0, "\"GET " id " HTTP/") > 0; if (poll) p++ }
        index($5, id) == 1 && ((poll && p > k && p <= k + n) || (!poll && p >= k && p < k + n)) {
            by += $8 + $9; st[$7]++; conn[$1] = 1; if ($2 == 1) fresh++; if ($3 == "r") reused++
            v = $6; sub(/"$/, "", v); proto[v]++; req++
        }
        END {
            for (s in st) sts = sts s "×" st[s] " "
            for (x in proto) ps = ps x " "
            nc = 0; for (x in conn) nc++
            printf "%d %d %s| %s| %d new connections (%d TLS sessions resumed), %d requests\n", by, nc, sts, ps, fresh, reused, req
        }' "$log")
    read -r hb nconn rest <<<"$stats"
    ipb=$((bu1 - bu + bd1 - bd))
    pk=$((pu1 - pu + pd1 - pd))
    perpoll[$c]=$(awk -v b=$ipb -v n="$polls" 'BEGIN {printf "%.0f", b / n}')
    printf '  %-10s %9s %9s %10s %11s %9s %9s  %s\n' "$c" "${perpoll[$c]}" \
        "$(awk -v p=$pk -v n="$polls" 'BEGIN {printf "%.1f", p / n}')" \
        "$(awk -v u=$((bu1 - bu)) -v d=$((bd1 - bd)) -v n="$polls" 'BEGIN {printf "%.0f/%.0f", u / n, d / n}')" \
        "$(awk -v b="$hb" -v n="$polls" 'BEGIN {printf "%.0f", b / n}')" \
        "$(awk -v b=$ipb -v n="$polls" 'BEGIN {printf "%.1f", b / n * 288 / 1000}')" "$nconn" "$rest"
done
if has suricatta; then
    echo "  ours/suricatta (IP bytes per poll): $(awk -v a="${perpoll[ours]}" -v b="${perpoll[suricatta]}" 'BEGIN {printf "%.2f", a / b}')"
fi
read -r pu bu <<<"$(counters 7)"
read -r pd bd <<<"$(counters 8)"
echo "  not attributed to either client (whole run): $((pu + pd)) packets, $((bu + bd)) B"

# --- 2. memory, every side still running ---
echo
echo "2. memory, all sides running at the same moment (after the polls above)"
side_pids() {   # SIDE -> NAME=PID words
    local p
    case "$1" in
    ours) for l in $labels; do echo "$l=${info[pid-$l]}"; done ;;
    rauc) echo "rauc-service=$rauc_pid" ;;
    suricatta) for p in $(ps -o pid= -s "$sw_pid"); do echo "$(cat /proc/"$p"/comm)-$p=$p"; done ;;
    mender) for p in $(ps -o pid= -s "$mender_pid"); do echo "$(cat /proc/"$p"/comm)=$p"; done ;;
    containerd) echo "containerd=$ctr_pid" ;;
    esac
}
everything=""
for s in $sides; do
    kill -0 "${rauc_pid:-$$}" "${sw_pid:-$$}" "${mender_pid:-$$}" "${ctr_pid:-$$}" ||
        { echo "idle.sh: a peer stopped"; exit 1; }
    words=$(side_pids "$s" | tr '\n' ' ')
    everything="$everything $words"
    # shellcheck disable=SC2086
    python3 "$footprint" --libs 0 $words >"$W/fp-$s.txt"
done
# shellcheck disable=SC2086
python3 "$footprint" --libs 0 $everything >"$W/fp-all.txt"
printf '  %-10s %-20s %7s %8s %8s %8s\n' side process threads "RSS kB" "PSS kB" "USS kB"
for s in $sides; do
    sed -n 's/^== \(.*\) (pid \([0-9]*\)): RSS \([0-9]*\) kB  PSS \([0-9]*\) kB  USS \([0-9]*\) kB  threads \([0-9]*\).*/\1 \3 \4 \5 \6/p' \
        "$W/fp-$s.txt" | while read -r name rss pss uss thr; do
        printf '  %-10s %-20s %7s %8s %8s %8s\n' "$s" "$name" "$thr" "$rss" "$pss" "$uss"
    done
done
echo "  per side: summed RSS, summed PSS, summed USS, distinct resident pages (kB)"
for s in $sides all; do
    f=$W/fp-$s.txt
    sed -n 's/^== all \([0-9]*\): summed RSS \([0-9]*\) kB  summed PSS \([0-9]*\) kB  summed USS \([0-9]*\) kB  distinct resident pages \([0-9]*\) kB.*/\1 \2 \3 \4 \5/p' "$f" |
        while read -r n rss pss uss dist; do
            printf '  %-10s %2s processes %8s %8s %8s %8s   (%s MB distinct)\n' "$s" "$n" "$rss" "$pss" "$uss" "$dist" \
                "$(mb "$dist")"
        done
done
if [ -n "${VERBOSE:-}" ]; then cat "$W"/fp-*.txt; fi

# --- what the peers did while idle ---
echo
has suricatta && echo "suricatta: processes $(ps -o args= -s "$sw_pid" | sort | uniq -c | awk '{$1=$1 "×"; print}' | paste -sd';' -)"
if has mender; then
    echo "mender: $(grep -c . "$W/mender/mender.log" || true) log lines; the last two:"
    tail -2 "$W/mender/mender.log" | cut -c1-240 | sed 's/^/  /'
fi
has rauc && echo "rauc service log lines: $(grep -c . "$W/rauc/service.log" || true)"
echo "after: $(uptime)"
