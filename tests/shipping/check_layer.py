#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks of the Yocto layer in meta-layer/ that need no BitBake.

check_layer.py SOURCE_DIR [BUILD_DIR]
    The layer is well formed and names only what exists: layer.conf declares
    the collection, scarthgap and the full LAYERDEPENDS; every recipe is
    reachable by BBFILES; every class it inherits exists; every recipe has a
    licence whose checksum matches the repository's LICENSE (Apache-2.0); the
    services recipe enables exactly the daemons' units services/systemd ships,
    passes only meson options that exist and creates the users the bus
    policies need; the pinned sdbus-c++ satisfies meson.build; the bundle
    steps (lib/mbl_layer/bundle.py) use only options `mbl-bundle --help` lists;
    each example machine chooses a boot integration and names its disk.

check_layer.py --wks-layout SOURCE_DIR
    wic/mbl-ab.wks.in describes the disk of layout/partitions.conf: the same
    partitions in the same order, labels, file systems, sizes and mount
    points, the first slot filled with the image and an MBR table.

check_layer.py --boot-scripts SOURCE_DIR
    The boot partition's scripts the layer generates: grub.cfg (and the
    project's mbl-ab.cfg) pass grub-script-check; the U-Boot script made of the
    project's services/update/u-boot/mbl-ab.cmd and the machine part compiles
    with mkimage, keeps its environment in the layer's two files, and uses no
    command the layer's U-Boot fragment leaves out.

check_layer.py --graph DIR --machine x86|arm --layer META_LAYER --layers LAYERS_DIR
    DIR holds the task-depends.dot and pn-buildlist of `bitbake -g` of the
    layer's targets (tests/shipping/bitbake_parse.sh): every recipe came from
    the layer that must provide it (sdbus-c++ 1.2.0 from this layer, runc from
    meta-virtualization, nlohmann-json and catch2 from meta-oe, ...), the
    machine's boot integration is in, nothing pulls systemd-native or
    sdbus-c++-native, and the image and bundle tasks depend on what they use.
"""
import glob
import hashlib
import os
import re
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LICENSE_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"  # the Apache-2.0 text of apache.org (and Debian's common-licenses)
OE_CLASSES = {  # classes of openembedded-core (scarthgap) this layer may inherit
    "meson", "pkgconfig", "systemd", "useradd", "cmake", "packagegroup", "features_check",
    "externalsrc", "nopackages", "deploy", "native", "nativesdk", "image", "core-image", "ptest",
    "kernel-arch",
}
EXTERNAL_PACKAGES = {"dbus", "ca-certificates", "runc-opencontainers", "libubootenv-bin", "grub-editenv",
                     "libnss-systemd"}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def ok(msg):
    print("ok: " + msg)


def parse(path, seen=None):
    """Crude BitBake parser: joins continuation lines, follows `require`/
    `include` of files beside the recipe, returns {var: value} for plain and
    weak assignments (last one wins), the inherit list and the require list."""
    seen = seen if seen is not None else set()
    seen.add(path)
    text = open(path).read().replace("\\\n", " ")
    vars_, inherits = {}, []
    in_func = False
    for line in text.splitlines():
        s = line.strip()
        if in_func:
            if s == "}":
                in_func = False
            continue
        if re.match(r"^(python\s+)?[\w:-]+\s*\(\)\s*\{", s) or re.match(r"^python\s+(__anonymous\s*)?\(\)\s*\{", s) \
                or re.match(r"^def\s", s):
            in_func = not s.endswith("}") and not s.startswith("def")
            if s.startswith("def"):
                in_func = False
            continue
        if not s or s.startswith("#") or line.startswith((" ", "\t")):
            continue
        m = re.match(r"^(require|include)\s+(\S+)$", s)
        if m:
            inc = os.path.join(os.path.dirname(path), m.group(2))
            if os.path.isfile(inc) and inc not in seen:
                v, i = parse(inc, seen)
                vars_.update(v)
                inherits += i
            continue
        m = re.match(r"^inherit\s+(.*)$", s)
        if m:
            inherits += re.sub(r"\$\{@[^}]*\}", " ", m.group(1)).split()
            continue
        m = re.match(r"^([\w:\-+\[\]${}.%/]+)\s*(\?\?=|\?=|:=|\+=|=\+|\.=|=)\s*\"(.*)\"\s*$", s)
        if m:
            k, op, v = m.groups()
            if op in ("+=", ".="):
                vars_[k] = (vars_.get(k, "") + " " + v).strip()
            elif op in ("?=", "??=") and k in vars_:
                pass
            else:
                vars_[k] = v
    return vars_, inherits


def layer_lib(layer):
    sys.path.insert(0, os.path.join(layer, "lib"))
    import mbl_layer.layout  # noqa: E402
    import mbl_layer.bundle  # noqa: E402
    return mbl_layer


def file_md5(path, begin=None, end=None):
    lines = open(path, "rb").readlines()
    b = int(begin or 1)
    e = int(end or len(lines))
    return hashlib.md5(b"".join(lines[b - 1:e])).hexdigest()


def check_structure(source, build):
    layer = os.path.join(source, "meta-layer")
    conf = os.path.join(layer, "conf", "layer.conf")
    if not os.path.isfile(conf):
        fail("meta-layer/conf/layer.conf is missing")
        return
    lc, _ = parse(conf)
    coll = lc.get("BBFILE_COLLECTIONS", "").split()
    if len(coll) != 1:
        fail("layer.conf: BBFILE_COLLECTIONS should add one collection, has %s" % coll)
        return
    name = coll[0]
    compat = lc.get("LAYERSERIES_COMPAT_" + name, "").split()
    if "scarthgap" not in compat:
        fail("layer.conf: LAYERSERIES_COMPAT_%s lacks scarthgap (the series CI parses)" % name)
    deps = lc.get("LAYERDEPENDS_" + name, "").split()
    for dep in ("core", "openembedded-layer", "virtualization-layer"):
        if dep not in deps:
            fail("layer.conf: LAYERDEPENDS_%s lacks %s" % (name, dep))
    for var in ("BBFILE_PATTERN_", "BBFILE_PRIORITY_"):
        if var + name not in lc:
            fail("layer.conf: %s%s is not set" % (var, name))
    ok("layer.conf: collection %s, compatible with %s, depends on %s" % (name, " ".join(compat), " ".join(deps)))

    # The licence: the repository's LICENSE is the Apache-2.0 text.
    lic = os.path.join(source, "LICENSE")
    if not os.path.isfile(lic):
        fail("the repository has no LICENSE file")
    elif file_md5(lic) != LICENSE_MD5:
        fail("LICENSE is not the Apache-2.0 text (md5 %s, expected %s)" % (file_md5(lic), LICENSE_MD5))
    else:
        ok("LICENSE is the Apache License 2.0")

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
    ok("%d recipes and appends, all matched by BBFILES" % len(recipes))
    classes = {os.path.basename(c)[:-len(".bbclass")] for c in glob.glob(os.path.join(layer, "classes", "*.bbclass"))}

    readme = os.path.join(layer, "README.md")
    if not os.path.isfile(readme):
        fail("meta-layer/README.md is missing")
    else:
        text = open(readme).read()
        for needle in ("bitbake-layers add-layer", "IMAGE_INSTALL", "DISTRO_FEATURES", "INIT_MANAGER", "scarthgap",
                       "MBL_BUNDLE_KEY", "MBL_BUNDLE_SIGN_CMD", "mbl-image", "partitions.conf", "MBL_PARTITION_PREFIX",
                       "mbl-uboot", "mbl-grub", "bmaptool"):
            if needle not in text:
                fail("meta-layer/README.md does not mention %s" % needle)
        ok("README walks through adding the layer, the image, the layout, the keys")

    produced = set()
    parsed = {}
    for r in recipes:
        v, inh = parse(r)
        parsed[r] = (v, inh)
        if r.endswith(".bb"):
            pn = re.sub(r"_[^_]*$", "", os.path.basename(r)[:-3])
            produced.add(pn)
            for extra in v.get("PACKAGES", "").split():
                produced.add(extra.replace("${PN}", pn))
    for r in recipes:
        v, inh = parsed[r]
        rel = os.path.relpath(r, source)
        if r.endswith(".bbappend"):
            continue
        base = os.path.basename(r)[:-3]
        pn, _, pv = base.partition("_")
        for c in inh:
            if c not in OE_CLASSES and c not in classes:
                fail("%s inherits %s, neither an OE-core class nor one of this layer" % (rel, c))
        if "LICENSE" not in v:
            fail("%s has no LICENSE" % rel)
        chk = v.get("LIC_FILES_CHKSUM", "")
        if not chk and "packagegroup" not in inh:
            fail("%s has no LIC_FILES_CHKSUM" % rel)
        here = os.path.dirname(r)
        for m in re.finditer(r"file://([^;\s]+)", v.get("SRC_URI", "")):
            if "$" in m.group(1):
                continue  # from the source tree (FILESEXTRAPATHS), checked by BitBake's parse
            cands = [os.path.join(here, d, m.group(1)) for d in (pn + "-" + pv, pn, "files")]
            for extra in re.findall(r"\$\{MBL_SOURCE_DIR\}/([^:\s]+)", v.get("FILESEXTRAPATHS:prepend", "")):
                cands.append(os.path.join(source, extra, m.group(1)))
            if not any(os.path.exists(c) for c in cands):
                fail("%s: SRC_URI file://%s does not exist beside the recipe" % (rel, m.group(1)))
        # Licences of this project's recipes: the repository's LICENSE.
        if v.get("LICENSE") == "Apache-2.0" and "packagegroup" not in inh:
            m = re.search(r"file://(?:\$\{MBL_SOURCE_DIR\}/)?LICENSE;md5=([0-9a-f]{32})", chk)
            if not m:
                fail("%s: LICENSE Apache-2.0 but LIC_FILES_CHKSUM does not name the repository's LICENSE" % rel)
            elif m.group(1) != LICENSE_MD5:
                fail("%s: LIC_FILES_CHKSUM md5 %s is not LICENSE's %s" % (rel, m.group(1), LICENSE_MD5))
        if "SRCREV" in v and not v["SRCREV"].startswith("${") and not re.fullmatch(r"[0-9a-f]{40}", v["SRCREV"]):
            fail("%s: SRCREV %s is not a full commit id" % (rel, v["SRCREV"]))
        for key, val in v.items():
            if key.startswith("RDEPENDS") and "packagegroup" in inh:
                for pkg in val.split():
                    if pkg not in produced and pkg not in EXTERNAL_PACKAGES:
                        fail("%s: RDEPENDS on %s, which no recipe here produces" % (rel, pkg))
    ok("every recipe's classes, licences and files checked")

    # The services recipe against the repository.
    main = [r for r in recipes if os.path.basename(r).startswith("mbl-device-services_")]
    if len(main) != 1:
        fail("expected one mbl-device-services recipe, found %d" % len(main))
        return
    v, inh = parsed[main[0]]
    for c in ("meson", "pkgconfig", "systemd", "useradd"):
        if c not in inh:
            fail("mbl-device-services does not inherit %s" % c)
    # The daemons' units (one per bus name, services/systemd/meson.build's
    # mbl_units) and mbl-reboot.path are enabled; others the project installs
    # for images to enable (the data partition's) are not.
    sysmeson = open(os.path.join(source, "services", "systemd", "meson.build")).read()
    daemons = set(re.findall(r"'(mbl-[\w-]+)'\s*:\s*'org\.mbl\.", sysmeson))
    wanted = {u + ".service" for u in daemons} | {"mbl-reboot.path"}
    enabled = set(v.get("SYSTEMD_SERVICE:${PN}", "").split())
    if not daemons or enabled != wanted:
        fail("SYSTEMD_SERVICE %s differs from the daemons' units services/systemd ships %s" % (sorted(enabled),
                                                                                             sorted(wanted)))
    else:
        ok("SYSTEMD_SERVICE enables the %d daemon units and mbl-reboot.path" % (len(enabled) - 1))
    options = set(re.findall(r"option\('([\w-]+)'", open(os.path.join(source, "meson_options.txt")).read()))
    for r in recipes:
        rv, _ = parsed[r]
        for key, val in rv.items():
            if key.startswith("EXTRA_OEMESON") or key.startswith("PACKAGECONFIG["):
                for o in re.findall(r"-D([\w-]+)=", val):
                    if o not in options:
                        fail("%s passes -D%s, which meson_options.txt does not define" % (os.path.basename(r), o))
    ok("the recipes pass only meson options meson_options.txt defines")
    tools = [r for r in recipes if os.path.basename(r).startswith("mbl-bundle-native_")]
    if len(tools) != 1 or "-Dtools_only=true" not in parsed[tools[0]][0].get("EXTRA_OEMESON", ""):
        fail("no mbl-bundle-native recipe building with -Dtools_only=true")
    else:
        deps = parsed[tools[0]][0].get("DEPENDS", "").split()
        bad = [d for d in deps if re.match(r"(systemd|sdbus-c\+\+|curl)", d)]
        if bad:
            fail("mbl-bundle-native depends on %s" % bad)
        else:
            ok("mbl-bundle-native is the tools-only build (DEPENDS %s)" % " ".join(deps))
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
    for pc, pkg in (("containers", "MBL_RUNC_PACKAGE"), ("uboot", "libubootenv-bin"), ("grub", "grub-editenv"),
                    ("tests", "catch2")):
        if pkg not in v.get("PACKAGECONFIG[%s]" % pc, ""):
            fail("PACKAGECONFIG[%s] does not bring %s" % (pc, pkg))

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
    if lc.get("PREFERRED_VERSION_sdbus-c++") not in pins:
        fail("layer.conf prefers sdbus-c++ %s, the layer has %s" % (lc.get("PREFERRED_VERSION_sdbus-c++"), pins))
    sdbus = [r for r in recipes if os.path.basename(r).startswith("sdbus-c++_")]
    if sdbus and "native" in parsed[sdbus[0]][0].get("BBCLASSEXTEND", ""):
        fail("sdbus-c++ has a native variant: it needs systemd-native, which OE-Core does not provide")

    # The bundle steps use options mbl-bundle has.
    bundle_py = os.path.join(layer, "lib", "mbl_layer", "bundle.py")
    used = set(re.findall(r'"(--[a-z-]+)"', open(bundle_py).read())) | {"-o"}
    tools = [t for t in glob.glob(os.path.join(build, "**", "mbl-bundle"), recursive=True)
             if os.path.isfile(t) and os.access(t, os.X_OK)] if build else []
    if tools:
        r = subprocess.run([tools[0], "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for opt in sorted(used):
            if opt not in r.stdout:
                fail("lib/mbl_layer/bundle.py passes %s, which `mbl-bundle --help` does not list" % opt)
        for sub in ("create", "assemble"):
            if "mbl-bundle " + sub not in r.stdout:
                fail("`mbl-bundle --help` lists no %s command" % sub)
        ok("the bundle steps use options %s, all known to mbl-bundle" % sorted(used))
    else:
        print("note: mbl-bundle is not built in this tree; the bundle steps' options %s are not cross-checked"
              % sorted(used))

    # The example machines.
    machines = sorted(glob.glob(os.path.join(layer, "conf", "machine", "*.conf")))
    if not machines:
        fail("the layer has no example machine")
    for mc in machines:
        text = open(mc).read()
        if not re.search(r'MACHINE_FEATURES \+= "[^"]*\bmbl-(grub|uboot)\b', text):
            fail("%s chooses no boot integration (MACHINE_FEATURES mbl-grub or mbl-uboot)" % os.path.basename(mc))
        if not re.search(r'^MBL_PARTITION_PREFIX = "/dev/\w+"', text, re.M):
            fail("%s names no disk (MBL_PARTITION_PREFIX)" % os.path.basename(mc))
    ok("%d example machines: %s" % (len(machines), ", ".join(os.path.basename(m)[:-5] for m in machines)))


def wks_parts(path):
    """The `bootloader` options and the `part` lines of a .wks(.in): [(mountpoint, {option: value})]."""
    loader, parts = {}, []
    for n, line in enumerate(open(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        opts, pos = {}, []
        i = 1
        while i < len(words):
            w = words[i]
            if w.startswith("--"):
                key = w[2:]
                if "=" in key:
                    key, val = key.split("=", 1)
                    opts[key] = val
                elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                    opts[key] = words[i + 1]
                    i += 1
                else:
                    opts[key] = True
            else:
                pos.append(w)
            i += 1
        if words[0] == "bootloader":
            loader = opts
        elif words[0] == "part":
            parts.append((pos[0] if pos else None, opts, n))
    return loader, parts


def mib(size):
    m = re.fullmatch(r"(\d+)([KMG]?)", size or "")
    if not m:
        return None
    n = int(m.group(1))
    return {"K": n / 1024, "M": n, "G": n * 1024, "": n}[m.group(2)]


def check_wks_layout(source):
    layer = os.path.join(source, "meta-layer")
    lib = layer_lib(layer)
    layout_path = os.path.join(source, "layout", "partitions.conf")
    wks = os.path.join(layer, "wic", "mbl-ab.wks.in")
    try:
        layout = lib.layout.read_partitions(layout_path)
    except lib.layout.LayoutError as e:
        fail(str(e))
        return
    ok("layout/partitions.conf: %s" % ", ".join("%d %s %s" % (p["index"], p["label"], p["role"] + (
        ":" + p["slot"] if p["slot"] else "")) for p in layout))
    if not os.path.isfile(wks):
        fail("meta-layer/wic/mbl-ab.wks.in is missing")
        return
    loader, parts = wks_parts(wks)
    # layout/README.md: an MBR table, so that a BIOS GRUB and U-Boot's distro boot read it.
    if loader.get("ptable", "msdos") != "msdos":
        fail("mbl-ab.wks.in: partition table %s, the layout's is MBR (msdos)" % loader.get("ptable"))
    if len(parts) != len(layout):
        fail("mbl-ab.wks.in has %d partitions, layout/partitions.conf %d" % (len(parts), len(layout)))
    for p, (mount, opts, line) in zip(layout, parts):
        where = "mbl-ab.wks.in:%d (partition %d, %s)" % (line, p["index"], p["label"])
        if opts.get("label") != p["label"]:
            fail("%s: label %s, the layout says %s" % (where, opts.get("label"), p["label"]))
        if opts.get("fstype") != p["fstype"]:
            fail("%s: file system %s, the layout says %s" % (where, opts.get("fstype"), p["fstype"]))
        if mount != p["mountpoint"]:
            fail("%s: mount point %s, the layout says %s" % (where, mount, p["mountpoint"]))
        if p["size_mib"] is None:
            if "fixed-size" in opts:
                fail("%s: a fixed size, the layout gives it the rest of the disk" % where)
        elif mib(opts.get("fixed-size")) != p["size_mib"]:
            fail("%s: size %s, the layout says %d MiB (--fixed-size)" % (where, opts.get("fixed-size"), p["size_mib"]))
        if opts.get("align") != "1024":
            fail("%s: not aligned to 1 MiB (--align 1024)" % where)
        if p["role"] == "boot" and not opts.get("active"):
            fail("%s: the boot partition is not marked bootable (--active)" % where)
        slots = lib.layout.role(layout, "rootfs")
        if p["role"] == "rootfs":
            want = "rootfs" if p is slots[0] else None
            if opts.get("source") != want:
                fail("%s: source %s, expected %s (the image in the first slot, the second empty)" % (
                    where, opts.get("source"), want))
    if not failures:
        ok("mbl-ab.wks.in describes the disk of layout/partitions.conf (%d partitions, MBR)" % len(parts))


# U-Boot commands (as the script writes them: "env import" with its
# subcommand, suffixes like .b dropped) and the Kconfig symbols they need.
UBOOT_COMMAND_CONFIG = {
    "fatload": ("CONFIG_CMD_FAT",), "fatwrite": ("CONFIG_CMD_FAT", "CONFIG_FAT_WRITE"),
    "ext4load": ("CONFIG_CMD_EXT4",), "env import": ("CONFIG_CMD_IMPORTENV",),
    "env export": ("CONFIG_CMD_EXPORTENV",), "itest": ("CONFIG_CMD_ITEST",), "cp": ("CONFIG_CMD_MEMORY",),
    "mw": ("CONFIG_CMD_MEMORY",), "md": ("CONFIG_CMD_MEMORY",), "cmp": ("CONFIG_CMD_MEMORY",),
    "sleep": ("CONFIG_CMD_SLEEP",), "echo": ("CONFIG_CMD_ECHO",), "setexpr": ("CONFIG_CMD_SETEXPR",),
}
HUSH_WORDS = {"if", "elif", "then", "else", "fi", "while", "until", "do", "done", "!"}


def uboot_commands(script):
    """The commands a U-Boot (hush) script runs: the first word of each
    command, after the shell's keywords; "env <sub>" kept whole."""
    found = set()
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for part in re.split(r";|&&|\|\|", line):
            words = part.split()
            while words and words[0] in HUSH_WORDS:
                words = words[1:]
            if not words or "=" in words[0] or words[0] == "for":
                continue
            name = words[0].split(".")[0]
            if name == "env" and len(words) > 1:
                name = "env " + words[1]
            found.add(name)
    return found


def check_boot_scripts(source):
    """The boot partition's scripts the layer generates, for both example
    machines: grub.cfg passes grub-script-check; the U-Boot script (the
    project's mbl-ab.cmd and the machine part) compiles with mkimage."""
    import tempfile
    lib = layer_lib(os.path.join(source, "meta-layer"))
    import mbl_layer.boot as boot
    parts = lib.layout.read_partitions(os.path.join(source, "layout", "partitions.conf"))
    work = tempfile.mkdtemp(prefix="mbl-boot-scripts.")
    try:
        cfg = os.path.join(work, "grub.cfg")
        with open(cfg, "w") as f:
            f.write(boot.grub_cfg(parts, "/dev/vda", "bzImage", "console=ttyS0,115200"))
        entries = re.findall(r'--id (mbl-\w+)', open(cfg).read())
        slots = ["mbl-" + p["slot"] for p in lib.layout.role(parts, "rootfs")]
        if entries != slots + ["mbl-none"]:
            fail("grub.cfg has the entries %s, mbl-ab.cfg chooses among %s" % (entries, slots + ["mbl-none"]))
        for script in (cfg, os.path.join(source, "services", "update", "grub", "mbl-ab.cfg")):
            r = subprocess.run(["grub-script-check", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
            if r.returncode != 0:
                fail("grub-script-check %s: %s" % (os.path.basename(script), r.stdout.strip()))
        ok("grub.cfg (entries %s) and mbl-ab.cfg pass grub-script-check" % ", ".join(entries))
        project = os.path.join(source, "services", "update", "u-boot", "mbl-ab.cmd")
        if not os.path.isfile(project):
            fail("services/update/u-boot/mbl-ab.cmd does not exist (mbl-boot-uboot compiles it)")
            return
        text = open(project).read()
        try:
            script = boot.uboot_script(text, parts, "/dev/vda", "Image", "console=ttyAMA0,115200")
            envfile, redundfile, envsize = boot.uboot_env_settings(text)
        except boot.BootError as e:
            fail(str(e))
            return
        # The layer's defaults (mbl-boot-config.bbclass) name the same files.
        bbclass = open(os.path.join(source, "meta-layer", "classes", "mbl-boot-config.bbclass")).read()
        layer = tuple((re.search(r'^%s \?= "([^"]*)"' % v, bbclass, re.M) or [None, None])[1]
                      for v in ("MBL_UBOOT_ENV_FILE", "MBL_UBOOT_ENV_REDUND_FILE", "MBL_UBOOT_ENV_SIZE"))
        if None in layer or (envfile, redundfile, int(envsize, 0)) != layer[:2] + (int(layer[2], 0),):
            fail("mbl-ab.cmd keeps its environment in %s and %s (%s), the layer's defaults "
                 "(mbl-boot-config.bbclass) are %s" % (envfile, redundfile, envsize, layer))
        else:
            ok("U-Boot: the redundant environment in %s and %s (%s bytes each), as the layer's defaults"
               % (envfile, redundfile, envsize))
        # Every command of the composed script (the project's slot choice and
        # the machine part) that is not in every U-Boot is enabled by the
        # layer's U-Boot fragment (recipes-bsp/u-boot).
        fragment = open(os.path.join(source, "meta-layer", "recipes-bsp", "u-boot", "files", "mbl-ab.cfg")).read()
        enabled = set(re.findall(r'^(CONFIG_\w+)=y$', fragment, re.M))
        missing = sorted({"%s (%s)" % (c, k) for c in uboot_commands(script)
                          for k in UBOOT_COMMAND_CONFIG.get(c, ()) if k not in enabled})
        if missing:
            fail("mbl-ab.cmd uses commands the layer's U-Boot fragment does not enable: %s" % ", ".join(missing))
        else:
            ok("U-Boot: the fragment enables every command mbl-ab.cmd uses (%s)"
               % ", ".join(sorted(c for c in uboot_commands(script)
                                  if c in UBOOT_COMMAND_CONFIG)))
        cmd = os.path.join(work, "boot.cmd")
        with open(cmd, "w") as f:
            f.write(script)
        r = subprocess.run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "MBL A/B",
                            "-d", cmd, os.path.join(work, "boot.scr")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            fail("mkimage of the composed U-Boot script: %s" % r.stdout.strip())
        else:
            ok("U-Boot: mbl-ab.cmd's slot choice + the machine part (booti, partitions %s) compile with mkimage"
               % ", ".join("%s=%d" % kv for kv in lib.layout.slot_partitions(parts).items()))
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


def parse_graph(path):
    """{recipe: (version, file)}, {(task node) -> set(task nodes)} from task-depends.dot."""
    recipes, edges = {}, {}

    def strip(name):
        return re.sub(r"^mc:[^:]*:", "", name)

    for line in open(path):
        m = re.match(r'^"([^"]+)" \[label="([^"]*)"\]', line)
        if m:
            node = strip(m.group(1))
            pn = node.rsplit(".", 1)[0]
            label = m.group(2).split("\\n")
            fn = re.sub(r"^((mc|virtual):[^:]*:)+", "", label[-1])
            version = label[1].lstrip(":") if len(label) > 2 else ""
            recipes.setdefault(pn, (version, fn))
            continue
        m = re.match(r'^"([^"]+)" -> "([^"]+)"', line)
        if m:
            edges.setdefault(strip(m.group(1)), set()).add(strip(m.group(2)))
    return recipes, edges


def check_graph(graph, machine, layer, layers):
    dot = os.path.join(graph, "task-depends.dot")
    if not os.path.isfile(dot):
        fail("%s has no task-depends.dot" % graph)
        return
    recipes, edges = parse_graph(dot)
    layer = os.path.realpath(layer)
    meta_oe = os.path.realpath(os.path.join(layers, "meta-openembedded", "meta-oe"))
    virt = os.path.realpath(os.path.join(layers, "meta-virtualization"))
    core = os.path.realpath(os.path.join(layers, "poky", "meta"))
    want = {
        # recipe: (where from, version prefix or None)
        "sdbus-c++": (layer, "1.2.0"),
        "sdbus-c++-tools-native": (layer, "1.2.0"),
        "mbl-device-services": (layer, None),
        "mbl-device-config": (layer, None),
        "mbl-bundle-native": (layer, None),
        "mbl-image": (layer, None),
        "packagegroup-mbl": (layer, None),
        "mbl-bundle-example": (layer, None),
        "runc-opencontainers": (virt, None),
        "nlohmann-json": (meta_oe, None),
        "nlohmann-json-native": (meta_oe, None),
        "catch2": (meta_oe, None),
        "systemd": (core, None),
        "openssl-native": (core, None),
        "libarchive-native": (core, None),
    }
    if machine == "x86":
        want.update({"mbl-boot-grub": (layer, None), "grub-efi": (core, None), "grub": (core, None),
                     "grub-native": (core, None), "ovmf": (core, None)})
        boot = "mbl-boot-grub"
    else:
        want.update({"mbl-boot-uboot": (layer, None), "u-boot": (core, None), "libubootenv": (core, None),
                     "u-boot-tools-native": (core, None)})
        boot = "mbl-boot-uboot"
    for pn, (where, version) in sorted(want.items()):
        if pn not in recipes:
            fail("%s: %s is not in the graph" % (machine, pn))
            continue
        ver, fn = recipes[pn]
        if not os.path.realpath(fn).startswith(where + os.sep):
            fail("%s: %s comes from %s, expected from %s" % (machine, pn, fn, where))
        elif version and not ver.startswith(version):
            fail("%s: %s is version %s, expected %s" % (machine, pn, ver, version))
    ok("%s: %d recipes from the expected layers (sdbus-c++ %s from meta-mbl, runc-opencontainers %s, "
       "nlohmann-json %s and catch2 %s from meta-oe)" % (
           machine, len(want), recipes.get("sdbus-c++", ("?",))[0], recipes.get("runc-opencontainers", ("?",))[0],
           recipes.get("nlohmann-json", ("?",))[0], recipes.get("catch2", ("?",))[0]))
    for pn in ("systemd-native", "sdbus-c++-native", "mbl-device-services-native"):
        if pn in recipes:
            fail("%s: %s is in the graph (OE-Core cannot build it; nothing may need it)" % (machine, pn))
    # What the build-host bundle tool's sysroot holds: everything its
    # do_prepare_recipe_sysroot reaches.
    seen, todo = set(), ["mbl-bundle-native.do_prepare_recipe_sysroot"]
    while todo:
        node = todo.pop()
        for dep in edges.get(node, ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    tool_recipes = {n.rsplit(".", 1)[0] for n in seen}
    bad = sorted(tool_recipes & {"systemd-native", "sdbus-c++-native", "sdbus-c++-tools-native", "curl-native",
                                 "catch2-native"})
    if bad or not tool_recipes:
        fail("%s: mbl-bundle-native's build needs %s" % (machine, bad or "nothing (no graph)"))
    else:
        ok("%s: mbl-bundle-native builds from %d recipes, none of libsystemd, sdbus-c++, libcurl" % (
            machine, len(tool_recipes)))
    needs = [
        ("mbl-image.do_write_wks_template", None),  # the .wks.in was found
        ("mbl-image.do_image_wic", boot + ".do_deploy"),
        ("mbl-image.do_rootfs", "mbl-device-config.do_packagedata"),
        ("mbl-bundle-example.do_mbl_bundle", "mbl-image.do_image_complete"),
        ("mbl-bundle-example.do_prepare_recipe_sysroot", "mbl-bundle-native.do_populate_sysroot"),
    ]
    for task, dep in needs:
        if task not in edges and not any(task in deps for deps in edges.values()):
            fail("%s: no task %s in the graph" % (machine, task))
        elif dep and dep not in edges.get(task, set()):
            fail("%s: %s does not depend on %s" % (machine, task, dep))
    ok("%s: the wks template is found, the disk image waits for %s, the bundle for the image and the tool" % (
        machine, boot))


def main(argv):
    if argv and argv[0] == "--wks-layout":
        check_wks_layout(argv[1])
    elif argv and argv[0] == "--boot-scripts":
        check_boot_scripts(argv[1])
    elif argv and argv[0] == "--graph":
        opts = dict(zip(argv[0::2], argv[1::2]))
        check_graph(opts["--graph"], opts["--machine"], opts["--layer"], opts["--layers"])
    else:
        check_structure(argv[0], argv[1] if len(argv) > 1 else None)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
