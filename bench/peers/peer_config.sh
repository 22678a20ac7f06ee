# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# The peers' configuration files, written the same way by every script that
# runs them, and the DDI test server's control API (sourced by firmware.sh,
# download.sh and idle.sh).

# RAUC's system.conf in DIR/system.conf: two raw slots that are plain files
# (W/rauc-a.img, W/rauc-b.img), the noop bootloader, plain bundles (verity needs
# device-mapper, which this kernel lacks), W/ca.pem as the keyring.
write_rauc_conf() {   # DIR W
    cat >"$1/system.conf" <<EOC
[system]
compatible=bench-board
bootloader=noop
mountprefix=$1/mnt
statusfile=$1/status.raucs
bundle-formats=plain

[keyring]
path=$2/ca.pem
check-purpose=codesign

[slot.rootfs.0]
device=$2/rauc-a.img
type=raw
bootname=A

[slot.rootfs.1]
device=$2/rauc-b.img
type=raw
bootname=B
EOC
}

# SWUpdate's config FILE for suricatta in hawkBit mode: tenant DEFAULT, device
# ID, server URL, poll delay in seconds, mutual TLS with CA, CERT and KEY, and
# W/ca.pem as the key that signs sw-description.
write_swupdate_conf() {   # FILE W ID URL POLLDELAY CA CERT KEY
    cat >"$1" <<EOC
globals :
{
	loglevel = 3;
	verbose = false;
	public-key-file = "$2/ca.pem";
};
suricatta :
{
	tenant = "DEFAULT";
	id = "$3";
	url = "$4";
	polldelay = $5;
	retry = 1;
	retrywait = 1;
	cafile = "$6";
	sslcert = "$7";
	sslkey = "$8";
};
EOC
}

# A call to the DDI test server's control API (tests/cloud/ddi_server.py) at
# ${info[admin]}, the address the script read from its helper (the caller's
# associative array).
# shellcheck disable=SC2154
admin() {   # METHOD PATH [JSON]
    curl -sS --fail -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "${info[admin]}$2"
}
