# SPDX-License-Identifier: Apache-2.0
# mbl-ab-image.bbclass: makes an image an MBL A/B device image (mbl-image
# inherits it; so can a device maker's own image):
# - a wic disk image with the storage layout of layout/partitions.conf
#   (wic/mbl-ab.wks.in): the boot partition with the machine's boot
#   integration, rootfs A (this image), rootfs B (empty), the data partition;
# - the root file system also as ext4 (IMAGE_FSTYPES), the slot image that
#   mbl-bundle.bbclass puts in a bundle, no larger than a slot
#   (IMAGE_ROOTFS_MAXSIZE);
# - /etc/fstab lines for the boot and data partitions, the device
#   configuration (mbl-device-config) and the kernel in the slot's /boot.
# The machine chooses the boot integration with MACHINE_FEATURES "mbl-grub"
# or "mbl-uboot" and names its disk with MBL_PARTITION_PREFIX (see the layer
# README and conf/machine/mbl-*.conf).

inherit mbl-boot-config
require conf/image-uefi.conf

WKS_FILE = "mbl-ab.wks.in"
IMAGE_FSTYPES += "ext4 wic wic.bmap"
# The data partition's size in the disk image (the layout says "rest": grow
# the partition when flashing a larger disk; x-systemd.growfs grows the file
# system on the next boot).
MBL_DATA_SIZE ?= "512M"

# The boot partition: files deployed by the boot integration recipe (and, for
# GRUB, OE-Core's EFI GRUB), installed by wic's bootimg-partition.
MBL_GRUB_BOOT_FILES = "grub-efi-${EFI_BOOT_IMAGE};${MBL_GRUB_DIR}/${EFI_BOOT_IMAGE} \
    mbl-grub.cfg;${MBL_GRUB_DIR}/grub.cfg mbl-ab.cfg;${MBL_GRUB_DIR}/mbl-ab.cfg mbl-grubenv;${MBL_GRUB_DIR}/grubenv"
MBL_UBOOT_BOOT_FILES = "mbl-boot.scr;boot.scr mbl-uboot.env;${MBL_UBOOT_ENV_FILE} \
    mbl-uboot-redund.env;${MBL_UBOOT_ENV_REDUND_FILE}"
IMAGE_BOOT_FILES = "${@d.getVar('MBL_GRUB_BOOT_FILES') if d.getVar('MBL_BOOTLOADER') == 'grub' else d.getVar('MBL_UBOOT_BOOT_FILES')}"
# An EFI firmware finds GRUB on the MBR partition of type 0xEF (the EFI
# system partition); U-Boot's distro boot looks on the bootable one.
MBL_WKS_BOOT_ARGS = "${@'--system-id 0xef' if d.getVar('MBL_BOOTLOADER') == 'grub' else ''}"
WKS_FILE_DEPENDS:append = " ${MBL_BOOT_RECIPE} ${@'grub-efi' if d.getVar('MBL_BOOTLOADER') == 'grub' else ''}"

IMAGE_INSTALL:append = " mbl-device-config kernel-image"

# A slot holds at most its partition (KiB).
IMAGE_ROOTFS_MAXSIZE = "${@mbl_layer.layout.role(mbl_layout(d), 'rootfs')[0]['size_mib'] * 1024}"

python () {
    if not d.getVar('MBL_BOOTLOADER'):
        raise bb.parse.SkipRecipe('MACHINE_FEATURES has neither "mbl-grub" nor "mbl-uboot" (the boot integration; see the meta-mbl README)')
    if not d.getVar('MBL_PARTITION_PREFIX'):
        raise bb.parse.SkipRecipe('MBL_PARTITION_PREFIX is not set (see the meta-mbl README)')
}

# The boot and data partitions in /etc/fstab (the root file system is the
# slot the bootloader chose).
python mbl_fstab () {
    import os
    fstab = os.path.join(d.getVar('IMAGE_ROOTFS'), 'etc', 'fstab')
    lines = mbl_layer.layout.fstab_lines(mbl_layout(d), d.getVar('MBL_PARTITION_PREFIX'))
    with open(fstab, 'a') as f:
        f.write('# MBL storage layout (layout/partitions.conf, meta-mbl)\n' + '\n'.join(lines) + '\n')
}
mbl_fstab[vardeps] += "MBL_PARTITION_PREFIX"
ROOTFS_POSTPROCESS_COMMAND += "mbl_fstab"

# After systemd's preset-all: the data partition's bind mounts are enabled,
# or the daemons' state would land on the slot and be lost with the next
# update (CONTRACTS.md C6).
python mbl_check_storage () {
    import glob
    import os
    rootfs = d.getVar('IMAGE_ROOTFS')
    wants = glob.glob(os.path.join(rootfs, d.getVar('systemd_system_unitdir').lstrip('/'), '*.target.wants')) + \
        glob.glob(os.path.join(rootfs, 'etc/systemd/system/*.target.wants'))
    enabled = {n for w in wants for n in os.listdir(w)}
    for unit in ('mbl-data-layout.service', 'var-lib-mbl.mount'):
        if unit not in enabled:
            bb.fatal('%s is not enabled in the image: /var/lib/mbl would not be on the data partition' % unit)
}
IMAGE_PREPROCESS_COMMAND:append = " mbl_check_storage"
