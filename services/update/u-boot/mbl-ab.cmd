# SPDX-License-Identifier: Apache-2.0
# mbl-ab.cmd: A/B slot selection with boot attempt counters for U-Boot.
# Compile it into the boot script U-Boot's distro boot runs (boot.scr on the
# bootable boot partition, layout/partitions.conf):
#   mkimage -A x86 -O linux -T script -C none -n "MBL A/B" -d mbl-ab.cmd boot.scr
# (-A arm64 etc. on other boards: the script itself is the same.)
#
# The contract shared with mbl-update and the GRUB script (grub/mbl-ab.cfg):
#   BOOT_ORDER         boot names of the slots in the order to try, e.g. "B A"
#   BOOT_<name>_LEFT   how many more times slot <name> may be tried
# The first slot of BOOT_ORDER whose counter is above 0 boots; its counter is
# decremented and written back before the kernel starts, so a slot that keeps
# failing runs out of attempts and the next one of BOOT_ORDER is taken.
# Variables the update service adds (MBL_*) are kept as they are.
#
# Where the environment lives: two files on the boot partition, "uboot.env"
# and "uboot-redund.env", the redundant environment as libubootenv defines it
# for two copies: each copy is CRC32 (little-endian) + one flag byte + data
# (NUL-separated name=value pairs), 0x4000 bytes in all (mkenvimage -r -s
# 0x4000), the CRC covering the data only. Linux edits them with libubootenv's
# fw_setenv through /etc/fw_env.config, one line per copy
# ("/boot/mbl/uboot.env 0x0 0x4000" and "/boot/mbl/uboot-redund.env 0x0
# 0x4000", services/systemd/fw_env.config.example).
#
# Which copy is current (libubootenv 0.3.2 src/uboot_env.c libuboot_load;
# U-Boot env/common.c env_import_redund): the only one with a good CRC; of two
# good ones the one with the higher flag, except that 0 follows 255 (flags
# 255 and 0: the copy with 0); equal flags: the first. A write goes to the
# OTHER copy with the current flag + 1 (libuboot_env_store: FLAGS_INCREMENTAL,
# what libubootenv uses for files), so a power cut during the write leaves the
# old copy current. This script does the same with its own write, so fw_setenv
# and this script take turns on the same pair.
#
# This works with a U-Boot that keeps no environment of its own
# (ENV_IS_NOWHERE, as Debian's qemu-x86 build) and has no setexpr:
# - each copy's CRC is checked by U-Boot itself: "env import -c" of the copy
#   rebuilt without its flag byte (cp.b), the format of a U-Boot built without
#   CONFIG_SYS_REDUNDAND_ENVIRONMENT (env_t without flags, cmd/nvedit.c);
# - flags are compared with itest.b on fixed addresses, and flag + 1 is found
#   by walking the 256 byte values (0xff + 1 = 0x00);
# - the counters are decremented by comparison (0..9; a counter above 9 boots
#   and becomes 8).
#
# The slots of this layout: boot name A on partition 2, B on partition 3; the
# kernel and initrd are /boot/vmlinuz and /boot/initrd.img inside each slot.
# Only the names A and B are recognised in BOOT_ORDER (nothing read from the
# environment is ever run as a command).
#
# Shell variables without setenv (mbl_*) are local to this script and never
# reach the saved environment. U-Boot's hush (2023.01) cannot empty one
# ("mbl_x=" keeps the old value) and expands nothing inside '...' even within
# "...": "none" stands for no value, and messages quote with parentheses.

mbl_dt=${devtype}
mbl_dn=${devnum}
mbl_bp=${distro_bootpart}
mbl_kaddr=${kernel_addr_r}
# The initrd far above the kernel: at the default ramdisk_addr_r the
# decompressing kernel overwrites it.
mbl_raddr=0x20000000
mbl_envfile=uboot.env
mbl_envfile_redund=uboot-redund.env
mbl_envsize=0x4000
# Fixed addresses (no setexpr: offsets inside a copy are written out), 1 MiB
# apart because "env export -c" fills the whole CONFIG_ENV_SIZE (0x40000 on
# qemu-x86) at its address:
#   0x1f000000  copy 1 (uboot.env) as read: CRC 0x1f000000, flag 0x1f000004, data 0x1f000005
#   0x1f100000  copy 2 (uboot-redund.env) as read: flag 0x1f100004, data 0x1f100005
#   0x1f200000  copy 1 without its flag byte (CRC + data, 0x3fff bytes), for env import -c
#   0x1f300000  copy 2 the same
#   0x1f400000  env export -c of the new environment (CRC + data)
#   0x1f500000  the copy written: CRC + new flag (0x1f500004) + data (0x1f500005)
#   0x1f600000  U-Boot's own environment as text
mbl_saveaddr=0x1f600000

# U-Boot's own environment, saved as text, to be restored after the slots'
# environment was imported alone (import -d) and written back.
env export -t ${mbl_saveaddr}
mbl_savesize=${filesize}

# Each copy: read into a zeroed buffer (a short file leaves zeros, never an
# earlier boot's bytes), rebuilt without its flag byte, CRC checked by import.
mbl_ok1=no
mbl_ok2=no
mw.b 0x1f000000 0 0x4000
mw.b 0x1f100000 0 0x4000
if fatload ${mbl_dt} ${mbl_dn}:${mbl_bp} 0x1f000000 ${mbl_envfile} ${mbl_envsize}; then
    cp.b 0x1f000000 0x1f200000 4
    cp.b 0x1f000005 0x1f200004 0x3ffb
    if env import -d -c 0x1f200000 0x3fff; then
        mbl_ok1=yes
    fi
fi
if fatload ${mbl_dt} ${mbl_dn}:${mbl_bp} 0x1f100000 ${mbl_envfile_redund} ${mbl_envsize}; then
    cp.b 0x1f100000 0x1f300000 4
    cp.b 0x1f100005 0x1f300004 0x3ffb
    if env import -d -c 0x1f300000 0x3fff; then
        mbl_ok2=yes
    fi
fi

# The current copy (mbl_cur, its flag at mbl_curflag) and the one written
# next (mbl_next*).
mbl_cur=none
if test "${mbl_ok1}" = yes && test "${mbl_ok2}" = yes; then
    if itest.b *0x1f000004 == 0xff && itest.b *0x1f100004 == 0x00; then
        mbl_cur=2
    elif itest.b *0x1f100004 == 0xff && itest.b *0x1f000004 == 0x00; then
        mbl_cur=1
    elif itest.b *0x1f100004 > *0x1f000004; then
        mbl_cur=2
    else
        mbl_cur=1
    fi
elif test "${mbl_ok1}" = yes; then
    mbl_cur=1
    echo "mbl: ${mbl_envfile_redund} is missing or corrupted: using ${mbl_envfile}"
elif test "${mbl_ok2}" = yes; then
    mbl_cur=2
    echo "mbl: ${mbl_envfile} is missing or corrupted: using ${mbl_envfile_redund}"
fi

mbl_loaded=no
if test "${mbl_cur}" = 1; then
    mbl_curflag=0x1f000004
    mbl_nextfile=${mbl_envfile_redund}
    if env import -d -c 0x1f200000 0x3fff; then
        mbl_loaded=yes
    fi
elif test "${mbl_cur}" = 2; then
    mbl_curflag=0x1f100004
    mbl_nextfile=${mbl_envfile}
    if env import -d -c 0x1f300000 0x3fff; then
        mbl_loaded=yes
    fi
fi
if test "${mbl_loaded}" = no; then
    # No readable copy (never written, or both corrupted): start again from
    # the factory state, slot A first, as fw_setenv does with its defaults;
    # written to uboot.env with flag 1 (mkenvimage -r).
    echo "mbl: ${mbl_envfile} and ${mbl_envfile_redund} are missing or corrupted: using the factory environment (BOOT_ORDER=A B)"
    mbl_nextfile=${mbl_envfile}
    mbl_nextflag=0x01
    setenv BOOT_ORDER "A B"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
else
    # The current flag + 1: the value that follows it in 0x00..0xff; nothing
    # follows 0xff, so 0xff + 1 stays 0x00 (the wrap both readers expect).
    mbl_nextflag=0x00
    mbl_prev=none
    for mbl_h in 0 1 2 3 4 5 6 7 8 9 a b c d e f; do
        for mbl_l in 0 1 2 3 4 5 6 7 8 9 a b c d e f; do
            mbl_v=0x${mbl_h}${mbl_l}
            if test "${mbl_prev}" != none && itest.b *${mbl_curflag} == ${mbl_prev}; then
                mbl_nextflag=${mbl_v}
            fi
            mbl_prev=${mbl_v}
        done
    done
fi

mbl_slot=none
for mbl_s in ${BOOT_ORDER}; do
    if test "${mbl_slot}" = none; then
        if test "${mbl_s}" = A; then
            if test "${BOOT_A_LEFT}" = 1; then setenv BOOT_A_LEFT 0; mbl_slot=A;
            elif test "${BOOT_A_LEFT}" = 2; then setenv BOOT_A_LEFT 1; mbl_slot=A;
            elif test "${BOOT_A_LEFT}" = 3; then setenv BOOT_A_LEFT 2; mbl_slot=A;
            elif test "${BOOT_A_LEFT}" = 4; then setenv BOOT_A_LEFT 3; mbl_slot=A;
            elif test "${BOOT_A_LEFT}" = 5; then setenv BOOT_A_LEFT 4; mbl_slot=A;
            elif test "${BOOT_A_LEFT}" = 6; then setenv BOOT_A_LEFT 5; mbl_slot=A;
            elif test "${BOOT_A_LEFT}" = 7; then setenv BOOT_A_LEFT 6; mbl_slot=A;
            elif test "${BOOT_A_LEFT}" = 8; then setenv BOOT_A_LEFT 7; mbl_slot=A;
            elif test "${BOOT_A_LEFT}" = 9; then setenv BOOT_A_LEFT 8; mbl_slot=A;
            elif test -n "${BOOT_A_LEFT}" && test "${BOOT_A_LEFT}" -gt 9; then setenv BOOT_A_LEFT 8; mbl_slot=A;
            fi
        elif test "${mbl_s}" = B; then
            if test "${BOOT_B_LEFT}" = 1; then setenv BOOT_B_LEFT 0; mbl_slot=B;
            elif test "${BOOT_B_LEFT}" = 2; then setenv BOOT_B_LEFT 1; mbl_slot=B;
            elif test "${BOOT_B_LEFT}" = 3; then setenv BOOT_B_LEFT 2; mbl_slot=B;
            elif test "${BOOT_B_LEFT}" = 4; then setenv BOOT_B_LEFT 3; mbl_slot=B;
            elif test "${BOOT_B_LEFT}" = 5; then setenv BOOT_B_LEFT 4; mbl_slot=B;
            elif test "${BOOT_B_LEFT}" = 6; then setenv BOOT_B_LEFT 5; mbl_slot=B;
            elif test "${BOOT_B_LEFT}" = 7; then setenv BOOT_B_LEFT 6; mbl_slot=B;
            elif test "${BOOT_B_LEFT}" = 8; then setenv BOOT_B_LEFT 7; mbl_slot=B;
            elif test "${BOOT_B_LEFT}" = 9; then setenv BOOT_B_LEFT 8; mbl_slot=B;
            elif test -n "${BOOT_B_LEFT}" && test "${BOOT_B_LEFT}" -gt 9; then setenv BOOT_B_LEFT 8; mbl_slot=B;
            fi
        fi
    fi
done

mbl_order=${BOOT_ORDER}
if test "${mbl_slot}" != none; then
    # The decremented counter reaches the disk before the kernel starts, in
    # the copy that is not current, with the next flag: the current copy is
    # not touched, so a power cut during the write leaves it current (and the
    # attempt uncounted, as the kernel never started). The environment holds
    # only the copy's variables (import -d), or U-Boot's own plus the factory
    # ones, of which only the latter are written.
    if test "${mbl_loaded}" = yes; then
        env export -c -s 0x3fff 0x1f400000
    else
        env export -c -s 0x3fff 0x1f400000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
    fi
    cp.b 0x1f400000 0x1f500000 4
    mw.b 0x1f500004 ${mbl_nextflag} 1
    cp.b 0x1f400004 0x1f500005 0x3ffb
    if fatwrite ${mbl_dt} ${mbl_dn}:${mbl_bp} 0x1f500000 ${mbl_nextfile} ${mbl_envsize}; then
        echo "mbl: booting slot ${mbl_slot} (BOOT_ORDER=${mbl_order})"
    else
        echo "mbl: cannot write ${mbl_nextfile}: not booting a slot whose attempt was not counted"
        mbl_slot=none
    fi
fi
env import -t ${mbl_saveaddr} ${mbl_savesize}

if test "${mbl_slot}" = A; then
    mbl_part=2
elif test "${mbl_slot}" = B; then
    mbl_part=3
else
    echo "mbl: no slot of BOOT_ORDER (${mbl_order}) has boot attempts left"
    sleep 10
    reset
fi

# no_timer_check: this board is a QEMU machine; under TCG on a loaded host the
# kernel's IO-APIC timer check can miss its interrupts and panic ("IO-APIC +
# timer doesn't work!"), so it is skipped, as virtual machines' images do.
setenv bootargs "console=ttyS0,115200 root=/dev/vda${mbl_part} rw rootwait panic=5 loglevel=4 no_timer_check mbl.slot=${mbl_slot}"
ext4load ${mbl_dt} ${mbl_dn}:${mbl_part} ${mbl_raddr} /boot/initrd.img
mbl_rsize=${filesize}
ext4load ${mbl_dt} ${mbl_dn}:${mbl_part} ${mbl_kaddr} /boot/vmlinuz
zboot ${mbl_kaddr} 0 ${mbl_raddr} ${mbl_rsize}
echo "mbl: slot ${mbl_slot} did not start (zboot failed)"
sleep 10
reset
