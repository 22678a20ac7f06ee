# SPDX-License-Identifier: Apache-2.0
SUMMARY = "MBL device services and what they need at run time"
DESCRIPTION = "Add to an image with IMAGE_INSTALL:append = \" packagegroup-mbl\": \
the five daemons, their units, bus policies and users, mblctl, the bundle \
tool, and the tools their configured backends call (runc with PACKAGECONFIG \
containers)."
LICENSE = "Apache-2.0"

inherit packagegroup

# libnss-systemd: apps with app_api reach the bus only if their host uid
# resolves; the container manager names it in /run/userdb, which nss-systemd
# reads (poky's systemd, PACKAGECONFIG nss, on by default in scarthgap, adds
# "systemd" to the passwd and group lines of nsswitch.conf in its postinst).
RDEPENDS:${PN} = " \
    mbl-device-services \
    libnss-systemd \
    mbl-device-services-mblctl \
    mbl-device-services-bundle-tool \
    dbus \
    ca-certificates \
"
