// SPDX-License-Identifier: Apache-2.0
#pragma once
// Names for the apps' host ids: each app's root-mapped host uid/gid published as
// a systemd JSON user and group record (https://systemd.io/USER_RECORD/) in the
// drop-in directory nss-systemd reads (nss-systemd(8), systemd 252: "/run/userdb/
// <name>.user", world-readable, plus a "<uid>.user" symlink to it; the same for
// ".group"), so getpwuid()/getgrouplist() resolve an app's uid when
// `systemd` is listed for passwd and group in /etc/nsswitch.conf.
//
// Why: dbus-daemon refuses the connection of a uid it cannot look up (dbus 1.14
// bus/policy.c bus_policy_allow_unix_user: "On OOM or error we always reject the
// user" after _dbus_unix_groups_from_uid), so without a record an app with
// "app_api" could never reach the bus from its user namespace.
//
// Ownership: a record this manager wrote carries "service":
// "org.mbl.ContainerManager1" and its state directory; only such records are
// rewritten or removed, so two managers (test stacks) sharing the directory
// leave each other's alone.

#include "mbl/expected.h"

#include <cstdint>
#include <map>
#include <string>

namespace mbl::containers {

class UserRecords {
public:
    // `dir`: the drop-in directory ("" publishes nothing); `prefix`: user and
    // group names are prefix + app name; `owner`: the manager's state directory.
    UserRecords(std::string dir, std::string prefix, std::string owner);

    bool enabled() const { return !dir_.empty(); }
    std::string userName(const std::string& app, std::uint32_t inside = 0) const
    {
        return prefix_ + app + (inside == 0 ? "" : "+" + std::to_string(inside));
    }

    // Writes the app's user and group record for host id `id` (uid = gid) and
    // points the "<id>.user"/"<id>.group" links at them (replacing the app's
    // record for an older id). `inside`: the id in the app's namespace; 0 is the
    // app's root, named <prefix><app>; any other is <prefix><app>+<inside>
    // (the uid an image's `User` runs as; '+' is in no app name).
    Status publish(const std::string& app, std::uint32_t id, std::uint32_t inside = 0);
    // Removes all of the app's records and the id links that point at them.
    Status remove(const std::string& app);
    // Start-up: publishes every app of `apps` (app -> id) again (/run is empty
    // after a reboot) and removes this manager's records of apps not in it.
    // Returns the number of stale records removed.
    Expected<std::size_t> sync(const std::map<std::string, std::uint32_t>& apps);

private:
    Status writeRecord(const std::string& file, const std::string& json) const;
    Status linkId(const std::string& idFile, const std::string& target) const;
    bool ours(const std::string& file) const;
    // The app a record of ours names ("" if not ours).
    std::string appOf(const std::string& file) const;
    Status removeRecord(const std::string& name);
    std::map<std::string, std::string> listOurs() const;
    void unlinkIdIfOurs(const std::string& idFile, const std::string& target) const;

    std::string dir_;
    std::string prefix_;
    std::string owner_;
};

// Does NSS resolve `uid` to a user name (getpwuid_r)? The name, or "".
std::string lookUpUserName(std::uint32_t uid);

} // namespace mbl::containers
