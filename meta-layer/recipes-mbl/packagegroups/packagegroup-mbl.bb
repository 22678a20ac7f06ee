# SPDX-License-Identifier: Apache-2.0
SUMMARY = "MBL device services and what they need at run time"
DESCRIPTION = "Add to an image with IMAGE_INSTALL:append = \" packagegroup-mbl\": \
the five daemons, their units, bus policies and users, mblctl, the bundle \
tool, and the tools their configured backends call (runc with PACKAGECONFIG \
containers)."
LICENSE = "Apache-2.0"

inherit packagegroup

RDEPENDS:${PN} = " \
    mbl-device-services \
    mbl-device-services-mblctl \
    mbl-device-services-bundle-tool \
    dbus \
    ca-certificates \
"
