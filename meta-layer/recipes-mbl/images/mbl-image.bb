# SPDX-License-Identifier: Apache-2.0
SUMMARY = "MBL device image: the device services, runc, the A/B boot integration and storage layout"
DESCRIPTION = "A starting point for an MBL device: systemd, the five MBL daemons \
with mblctl, runc, a read-only root file system in slot A of the layout in \
layout/partitions.conf, the boot partition with the machine's A/B boot \
integration, and the shared data partition for /var/lib/mbl and /var/log/mbl. \
Builds a wic disk image to flash and the ext4 slot image that signed bundles \
carry (mbl-bundle.bbclass)."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${MBL_SOURCE_DIR}/LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

inherit core-image mbl-ab-image

IMAGE_INSTALL = "packagegroup-core-boot packagegroup-mbl ${CORE_IMAGE_EXTRA_INSTALL}"
# The slot in use is never written: an update writes the other one.
IMAGE_FEATURES += "read-only-rootfs"
