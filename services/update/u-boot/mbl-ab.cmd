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
# Where the environment lives: a file on the boot partition, "uboot.env"
# (mkenvimage -s 0x4000 format: CRC32 + NUL-separated name=value pairs), which
# Linux edits with libubootenv's fw_setenv through /etc/fw_env.config
# ("/boot/mbl/uboot.env 0x0 0x4000", services/systemd/fw_env.config.example).
# This works with a U-Boot that keeps no environment of its own
# (ENV_IS_NOWHERE, as Debian's qemu-x86 build) and has no setexpr: the
# counters are decremented by comparison (0..9; a counter above 9 boots and
# becomes 8).
#
# The slots of this layout: boot name A on partition 2, B on partition 3; the
# kernel and initrd are /boot/vmlinuz and /boot/initrd.img inside each slot.
# Only the names A and B are recognised in BOOT_ORDER (nothing read from the
# environment is ever run as a command).
#
# Shell variables without setenv (mbl_*) are local to this script and never
# reach the saved environment.

mbl_dt=${devtype}
mbl_dn=${devnum}
mbl_bp=${distro_bootpart}
mbl_kaddr=${kernel_addr_r}
# The initrd far above the kernel: at the default ramdisk_addr_r the
# decompressing kernel overwrites it.
mbl_raddr=0x20000000
mbl_envaddr=0x1f000000
mbl_saveaddr=0x1f100000
mbl_envfile=uboot.env
mbl_envsize=0x4000

# U-Boot's own environment, saved as text, to be restored after the slot's
# environment file was imported alone (import -d) and written back.
env export -t ${mbl_saveaddr}
mbl_savesize=${filesize}

mbl_loaded=no
if fatload ${mbl_dt} ${mbl_dn}:${mbl_bp} ${mbl_envaddr} ${mbl_envfile} ${mbl_envsize}; then
    if env import -d -c ${mbl_envaddr} ${mbl_envsize}; then
        mbl_loaded=yes
    fi
fi
if test "${mbl_loaded}" = no; then
    # No readable environment (never written, or corrupted): start again from
    # the factory state, slot A first, as fw_setenv does with its defaults.
    echo "mbl: ${mbl_envfile} is missing or corrupted: using the factory environment (BOOT_ORDER=A B)"
    setenv BOOT_ORDER "A B"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
fi

mbl_slot=
for mbl_s in ${BOOT_ORDER}; do
    if test -z "${mbl_slot}"; then
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
if test -n "${mbl_slot}"; then
    # The decremented counter reaches the disk before the kernel starts. The
    # environment holds only the file's variables (import -d), or U-Boot's
    # own plus the factory ones, of which only the latter are written.
    if test "${mbl_loaded}" = yes; then
        env export -c -s ${mbl_envsize} ${mbl_envaddr}
    else
        env export -c -s ${mbl_envsize} ${mbl_envaddr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
    fi
    if fatwrite ${mbl_dt} ${mbl_dn}:${mbl_bp} ${mbl_envaddr} ${mbl_envfile} ${mbl_envsize}; then
        echo "mbl: booting slot ${mbl_slot} (BOOT_ORDER=${mbl_order})"
    else
        echo "mbl: cannot write ${mbl_envfile}: not booting a slot whose attempt was not counted"
        mbl_slot=
    fi
fi
env import -t ${mbl_saveaddr} ${mbl_savesize}

if test "${mbl_slot}" = A; then
    mbl_part=2
elif test "${mbl_slot}" = B; then
    mbl_part=3
else
    echo "mbl: no slot of BOOT_ORDER '${mbl_order}' has boot attempts left"
    sleep 10
    reset
fi

setenv bootargs "console=ttyS0,115200 root=/dev/vda${mbl_part} rw rootwait panic=5 loglevel=4 mbl.slot=${mbl_slot}"
ext4load ${mbl_dt} ${mbl_dn}:${mbl_part} ${mbl_raddr} /boot/initrd.img
mbl_rsize=${filesize}
ext4load ${mbl_dt} ${mbl_dn}:${mbl_part} ${mbl_kaddr} /boot/vmlinuz
zboot ${mbl_kaddr} 0 ${mbl_raddr} ${mbl_rsize}
echo "mbl: slot ${mbl_slot} did not start (zboot failed)"
sleep 10
reset
