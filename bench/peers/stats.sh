# SPDX-License-Identifier: Apache-2.0
# Sourced by the peer benchmarks (firmware.sh, download.sh): the statistics they print.

# Median of whitespace-separated numbers on stdin.
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# "a1 a2 .." "b1 b2 .." -> "median (min–max)" of the per-round ratios a_i/b_i.
ratios() {
    paste <(echo "$1" | tr ' ' '\n' | grep .) <(echo "$2" | tr ' ' '\n' | grep .) |
        awk '{print $1/$2}' | sort -g |
        awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.2f (%.2f–%.2f)", m, v[1], v[NR]}'
}

# kB (as /proc reports, KiB) -> MB with one decimal.
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k * 1.024 / 1000}'; }

# One line per side: median ms, MB/s for `bytes`, and for each side but ours the
# median/median and paired ratios of ours to it. Args: width bytes sides; the
# times are in the caller's associative array `times`.
print_medians() {
    local width=$1 bytes=$2 sides=$3 om m mbs s
    om=$(echo "${times[ours]}" | median)
    for s in $sides; do
        m=$(echo "${times[$s]}" | median)
        mbs=$(awk -v b="$bytes" -v m="$m" 'BEGIN {printf "%.0f", b / 1e6 / (m / 1000)}')
        if [ "$s" = ours ]; then
            printf "  %-${width}s %7s ms %6s MB/s\n" "$s" "$m" "$mbs"
        else
            printf "  %-${width}s %7s ms %6s MB/s   ours/%s median/median %.2f, paired %s\n" "$s" "$m" "$mbs" "$s" \
                "$(awk -v a="$om" -v b="$m" 'BEGIN {print a / b}')" "$(ratios "${times[ours]}" "${times[$s]}")"
        fi
    done
}
