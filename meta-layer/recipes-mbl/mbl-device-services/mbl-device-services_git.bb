# SPDX-License-Identifier: Apache-2.0
SUMMARY = "MBL device services: identity, update, containers, cloud client, coordinator"
DESCRIPTION = "Five daemons on the D-Bus system bus that run OCI applications, \
install signed A/B firmware and application updates and connect the device to \
an Eclipse hawkBit server; mblctl (the CLI) and mbl-bundle (the bundle tool)."
SECTION = "admin"

require mbl-device-services.inc

inherit meson pkgconfig systemd useradd features_check ptest
REQUIRED_DISTRO_FEATURES = "systemd"

DEPENDS = "sdbus-c++ sdbus-c++-tools-native systemd openssl curl libarchive nlohmann-json"

# Service users; the bus policies name them. Override with the matching meson
# options (and these variables) to use other names.
MBL_IDENTITY_USER ?= "mbl-identity"
MBL_CLOUD_USER ?= "mbl-cloud"
MBL_COORDINATOR_USER ?= "mbl-coordinator"
MBL_ADMIN_GROUP ?= "mbl-admin"

EXTRA_OEMESON = " \
    -Dsystemdsystemunitdir=${systemd_system_unitdir} \
    -Dsysusersdir=${nonarch_libdir}/sysusers.d \
    -Dtmpfilesdir=${nonarch_libdir}/tmpfiles.d \
    -Didentity_user=${MBL_IDENTITY_USER} \
    -Dcloud_user=${MBL_CLOUD_USER} \
    -Dcoordinator_user=${MBL_COORDINATOR_USER} \
    -Dadmin_group=${MBL_ADMIN_GROUP} \
"

# Size over speed (issue 18, the README's "Idle footprint"): -Os halves the
# daemons' text against -O3 (5.2 -> 2.7 MB, GCC 12, x86-64) and, as the kernel
# maps text around every page touched, most of it is resident: the five idle
# daemons' distinct resident pages 24700 -> 22876 kB. The device image of
# tests/device is built the same way (--buildtype=release -Doptimization=s).
# The last -O wins over the distribution's -O2; a DEBUG_BUILD keeps its -Og.
CXXFLAGS:append = "${@oe.utils.vartrue('DEBUG_BUILD', '', ' -Os', d)}"

# What the daemons run, chosen per device:
#   containers: runc for mbl-container-manager (meta-virtualization)
#   uboot:      fw_printenv/fw_setenv (libubootenv) for the U-Boot bootloader backend
#   grub:       grub-editenv for the GRUB bootloader backend
#   tests:      the unit tests (Catch2), packaged as ${PN}-ptest where ptest is on
# An image built with mbl-ab-image.bbclass gets the bootloader tool from
# mbl-device-config (chosen by MACHINE_FEATURES "mbl-uboot"/"mbl-grub"); set
# uboot or grub here for an image of your own.
MBL_RUNC_PACKAGE ?= "runc-opencontainers"
PACKAGECONFIG ??= "containers ${@bb.utils.contains('PTEST_ENABLED', '1', 'tests', '', d)}"
PACKAGECONFIG[containers] = ",,,${MBL_RUNC_PACKAGE}"
PACKAGECONFIG[uboot] = ",,,libubootenv-bin"
PACKAGECONFIG[grub] = ",,,grub-editenv"
PACKAGECONFIG[tests] = "-Dtests=true,-Dtests=false,catch2"

# ptest: the unit suites (no bus, no root), each a Catch2 executable.
SRC_URI += "file://run-ptest"
do_install_ptest () {
    install -d ${D}${PTEST_PATH}/tests
    for t in ${B}/tests/*/*-unit-tests; do
        install -m 0755 "$t" ${D}${PTEST_PATH}/tests/
    done
}
RDEPENDS:${PN}-ptest += "openssl-bin libubootenv-bin grub-editenv tar coreutils findutils"

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
    ${prefix}/lib/systemd/system.conf.d \
    ${nonarch_libdir}/sysusers.d \
    ${nonarch_libdir}/tmpfiles.d \
    ${datadir}/dbus-1/system.d \
    ${datadir}/dbus-1/system-services \
    ${datadir}/dbus-1/interfaces \
    ${sysconfdir}/mbl \
"
# libcurl: the identity service loads it only for EST (dlopen, so the shared
# library dependencies do not see it there; the cloud client links it).
RDEPENDS:${PN} += "dbus ${PN}-mblctl libcurl"

# mbl-bundle for the build host is its own recipe (mbl-bundle-native, the
# tools-only build): no native variant of this one.
