# SPDX-License-Identifier: Apache-2.0
"""The boot partition's scripts of an MBL image, made from the project's A/B
scripts (services/update/grub/mbl-ab.cfg, services/update/u-boot/mbl-ab.cmd:
the slot choice and the attempt counters, the same files the QEMU device tests
boot) and the storage layout: what is board-specific (which partition holds a
slot, the kernel's name, its command line, how it is started) comes from here.
"""

from . import layout as _layout

# GRUB modules the scripts use beyond OE-Core's grub-efi GRUB_BUILDIN
# (mbl-ab.cfg: regexp, eval, echo; the "no slot" entry: sleep, reboot).
GRUB_MODULES = ("regexp", "eval", "echo", "sleep", "reboot")


def grub_cfg(parts, prefix, kernel, cmdline, ptable="msdos"):
    """grub.cfg for GRUB on the boot partition ($prefix): sources mbl-ab.cfg
    (beside it), which sets `default` to mbl-<slot> or mbl-none; one entry per
    slot loads the kernel from that slot's partition on the disk GRUB started
    from."""
    lines = [
        "# grub.cfg of an MBL image (meta-mbl, mbl-boot-grub), generated from",
        "# layout/partitions.conf. The slot is chosen by the project's A/B script",
        "# mbl-ab.cfg (services/update/grub/, beside this file) from the grubenv",
        "# beside it, which Linux edits with grub-editenv (mbl-update).",
        "serial --unit=0 --speed=115200",
        "terminal_input serial console",
        "terminal_output serial console",
        "set timeout=0",
        "set mbl_env=$prefix/grubenv",
        "# An unreadable grubenv (a power cut while grub-editenv rewrote it): boot",
        "# the factory order's first slot, uncounted, rather than no slot.",
        "set mbl_factory_order=\"%s\"" % " ".join(p["slot"] for p in _layout.role(parts, "rootfs")),
        "source $prefix/mbl-ab.cfg",
        "echo \"mbl: BOOT_ORDER '$BOOT_ORDER', booting slot '$mbl_slot'\"",
        "# The disk GRUB started from ($root is its boot partition, e.g. hd0,msdos1).",
        "regexp --set=1:mbl_disk '^([^,]+),' \"$root\"",
        "export mbl_disk",
        "",
    ]
    for p in _layout.role(parts, "rootfs"):
        lines += [
            "menuentry \"MBL slot %s\" --id mbl-%s {" % (p["slot"], p["slot"]),
            "    linux (${mbl_disk},%s%d)/boot/%s root=%s ro rootwait panic=5 mbl.slot=%s%s" % (
                ptable, p["index"], kernel, _layout.device(p, prefix), p["slot"], (" " + cmdline) if cmdline else ""),
            "}",
        ]
    lines += [
        "menuentry \"MBL: no slot has boot attempts left\" --id mbl-none {",
        "    echo \"mbl: no slot of BOOT_ORDER '$BOOT_ORDER' has boot attempts left\"",
        "    sleep 10",
        "    reboot",
        "}",
        "",
    ]
    return "\n".join(lines)


# The project's U-Boot script ends the slot choice with this line (U-Boot's own
# environment restored after the slots' environment file was written back);
# what follows it boots the slot on the QEMU device's board. An MBL image
# keeps everything up to it and appends its machine's way to boot the slot.
UBOOT_SPLIT = "env import -t ${mbl_saveaddr} ${mbl_savesize}"
# Variables of the project's script the machine part uses.
UBOOT_VARS = ("mbl_slot", "mbl_order", "mbl_dt", "mbl_dn", "mbl_kaddr")
# How U-Boot starts each kernel image type (the device tree: QEMU's or the
# board's control DTB).
UBOOT_BOOT = {
    "Image": "booti ${mbl_kaddr} - ${fdtcontroladdr}",
    "zImage": "bootz ${mbl_kaddr} - ${fdtcontroladdr}",
}


class BootError(ValueError):
    pass


def uboot_slot_choice(script, source="mbl-ab.cmd"):
    """The project's script up to and including UBOOT_SPLIT."""
    lines = script.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == UBOOT_SPLIT:
            head = "\n".join(lines[:i + 1]) + "\n"
            for var in UBOOT_VARS:
                if (var + "=") not in head:
                    raise BootError("%s no longer sets %s, which the machine part of meta-mbl's boot script uses"
                                    % (source, var))
            return head
    raise BootError("%s has no line '%s' (the end of the slot choice, after which meta-mbl appends the "
                    "machine's way to boot the slot)" % (source, UBOOT_SPLIT))


def uboot_boot_slot(parts, prefix, kernel, cmdline, boot=None):
    """The machine part: the chosen slot's partition, its kernel, started."""
    boot = boot or UBOOT_BOOT.get(kernel)
    if not boot:
        raise BootError("no U-Boot command known for a %s kernel (%s): set MBL_UBOOT_BOOT" % (kernel, ", ".join(UBOOT_BOOT)))
    slots = _layout.role(parts, "rootfs")
    lines = [
        "",
        "# ---- meta-mbl (mbl-boot-uboot): boot the chosen slot on this machine ----",
    ]
    for i, p in enumerate(slots):
        lines += ["%s test \"${mbl_slot}\" = %s; then" % ("if" if i == 0 else "elif", p["slot"]),
                  "    mbl_part=%d" % p["index"]]
    lines += [
        "else",
        # U-Boot's hush expands nothing inside '...', even within "...".
        "    echo \"mbl: no slot of BOOT_ORDER (${mbl_order}) has boot attempts left\"",
        "    sleep 10",
        "    reset",
        "fi",
        "setenv bootargs \"%sroot=%s${mbl_part} ro rootwait panic=5 mbl.slot=${mbl_slot}\"" % (
            (cmdline + " ") if cmdline else "", prefix),
        "ext4load ${mbl_dt} ${mbl_dn}:${mbl_part} ${mbl_kaddr} /boot/%s" % kernel,
        boot,
        "echo \"mbl: slot ${mbl_slot} did not start (%s failed)\"" % boot.split()[0],
        "sleep 10",
        "reset",
        "",
    ]
    return "\n".join(lines)


def uboot_script(project_script, parts, prefix, kernel, cmdline, boot=None, source="mbl-ab.cmd"):
    return uboot_slot_choice(project_script, source) + uboot_boot_slot(parts, prefix, kernel, cmdline, boot)


def uboot_env_settings(script, source="mbl-ab.cmd"):
    """(file name, redundant file name, size) of the environment the project's
    script keeps on the boot partition: the redundant environment, two copies
    of libubootenv's two-copy format (CRC32 + flag byte + data) in two files
    (its mbl_envfile=, mbl_envfile_redund= and mbl_envsize= lines)."""
    names = ("mbl_envfile", "mbl_envfile_redund", "mbl_envsize")
    found = {}
    for line in script.splitlines():
        line = line.strip()
        for var in names:
            if line.startswith(var + "="):
                found[var] = line.split("=", 1)[1].strip()
    if set(found) != set(names):
        raise BootError("%s does not set %s (the two environment files on the boot partition and their size)"
                        % (source, ", ".join(n for n in names if n not in found)))
    if found["mbl_envfile"] == found["mbl_envfile_redund"]:
        raise BootError("%s keeps both environment copies in %s: they must be two files"
                        % (source, found["mbl_envfile"]))
    return found["mbl_envfile"], found["mbl_envfile_redund"], found["mbl_envsize"]
