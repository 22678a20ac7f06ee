# SPDX-License-Identifier: Apache-2.0
SUMMARY = "GRUB A/B boot files of an MBL image: grub.cfg, mbl-ab.cfg and the factory grubenv"
DESCRIPTION = "For a machine with MACHINE_FEATURES mbl-grub: deploys the project's \
A/B script (services/update/grub/mbl-ab.cfg), a grub.cfg that sources it and \
boots the chosen slot's kernel (generated from layout/partitions.conf), and the \
factory environment block (slot A first). mbl-ab-image.bbclass puts them on the \
boot partition beside OE-Core's EFI GRUB."
SECTION = "bootloaders"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${MBL_SOURCE_DIR}/LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

inherit deploy nopackages mbl-boot-config
PACKAGE_ARCH = "${MACHINE_ARCH}"

FILESEXTRAPATHS:prepend := "${MBL_SOURCE_DIR}/services/update/grub:${@os.path.dirname(d.getVar('MBL_LAYOUT'))}:"
SRC_URI = "file://mbl-ab.cfg file://${@os.path.basename(d.getVar('MBL_LAYOUT'))}"
S = "${WORKDIR}"

# grub-editenv writes the factory environment block.
DEPENDS = "grub-native"

python () {
    if not d.getVar('MBL_PARTITION_PREFIX'):
        raise bb.parse.SkipRecipe('MBL_PARTITION_PREFIX is not set (see the meta-mbl README)')
}

do_configure[noexec] = "1"

python do_compile () {
    import os
    parts = mbl_layer.layout.read_partitions(os.path.join(d.getVar('WORKDIR'), os.path.basename(d.getVar('MBL_LAYOUT'))))
    B = d.getVar('B')
    with open(os.path.join(B, 'grub.cfg'), 'w') as f:
        f.write(mbl_layer.boot.grub_cfg(parts, d.getVar('MBL_PARTITION_PREFIX'), d.getVar('KERNEL_IMAGETYPE'),
                                        d.getVar('MBL_KERNEL_CMDLINE')))
    env = os.path.join(B, 'grubenv')
    if os.path.exists(env):
        os.unlink(env)
    editenv = d.expand('${STAGING_BINDIR_NATIVE}/grub-editenv')
    bb.process.run([editenv, env, 'create'])
    bb.process.run([editenv, env, 'set'] + ['%s=%s' % kv for kv in mbl_layer.layout.initial_env(parts).items()])
}
do_compile[vardeps] += "MBL_PARTITION_PREFIX KERNEL_IMAGETYPE MBL_KERNEL_CMDLINE"

do_deploy () {
    install -m 0644 ${B}/grub.cfg ${DEPLOYDIR}/mbl-grub.cfg
    install -m 0644 ${S}/mbl-ab.cfg ${DEPLOYDIR}/mbl-ab.cfg
    install -m 0644 ${B}/grubenv ${DEPLOYDIR}/mbl-grubenv
}
addtask deploy after do_compile before do_build
