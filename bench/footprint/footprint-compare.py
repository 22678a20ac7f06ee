#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Idle footprint of two builds of the five daemons, in the same run (issue 18).

Runs BUILD/bench/footprint/footprint-idle of each build (A = before, B = after)
ROUNDS times, alternating which goes first each round (A B, B A, A B, ...), so
both sides see the same machine state as nearly as can be; prints per daemon the
median RSS, PSS and USS of each side and the median of the per-round B/A ratios,
and the same for the summed figures and the distinct resident pages. Each run
is a fresh stack (its own bus, server and daemons), measured after SETTLE s idle.

  footprint-compare.py [--rounds N] [--settle S] BUILD_A BUILD_B    (root)

Both builds must have footprint-idle built; MBL_SOURCE_ROOT (the sources the
DDI test server is run from) defaults to this file's repository.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

DAEMON = re.compile(r"^== (\S+) \(pid \d+\): RSS (\d+) kB  PSS (\d+) kB  USS (\d+) kB")
TOTAL = re.compile(r"^== all \d+: summed RSS (\d+) kB  summed PSS (\d+) kB  summed USS (\d+) kB  "
                   r"distinct resident pages (\d+) kB")


def run(build, settle, src):
    env = dict(os.environ, MBL_SOURCE_ROOT=os.environ.get("MBL_SOURCE_ROOT", src))
    r = subprocess.run([os.path.join(build, "bench/footprint/footprint-idle"), str(settle)], cwd=build, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"footprint-idle in {build} failed ({r.returncode}): {r.stderr.strip()}")
    out = {}
    for line in r.stdout.splitlines():
        m = DAEMON.match(line)
        if m:
            out[m.group(1)] = {"RSS": int(m.group(2)), "PSS": int(m.group(3)), "USS": int(m.group(4))}
        m = TOTAL.match(line)
        if m:
            out["all five"] = {"RSS": int(m.group(1)), "PSS": int(m.group(2)), "USS": int(m.group(3)),
                               "distinct": int(m.group(4))}
    if "all five" not in out:
        sys.exit(f"footprint-idle in {build}: no totals in its output:\n{r.stdout}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=int, default=5)
    a = ap.parse_args()
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = {"A": [], "B": []}
    loads = []
    for i in range(a.rounds):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")
        for side in order:
            loads.append(os.getloadavg()[0])
            runs[side].append(run(a.a if side == "A" else a.b, a.settle, src))
        print(f"round {i + 1}: {' then '.join(order)} done", file=sys.stderr)
    print(f"A = {a.a}\nB = {a.b}\n{a.rounds} rounds, order alternated, settle {a.settle} s; "
          f"load average (1 min) at the runs: min {min(loads):.1f}, median {statistics.median(loads):.1f}, "
          f"max {max(loads):.1f}")
    print(f"{'':18} {'field':9} {'A median':>9} {'B median':>9} {'B/A (median of rounds)':>24}")
    for name in runs["A"][0]:
        for field in runs["A"][0][name]:
            av = [r[name][field] for r in runs["A"]]
            bv = [r[name][field] for r in runs["B"]]
            ratio = statistics.median(b / x for b, x in zip(bv, av))
            print(f"{name:18} {field:9} {statistics.median(av):9.0f} {statistics.median(bv):9.0f} {ratio:24.3f}")


if __name__ == "__main__":
    sys.exit(main())
