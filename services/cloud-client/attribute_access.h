// SPDX-License-Identifier: Apache-2.0
#pragma once
// Who may write which namespace of the device's attributes (SetAttributes).
// The bus policy lets anyone call SetAttributes, because an app (a container with
// "app_api": true, on the bus as its own host uid) publishes its own attributes;
// this is where the caller's uid decides: root, the coordinator's user and the
// admin group's members write any namespace, an app its own only (its name, as
// the container manager's GetAppByUid says), anyone else nothing.

#include "mbl/expected.h"

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <sys/types.h>

namespace mbl::cloud {

class AttributeAccess {
public:
    // The app holding `uid`: its name, NotFound when no installed app holds it,
    // another error when nobody can tell (the container manager does not answer).
    using AppByUid = std::function<Expected<std::string>(uid_t)>;

    // `privileged`: uids that write any namespace (root is always one);
    // `adminGroup`: members of this group do too (nullopt: no such group).
    AttributeAccess(std::set<uid_t> privileged, std::optional<gid_t> adminGroup, AppByUid appByUid);

    // Ok, or AccessDenied naming why ("uid 100000 is app 'sensor', which may write
    // only the namespace 'sensor'", "uid 1001 is neither an app nor privileged").
    Status check(uid_t caller, const std::string& ns) const;

private:
    bool inAdminGroup(uid_t uid) const;

    std::set<uid_t> privileged_;
    std::optional<gid_t> adminGroup_;
    AppByUid appByUid_;
};

} // namespace mbl::cloud
