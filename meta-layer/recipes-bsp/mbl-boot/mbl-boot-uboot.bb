# SPDX-License-Identifier: Apache-2.0
SUMMARY = "U-Boot A/B boot script (boot.scr) and factory environment of an MBL image"
DESCRIPTION = "For a machine with MACHINE_FEATURES mbl-uboot: the project's A/B \
script (services/update/u-boot/mbl-ab.cmd: slot choice, attempt counters, the \
redundant environment in two files on the boot partition), followed by this \
machine's way to boot the chosen slot (its partition from layout/partitions.conf, \
KERNEL_IMAGETYPE, MBL_KERNEL_CMDLINE), compiled with mkimage; and the factory \
environment (slot A first) made with mkenvimage -r, as both copies. \
mbl-ab-image.bbclass puts them on the boot partition."
SECTION = "bootloaders"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${MBL_SOURCE_DIR}/LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

inherit deploy nopackages kernel-arch mbl-boot-config
PACKAGE_ARCH = "${MACHINE_ARCH}"

# The project's script, in services/update/u-boot/ of MBL_SOURCE_DIR.
MBL_UBOOT_SCRIPT ?= "mbl-ab.cmd"
# The machine's boot command for the loaded kernel; by default from
# KERNEL_IMAGETYPE (Image: booti, zImage: bootz, with U-Boot's device tree).
MBL_UBOOT_BOOT ?= ""

FILESEXTRAPATHS:prepend := "${MBL_SOURCE_DIR}/services/update/u-boot:${@os.path.dirname(d.getVar('MBL_LAYOUT'))}:"
SRC_URI = "file://${MBL_UBOOT_SCRIPT} file://${@os.path.basename(d.getVar('MBL_LAYOUT'))}"
S = "${WORKDIR}"

DEPENDS = "u-boot-mkimage-native u-boot-mkenvimage-native"

python () {
    import os
    if not d.getVar('MBL_PARTITION_PREFIX'):
        raise bb.parse.SkipRecipe('MBL_PARTITION_PREFIX is not set (see the meta-mbl README)')
    script = d.expand('${MBL_SOURCE_DIR}/services/update/u-boot/${MBL_UBOOT_SCRIPT}')
    # Parsed again once the script appears (or changes).
    bb.parse.mark_dependency(d, script)
    if not os.path.exists(script):
        raise bb.parse.SkipRecipe('the project\'s U-Boot A/B script %s does not exist' % script)
}

do_configure[noexec] = "1"

python do_compile () {
    import os
    W = d.getVar('WORKDIR')
    B = d.getVar('B')
    parts = mbl_layer.layout.read_partitions(os.path.join(W, os.path.basename(d.getVar('MBL_LAYOUT'))))
    name = d.getVar('MBL_UBOOT_SCRIPT')
    with open(os.path.join(W, name)) as f:
        project = f.read()
    try:
        text = mbl_layer.boot.uboot_script(project, parts, d.getVar('MBL_PARTITION_PREFIX'), d.getVar('KERNEL_IMAGETYPE'),
                                           d.getVar('MBL_KERNEL_CMDLINE'), d.getVar('MBL_UBOOT_BOOT'), name)
        envfile, redundfile, envsize = mbl_layer.boot.uboot_env_settings(project, name)
    except mbl_layer.boot.BootError as e:
        bb.fatal(str(e))
    want = (d.getVar('MBL_UBOOT_ENV_FILE'), d.getVar('MBL_UBOOT_ENV_REDUND_FILE'), int(d.getVar('MBL_UBOOT_ENV_SIZE'), 0))
    if (envfile, redundfile, int(envsize, 0)) != want:
        bb.fatal('%s keeps its environment in %s and %s (%s bytes each); MBL_UBOOT_ENV_FILE, '
                 'MBL_UBOOT_ENV_REDUND_FILE and MBL_UBOOT_ENV_SIZE say %s, %s (%s)'
                 % (name, envfile, redundfile, envsize, want[0], want[1], d.getVar('MBL_UBOOT_ENV_SIZE')))
    with open(os.path.join(B, 'boot.cmd'), 'w') as f:
        f.write(text)
    with open(os.path.join(B, 'env.txt'), 'w') as f:
        f.write(mbl_layer.layout.env_text(mbl_layer.layout.initial_env(parts)))
    bindir = d.getVar('STAGING_BINDIR_NATIVE')
    bb.process.run([bindir + '/mkimage', '-A', d.getVar('UBOOT_ARCH'), '-O', 'linux', '-T', 'script', '-C', 'none',
                    '-n', 'MBL A/B', '-d', os.path.join(B, 'boot.cmd'), os.path.join(B, 'boot.scr')])
    # Both copies the same, flag 1 (mkenvimage -r): the first is current.
    bb.process.run([bindir + '/mkenvimage', '-r', '-s', d.getVar('MBL_UBOOT_ENV_SIZE'), '-o',
                    os.path.join(B, 'uboot.env'), os.path.join(B, 'env.txt')])
}
do_compile[vardeps] += "MBL_PARTITION_PREFIX KERNEL_IMAGETYPE MBL_KERNEL_CMDLINE MBL_UBOOT_BOOT MBL_UBOOT_ENV_FILE \
                        MBL_UBOOT_ENV_REDUND_FILE MBL_UBOOT_ENV_SIZE"

do_deploy () {
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/mbl-boot.scr
    install -m 0644 ${B}/boot.cmd ${DEPLOYDIR}/mbl-boot.cmd
    install -m 0644 ${B}/uboot.env ${DEPLOYDIR}/mbl-uboot.env
    install -m 0644 ${B}/uboot.env ${DEPLOYDIR}/mbl-uboot-redund.env
}
addtask deploy after do_compile before do_build
