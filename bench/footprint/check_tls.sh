#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Every thread of a daemon carries a copy of the executable's static TLS block,
# zeroed (so resident) by glibc when the thread starts: a daemon's PT_TLS
# segment must stay small (issue 18: a 64 KiB thread_local read buffer made
# every thread of four daemons 64 KiB larger).
#   check_tls.sh MAX_BYTES EXECUTABLE...
max=$1
shift
rc=0
for exe in "$@"; do
    size=$(readelf -lW "$exe" | awk '$1 == "TLS" { print $6 }')
    size=$((${size:-0}))
    if [ "$size" -gt "$max" ]; then
        echo "$exe: static TLS block of $size bytes per thread (at most $max)"
        rc=1
    else
        echo "$exe: static TLS block of $size bytes per thread"
    fi
done
exit $rc
