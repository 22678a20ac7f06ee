# SPDX-License-Identifier: Apache-2.0
# mbl-boot-config.bbclass: what the boot integration recipes, the device
# configuration and the image agree on: the bootloader (MBL_BOOTLOADER, from
# MACHINE_FEATURES "mbl-grub" or "mbl-uboot", see conf/layer.conf), where its
# environment lives on the boot partition, and the storage layout (MBL_LAYOUT).

# U-Boot: the two files of the redundant environment the A/B boot script reads
# and writes on the boot partition (libubootenv's two-copy format: CRC32 + flag
# byte + data; the script writes the copy that is not current), and the size
# of each (the script's mbl_envsize, mkenvimage -r -s and fw_env.config must
# agree).
MBL_UBOOT_ENV_FILE ?= "uboot.env"
MBL_UBOOT_ENV_REDUND_FILE ?= "uboot-redund.env"
MBL_UBOOT_ENV_SIZE ?= "0x4000"
# GRUB (EFI): the folder of the boot partition holding grub.cfg; the EFI GRUB
# image of OE-Core sets $prefix to it, and mbl-ab.cfg keeps the grubenv there.
MBL_GRUB_DIR ?= "EFI/BOOT"

def mbl_layout(d):
    return mbl_layer.layout.read_partitions(d.getVar('MBL_LAYOUT'))

def mbl_boot_mountpoint(d):
    return mbl_layer.layout.role(mbl_layout(d), 'boot')[0]['mountpoint']

# The recipe that deploys the boot partition's files.
MBL_BOOT_RECIPE = "${@'mbl-boot-' + d.getVar('MBL_BOOTLOADER') if d.getVar('MBL_BOOTLOADER') else ''}"
# The bootloader environment as Linux sees it (the boot partition mounted).
MBL_BOOT_ENV_FILE = "${@'${MBL_GRUB_DIR}/grubenv' if d.getVar('MBL_BOOTLOADER') == 'grub' else '${MBL_UBOOT_ENV_FILE}'}"
MBL_BOOT_ENV_PATH = "${@mbl_boot_mountpoint(d)}/${MBL_BOOT_ENV_FILE}"
# U-Boot: the second copy (fw_env.config's second line).
MBL_BOOT_ENV_REDUND_PATH = "${@mbl_boot_mountpoint(d)}/${MBL_UBOOT_ENV_REDUND_FILE}"

python () {
    layout = d.getVar('MBL_LAYOUT')
    if layout:
        bb.parse.mark_dependency(d, layout)
}
