# SPDX-License-Identifier: Apache-2.0
# A machine with MACHINE_FEATURES "mbl-uboot" runs the project's A/B script
# (mbl-boot-uboot): it reads the slots from ext4, and reads and writes the
# environment file on the FAT boot partition with env import/export.
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
SRC_URI:append = "${@bb.utils.contains('MACHINE_FEATURES', 'mbl-uboot', ' file://mbl-ab.cfg', '', d)}"
