# SPDX-License-Identifier: Apache-2.0
# mbl-bundle.bbclass: makes a signed MBL update bundle from an image's root
# filesystem (the ext4 slot image of an mbl-ab-image) and OCI application
# archives, with mbl-bundle built for the build host (mbl-bundle-native: the
# project's tools-only build, no libsystemd or sdbus-c++). Use it in a recipe
# of its own (see recipes-mbl/bundles/mbl-bundle-example.bb):
#
#   inherit mbl-bundle
#   MBL_BUNDLE_IMAGE = "mbl-image"                 # image whose rootfs goes to the inactive slot
#   MBL_BUNDLE_IMAGE_FSTYPE = "ext4"               # one of that image's IMAGE_FSTYPES
#   MBL_BUNDLE_VERSION = "1.4.0"
#   MBL_BUNDLE_SECURITY_VERSION = "3"              # anti-rollback floor the bundle raises the device to
#   MBL_BUNDLE_COMPATIBLE = "${MBL_COMPATIBLE}"    # device class in /etc/mbl/update.json "compatible"
#   MBL_BUNDLE_APPS = "web@1.2.0=${TOPDIR}/apps/web.oci.tar"  # optional NAME[@VERSION]=OCI-ARCHIVE list
#   MBL_BUNDLE_CONFIG = "${TOPDIR}/device-config.json"        # optional signed device configuration
#
# Signing, one of:
# - a key file (set them in local.conf or site.conf, never in a layer):
#     MBL_BUNDLE_KEY = "/secure/signing/mbl.key"     # code-signing key (PEM)
#     MBL_BUNDLE_CERT = "/secure/signing/mbl.crt"    # its certificate
#     MBL_BUNDLE_CHAIN = "/secure/signing/ca-int.crt" # optional intermediate(s)
# - a key held elsewhere (HSM, PKCS#11 token, signing service): a command that
#   signs the manifest. The class runs `mbl-bundle create ... --manifest-out`,
#   then the command through /bin/sh with MBL_MANIFEST (the manifest to sign)
#   and MBL_SIGNATURE (where to write a detached DER CMS signature carrying the
#   signer's certificate and the intermediates) in its environment, then
#   `mbl-bundle assemble` with the same payloads. With OpenSSL 3 and a PKCS#11
#   provider, for instance:
#     MBL_BUNDLE_SIGN_CMD = "openssl cms -sign -binary -nosmimecap -outform DER \
#         -in $MBL_MANIFEST -out $MBL_SIGNATURE -signer /secure/mbl-signer.crt \
#         -certfile /secure/ca-int.crt -provider pkcs11 -provider default \
#         -inkey 'pkcs11:token=mbl;object=signer'"
#   (a remote signer: copy $MBL_MANIFEST out and the signature back in). The
#   openssl and signing tools are the build host's; the key never enters the build.
#
# The bundle lands in DEPLOY_DIR_IMAGE as <MBL_BUNDLE_NAME>.bundle. The signing
# task is never cached (nostamp) and reads the key only while it runs; only the
# signed bundle is deployed. The steps are lib/mbl_layer/bundle.py, which the
# project's tests run against the real tool and the real update service.

MBL_BUNDLE_IMAGE ??= ""
MBL_BUNDLE_IMAGE_FSTYPE ??= "ext4"
MBL_BUNDLE_KEY ??= ""
MBL_BUNDLE_CERT ??= ""
MBL_BUNDLE_CHAIN ??= ""
MBL_BUNDLE_SIGN_CMD ??= ""
MBL_BUNDLE_VERSION ??= "${PV}"
MBL_BUNDLE_SECURITY_VERSION ??= "0"
MBL_BUNDLE_COMPATIBLE ??= "${MBL_COMPATIBLE}"
MBL_BUNDLE_APPS ??= ""
MBL_BUNDLE_CONFIG ??= ""
MBL_BUNDLE_NAME ??= "${PN}-${MACHINE}-${MBL_BUNDLE_VERSION}"

# Where mbl-bundle comes from: mbl-bundle-native through the recipe sysroot.
# A tool built elsewhere: set MBL_BUNDLE_TOOL to it and MBL_BUNDLE_TOOL_DEPENDS = "".
MBL_BUNDLE_TOOL ??= "${STAGING_BINDIR_NATIVE}/mbl-bundle"
MBL_BUNDLE_TOOL_DEPENDS ??= "mbl-bundle-native"

# Nothing to build or package: the output is a deploy artefact of this machine.
inherit nopackages deploy
PACKAGE_ARCH = "${MACHINE_ARCH}"
DEPENDS += "${MBL_BUNDLE_TOOL_DEPENDS}"
do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"

do_mbl_bundle[depends] += "${@'%s:do_image_complete' % d.getVar('MBL_BUNDLE_IMAGE') if d.getVar('MBL_BUNDLE_IMAGE') else ''}"
do_mbl_bundle[nostamp] = "1"
do_mbl_bundle[dirs] = "${B}"
do_mbl_bundle[cleandirs] = "${B}"

python __anonymous () {
    if not d.getVar('MBL_BUNDLE_IMAGE'):
        raise bb.parse.SkipRecipe('MBL_BUNDLE_IMAGE is not set (see mbl-bundle.bbclass)')
    if not d.getVar('MBL_BUNDLE_SIGN_CMD'):
        for var in ('MBL_BUNDLE_KEY', 'MBL_BUNDLE_CERT'):
            if not d.getVar(var):
                raise bb.parse.SkipRecipe('%s is not set, nor MBL_BUNDLE_SIGN_CMD (see mbl-bundle.bbclass)' % var)
}

python do_mbl_bundle () {
    import os
    deploy = d.getVar('DEPLOY_DIR_IMAGE')
    image = d.getVar('MBL_BUNDLE_IMAGE')
    fstype = d.getVar('MBL_BUNDLE_IMAGE_FSTYPE')
    rootfs = os.path.join(deploy, '%s-%s.rootfs.%s' % (image, d.getVar('MACHINE'), fstype))
    if not os.path.exists(rootfs):
        bb.fatal('no %s image of %s in %s: add "%s" to its IMAGE_FSTYPES' % (fstype, image, deploy, fstype))
    tool = d.getVar('MBL_BUNDLE_TOOL')
    if not os.access(tool, os.X_OK):
        bb.fatal('mbl-bundle not found at %s (MBL_BUNDLE_TOOL)' % tool)
    B = d.getVar('B')
    out = os.path.join(B, d.getVar('MBL_BUNDLE_NAME') + '.bundle')
    try:
        payloads = mbl_layer.bundle.payload_args(rootfs=rootfs, apps=(d.getVar('MBL_BUNDLE_APPS') or '').split(),
                                                 config=d.getVar('MBL_BUNDLE_CONFIG'))
        mbl_layer.bundle.make(tool, out, d.getVar('MBL_BUNDLE_VERSION'), d.getVar('MBL_BUNDLE_SECURITY_VERSION'),
                              d.getVar('MBL_BUNDLE_COMPATIBLE'), payloads, key=d.getVar('MBL_BUNDLE_KEY'),
                              cert=d.getVar('MBL_BUNDLE_CERT'), chain=d.getVar('MBL_BUNDLE_CHAIN'),
                              sign_cmd=d.getVar('MBL_BUNDLE_SIGN_CMD'), workdir=B, log=bb.note)
    except mbl_layer.bundle.BundleError as e:
        bb.fatal(str(e))
}
addtask mbl_bundle after do_prepare_recipe_sysroot before do_deploy

# deploy.bbclass empties DEPLOYDIR before do_deploy: copy the bundle there now.
do_deploy () {
    install -m 0644 ${B}/${MBL_BUNDLE_NAME}.bundle ${DEPLOYDIR}/
}
addtask deploy after do_mbl_bundle before do_build
