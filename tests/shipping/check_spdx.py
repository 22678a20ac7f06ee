#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Every file of the repository says its licence: an SPDX-License-Identifier
line in its first five lines, or (files that cannot carry a comment: JSON,
fuzz inputs, fixtures) a REUSE.toml annotation that covers it. The recipes'
LICENSE and the LICENSE file must name the same licence."""
import fnmatch
import os
import re
import subprocess
import sys
import tomllib

root = sys.argv[1]
os.chdir(root)
if not os.path.exists(".git"):
    print("SKIP: not a git checkout (the file list comes from git ls-files)")
    sys.exit(77)
files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout.decode().split("\0")
files = [f for f in files if f and os.path.isfile(f)]
with open("REUSE.toml", "rb") as fh:
    reuse = tomllib.load(fh)
globs = []
for a in reuse.get("annotations", []):
    if a.get("SPDX-License-Identifier") != "Apache-2.0":
        sys.exit(f"REUSE.toml: an annotation names {a.get('SPDX-License-Identifier')!r}, not Apache-2.0")
    p = a["path"]
    globs += p if isinstance(p, list) else [p]


def covered(f):
    for g in globs:
        if g.startswith("**/") and fnmatch.fnmatch(os.path.basename(f), g[3:]):
            return True
        if g.endswith("/**") and f.startswith(g[:-2]):
            return True
        if fnmatch.fnmatch(f, g):
            return True
    return False


missing, wrong = [], []
for f in files:
    if f == "LICENSE":
        continue
    with open(f, "rb") as fh:
        head = fh.read(4096).decode("utf-8", "replace").split("\n")[:5]
    tags = [re.search(r"SPDX-License-Identifier:\s*([^\s*>]+)", l) for l in head]
    tags = [t.group(1) for t in tags if t]
    if tags:
        if tags[0] != "Apache-2.0":
            wrong.append(f"{f}: {tags[0]}")
    elif not covered(f):
        missing.append(f)
with open("LICENSE") as fh:
    if "Apache License" not in fh.read(200):
        sys.exit("LICENSE is not the Apache License 2.0")
for f in missing:
    print(f"no SPDX-License-Identifier in the first 5 lines and no REUSE.toml annotation: {f}")
for w in wrong:
    print(f"another licence than Apache-2.0: {w}")
print(f"{len(files)} files checked, {len(missing)} without a licence, {len(wrong)} with another")
sys.exit(1 if missing or wrong else 0)
