#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Where the resident memory of a set of processes goes (issue 18).

For each process: RSS, PSS and USS (Private_Clean + Private_Dirty) from
/proc/PID/smaps_rollup, its thread count, and its mappings grouped by what they
are (from /proc/PID/smaps): the executable, each shared library, the heap, malloc
arenas, thread stacks, the main stack, other anonymous memory, other files.
Across all of them: summed PSS and USS, and the distinct resident pages (the
union of the physical frames in /proc/PID/pagemap, root only): what the set
would cost alone on a device, shared libraries counted once.

  footprint.py [--libs N] PID|NAME=PID ...        (as root)

Mapping classes:
  exe        the process's own executable
  lib:NAME   a shared library (file-backed mapping of a .so)
  heap       [heap] (brk; malloc's main arena)
  arena      anonymous memory inside a 64 MiB-aligned malloc arena reservation
  stack      [stack] of the main thread
  tstack     a thread's stack: an anonymous rw mapping right after a PROT_NONE
             guard page of one page (glibc's pthread stacks)
  anon       any other anonymous memory
  file:NAME  other file mappings; [vdso] etc. as themselves
"""
import argparse
import os
import re
import struct
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
ARENA = 64 << 20
HDR = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$")


def read_mappings(pid):
    maps = []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = HDR.match(line)
            if m:
                cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16), "perms": m.group(3),
                       "inode": int(m.group(4)), "path": m.group(5).strip(), "kb": {}}
                maps.append(cur)
                continue
            k, _, v = line.partition(":")
            v = v.strip()
            if v.endswith(" kB"):
                cur["kb"][k] = int(v[:-3])
    return maps


def classify(maps, exe):
    for i, m in enumerate(maps):
        p = m["path"]
        if p == exe or (exe and p.endswith(" (deleted)") and p.startswith(exe)):
            m["cls"] = "exe"
        elif p == "[heap]":
            m["cls"] = "heap"
        elif p == "[stack]":
            m["cls"] = "stack"
        elif p.startswith("["):
            m["cls"] = p
        elif p:
            base = os.path.basename(p)
            m["cls"] = ("lib:" + re.sub(r"\.so[.0-9]*$", "", base)) if ".so" in base else "file:" + base
        else:
            prev = maps[i - 1] if i > 0 else None
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            # malloc arena: rw part at a 64 MiB boundary, followed by its PROT_NONE rest
            if (m["start"] % ARENA == 0 and nxt and nxt["perms"].startswith("---") and not nxt["path"]
                    and nxt["start"] == m["end"] and nxt["end"] - m["start"] <= ARENA):
                m["cls"] = "arena"
            elif (prev and prev["perms"].startswith("---") and not prev["path"] and prev["end"] == m["start"]
                  and prev["end"] - prev["start"] == PAGE and m["perms"].startswith("rw")):
                m["cls"] = "tstack"
            elif m["perms"].startswith("---"):
                m["cls"] = "reserved"
            else:
                m["cls"] = "anon"


def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            v = v.strip()
            if v.endswith(" kB"):
                out[k] = int(v[:-3])
    return out


def frames(pid, maps, by_class):
    """The physical frames of the resident pages of the mappings (None without root);
    also added to by_class[class] (libraries by name, anything else by class)."""
    res = set()
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except OSError:
        return None
    try:
        for m in maps:
            if m["kb"].get("Rss", 0) == 0:
                continue
            n = (m["end"] - m["start"]) // PAGE
            data = os.pread(fd, n * 8, (m["start"] // PAGE) * 8)
            cls = by_class.setdefault(m["cls"] if m["cls"].startswith("lib:") or m["cls"] == "exe"
                                      else "private:" + m["cls"], set())
            for (e,) in struct.iter_unpack("<Q", data):
                if e >> 63 & 1:
                    pfn = e & ((1 << 55) - 1)
                    if pfn == 0:
                        return None  # no CAP_SYS_ADMIN: frames hidden
                    res.add(pfn)
                    cls.add(pfn)
    finally:
        os.close(fd)
    return res


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("procs", nargs="+", help="PID or NAME=PID")
    ap.add_argument("--libs", type=int, default=8, help="libraries to list per process (by PSS)")
    a = ap.parse_args()
    procs = []
    for p in a.procs:
        name, _, pid = p.rpartition("=")
        pid = int(pid)
        procs.append((name or open(f"/proc/{pid}/comm").read().strip(), pid))

    total = {"Rss": 0, "Pss": 0, "Uss": 0}
    union = set()
    union_ok = True
    by_class = {}
    for name, pid in procs:
        exe = os.readlink(f"/proc/{pid}/exe")
        maps = read_mappings(pid)
        classify(maps, exe)
        r = rollup(pid)
        uss = r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
        total["Rss"] += r["Rss"]
        total["Pss"] += r["Pss"]
        total["Uss"] += uss
        fr = frames(pid, maps, by_class)
        if fr is None:
            union_ok = False
        else:
            union |= fr
        groups = {}
        for m in maps:
            g = m["cls"]
            if g.startswith("lib:"):
                key = g
            else:
                key = g
            s = groups.setdefault(key, {"Rss": 0, "Pss": 0, "Uss": 0, "n": 0, "vsz": 0})
            s["Rss"] += m["kb"].get("Rss", 0)
            s["Pss"] += m["kb"].get("Pss", 0)
            s["Uss"] += m["kb"].get("Private_Clean", 0) + m["kb"].get("Private_Dirty", 0)
            s["vsz"] += (m["end"] - m["start"]) // 1024
            s["n"] += 1
        print(f"== {name} (pid {pid}): RSS {r['Rss']} kB  PSS {r['Pss']} kB  USS {uss} kB  "
              f"threads {threads(pid)}  exe {exe}")
        libs = sorted((k for k in groups if k.startswith("lib:")), key=lambda k: -groups[k]["Pss"])
        lib_sum = {f: sum(groups[k][f] for k in libs) for f in ("Rss", "Pss", "Uss")}
        print(f"   {'class':28} {'RSS':>7} {'PSS':>7} {'USS':>7}  (kB; mappings, virtual size)")
        for k in ["exe", "heap", "arena", "tstack", "stack", "anon"]:
            if k in groups:
                g = groups[k]
                print(f"   {k:28} {g['Rss']:7} {g['Pss']:7} {g['Uss']:7}  ({g['n']}, {g['vsz']} kB)")
        print(f"   {'libraries (' + str(len(libs)) + ')':28} {lib_sum['Rss']:7} {lib_sum['Pss']:7} {lib_sum['Uss']:7}")
        for k in libs[:a.libs]:
            g = groups[k]
            print(f"     {k[4:]:26} {g['Rss']:7} {g['Pss']:7} {g['Uss']:7}")
        rest = [k for k in groups if k not in libs and k not in ("exe", "heap", "arena", "tstack", "stack", "anon")]
        for k in sorted(rest):
            g = groups[k]
            if g["Rss"]:
                print(f"   {k:28} {g['Rss']:7} {g['Pss']:7} {g['Uss']:7}")
        print("   libraries mapped: " + " ".join(sorted(k[4:] for k in libs)))
    if union_ok:
        kb = {k: len(v) * PAGE // 1024 for k, v in by_class.items()}
        libs = sorted((k for k in kb if k.startswith("lib:")), key=lambda k: -kb[k])
        print(f"== distinct resident kB across all, by class: executables {kb.get('exe', 0)}, "
              f"libraries {sum(kb[k] for k in libs)}, "
              + ", ".join(f"{k[8:]} {v}" for k, v in sorted(kb.items()) if k.startswith("private:") and v))
        print("   libraries: " + ", ".join(f"{k[4:]} {kb[k]}" for k in libs if kb[k] >= 8 * PAGE // 1024))
    print(f"== all {len(procs)}: summed RSS {total['Rss']} kB  summed PSS {total['Pss']} kB  "
          f"summed USS {total['Uss']} kB  distinct resident pages "
          + (f"{len(union) * PAGE // 1024} kB ({len(union) * PAGE / 1e6:.1f} MB)" if union_ok else "n/a (needs root)"))


if __name__ == "__main__":
    sys.exit(main())
