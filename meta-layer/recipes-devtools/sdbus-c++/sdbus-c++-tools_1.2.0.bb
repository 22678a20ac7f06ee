# SPDX-License-Identifier: Apache-2.0
SUMMARY = "sdbus-c++-xml2cpp 1.2.0: generates the C++ adaptors and proxies from introspection XML"
DESCRIPTION = "The code generator of sdbus-c++ 1.2.0, built for the build host: \
the MBL device services generate their D-Bus glue at build time."
HOMEPAGE = "https://github.com/Kistler-Group/sdbus-cpp"
SECTION = "devel"

LICENSE = "LGPL-2.1-only"
LIC_FILES_CHKSUM = "file://${WORKDIR}/git/COPYING;md5=1803fa9c2c3ce8cb06b4861d75310742"

# Tag v1.2.0; only its tools/ folder is built.
SRC_URI = "git://github.com/Kistler-Group/sdbus-cpp.git;protocol=https;branch=master"
SRCREV = "751c1addc4fd2f949a466f488c1b7de2ca3b76dc"
S = "${WORKDIR}/git/tools"

inherit cmake

DEPENDS = "expat"

BBCLASSEXTEND = "native nativesdk"
