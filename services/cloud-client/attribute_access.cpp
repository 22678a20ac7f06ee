// SPDX-License-Identifier: Apache-2.0
#include "attribute_access.h"

#include "mbl/strings.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <vector>

namespace mbl::cloud {

AttributeAccess::AttributeAccess(std::set<uid_t> privileged, std::optional<gid_t> adminGroup, AppByUid appByUid)
    : privileged_(std::move(privileged)), adminGroup_(adminGroup), appByUid_(std::move(appByUid))
{
    privileged_.insert(0);
}

bool AttributeAccess::inAdminGroup(uid_t uid) const
{
    if (!adminGroup_) {
        return false;
    }
    // The user's groups as the system defines them (the bus policy's group rule reads the same).
    std::vector<char> buf(16384);
    struct passwd pw {};
    struct passwd* found = nullptr;
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        return false;
    }
    int n = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(n));
    if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
        groups.resize(static_cast<std::size_t>(n));
        if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
            return false;
        }
    }
    groups.resize(static_cast<std::size_t>(n));
    for (gid_t g : groups) {
        if (g == *adminGroup_) {
            return true;
        }
    }
    return false;
}

Status AttributeAccess::check(uid_t caller, const std::string& ns) const
{
    if (privileged_.count(caller) != 0 || inAdminGroup(caller)) {
        return {};
    }
    const std::string who = "uid " + std::to_string(caller);
    auto app = appByUid_ ? appByUid_(caller) : Expected<std::string>(unexpected(ErrorCode::NotFound, "no app lookup"));
    if (!app) {
        if (app.error().code == ErrorCode::NotFound) {
            return unexpected(ErrorCode::AccessDenied,
                              who + " is neither an app nor privileged: it may not write attributes");
        }
        return unexpected(ErrorCode::AccessDenied,
                          "cannot tell which app " + who + " is (" + app.error().message + "): nothing written");
    }
    if (*app != ns) {
        return unexpected(ErrorCode::AccessDenied, who + " is app '" + str::quotable(*app) +
                                                       "', which may write only the namespace '" +
                                                       str::quotable(*app) + "', not '" + str::quotable(ns) + "'");
    }
    return {};
}

} // namespace mbl::cloud
