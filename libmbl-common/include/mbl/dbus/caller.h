// SPDX-License-Identifier: Apache-2.0
#pragma once
// Who sent a method call: the caller's uid and pid as the bus daemon recorded
// them when the caller connected (SO_PEERCRED), asked with
// org.freedesktop.DBus.GetConnectionCredentials (D-Bus specification, "Message
// Bus Messages"; UnixUserID and ProcessID).
//
// Not sdbus-c++'s Message::getCredsUid(): in sdbus-c++ 1.2 it asks sd-bus with
// SD_BUS_CREDS_AUGMENT, and sd-bus then reads the uid from /proc/<pid>. A unit
// with ProtectProc=invisible (the identity service's, the cloud client's) sees
// no other user's /proc entry, so sd-bus finds no uid and the call fails with
// ENODATA ("Failed to get bus cred uid") for every caller the service's user
// cannot see: on a device, every caller.

#include "mbl/expected.h"

#include <sdbus-c++/sdbus-c++.h>

#include <sys/types.h>

namespace mbl::dbus {

struct Caller {
    uid_t uid = static_cast<uid_t>(-1);
    pid_t pid = 0; // 0 when the bus daemon does not know it
};

// The sender of `msg`, asked of the bus daemon on `conn` (one round trip on the
// calling thread; the bus daemon answers at once). Callers that ask often cache
// it per unique name: a unique name is never reused on a bus.
Expected<Caller> callerOf(sdbus::IConnection& conn, const sdbus::Message& msg);

} // namespace mbl::dbus
