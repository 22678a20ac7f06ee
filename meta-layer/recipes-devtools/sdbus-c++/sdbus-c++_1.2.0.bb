# SPDX-License-Identifier: Apache-2.0
SUMMARY = "High-level C++ D-Bus library on top of sd-bus (1.2.0, the API the MBL daemons use)"
DESCRIPTION = "sdbus-c++ 1.2.0, pinned because the MBL device services are \
written against its API; scarthgap's meta-oe ships 2.0, which renamed it."
HOMEPAGE = "https://github.com/Kistler-Group/sdbus-cpp"
SECTION = "libs"

# LGPL 2.1 with an exception for code in the library's headers.
LICENSE = "LGPL-2.1-only"
LIC_FILES_CHKSUM = "file://COPYING;md5=1803fa9c2c3ce8cb06b4861d75310742 \
                    file://COPYING-LGPL-Exception;md5=47949b4704ce0399356e0d1aeddeadaa"

# Tag v1.2.0.
SRC_URI = "git://github.com/Kistler-Group/sdbus-cpp.git;protocol=https;branch=master"
SRCREV = "751c1addc4fd2f949a466f488c1b7de2ca3b76dc"
S = "${WORKDIR}/git"

inherit cmake pkgconfig

REQUIRED_DISTRO_FEATURES = "systemd"
inherit features_check

DEPENDS = "systemd expat"

# The code generator is its own recipe (sdbus-c++-tools), built for the host.
EXTRA_OECMAKE = "-DBUILD_CODE_GEN=OFF \
                 -DBUILD_LIBSYSTEMD=OFF \
                 -DBUILD_TESTS=OFF \
                 -DBUILD_EXAMPLES=OFF \
                 -DBUILD_DOC=OFF"

# 64-bit atomics on 32-bit targets without them.
LDFLAGS:append:mips = " -Wl,--no-as-needed -latomic -Wl,--as-needed"
LDFLAGS:append:powerpc = " -Wl,--no-as-needed -latomic -Wl,--as-needed"
LDFLAGS:append:riscv32 = " -Wl,--no-as-needed -latomic -Wl,--as-needed"

FILES:${PN}-dev += "${libdir}/cmake"

# No native variant: it would need a native libsystemd, which OE-Core does not
# provide; mbl-bundle-native is built without sdbus-c++ (tools_only).
