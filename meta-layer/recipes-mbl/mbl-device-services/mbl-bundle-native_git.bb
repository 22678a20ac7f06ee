# SPDX-License-Identifier: Apache-2.0
SUMMARY = "mbl-bundle for the build host: creates, signs, inspects and verifies MBL update bundles"
DESCRIPTION = "The project built with its tools_only meson option: only \
mbl-bundle and the code it needs (the bundle format, OpenSSL, libarchive, \
nlohmann-json), without libsystemd, sdbus-c++ or libcurl, which have no \
native providers in OpenEmbedded-Core. classes/mbl-bundle.bbclass runs it."
SECTION = "devel"

require mbl-device-services.inc

inherit meson pkgconfig native

DEPENDS = "openssl-native libarchive-native nlohmann-json-native"
EXTRA_OEMESON = "-Dtools_only=true"
