#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The build-host bundle tool of the Yocto layer, for real: the project built
with -Dtools_only=true where pkg-config knows only OpenSSL, libarchive and
nlohmann-json (so nothing of libsystemd, sdbus-c++ or libcurl can be used),
then the exact steps of meta-layer/classes/mbl-bundle.bbclass
(meta-layer/lib/mbl_layer/bundle.py) make signed bundles of an ext4 root file
system with that tool, once with a key file and once with an external signing
command (`openssl cms`, as an HSM or signing service would), and the update
service of this build (mbl-update on a private system bus with the project's
policies, configured by the layer's update.json generator for a U-Boot device
with file slots) installs each: the inactive slot then holds the image and the
bootloader environment (read with fw_printenv) tries it first. A bundle whose
signer the device does not trust is refused and changes nothing.

Usage: tools_only_bundle.py (through meson test: MBL_SOURCE_ROOT,
MBL_BUILD_ROOT, MBL_POLICY_DIR). Skips (77) when not root (the update service
runs as root), naming the reason.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.environ["MBL_SOURCE_ROOT"]
BUILD = os.environ["MBL_BUILD_ROOT"]
POLICY = os.environ.get("MBL_POLICY_DIR", os.path.join(BUILD, "dbus-policy"))
sys.path.insert(0, os.path.join(SRC, "meta-layer", "lib"))
from mbl_layer import bundle, layout  # noqa: E402

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def ok(msg):
    print("ok: " + msg)


def run(argv, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    return subprocess.run(argv, text=True, **kw)


def must(argv, **kw):
    r = run(argv, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (" ".join(argv), r.returncode, r.stdout))
    return r.stdout


def build_tool(work):
    """meson setup -Dtools_only=true with a pkg-config that knows only what the
    tool may use; returns the path of mbl-bundle."""
    pc = os.path.join(work, "pkgconfig")
    os.makedirs(pc)
    for name in ("openssl", "libssl", "libcrypto", "libarchive", "nlohmann_json"):
        d = must(["pkg-config", "--variable=pcfiledir", name]).strip()
        shutil.copy(os.path.join(d, name + ".pc"), pc)
    env = dict(os.environ, PKG_CONFIG_LIBDIR=pc, PKG_CONFIG_PATH="")
    b = os.path.join(work, "build-tools")
    t0 = time.monotonic()
    r = run(["meson", "setup", b, SRC, "-Dtools_only=true", "--buildtype=plain"], env=env)
    if r.returncode != 0:
        fail("meson setup -Dtools_only=true with only OpenSSL, libarchive and nlohmann-json:\n" + r.stdout[-3000:])
        return None
    for dep in ("libsystemd", "sdbus-c++", "libcurl", "catch2"):
        if "dependency %s" % dep in r.stdout.lower():
            fail("the tools-only configuration looked for %s" % dep)
    r = run(["nice", "-n", "10", "ninja", "-C", b], env=env)
    if r.returncode != 0:
        fail("ninja of the tools-only build:\n" + r.stdout[-3000:])
        return None
    tool = os.path.join(b, "services", "mbl-bundle", "mbl-bundle")
    needed = must(["readelf", "-d", tool])
    libs = sorted(l.split("[")[1].split("]")[0] for l in needed.splitlines() if "(NEEDED)" in l)
    bad = [l for l in libs if l.startswith(("libsystemd", "libsdbus-c++", "libcurl"))]
    if bad:
        fail("the tools-only mbl-bundle links %s" % bad)
    targets = json.loads(must(["meson", "introspect", "--targets", b]))
    installed = sorted(os.path.basename(f) for t in targets if t.get("installed") for f in t["install_filename"])
    if installed != ["mbl-bundle"]:
        fail("the tools-only build installs %s, expected only mbl-bundle" % installed)
    ok("tools-only build (%.0f s): installs %s, links %s" % (time.monotonic() - t0, installed, ", ".join(libs)))
    return tool


def pki(d):
    """A root CA, a firmware CA under it, a code-signing signer under that; an
    unrelated CA with its own code signer (tests/update/update_fixture.cpp's)."""
    os.makedirs(d)

    def ca(name, cn):
        must(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", "%s/%s.key" % (d, name), "-out", "%s/%s.pem" % (d, name), "-days", "2", "-subj", "/CN=" + cn,
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    def leaf(name, cn, issuer, ext):
        must(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", "%s/%s.key" % (d, name), "-out", "%s/%s.csr" % (d, name), "-subj", "/CN=" + cn])
        with open("%s/%s.ext" % (d, name), "w") as f:
            f.write(ext)
        must(["openssl", "x509", "-req", "-in", "%s/%s.csr" % (d, name), "-CA", "%s/%s.pem" % (d, issuer),
              "-CAkey", "%s/%s.key" % (d, issuer), "-CAcreateserial", "-out", "%s/%s.pem" % (d, name), "-days", "2",
              "-extfile", "%s/%s.ext" % (d, name)])

    signer = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n"
    ca("ca", "MBL Yocto Test Root CA")
    leaf("int", "MBL Yocto Test Firmware CA", "ca", "basicConstraints=critical,CA:TRUE\n"
         "keyUsage=critical,keyCertSign,cRLSign\n")
    leaf("sign", "MBL Yocto Test Signer", "int", signer)
    ca("other", "Somebody Else's CA")
    leaf("osign", "Somebody Else's Signer", "other", signer)


def rootfs_image(work):
    """A real ext4 root file system image, as an image recipe deploys."""
    tree = os.path.join(work, "rootfs")
    os.makedirs(os.path.join(tree, "etc"))
    with open(os.path.join(tree, "etc", "os-release"), "w") as f:
        f.write('NAME="MBL test"\nVERSION_ID="2.0.0"\n')
    img = os.path.join(work, "mbl-image-test.rootfs.ext4")
    must(["mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, img, "4M"])
    return img


class Device:
    """A device root for the update service: etc/mbl/update.json from the
    layer's generator (U-Boot, slots as files), the trust store, the U-Boot
    environment (two copies) blank with the factory defaults, a kernel command line
    naming slot A."""

    def __init__(self, root, pki_dir):
        self.root = root
        parts = layout.read_partitions(os.path.join(SRC, "layout", "partitions.conf"))
        for d in ("etc/mbl/trust", "dev", "proc", "boot/mbl", "var/lib/mbl/update", "run/mbl", "var/log/mbl"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(os.path.join(root, "var/lib/mbl/update"), 0o700)
        shutil.copy(os.path.join(pki_dir, "ca.pem"), os.path.join(root, "etc/mbl/trust/mbl-test-ca.pem"))
        prefix = os.path.join(root, "dev", "disk")
        self.slots = {p["slot"]: layout.device(p, prefix) for p in layout.role(parts, "rootfs")}
        for i, path in enumerate(self.slots.values()):
            with open(path, "wb") as f:
                f.write((b"\x00" if i else b"A") * (8 << 20))
        # The redundant environment, two blank copies (mbl-device-config's
        # fw_env.config: the files of mbl-boot-config.bbclass).
        self.env = os.path.join(root, "boot/mbl/uboot.env")
        self.env_redund = os.path.join(root, "boot/mbl/uboot-redund.env")
        for path in (self.env, self.env_redund):
            with open(path, "wb") as f:
                f.write(b"\x00" * 0x4000)
        self.fw_config = os.path.join(root, "etc/fw_env.config")
        with open(self.fw_config, "w") as f:
            f.write("%s 0x0 0x4000\n%s 0x0 0x4000\n" % (self.env, self.env_redund))
        defaults = os.path.join(root, "etc/mbl/uboot-env.defaults")
        with open(defaults, "w") as f:
            f.write(layout.env_text(layout.initial_env(parts)))
        config = layout.update_config(parts, prefix, "mbl-yocto-test", "uboot", self.fw_config, "1.0.0", defaults)
        # The host's /proc says nothing of slots: the booted slot as the kernel
        # command line of slot A would say it.
        with open(os.path.join(root, "proc/cmdline"), "w") as f:
            f.write("console=ttyS0 root=/dev/vda2 ro mbl.slot=A\n")
        with open(os.path.join(root, "proc/boot_id"), "w") as f:
            f.write("boot-1\n")
        config["cmdlinePath"] = os.path.join(root, "proc/cmdline")
        config["bootIdPath"] = os.path.join(root, "proc/boot_id")
        with open(os.path.join(root, "etc/mbl/update.json"), "w") as f:
            json.dump(config, f, indent=2)

    def fw_all(self):
        r = run(["fw_printenv", "-c", self.fw_config])
        return sorted(r.stdout.split("\n")) if r.returncode == 0 else None

    def fw(self, name):
        r = run(["fw_printenv", "-c", self.fw_config, "-n", name])
        return r.stdout.strip() if r.returncode == 0 else None


class Stack:
    """dbus-daemon (system type, deny by default, the project's policy for
    org.mbl.Update1; as tests/harness/harness.cpp) and mbl-update."""

    def __init__(self, work, device):
        self.work = work
        policy = os.path.join(work, "policy")
        os.makedirs(policy)
        shutil.copy(os.path.join(POLICY, "org.mbl.Update1.conf"), policy)
        sock = os.path.join(work, "system_bus_socket")
        conf = os.path.join(work, "bus.conf")
        with open(conf, "w") as f:
            f.write("""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>%s</includedir>
</busconfig>
""" % (sock, policy))
        self.bus = subprocess.Popen(["dbus-daemon", "--config-file=" + conf, "--nofork", "--print-address=1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.address = self.bus.stdout.readline().strip()
        if not self.address:
            raise RuntimeError("dbus-daemon printed no address")
        self.env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address, MBL_ROOT=device.root)
        self.log = open(os.path.join(work, "mbl-update.log"), "w")
        self.daemon = subprocess.Popen([os.path.join(BUILD, "services", "update", "mbl-update")], env=self.env,
                                       stdout=self.log, stderr=subprocess.STDOUT)
        # Wait for the service's state: its name answers on the bus (or it died).
        deadline = time.monotonic() + 60
        while True:
            r = self.ctl("--json", "update", "status")
            if r.returncode == 0:
                self.status = json.loads(r.stdout)
                break
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mbl-update did not come up:\n" + open(self.log.name).read()[-3000:])
            time.sleep(0.05)

    def ctl(self, *args):
        # stdout alone: --json prints the JSON there, errors go to stderr.
        return run([os.path.join(BUILD, "services", "mblctl", "mblctl")] + list(args), env=self.env,
                   stderr=subprocess.PIPE)

    def close(self):
        for p in (self.daemon, self.bus):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.log.close()


def scenario(work, name, tool, image, pki_dir, sign, expect_ok):
    """Makes a bundle the way the class does (sign: key, external or
    untrusted) and installs it on a fresh device."""
    d = os.path.join(work, name)
    os.makedirs(d)
    out = os.path.join(d, "mbl-image-test.bundle")
    payloads = bundle.payload_args(rootfs=image)
    if sign == "key":
        bundle.make(tool, out, "2.0.0", "1", "mbl-yocto-test", payloads, key=pki_dir + "/sign.key",
                    cert=pki_dir + "/sign.pem", chain=pki_dir + "/int.pem", workdir=d)
    else:
        signer = "sign" if sign == "external" else "osign"
        chain = "-certfile %s/int.pem " % pki_dir if sign == "external" else ""
        cmd = ('openssl cms -sign -binary -nosmimecap -outform DER -in "$MBL_MANIFEST" -out "$MBL_SIGNATURE" '
               '-signer %s/%s.pem -inkey %s/%s.key %s' % (pki_dir, signer, pki_dir, signer, chain))
        bundle.make(tool, out, "2.0.0", "1", "mbl-yocto-test", payloads, sign_cmd=cmd, workdir=d)
    dev = Device(os.path.join(d, "root"), pki_dir)
    stack = Stack(d, dev)
    try:
        # What the device holds once the service runs (it refills the booted
        # slot's counter when it starts).
        before = open(dev.slots["B"], "rb").read()
        env_before = dev.fw_all()
        if stack.status.get("booted_slot", "").lower() != "a":
            fail("%s: the device booted %r, expected slot a" % (name, stack.status.get("booted_slot")))
        r = stack.ctl("--json", "update", "install", out)
        try:
            result = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            result = {"success": False, "error": "", "message": "mblctl printed no result: %s %s" % (r.stdout,
                                                                                                   r.stderr)}
        status = json.loads(stack.ctl("--json", "update", "status").stdout)
    finally:
        stack.close()
    img = open(image, "rb").read()
    slot_b = open(dev.slots["B"], "rb").read()
    if expect_ok:
        if not result.get("success"):
            fail("%s: the update service refused the bundle: %s %s" % (name, result.get("error"),
                                                                        result.get("message")))
            return
        if slot_b[:len(img)] != img:
            fail("%s: slot B does not hold the bundle's root file system" % name)
        order = dev.fw("BOOT_ORDER")
        if not order or order.split()[0] != "B":
            fail("%s: the bootloader environment's BOOT_ORDER is %r, slot B is not tried first" % (name, order))
        ok("%s: installed by mbl-update: slot B holds the %d-byte image, BOOT_ORDER=%r, BOOT_B_LEFT=%s, "
           "next boot %s" % (name, len(img), order, dev.fw("BOOT_B_LEFT"), status.get("active_slot")))
    else:
        if result.get("success"):
            fail("%s: the update service installed a bundle signed by an untrusted signer" % name)
        elif not result.get("error", "").startswith("org.mbl.Error."):
            fail("%s: no named error for the refused bundle: %s" % (name, result))
        elif slot_b != before:
            fail("%s: the refused bundle changed slot B" % name)
        elif dev.fw_all() != env_before:
            fail("%s: the refused bundle changed the bootloader environment: %s -> %s" % (
                name, env_before, dev.fw_all()))
        else:
            ok("%s: refused (%s: %s), slot B and the environment unchanged" % (name, result.get("error"),
                                                                               result.get("message")))


def main():
    if os.geteuid() != 0:
        print("SKIP: the update service runs as root and writes the slots: run as root")
        return 77
    for t in ("meson", "ninja", "pkg-config", "readelf", "openssl", "mke2fs", "fw_printenv", "dbus-daemon"):
        if not shutil.which(t):
            fail("%s is missing (tests/setup.sh installs it)" % t)
    if failures:
        return 1
    work = tempfile.mkdtemp(prefix="mbl-tools-only.")
    os.chmod(work, 0o755)
    try:
        tool = build_tool(work)
        if not tool:
            return 1
        pki(os.path.join(work, "pki"))
        image = rootfs_image(work)
        scenario(work, "key-file", tool, image, work + "/pki", "key", True)
        scenario(work, "external-signer", tool, image, work + "/pki", "external", True)
        scenario(work, "untrusted-signer", tool, image, work + "/pki", "untrusted", False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
