# SPDX-License-Identifier: Apache-2.0
"""The MBL storage layout (layout/partitions.conf, the one definition of the
device's disk; layout/README.md) read once and turned into what an image
needs: the fstab lines of the boot and data partitions, the slots of
/etc/mbl/update.json, the partitions the boot scripts load a slot from and the
factory bootloader environment.

The table is MBR (dos), so partitions are named by number: a device's
partition prefix (MBL_PARTITION_PREFIX: "/dev/vda" on QEMU's virtio disk,
"/dev/mmcblk0p" on eMMC) followed by the index. File system labels are not
used to find a slot: an update rewrites the slot's file system, label and all.
"""

import json
import re

ROLES = ("boot", "rootfs", "data")


class LayoutError(ValueError):
    pass


def parse_partitions(text, source="partitions.conf"):
    """[{index, label, fstype, size_mib (int or None for 'rest'), mountpoint,
    role, slot (boot name or None)}] in disk order; LayoutError names the line
    of anything malformed."""
    parts = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        if len(cols) != 6:
            raise LayoutError("%s:%d: expected 6 columns (index label fstype size_mib mountpoint role), got %d"
                              % (source, n, len(cols)))
        index, label, fstype, size, mountpoint, role = cols
        if not index.isdigit() or int(index) != len(parts) + 1:
            raise LayoutError("%s:%d: index %s out of order" % (source, n, index))
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", label):
            raise LayoutError("%s:%d: label %r is not a file system label" % (source, n, label))
        if size == "rest":
            size_mib = None
        elif size.isdigit() and int(size) > 0:
            size_mib = int(size)
        else:
            raise LayoutError("%s:%d: size_mib %r is neither a number nor 'rest'" % (source, n, size))
        role, _, slot = role.partition(":")
        if role not in ROLES or (role == "rootfs") != bool(slot):
            raise LayoutError("%s:%d: role %r is not boot, rootfs:<NAME> or data" % (source, n, cols[5]))
        if not mountpoint.startswith("/"):
            raise LayoutError("%s:%d: mountpoint %r is not absolute" % (source, n, mountpoint))
        parts.append({"index": int(index), "label": label, "fstype": fstype, "size_mib": size_mib,
                      "mountpoint": mountpoint, "role": role, "slot": slot or None})
    for role, want in (("boot", 1), ("data", 1), ("rootfs", 2)):
        got = [p for p in parts if p["role"] == role]
        if len(got) != want:
            raise LayoutError("%s: %d %s partition(s), the layout needs %d" % (source, len(got), role, want))
    if any(p["size_mib"] is None for p in parts[:-1]):
        raise LayoutError("%s: only the last partition may take the 'rest' of the disk" % source)
    return parts


def read_partitions(path):
    with open(path) as f:
        return parse_partitions(f.read(), path)


def role(parts, name):
    return [p for p in parts if p["role"] == name]


def device(part, prefix):
    return "%s%d" % (prefix, part["index"])


# Mount options of the partitions that are not slots (as the QEMU device's
# image builder writes them, tests/device/build-image.sh): the boot partition
# holds the bootloader environment (flush: written data reaches the medium
# early); the data partition may be blank on a new image or after a factory
# data reset (x-systemd.makefs formats it) and may be larger than in the image
# (x-systemd.growfs grows the file system to the partition).
FSTAB_OPTIONS = {
    "boot": ("defaults,noatime,flush", 0),
    "data": ("defaults,noatime,x-systemd.makefs,x-systemd.growfs", 2),
}


def fstab_lines(parts, prefix):
    """/etc/fstab lines of the boot and data partitions (the root file system
    is the slot the bootloader chose: root= on the kernel command line)."""
    lines = []
    for p in parts:
        if p["role"] in FSTAB_OPTIONS:
            opts, passno = FSTAB_OPTIONS[p["role"]]
            lines.append("%s %s %s %s 0 %d" % (device(p, prefix), p["mountpoint"], p["fstype"], opts, passno))
    return lines


def update_config(parts, prefix, compatible, bootloader, env_path, factory_version="0.0.0", defaults=None):
    """The /etc/mbl/update.json of an image with this layout
    (services/update/README.md): env_path is the grubenv, or the fw_env.config
    naming the U-Boot environment; defaults the U-Boot environment to start a
    blank one from."""
    if bootloader not in ("grub", "uboot"):
        raise LayoutError("bootloader %r is neither grub nor uboot" % bootloader)
    slots = [{"name": p["slot"].lower(), "bootname": p["slot"], "device": device(p, prefix)}
             for p in role(parts, "rootfs")]
    # What a rootfs payload must be, checked before the slot is written
    # (services/update/rootfs_head.h): ext4 is the one file system it knows.
    for slot, p in zip(slots, role(parts, "rootfs")):
        if p["fstype"] == "ext4":
            slot["filesystem"] = "ext4"

    loader = {"type": bootloader, "path": env_path}
    if defaults:
        loader["defaults"] = defaults
    return {
        "compatible": compatible,
        "factoryVersion": factory_version,
        "bootloader": loader,
        "slots": slots,
    }


def update_json(*args, **kwargs):
    return json.dumps(update_config(*args, **kwargs), indent=2) + "\n"


def initial_env(parts, good_attempts=3):
    """The bootloader environment of a new image: the first slot boots, the other
    one is empty (BOOT_ORDER and BOOT_<name>_LEFT, CONTRACTS.md C7), as the QEMU
    device's factory environment (tests/device/image/etc/uboot-env.defaults)."""
    slots = [p["slot"] for p in role(parts, "rootfs")]
    env = {"BOOT_ORDER": " ".join(slots)}
    for i, s in enumerate(slots):
        env["BOOT_%s_LEFT" % s] = str(good_attempts if i == 0 else 0)
    return env


def slot_partitions(parts):
    """{boot name: partition index} of the rootfs slots."""
    return {p["slot"]: p["index"] for p in role(parts, "rootfs")}


def env_text(env):
    """name=value lines (mkenvimage's and fw_setenv -f's input)."""
    return "".join("%s=%s\n" % kv for kv in env.items())


def unit_name(path):
    """systemd's escaping of a path into a unit name (systemd-escape --path)."""
    path = "/".join(c for c in path.split("/") if c)
    if not path:
        return "-"
    out = []
    for i, ch in enumerate(path):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.append("\\x%02x" % ord(ch))
    return "".join(out)
