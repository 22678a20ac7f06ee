#!/usr/bin/env python3
"""The Yocto layer in meta-layer/ is well formed and names only what exists:
layer.conf declares the collection and kirkstone/scarthgap; every recipe and
class is reachable by BBFILES/BBPATH; every file a recipe names (SRC_URI
file://, LIC_FILES_CHKSUM) exists and its checksum matches; the main recipe
enables exactly the units services/systemd ships, passes only meson options
that exist, creates the users the bus policies need; the pinned sdbus-c++
satisfies the version meson.build asks for; the bundle class calls mbl-bundle
with options the tool has.

Usage: check_layer.py SOURCE_DIR [BUILD_DIR]
"""
import glob
import hashlib
import os
import re
import subprocess
import sys

OE_CLASSES = {  # classes of openembedded-core this layer may inherit
    "meson", "pkgconfig", "systemd", "useradd", "cmake", "packagegroup", "features_check",
    "externalsrc", "nopackages", "deploy", "native", "nativesdk", "image", "ptest",
}
EXTERNAL_PACKAGES = {"dbus", "ca-certificates", "runc-opencontainers", "libubootenv-bin", "grub-editenv"}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def ok(msg):
    print("ok: " + msg)


def parse(path):
    """Crude BitBake parser: joins continuation lines, returns {var: value} for
    plain and weak assignments (last one wins) and the inherit list."""
    text = open(path).read().replace("\\\n", " ")
    vars_, inherits = {}, []
    in_func = False
    for line in text.splitlines():
        s = line.strip()
        if in_func:
            if s == "}":
                in_func = False
            continue
        if re.match(r"^(python\s+)?[\w:-]+\s*\(\)\s*\{", s) or re.match(r"^python\s+__anonymous", s):
            in_func = not s.endswith("}")
            continue
        if not s or s.startswith("#"):
            continue
        m = re.match(r"^inherit\s+(.*)$", s)
        if m:
            inherits += re.sub(r"\$\{@[^}]*\}", " ", m.group(1)).split()
            continue
        m = re.match(r"^([\w:\-+\[\]${}.]+)\s*(\?\?=|\?=|:=|\+=|=\+|\.=|=)\s*\"(.*)\"\s*$", s)
        if m:
            k, op, v = m.groups()
            if op in ("+=", ".="):
                vars_[k] = (vars_.get(k, "") + " " + v).strip()
            elif op in ("?=", "??=") and k in vars_:
                pass
            else:
                vars_[k] = v
    return vars_, inherits


def main():
    source = sys.argv[1]
    build = sys.argv[2] if len(sys.argv) > 2 else None
    layer = os.path.join(source, "meta-layer")
    conf = os.path.join(layer, "conf", "layer.conf")
    if not os.path.isfile(conf):
        fail("meta-layer/conf/layer.conf is missing")
        return 1
    lc, _ = parse(conf)
    coll = lc.get("BBFILE_COLLECTIONS", "").split()
    if len(coll) != 1:
        fail("layer.conf: BBFILE_COLLECTIONS should add one collection, has %s" % coll)
        return 1
    name = coll[0]
    compat = lc.get("LAYERSERIES_COMPAT_" + name, "").split()
    for series in ("kirkstone", "scarthgap"):
        if series not in compat:
            fail("layer.conf: LAYERSERIES_COMPAT_%s lacks %s" % (name, series))
    for var in ("BBFILE_PATTERN_", "BBFILE_PRIORITY_", "LAYERDEPENDS_"):
        if var + name not in lc:
            fail("layer.conf: %s%s is not set" % (var, name))
    ok("layer.conf: collection %s, compatible with %s" % (name, " ".join(compat)))

    patterns = [p.replace("${LAYERDIR}", layer) for p in lc.get("BBFILES", "").split()]
    reachable = set()
    for p in patterns:
        reachable.update(glob.glob(p))
    recipes = sorted(glob.glob(os.path.join(layer, "**", "*.bb"), recursive=True) +
                     glob.glob(os.path.join(layer, "**", "*.bbappend"), recursive=True))
    for r in recipes:
        if r not in reachable:
            fail("%s is not matched by BBFILES" % os.path.relpath(r, source))
    if not recipes:
        fail("the layer has no recipes")
    ok("%d recipes, all matched by BBFILES" % len(recipes))
    classes = {os.path.basename(c)[:-len(".bbclass")] for c in glob.glob(os.path.join(layer, "classes", "*.bbclass"))}

    readme = os.path.join(layer, "README.md")
    if not os.path.isfile(readme):
        fail("meta-layer/README.md is missing")
    else:
        text = open(readme).read()
        for needle in ("bitbake-layers add-layer", "IMAGE_INSTALL", "DISTRO_FEATURES", "systemd",
                       "kirkstone", "scarthgap"):
            if needle not in text:
                fail("meta-layer/README.md does not mention %s" % needle)
        ok("README says how to add the layer and what the image needs")

    produced = set()
    parsed = {}
    for r in recipes:
        v, inh = parse(r)
        parsed[r] = (v, inh)
        pn = re.sub(r"_[^_]*$", "", os.path.basename(r)[:-3]) if r.endswith(".bb") else None
        if pn:
            produced.add(pn)
            for extra in v.get("PACKAGES", "").split():
                produced.add(extra.replace("${PN}", pn))
    for r in recipes:
        v, inh = parsed[r]
        rel = os.path.relpath(r, source)
        base = os.path.basename(r)[:-3]
        pn, _, pv = base.partition("_")
        for c in inh:
            if c not in OE_CLASSES and c not in classes:
                fail("%s inherits %s, neither an OE-core class nor one of this layer" % (rel, c))
        if "LICENSE" not in v:
            fail("%s has no LICENSE" % rel)
        if not v.get("LIC_FILES_CHKSUM") and "packagegroup" not in inh and v.get("LICENSE") != "MIT":
            fail("%s has no LIC_FILES_CHKSUM" % rel)
        # file:// entries of SRC_URI live beside the recipe (FILESPATH).
        here = os.path.dirname(r)
        for m in re.finditer(r"file://([^;\s]+)", v.get("SRC_URI", "")):
            cands = [os.path.join(here, d, m.group(1)) for d in (pn + "-" + pv, pn, "files")]
            if not any(os.path.exists(c) for c in cands):
                fail("%s: SRC_URI file://%s does not exist beside the recipe" % (rel, m.group(1)))
        # A recipe built from this repository names repository files: they must
        # exist and match their checksums.
        externalsrc = "MBL_SOURCE_DIR" in v.get("EXTERNALSRC", "")
        if externalsrc:
            for m in re.finditer(r"file://([^;\s]+)((?:;[^\s]*)?)", v.get("LIC_FILES_CHKSUM", "")):
                path = os.path.join(source, m.group(1))
                params = dict(p.split("=", 1) for p in m.group(2).split(";") if "=" in p)
                if not os.path.isfile(path):
                    fail("%s: LIC_FILES_CHKSUM names %s, not in the repository" % (rel, m.group(1)))
                    continue
                lines = open(path, "rb").readlines()
                b = int(params.get("beginline", 1))
                e = int(params.get("endline", len(lines)))
                md5 = hashlib.md5(b"".join(lines[b - 1:e])).hexdigest()
                if md5 != params.get("md5"):
                    fail("%s: LIC_FILES_CHKSUM md5 of %s is %s, recipe says %s" % (rel, m.group(1), md5,
                                                                                   params.get("md5")))
                else:
                    ok("%s: licence checksum of %s matches" % (rel, m.group(1)))
        if "SRCREV" in v and not v["SRCREV"].startswith("${") and not re.fullmatch(r"[0-9a-f]{40}", v["SRCREV"]):
            fail("%s: SRCREV %s is not a full commit id" % (rel, v["SRCREV"]))
        for key, val in v.items():
            if key.startswith("RDEPENDS") and "packagegroup" in inh:
                for pkg in val.split():
                    if pkg not in produced and pkg not in EXTERNAL_PACKAGES:
                        fail("%s: RDEPENDS on %s, which no recipe here produces" % (rel, pkg))
    ok("every recipe's classes, licences and files checked")

    # The main recipe against the repository.
    main_recipe = [r for r in recipes if os.path.basename(r).startswith("mbl-device-services_")]
    if len(main_recipe) != 1:
        fail("expected one mbl-device-services recipe, found %d" % len(main_recipe))
        return 1
    v, inh = parsed[main_recipe[0]]
    for c in ("meson", "pkgconfig", "systemd", "useradd"):
        if c not in inh:
            fail("mbl-device-services does not inherit %s" % c)
    sysdir = os.path.join(source, "services", "systemd")
    shipped = {re.sub(r"\.in$", "", f) for f in os.listdir(sysdir) if re.match(r"mbl-[\w-]+\.(service|path)(\.in)?$", f)}
    wanted = shipped
    enabled = set(v.get("SYSTEMD_SERVICE:${PN}", "").split())
    if enabled != wanted:
        fail("SYSTEMD_SERVICE %s differs from the units services/systemd ships %s" % (sorted(enabled), sorted(wanted)))
    else:
        ok("SYSTEMD_SERVICE enables the %d shipped units" % len(enabled))
    options = set(re.findall(r"option\('([\w-]+)'", open(os.path.join(source, "meson_options.txt")).read()))
    for o in re.findall(r"-D([\w-]+)=", v.get("EXTRA_OEMESON", "")):
        if o not in options:
            fail("EXTRA_OEMESON passes -D%s, which meson_options.txt does not define" % o)
    ok("EXTRA_OEMESON passes only options meson_options.txt defines")
    defaults = dict(re.findall(r"option\('(\w+)', type : 'string', value : '([^']*)'", open(
        os.path.join(source, "meson_options.txt")).read()))
    for var, opt in (("MBL_IDENTITY_USER", "identity_user"), ("MBL_CLOUD_USER", "cloud_user"),
                     ("MBL_COORDINATOR_USER", "coordinator_user"), ("MBL_ADMIN_GROUP", "admin_group")):
        if v.get(var) != defaults.get(opt):
            fail("%s is %s, meson option %s defaults to %s" % (var, v.get(var), opt, defaults.get(opt)))
        ref = "${%s}" % var
        where = v.get("GROUPADD_PARAM:${PN}", "") if opt == "admin_group" else v.get("USERADD_PARAM:${PN}", "")
        if ref not in where:
            fail("useradd does not create %s (%s)" % (ref, opt))
    ok("useradd creates the users and group the bus policies name")
    for pc, pkg in (("containers", "runc"), ("uboot", "libubootenv-bin"), ("grub", "grub-editenv")):
        val = v.get("PACKAGECONFIG[%s]" % pc, "")
        if pkg not in val and "MBL_RUNC_PACKAGE" not in val:
            fail("PACKAGECONFIG[%s] does not RDEPEND on %s" % (pc, pkg))

    # sdbus-c++: the pinned version satisfies meson.build.
    top = open(os.path.join(source, "meson.build")).read()
    m = re.search(r"dependency\('sdbus-c\+\+',\s*version\s*:\s*\[([^\]]*)\]", top)
    pins = [os.path.basename(r)[:-3].split("_")[1] for r in recipes if os.path.basename(r).startswith("sdbus-c++_")]
    if not pins:
        fail("no sdbus-c++ recipe in the layer")
    elif m:
        for pin in pins:
            pv = tuple(int(x) for x in pin.split("."))
            for cons in re.findall(r"'([<>=]+)\s*([\d.]+)'", m.group(1)):
                want = tuple(int(x) for x in cons[1].split("."))
                good = {">=": pv >= want, "<": pv < want, ">": pv > want, "<=": pv <= want, "==": pv == want}[cons[0]]
                if not good:
                    fail("sdbus-c++ %s does not satisfy meson.build's %s %s" % (pin, cons[0], cons[1]))
        ok("sdbus-c++ %s satisfies meson.build (%s)" % (", ".join(pins), m.group(1)))
    pref = lc.get("PREFERRED_VERSION_sdbus-c++")
    if pref not in pins:
        fail("layer.conf prefers sdbus-c++ %s, the layer has %s" % (pref, pins))

    # The bundle class uses options mbl-bundle has.
    cls = os.path.join(layer, "classes", "mbl-bundle.bbclass")
    if not os.path.isfile(cls):
        fail("classes/mbl-bundle.bbclass is missing")
    else:
        used = set(re.findall(r"'(--[a-z-]+)'", open(cls).read()))
        tools = [t for t in glob.glob(os.path.join(build, "**", "mbl-bundle"), recursive=True)
                 if os.path.isfile(t) and os.access(t, os.X_OK)] if build else []
        tool = tools[0] if tools else None
        if tool:
            r = subprocess.run([tool, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for opt in sorted(used):
                if opt not in r.stdout:
                    fail("mbl-bundle.bbclass passes %s, which `mbl-bundle --help` does not list" % opt)
            ok("mbl-bundle.bbclass uses options %s, all known to mbl-bundle" % sorted(used))
        else:
            print("note: mbl-bundle is not built in this tree; the class's options %s are not cross-checked" % sorted(used))

    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
