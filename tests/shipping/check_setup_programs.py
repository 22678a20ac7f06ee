#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Every program the tests, the demo and the benchmarks run is installed by
tests/setup.sh (or is part of Debian 12 minbase).

The README promises that on a fresh Debian 12 (debootstrap --variant=minbase)
`tests/demo.sh` and `tests/run-all.sh` need no other step; tests/setup.sh is the
only install step. This check reads the sources, collects the names of the
programs they start, and for each one asks dpkg which package provides it here.
It fails for a program that is not installed at all, and for one whose package
is neither among setup.sh's PACKAGES (with their Depends/Pre-Depends, which apt
installs with them) nor Essential/Priority required (what minbase contains).

Where names come from (static; no test is run):
  * shell scripts (tests/, bench/, .ci/run): the first word of every simple
    command, found by a small quote-aware tokenizer (heredoc bodies skipped,
    functions the script defines and shell builtins left out, and through the
    wrappers nice/timeout/env/exec/command/xargs to the program they start),
    and the words of a `for t in LIST; do ... command -v "$t"` list;
  * Python (tests/, bench/): the first element of a list literal given to
    subprocess's run/Popen/check_output/check_call/call (or a local run()
    wrapper), and shutil.which("NAME");
  * C++ (tests/, bench/, and services/ and libmbl-common/, whose daemons the
    tests run): the first string of a brace list given to the runners (run,
    mustRun, runQuiet, spawn, must, timed, timedDetached, runTool, sh, and the
    container manager's succeeds/tool/inside), of a `std::vector<std::string>`
    initialiser named argv/args/cmd/cfg/bare/check/add/del, a "/usr/bin/NAME"
    style literal, a program looked up with onPath("NAME") or in a
    `for (const char* t : {...})` list checked with `command -v`, and the
    commands of a `"sh", "-c", "..."` string;
  * meson.build files: find_program('NAME').
A program started through a variable ("$PY", a path computed at run time) is
not seen; ALLOWED below lists, with the reason, the names the extractor finds
that are not host programs.

Exit 0 pass, 1 fail (the list of what is missing), 77 skip where dpkg is absent
(not a Debian system: nothing to check against).
"""
import os
import re
import shutil
import subprocess
import sys

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))

# Names the extractor finds that are not programs of the host, each with why.
ALLOWED = {
    # Built by this project (meson), run from the build tree.
    "mblctl": "built here", "mbl-bundle": "built here", "mbl-update": "built here",
    "nsprobe": "built here (tests/containers/nsprobe.c), run inside a container",
    "check_tls.sh": "a script of this repository (bench/footprint)",
    "ci_fuzz.sh": "a script of this repository (tests/fuzz)",
    # Paths inside the OCI images and containers the tests build, not host programs.
    "app": "in-image path /bin/app", "check": "in-image path /bin/check", "hard": "in-image file /bin/hard",
    "tool": "in-image file /bin/tool", "user-file": "in-image file /bin/user-file",
    "web": "in-image path /bin/web",
    # Daemon names the harness maps to our binaries (spawn({"update", ...})).
    "update": "harness daemon name (mbl-update)",
    # Words the patterns catch that are not programs.
    "call": "busctl's verb (std::vector<std::string> argv = {\"call\", ...} is busctl's argument list)",
    "genpkey": "openssl's verb (an argument list the test prefixes with openssl)",
    "dgst": "openssl's verb (an argument list the test prefixes with openssl)",
    "nc": "run inside the app container (busybox nc, `runc exec ... sh -c`), not on the host",
}

SHELL_KEYWORDS = {
    "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until", "case", "esac",
    "function", "select", "time", "{", "}", "!", "[[", "]]", "coproc",
}
SHELL_BUILTINS = {
    ".", ":", "[", "alias", "bg", "bind", "break", "builtin", "caller", "cd", "command", "compgen", "complete",
    "continue", "declare", "dirs", "disown", "echo", "enable", "eval", "exec", "exit", "export", "false", "fc",
    "fg", "getopts", "hash", "help", "history", "jobs", "kill", "let", "local", "logout", "mapfile", "popd",
    "printf", "pushd", "pwd", "read", "readarray", "readonly", "return", "set", "shift", "shopt", "source",
    "suspend", "test", "times", "trap", "true", "type", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
}
# Wrappers whose operand is the program that really runs: (options taking a value).
WRAPPERS = {"nice": {"-n"}, "timeout": {"-s", "-k", "--signal", "--kill-after"}, "env": {"-u", "-C"},
            "exec": {"-a"}, "command": set(), "xargs": {"-n", "-I", "-P", "-L", "-d", "-s"}, "nohup": set(),
            "setsid": set(), "stdbuf": {"-i", "-o", "-e"}}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def shell_commands(text):
    """First words of the simple commands of a shell script (see the module doc)."""
    functions = set(re.findall(r"^\s*(?:function\s+)?([A-Za-z_][\w-]*)\s*\(\)", text, re.M))
    body, heredoc = [], None
    for line in text.split("\n"):  # drop heredoc bodies
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        body.append(line)
        m = re.search(r"(?<!<)<<-?\s*(['\"]?)([A-Za-z_]\w*)\1", line)
        if m:
            heredoc = m.group(2)
    out = []
    # for t in a b c; do ... command -v "$t" ...: a list of programs looked up on PATH
    for m in re.finditer(r"\bfor (\w+) in ([^;\n]*)[;\n]\s*do\b", text):
        if re.search(r"(command -v|which) \"?\$\{?%s\b" % m.group(1), text[m.end():m.end() + 300]):
            out += m.group(2).split()
    script = re.sub(r"\bfor\s*\(\((.*?)\)\)", "for _ in x", "\n".join(body).replace("\\\n", " "))  # for ((i=0; ...))
    _scan(script, 0, False, out)
    return [w for w in out if NAME.match(w) and w not in SHELL_BUILTINS and w not in functions
            and w not in SHELL_KEYWORDS and not w.isdigit()]


def _first_word(words, out):
    ws = [w for w in words if not re.match(r"^[A-Za-z_]\w*(\[[^]]*\])?\+?=", w)]  # VAR=value prefixes
    ws = [w for w in ws if not re.match(r"^\d*[<>](?!quoted>|param>|subst>|arith>)", w)]  # redirections
    if ws and ws[0] in ("for", "select"):  # the loop's list is words, not commands
        return
    while ws:
        w = ws[0]
        if w == "coproc" and (len(ws) == 2 or (len(ws) > 2 and ws[2] == "{")):
            del ws[:2]  # coproc NAME { command; }: NAME is no program (the command is scanned in its braces)
            continue
        if w in SHELL_KEYWORDS:
            ws.pop(0)
            continue
        if w in WRAPPERS:
            takes = WRAPPERS[w]
            ws.pop(0)
            while ws and (ws[0].startswith("-") or (w == "env" and "=" in ws[0]) or
                          (w == "timeout" and re.match(r"^[\d.]+[smhd]?$", ws[0]))):
                if ws.pop(0) in takes and ws:
                    ws.pop(0)
            out.append(w)
            continue
        break
    if ws and not ws[0].startswith(("$", "<")):  # "$tool" args: the program is not known here
        out.append(ws[0])


def _scan(s, i, nested, out):
    """Scans commands from s[i]; in a $( ... ) (nested) returns after its ')'."""
    words, word = [], []
    depth, case_pattern = 0, False

    def end_word():
        nonlocal case_pattern
        if word:
            words.append("".join(word))
            word.clear()
        if len(words) == 3 and words[0] == "case" and words[2] == "in":  # then patterns, each up to ')'
            words.clear()
            case_pattern = True

    def end_command():
        end_word()
        _first_word(words, out)
        words.clear()

    while i < len(s):
        c = s[i]
        if case_pattern and c not in " \t\n":
            if re.match(r"esac\b", s[i:]):
                case_pattern = False
                i += 4
                continue
            j = i
            while j < len(s) and s[j] != ")":  # the pattern, up to its ')'
                j = s.find("'", j + 1) + 1 if s[j] == "'" else j + 1
            i, case_pattern = j + 1, False
            continue
        if c == "#" and not word:
            j = s.find("\n", i)
            i = len(s) if j < 0 else j
            continue
        if c == "\\":
            word.append(s[i:i + 2])
            i += 2
            continue
        if c == "'":
            j = s.find("'", i + 1)
            j = len(s) if j < 0 else j
            word.append(s[i:j + 1])
            i = j + 1
            continue
        if c == '"':
            j = i + 1
            while j < len(s) and s[j] != '"':
                if s[j] == "\\":
                    j += 2
                elif s.startswith("$((", j):
                    j = s.find("))", j) + 2
                elif s.startswith("$(", j):
                    j = _scan(s, j + 2, True, out)
                else:
                    j += 1
            word.append("<quoted>")
            i = j + 1
            continue
        if s.startswith("${", i):  # parameter expansion: one word
            j, n = i + 2, 1
            while j < len(s) and n:
                n += {"{": 1, "}": -1}.get(s[j], 0)
                j += 1
            word.append("<param>")
            i = j
            continue
        if s.startswith("$((", i):
            j = s.find("))", i)
            i = len(s) if j < 0 else j + 2
            word.append("<arith>")
            continue
        if s.startswith("$(", i):
            i = _scan(s, i + 2, True, out)
            word.append("<subst>")
            continue
        if c == "`":
            j = s.find("`", i + 1)
            j = len(s) if j < 0 else j
            _scan(s[i + 1:j], 0, False, out)
            word.append("<subst>")
            i = j + 1
            continue
        if c == "(" and word and word[-1] == "=":  # NAME=( array literal ): words, not commands
            j = i + 1
            while j < len(s) and s[j] != ")":
                if s[j] == "#" and s[j - 1] in " \t\n":
                    j = s.find("\n", j)
                j = s.find(s[j], j + 1) + 1 if s[j] in "'\"" else j + 1
            word.append("<array>")
            i = j + 1
            continue
        if c == "(":
            depth += 1
            end_command()
        elif c == ")":
            if nested and depth == 0:
                end_command()
                return i + 1
            depth -= 1
            end_command()
        elif s.startswith(";;", i):
            end_command()
            case_pattern = True
            i += 2
            continue
        elif c in ";|&\n{}":
            end_command()
        elif c in " \t":
            end_word()
        else:
            word.append(c)
        i += 1
    end_command()
    return i


PY_CALL = re.compile(r"\b(?:run|Popen|check_output|check_call|call)\(\s*\[\s*\"([^\"]+)\"")
PY_WHICH = re.compile(r"\bwhich\(\s*\"([^\"]+)\"\s*\)")
CPP_CALL = re.compile(r"\b(?:run|mustRun|runQuiet|spawn|must|timed|timedDetached|runTool|sh|succeeds|tool|inside)"
                      r"\s*\(\s*\{\s*\"([^\"]+)\"")
CPP_ARGV = re.compile(r"std::vector<std::string>\s+(?:argv|args|cmd|cfg|bare|check|add|del)\s*=?\s*\{\s*\"([^\"]+)\"")
CPP_PATH = re.compile(r"\"(?:/usr)?/s?bin/([A-Za-z0-9][\w.+-]*)\"")
CPP_ONPATH = re.compile(r"\bonPath\(\s*\"([^\"]+)\"\s*\)")
CPP_TOOLS = re.compile(r"for\s*\(\s*const\s+char\s*\*\s*\w+\s*:\s*\{([^}]*)\}")  # for (const char* t : {...})
PY_TOOLS = re.compile(r"for (\w+) in [\[(]([^\])]*)[\])]")  # for t in ("a", "b"): ... which(t)
CPP_SH_C = re.compile(r"\"-c\"\s*,\s*\"((?:[^\"\\]|\\.)*)\"")
MESON = re.compile(r"find_program\(\s*'([^']+)'")


def sources():
    skip_dirs = {".git", "seeds", "regressions", "image", "variants"}  # variants/image: run in the QEMU guest
    for top in ("tests", "bench", "services", "libmbl-common"):  # the daemons the tests run start programs too
        for d, dirs, files in os.walk(os.path.join(SRC, top)):
            dirs[:] = [x for x in dirs if x not in skip_dirs and not x.startswith("build")]
            for f in files:
                if os.path.join(d, f) != os.path.abspath(__file__):  # this file names programs in its text
                    yield os.path.join(d, f)
    yield os.path.join(SRC, ".ci", "run")
    for d, dirs, files in os.walk(SRC):
        dirs[:] = [x for x in dirs if not x.startswith(".") and not x.startswith("build") and x != "subprojects"]
        if "meson.build" in files:
            yield os.path.join(d, "meson.build")


def collect():
    found = {}  # name -> first place it was seen
    for path in sources():
        rel = os.path.relpath(path, SRC)
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        names = []
        if path.endswith(".sh") or text.startswith("#!/usr/bin/env bash") or text.startswith("#!/bin/sh"):
            # Functions of the files it sources from its own folder (". "$(dirname "$0")/lib.sh").
            for lib in re.findall(r"^\s*(?:\.|source) \"\$\(dirname \"\$0\"\)/([\w.-]+)\"", text, re.M):
                try:
                    libtext = open(os.path.join(os.path.dirname(path), lib), encoding="utf-8").read()
                except FileNotFoundError:
                    continue
                text += "".join("\n%s() { :; }" % f for f in
                                re.findall(r"^\s*(?:function\s+)?([A-Za-z_][\w-]*)\s*\(\)", libtext, re.M))
            names = shell_commands(text)
            if "apt-get install" in text:
                # A script that installs what it needs itself (bench/peers: --install runs
                # apt-get install for each program its `command -v NAME` finds missing)
                # answers for those programs; tests/setup.sh does not install them.
                own = set(re.findall(r"command -v ([A-Za-z0-9][\w.+-]*)", text))
                names = [n for n in names if n not in own]
        elif path.endswith(".py"):
            names = PY_CALL.findall(text) + PY_WHICH.findall(text)
            for m in PY_TOOLS.finditer(text):
                if re.search(r"which\(\s*%s\s*\)" % m.group(1), text[m.end():m.end() + 200]):
                    names += re.findall(r"\"([^\"]+)\"", m.group(2))
        elif path.endswith((".cpp", ".h", ".c")):
            names = CPP_CALL.findall(text) + CPP_ARGV.findall(text) + CPP_PATH.findall(text) + \
                CPP_ONPATH.findall(text)
            for m in CPP_TOOLS.finditer(text):  # a list of tools looked up on PATH
                if re.search(r"command -v|onPath\(", text[m.end():m.end() + 200]):
                    names += re.findall(r"\"([^\"]+)\"", m.group(1))
            for script in CPP_SH_C.findall(text):
                names += shell_commands(script.encode().decode("unicode_escape"))
        elif os.path.basename(path) == "meson.build":
            names = MESON.findall(text)
        for n in names:
            if n.startswith("/") and not re.match(r"^(/usr)?/s?bin/", n):
                continue  # a path of the test's own (a file it made, "/nonexistent/program")
            n = os.path.basename(n)
            if NAME.match(n):
                found.setdefault(n, rel)
    return found


def dpkg_state():
    fmt = "${Package}\t${db:Status-Abbrev}\t${Priority}\t${Essential}\t${Pre-Depends}, ${Depends}\t${Provides}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], stdout=subprocess.PIPE, text=True, check=True).stdout
    pkgs, provides = {}, {}
    for line in out.splitlines():
        name, status, prio, essential, deps, prov = (line.split("\t") + [""] * 6)[:6]
        if len(status) < 2 or status[1] not in "iUFWt":  # its files are on disk (also mid-upgrade)
            continue
        pkgs[name] = (prio, essential, deps)
        for p in prov.split(","):
            p = p.strip().split(" ")[0]
            if p:
                provides.setdefault(p, []).append(name)
    return pkgs, provides


def closure(roots, pkgs, provides):
    """roots and what apt installs with them (Pre-Depends and Depends, recursively;
    of alternatives the first real package, else a provider already chosen)."""
    roots = [r for r in roots if r in pkgs] + [q for r in roots if r not in pkgs for q in provides.get(r, [])[:1]]
    seen, todo = set(roots), list(roots)
    while todo:
        for dep in pkgs[todo.pop()][2].split(","):
            alts = [a.strip().split(" ")[0].split(":")[0] for a in dep.split("|") if a.strip()]
            if not alts or any(a in seen for a in alts):
                continue
            real = [a for a in alts if a in pkgs]
            virtual = [q for a in alts for q in provides.get(a, [])]
            if not real and any(q in seen for q in virtual):
                continue
            for q in (real or virtual)[:1]:
                seen.add(q)
                todo.append(q)
    return seen


def setup_packages():
    text = open(os.path.join(SRC, "tests", "setup.sh"), encoding="utf-8").read()
    block = re.search(r"^PACKAGES=\((.*?)^\)", text, re.S | re.M).group(1)
    return [w for line in block.splitlines() for w in line.split("#")[0].split()]


def owners(paths):
    r = subprocess.run(["dpkg-query", "-S"] + paths, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    result = {}
    for line in r.stdout.splitlines():
        if line.startswith("diversion by"):
            continue
        pk, _, p = line.partition(": ")
        result.setdefault(p.strip(), [x.strip().split(":")[0] for x in pk.split(",")])
    return result


def main():
    if not shutil.which("dpkg-query"):
        print("SKIP: no dpkg-query (not a Debian system): nothing to check the setup script against")
        return 77
    found = collect()
    pkgs, provides = dpkg_state()
    setup = setup_packages()
    unknown = [p for p in setup if p not in pkgs and p not in provides]
    installed_by_setup = closure(setup, pkgs, provides)
    # What debootstrap --variant=minbase installs: the Essential and Priority required
    # packages and apt, with what they depend on (checked against a real minbase root
    # on 2026-12-05: the same 88 packages but sensible-utils and liblocale-gettext-perl,
    # required yet not installed by debootstrap; neither has a program called here).
    base = closure([p for p, (prio, ess, _) in pkgs.items() if prio == "required" or ess == "yes"] + ["apt"],
                   pkgs, provides)
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    where, problems = {}, []
    for name in sorted(found):
        if name in ALLOWED:
            continue
        p = shutil.which(name, path=path)
        if not p:
            problems.append(f"{name}: not installed on this machine (called in {found[name]}); "
                            "add its package to tests/setup.sh")
            continue
        real = os.path.realpath(p)
        cands = []
        for q in (p, real):
            cands += [q, q[4:] if q.startswith("/usr/") else "/usr" + q]
        where[name] = cands
    own = owners(sorted({c for cs in where.values() for c in cs}))
    for name, cands in sorted(where.items()):
        ps = next((own[c] for c in cands if c in own), None)
        if not ps:
            problems.append(f"{name}: {cands[0]} belongs to no Debian package (called in {found[name]})")
        elif not any(p in installed_by_setup or p in base for p in ps):
            problems.append(f"{name}: from package {', '.join(ps)}, which tests/setup.sh does not install "
                            f"(called in {found[name]})")
        else:
            print(f"ok: {name} ({', '.join(ps)}; {found[name]})")
    if unknown:
        problems.append("tests/setup.sh names packages that are not installed here: " + " ".join(unknown))
    for p in problems:
        print("FAIL: " + p)
    print(f"{len(found)} programs called, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
