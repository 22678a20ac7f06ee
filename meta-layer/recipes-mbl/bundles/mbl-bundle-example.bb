# SPDX-License-Identifier: Apache-2.0
SUMMARY = "Example: a signed MBL update bundle of mbl-image"
DESCRIPTION = "Copy this recipe, point it at your image, keys and apps, and \
`bitbake <it>`: the bundle appears in DEPLOY_DIR_IMAGE, ready for \
`mblctl update install` or a hawkBit software module."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${MBL_SOURCE_DIR}/LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

inherit mbl-bundle

MBL_BUNDLE_IMAGE = "mbl-image"
MBL_BUNDLE_IMAGE_FSTYPE = "ext4"
# Keys stay outside the layer; set them in local.conf or site.conf, e.g.
#   MBL_BUNDLE_KEY = "/secure/signing/mbl.key"
#   MBL_BUNDLE_CERT = "/secure/signing/mbl.crt"
# or sign elsewhere with MBL_BUNDLE_SIGN_CMD (see classes/mbl-bundle.bbclass).
MBL_BUNDLE_VERSION = "1.0.0"
MBL_BUNDLE_SECURITY_VERSION = "1"
MBL_BUNDLE_COMPATIBLE = "${MBL_COMPATIBLE}"
