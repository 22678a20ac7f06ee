# mbl-bundle.bbclass: makes a signed MBL update bundle from an image's root
# filesystem and OCI application archives, with mbl-bundle built for the
# build host. Use it in a recipe of its own (see
# recipes-mbl/bundles/mbl-bundle-example.bb):
#
#   inherit mbl-bundle
#   MBL_BUNDLE_IMAGE = "core-image-minimal"       # image whose rootfs goes to the inactive slot
#   MBL_BUNDLE_IMAGE_FSTYPE = "ext4"               # one of that image's IMAGE_FSTYPES
#   MBL_BUNDLE_KEY = "/secure/signing/mbl.key"     # code-signing key (or a key URI the tool accepts)
#   MBL_BUNDLE_CERT = "/secure/signing/mbl.crt"    # its certificate
#   MBL_BUNDLE_CHAIN = "/secure/signing/ca-int.crt" # optional intermediate(s)
#   MBL_BUNDLE_VERSION = "1.4.0"
#   MBL_BUNDLE_SECURITY_VERSION = "3"              # anti-rollback floor the bundle raises the device to
#   MBL_BUNDLE_COMPATIBLE = "acme-gateway-v1"      # device class in /etc/mbl/update.json "compatible"
#   MBL_BUNDLE_APPS = "web=${TOPDIR}/apps/web.oci.tar"   # optional NAME[@VERSION]=OCI-ARCHIVE list
#   MBL_BUNDLE_CONFIG = "${TOPDIR}/device-config.json"   # optional signed device configuration payload
#
# The bundle lands in DEPLOY_DIR_IMAGE as <MBL_BUNDLE_NAME>.bundle. The signing
# key never enters the build's sstate: do_mbl_bundle is not cached (nostamp)
# and reads the key only while it runs; only the signed bundle is deployed.

MBL_BUNDLE_IMAGE ??= ""
MBL_BUNDLE_IMAGE_FSTYPE ??= "ext4"
MBL_BUNDLE_KEY ??= ""
MBL_BUNDLE_CERT ??= ""
MBL_BUNDLE_CHAIN ??= ""
MBL_BUNDLE_VERSION ??= "${PV}"
MBL_BUNDLE_SECURITY_VERSION ??= "0"
MBL_BUNDLE_COMPATIBLE ??= "${MACHINE}"
MBL_BUNDLE_APPS ??= ""
MBL_BUNDLE_CONFIG ??= ""
MBL_BUNDLE_NAME ??= "${PN}-${MACHINE}-${MBL_BUNDLE_VERSION}"

# Where mbl-bundle comes from. By default the native recipe
# (mbl-device-services-native) through the recipe sysroot. That build needs a
# native libsystemd, which OE-core does not provide (see the layer README): until
# the project can build its tools alone, point MBL_BUNDLE_TOOL at an mbl-bundle
# built on the build host from the same checkout and clear the dependency:
#   MBL_BUNDLE_TOOL = "/opt/mbl/bin/mbl-bundle"
#   MBL_BUNDLE_TOOL_DEPENDS = ""
MBL_BUNDLE_TOOL ??= "${STAGING_BINDIR_NATIVE}/mbl-bundle"
MBL_BUNDLE_TOOL_DEPENDS ??= "mbl-device-services-native"

# Nothing to build or package: the output is a deploy artefact.
inherit nopackages deploy
DEPENDS += "${MBL_BUNDLE_TOOL_DEPENDS}"
do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"

do_mbl_bundle[depends] += "${@'%s:do_image_complete' % d.getVar('MBL_BUNDLE_IMAGE') if d.getVar('MBL_BUNDLE_IMAGE') else ''}"
do_mbl_bundle[nostamp] = "1"
do_mbl_bundle[dirs] = "${B}"
do_mbl_bundle[cleandirs] = "${B}"

python __anonymous () {
    for var in ('MBL_BUNDLE_IMAGE', 'MBL_BUNDLE_KEY', 'MBL_BUNDLE_CERT'):
        if not d.getVar(var):
            raise bb.parse.SkipRecipe('%s is not set (see mbl-bundle.bbclass)' % var)
}

python do_mbl_bundle () {
    import os
    import subprocess

    deploy = d.getVar('DEPLOY_DIR_IMAGE')
    image = d.getVar('MBL_BUNDLE_IMAGE')
    fstype = d.getVar('MBL_BUNDLE_IMAGE_FSTYPE')
    rootfs = os.path.join(deploy, '%s-%s.rootfs.%s' % (image, d.getVar('MACHINE'), fstype))
    if not os.path.exists(rootfs):
        # kirkstone names images without ".rootfs"
        rootfs = os.path.join(deploy, '%s-%s.%s' % (image, d.getVar('MACHINE'), fstype))
    if not os.path.exists(rootfs):
        bb.fatal('no %s image of %s in %s: add "%s" to its IMAGE_FSTYPES' % (fstype, image, deploy, fstype))

    out = os.path.join(d.getVar('B'), d.getVar('MBL_BUNDLE_NAME') + '.bundle')
    tool = d.getVar('MBL_BUNDLE_TOOL')
    if not os.access(tool, os.X_OK):
        bb.fatal('mbl-bundle not found at %s (MBL_BUNDLE_TOOL)' % tool)
    cmd = [tool, 'create',
           '--key', d.getVar('MBL_BUNDLE_KEY'),
           '--cert', d.getVar('MBL_BUNDLE_CERT'),
           '--version', d.getVar('MBL_BUNDLE_VERSION'),
           '--security-version', d.getVar('MBL_BUNDLE_SECURITY_VERSION'),
           '--compatible', d.getVar('MBL_BUNDLE_COMPATIBLE'),
           '--rootfs', rootfs]
    if d.getVar('MBL_BUNDLE_CHAIN'):
        cmd += ['--chain', d.getVar('MBL_BUNDLE_CHAIN')]
    if d.getVar('MBL_BUNDLE_CONFIG'):
        cmd += ['--config', d.getVar('MBL_BUNDLE_CONFIG')]
    for app in (d.getVar('MBL_BUNDLE_APPS') or '').split():
        if '=' not in app:
            bb.fatal('MBL_BUNDLE_APPS: "%s" is not NAME[@VERSION]=OCI-ARCHIVE' % app)
        cmd += ['--app', app]
    cmd += ['-o', out]
    bb.note('running ' + ' '.join(cmd))
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except subprocess.CalledProcessError as e:
        bb.fatal('mbl-bundle create failed:\n' + e.stdout)

}
addtask mbl_bundle after do_prepare_recipe_sysroot before do_deploy

# deploy.bbclass empties DEPLOYDIR before do_deploy: copy the bundle there now.
do_deploy () {
    install -m 0644 ${B}/${MBL_BUNDLE_NAME}.bundle ${DEPLOYDIR}/
}
addtask deploy after do_mbl_bundle before do_build
