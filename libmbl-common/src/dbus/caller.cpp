// SPDX-License-Identifier: Apache-2.0
#include "mbl/dbus/caller.h"

#include <map>
#include <string>

namespace mbl::dbus {

Expected<Caller> callerOf(sdbus::IConnection& conn, const sdbus::Message& msg)
{
    const std::string sender = msg.getSender();
    if (sender.empty()) {
        return unexpected(ErrorCode::Failed, "the method call has no sender");
    }
    try {
        auto driver = sdbus::createProxy(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus");
        std::map<std::string, sdbus::Variant> creds;
        driver->callMethod("GetConnectionCredentials")
            .onInterface("org.freedesktop.DBus")
            .withArguments(sender)
            .storeResultsTo(creds);
        Caller c;
        auto uid = creds.find("UnixUserID");
        if (uid == creds.end()) {
            return unexpected(ErrorCode::Failed, "the bus does not know the uid of " + sender);
        }
        c.uid = static_cast<uid_t>(uid->second.get<std::uint32_t>());
        if (auto pid = creds.find("ProcessID"); pid != creds.end()) {
            c.pid = static_cast<pid_t>(pid->second.get<std::uint32_t>());
        }
        return c;
    } catch (const sdbus::Error& e) {
        return unexpected(ErrorCode::Failed, "cannot ask the bus who " + sender + " is: " + e.getName() + ": " +
                                                 e.getMessage());
    }
}

} // namespace mbl::dbus
