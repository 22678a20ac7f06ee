#!/usr/bin/env python3
"""`meson install` puts every shipped file where systemd and dbus-daemon look
for it, and the pieces agree with each other: each bus name has a policy, an
activation file and a unit; the unit runs an installed binary as the user the
policy lets own the name; sysusers.d creates every user and group they name;
every unit passes `systemd-analyze verify`.

Usage: check_install.py BUILD_DIR SOURCE_DIR   (meson passes both)
Exit 77 (skip) only when the systemd tools are missing, naming them.
"""
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

BUS_NAMES = ["org.mbl.DeviceIdentity1", "org.mbl.Update1", "org.mbl.ContainerManager1",
             "org.mbl.CloudClient1", "org.mbl.Coordinator1"]

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def ok(msg):
    print("ok: " + msg)


def read_unit(path):
    """systemd unit / D-Bus service file as {section: {key: [values]}}."""
    out, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                out.setdefault(section, {})
                continue
            k, _, v = line.partition("=")
            out[section].setdefault(k.strip(), []).append(v.strip())
    return out


def one(unit, section, key):
    vals = unit.get(section, {}).get(key, [])
    return vals[-1] if vals else None


def main():
    build, source = sys.argv[1], sys.argv[2]
    dest = tempfile.mkdtemp(prefix="mbl-install-")
    try:
        r = subprocess.run(["meson", "install", "-C", build, "--destdir", dest, "--no-rebuild", "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            print(r.stdout)
            fail("meson install --destdir failed")
            return 1
        installed = json.loads(subprocess.run(["meson", "introspect", build, "--installed"], check=True,
                                              stdout=subprocess.PIPE, text=True).stdout)
        # install path (absolute, inside the prefix) -> file in destdir
        in_dest = lambda p: os.path.join(dest, p.lstrip("/"))
        paths = set(installed.values())
        for p in sorted(paths):
            if not os.path.lexists(in_dest(p)):
                fail("meson lists %s as installed but it is not in the destdir" % p)
        by_name = {}
        for p in paths:
            by_name.setdefault(os.path.basename(p), []).append(p)

        def find(name, folder_re):
            hits = [p for p in by_name.get(name, []) if re.search(folder_re, os.path.dirname(p))]
            return hits[0] if hits else None

        # Every unit and activation file in the source folder is installed.
        sysdir = os.path.join(source, "services", "systemd")
        shipped_units = sorted(re.sub(r"\.in$", "", f) for f in os.listdir(sysdir)
                               if re.match(r"mbl-.*\.(service|path)(\.in)?$", f))
        units = {}
        for u in shipped_units:
            p = find(u, r"/lib/systemd/system$")
            if p:
                ok("unit %s installed as %s" % (u, p))
                units[u] = p
            else:
                fail("unit %s is not installed into a systemd unit folder" % u)

        policy_users = {}
        for bus in BUS_NAMES:
            pol = find(bus + ".conf", r"/share/dbus-1/system\.d$")
            act = find(bus + ".service", r"/share/dbus-1/system-services$")
            if not pol:
                fail("policy %s.conf not installed into share/dbus-1/system.d" % bus)
                continue
            if not act:
                fail("activation file %s.service not installed into share/dbus-1/system-services" % bus)
                continue
            owners = [p.get("user") for p in ET.parse(in_dest(pol)).getroot().iter("policy")
                      if any(a.get("own") == bus for a in p.iter("allow"))]
            a = read_unit(in_dest(act))
            unit_name = one(a, "D-BUS Service", "SystemdService")
            if one(a, "D-BUS Service", "Name") != bus:
                fail("%s: Name= is not %s" % (act, bus))
            if unit_name not in units:
                fail("%s: SystemdService=%s is not an installed unit" % (act, unit_name))
                continue
            u = read_unit(in_dest(units[unit_name]))
            user = one(u, "Service", "User") or "root"
            if one(u, "Service", "BusName") != bus:
                fail("%s: BusName= is not %s" % (unit_name, bus))
            if one(u, "Service", "Type") != "notify":
                fail("%s: Type= is not notify" % unit_name)
            exe = (one(u, "Service", "ExecStart") or "").split()[0]
            if not exe or not os.path.isfile(in_dest(exe)) or not os.access(in_dest(exe), os.X_OK):
                fail("%s: ExecStart binary %s is not installed" % (unit_name, exe))
            if one(a, "D-BUS Service", "User") != user:
                fail("%s: User=%s but %s runs as %s" % (act, one(a, "D-BUS Service", "User"), unit_name, user))
            if owners != [user]:
                fail("%s: the policy lets %s own the name, the unit runs as %s" % (pol, owners, user))
            policy_users[bus] = user
            ok("%s: policy, activation file and %s agree (user %s, %s)" % (bus, unit_name, user, exe))

        for tool in ["mblctl", "mbl-bundle"]:
            built = any(os.path.basename(k) == tool for k in installed)
            if tool == "mbl-bundle" and not built:
                print("note: mbl-bundle is not built by this tree yet")
                continue
            if not find(tool, r"/bin$"):
                fail("%s is not installed into bindir" % tool)
            else:
                ok("%s installed" % tool)

        examples = [p for p in paths if re.search(r"/etc/mbl/[^/]+\.json\.example$", p)]
        for p in examples:
            try:
                json.load(open(in_dest(p)))
            except ValueError as e:
                fail("example %s is not valid JSON: %s" % (p, e))
        if len(examples) < 3:
            fail("fewer than 3 example configurations installed under sysconfdir/mbl: %s" % examples)
        else:
            ok("%d example configurations under sysconfdir/mbl" % len(examples))

        # sysusers.d creates every user and group the units and policies name.
        sysusers = [p for p in paths if re.search(r"/sysusers\.d/[^/]+\.conf$", p)]
        tmpfiles = [p for p in paths if re.search(r"/tmpfiles\.d/[^/]+\.conf$", p)]
        if not sysusers or not tmpfiles:
            fail("no sysusers.d or tmpfiles.d file installed")
            return 1
        missing_tools = [t for t in ["systemd-sysusers", "systemd-tmpfiles", "systemd-analyze"] if not shutil.which(t)]
        if missing_tools:
            print("SKIP: %s not installed (apt-get install systemd)" % ", ".join(missing_tools))
            return 1 if failures else 77
        root = tempfile.mkdtemp(prefix="mbl-sysroot-")
        try:
            os.makedirs(os.path.join(root, "etc"))
            for f in ["passwd", "group", "shadow", "gshadow"]:
                open(os.path.join(root, "etc", f), "w").close()
            r = subprocess.run(["systemd-sysusers", "--root", root, in_dest(sysusers[0])],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                fail("systemd-sysusers rejects %s: %s" % (sysusers[0], r.stdout))
            pw = {l.split(":")[0] for l in open(os.path.join(root, "etc", "passwd"))}
            gr = {l.split(":")[0] for l in open(os.path.join(root, "etc", "group"))}
            for bus, user in policy_users.items():
                if user != "root" and user not in pw:
                    fail("sysusers.d does not create %s (runs %s)" % (user, bus))
            groups = set()
            for bus in BUS_NAMES:
                pol = find(bus + ".conf", r"/share/dbus-1/system\.d$")
                for p in ET.parse(in_dest(pol)).getroot().iter("policy"):
                    if p.get("group"):
                        groups.add(p.get("group"))
                    if p.get("user") and p.get("user") != "root" and p.get("user") not in pw:
                        fail("policy %s names user %s that sysusers.d does not create" % (bus, p.get("user")))
            for g in groups:
                if g not in gr:
                    fail("the policies name group %s that sysusers.d does not create" % g)
            ok("sysusers.d creates %s and groups %s" % (sorted(pw), sorted(gr)))
            r = subprocess.run(["systemd-tmpfiles", "--root", root, "--create", in_dest(tmpfiles[0])],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for d in ["etc/mbl", "var/lib/mbl", "var/log/mbl", "run/mbl"]:
                if not os.path.isdir(os.path.join(root, d)):
                    fail("tmpfiles.d does not create /%s (%s)" % (d, r.stdout.strip()))
            ok("tmpfiles.d creates the MBL folders")
        finally:
            shutil.rmtree(root, ignore_errors=True)

        # systemd-analyze verify: syntax, known directives, ExecStart present,
        # dependencies resolvable (dbus.socket comes from the dbus package).
        # The units name their binaries by installed path: verify copies whose
        # ExecStart points into the destdir (everything else unchanged), so the
        # host's own units (dbus.socket, sysinit.target) resolve the dependencies.
        vdir = tempfile.mkdtemp(prefix="mbl-verify-")
        try:
            unit_paths = []
            for name, p in units.items():
                text = open(in_dest(p)).read()
                # Only the project's own programs move into the destdir; a
                # system program (/bin/mkdir of mbl-data-layout) stays the host's.
                text = re.sub(r"^(ExecStart=[-@:+!]*)(/\S*)",
                              lambda m: m.group(1) + (dest + m.group(2) if os.path.exists(dest + m.group(2))
                                                      else m.group(2)), text, flags=re.M)
                with open(os.path.join(vdir, name), "w") as f:
                    f.write(text)
                unit_paths.append(os.path.join(vdir, name))
            env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice")
            r = subprocess.run(["systemd-analyze", "verify"] + sorted(unit_paths),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            # Unknown or misspelt directives are only warnings: any line about
            # our units counts.
            own = [l for l in r.stdout.splitlines() if "mbl" in l]
            if r.returncode != 0 or own:
                print(r.stdout)
                fail("systemd-analyze verify complains about the MBL units")
            else:
                ok("systemd-analyze verify passes on %d units, no warning" % len(unit_paths))
        finally:
            shutil.rmtree(vdir, ignore_errors=True)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
