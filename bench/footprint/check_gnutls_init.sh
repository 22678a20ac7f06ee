#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Debian's libcurl loads GnuTLS (through librtmp) into every process that links
# it, and GnuTLS initialises itself in a library constructor (CPU detection,
# its crypto back end, the system priority file): about 0.6 MB of resident text
# and heap per daemon that never uses GnuTLS (curl does TLS with OpenSSL here).
# gnutls_global_init(3): GNUTLS_NO_IMPLICIT_INIT=1 turns that off. A daemon
# whose executable loads libgnutls must get it from its systemd unit (issue 18).
#   check_gnutls_init.sh UNIT_DIR EXECUTABLE...
units=$1
shift
rc=0
for exe in "$@"; do
    name=$(basename "$exe")
    if ! ldd "$exe" | grep -q 'libgnutls\.so'; then
        echo "$name: does not load GnuTLS"
        continue
    fi
    if grep -Eq '^Environment=(.* )?GNUTLS_NO_IMPLICIT_INIT=1( |$)' "$units/$name.service.in"; then
        echo "$name: loads GnuTLS; its unit turns GnuTLS's implicit initialisation off"
    else
        echo "$name: loads GnuTLS, but $units/$name.service.in does not set Environment=GNUTLS_NO_IMPLICIT_INIT=1"
        rc=1
    fi
done
exit $rc
