SUMMARY = "MBL device services: identity, update, containers, cloud client, coordinator"
DESCRIPTION = "Five daemons on the D-Bus system bus that run OCI applications, \
install signed A/B firmware and application updates and connect the device to \
an Eclipse hawkBit server; mblctl (the CLI) and mbl-bundle (the bundle tool)."
SECTION = "admin"

LICENSE = "Apache-2.0"
# The project declares its licence in meson.build's project() call.
LIC_FILES_CHKSUM = "file://meson.build;beginline=3;endline=3;md5=97dde74e0f00321ef0438055474ef687"

# By default the recipe builds the checkout this layer lives in, so the layer
# and the code always match. For a release build from a git server set, in a
# bbappend or local.conf:
#   MBL_SRC_URI = "git://git.example.com/mbl-device-services.git;protocol=https;branch=main"
#   MBL_SRCREV = "<commit>"
# (MBL_SRCREV serves the target and the native variant alike.)
MBL_SRC_URI ??= ""
MBL_SRCREV ??= ""
SRC_URI = "${MBL_SRC_URI}"
PV = "0.1.0"
# externalsrc points S at the checkout; a git build unpacks into git/.
S = "${WORKDIR}/git"
EXTERNALSRC = "${@'' if d.getVar('MBL_SRC_URI') else d.getVar('MBL_SOURCE_DIR')}"
inherit ${@'' if d.getVar('MBL_SRC_URI') else 'externalsrc'}
python () {
    # A SRCREV without a git SRC_URI is an error for externalsrc (kirkstone).
    if d.getVar('MBL_SRC_URI'):
        d.setVar('SRCREV', d.getVar('MBL_SRCREV'))
        d.appendVar('PV', '+git${SRCPV}')
}

inherit meson pkgconfig systemd useradd features_check
REQUIRED_DISTRO_FEATURES = "systemd"

DEPENDS = "sdbus-c++ sdbus-c++-tools-native systemd openssl curl libarchive nlohmann-json"

# Service users; the bus policies name them. Override with the matching meson
# options (and these variables) to use other names.
MBL_IDENTITY_USER ?= "mbl-identity"
MBL_CLOUD_USER ?= "mbl-cloud"
MBL_COORDINATOR_USER ?= "mbl-coordinator"
MBL_ADMIN_GROUP ?= "mbl-admin"

EXTRA_OEMESON = " \
    -Dtests=false \
    -Dsystemdsystemunitdir=${systemd_system_unitdir} \
    -Dsysusersdir=${nonarch_libdir}/sysusers.d \
    -Dtmpfilesdir=${nonarch_libdir}/tmpfiles.d \
    -Didentity_user=${MBL_IDENTITY_USER} \
    -Dcloud_user=${MBL_CLOUD_USER} \
    -Dcoordinator_user=${MBL_COORDINATOR_USER} \
    -Dadmin_group=${MBL_ADMIN_GROUP} \
"

# What the daemons run, chosen per device:
#   containers: runc for mbl-container-manager (meta-virtualization)
#   uboot:      fw_printenv/fw_setenv (libubootenv) for the U-Boot bootloader backend
#   grub:       grub-editenv for the GRUB bootloader backend
# The "file" bootloader backend (development) needs neither.
MBL_RUNC_PACKAGE ?= "runc-opencontainers"
PACKAGECONFIG ??= "containers uboot"
PACKAGECONFIG[containers] = ",,,${MBL_RUNC_PACKAGE}"
PACKAGECONFIG[uboot] = ",,,libubootenv-bin"
PACKAGECONFIG[grub] = ",,,grub-editenv"

# Users and group at image build time (file ownership, bus policies); the
# sysusers.d file installed beside the units creates the same ones on a
# writable rootfs.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system ${MBL_ADMIN_GROUP}"
USERADD_PARAM:${PN} = " \
    --system --no-create-home --home-dir / --shell /sbin/nologin --user-group ${MBL_IDENTITY_USER}; \
    --system --no-create-home --home-dir / --shell /sbin/nologin --user-group ${MBL_CLOUD_USER}; \
    --system --no-create-home --home-dir / --shell /sbin/nologin --user-group ${MBL_COORDINATOR_USER} \
"

SYSTEMD_PACKAGES = "${PN}"
SYSTEMD_SERVICE:${PN} = " \
    mbl-device-identity.service \
    mbl-update.service \
    mbl-container-manager.service \
    mbl-cloud-client.service \
    mbl-coordinator.service \
    mbl-reboot.path \
"
SYSTEMD_AUTO_ENABLE = "enable"

PACKAGES =+ "${PN}-mblctl ${PN}-bundle-tool"
SUMMARY:${PN}-mblctl = "mblctl: the command line over the MBL services' D-Bus API"
FILES:${PN}-mblctl = "${bindir}/mblctl"
SUMMARY:${PN}-bundle-tool = "mbl-bundle: create, sign, inspect and verify MBL update bundles"
FILES:${PN}-bundle-tool = "${bindir}/mbl-bundle"

FILES:${PN} += " \
    ${libexecdir}/mbl \
    ${systemd_system_unitdir} \
    ${nonarch_libdir}/sysusers.d \
    ${nonarch_libdir}/tmpfiles.d \
    ${datadir}/dbus-1/system.d \
    ${datadir}/dbus-1/system-services \
    ${datadir}/dbus-1/interfaces \
    ${sysconfdir}/mbl \
"
RDEPENDS:${PN} += "dbus ${PN}-mblctl"

# mbl-bundle for the build host (see classes/mbl-bundle.bbclass). Today the
# project builds as a whole, so the native variant needs every library
# natively, libsystemd included (for sdbus-c++), which OE-core does not
# provide: a layer that does (or a meson option building only the tools)
# completes this route; until then use a host-built mbl-bundle (layer README).
BBCLASSEXTEND = "native"
REQUIRED_DISTRO_FEATURES:class-native = ""
PACKAGECONFIG:class-native = ""
RDEPENDS:${PN}:class-native = ""
DEPENDS:class-native = "sdbus-c++-native sdbus-c++-tools-native openssl-native curl-native libarchive-native nlohmann-json-native"
EXTRA_OEMESON:class-native = "-Dtests=false"
USERADD_PACKAGES:class-native = ""
SYSTEMD_SERVICE:${PN}:class-native = ""
