SUMMARY = "Example: a signed MBL update bundle of core-image-minimal"
DESCRIPTION = "Copy this recipe, point it at your image, keys and apps, and \
`bitbake <it>`: the bundle appears in DEPLOY_DIR_IMAGE, ready for \
`mblctl update install` or a hawkBit software module."
LICENSE = "MIT"

inherit mbl-bundle

MBL_BUNDLE_IMAGE = "core-image-minimal"
MBL_BUNDLE_IMAGE_FSTYPE = "ext4"
# Keys stay outside the layer; set them in local.conf or site.conf, e.g.
#   MBL_BUNDLE_KEY = "/secure/signing/mbl.key"
#   MBL_BUNDLE_CERT = "/secure/signing/mbl.crt"
MBL_BUNDLE_VERSION = "1.0.0"
MBL_BUNDLE_SECURITY_VERSION = "1"
MBL_BUNDLE_COMPATIBLE = "${MACHINE}"
