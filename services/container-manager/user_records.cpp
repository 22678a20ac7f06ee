// SPDX-License-Identifier: Apache-2.0
#include "user_records.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <pwd.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace mbl::containers {

using nlohmann::json;

namespace {

constexpr const char* kService = "org.mbl.ContainerManager1";
// The extension section naming the manager that wrote a record (USER_RECORD
// permits fields it does not define; nss-systemd ignores them).
constexpr const char* kOwnerKey = "org.mbl.ContainerManager1";

std::string readLink(const std::string& path)
{
    std::vector<char> buf(4096);
    const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size() - 1);
    return n > 0 ? std::string(buf.data(), static_cast<std::size_t>(n)) : std::string();
}

bool isSymlink(const std::string& path)
{
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

bool endsWith(const std::string& s, const std::string& tail)
{
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

} // namespace

UserRecords::UserRecords(std::string dir, std::string prefix, std::string owner)
    : dir_(std::move(dir)), prefix_(std::move(prefix)), owner_(std::move(owner))
{
}

std::string UserRecords::appOf(const std::string& file) const
{
    if (isSymlink(file)) {
        return "";
    }
    auto text = fs::readFile(file, 1u << 16);
    if (!text) {
        return "";
    }
    try {
        const json j = json::parse(*text);
        if (j.value("service", "") == kService && j.contains(kOwnerKey) && j[kOwnerKey].is_object() &&
            j[kOwnerKey].value("stateDir", "") == owner_) {
            return j[kOwnerKey].value("app", "");
        }
    } catch (const std::exception&) {
    }
    return "";
}

bool UserRecords::ours(const std::string& file) const
{
    return !appOf(file).empty();
}

Status UserRecords::writeRecord(const std::string& file, const std::string& text) const
{
    if (fs::exists(file) && !ours(file)) {
        return unexpected(ErrorCode::AlreadyExists,
                          file + " exists and was not written by this container manager: left as it is");
    }
    // World-readable, as nss-systemd(8) asks: every process resolves these names.
    return fs::writeFileAtomic(file, text, 0644);
}

Status UserRecords::linkId(const std::string& idFile, const std::string& target) const
{
    // A link to a record of someone else is theirs; ours, a dangling one or none is replaced.
    if (isSymlink(idFile)) {
        const std::string to = readLink(idFile);
        if (to == target) {
            return {};
        }
        const std::string toPath = to.empty() || to[0] == '/' ? to : dir_ + "/" + to;
        if (fs::exists(toPath) && !ours(toPath)) {
            return unexpected(ErrorCode::AlreadyExists, idFile + " names another record (" + to + "): left as it is");
        }
    } else if (fs::exists(idFile)) {
        return unexpected(ErrorCode::AlreadyExists, idFile + " is not a link this manager made: left as it is");
    }
    const std::string tmp = idFile + ".tmp";
    (void)::unlink(tmp.c_str());
    if (::symlink(target.c_str(), tmp.c_str()) != 0 || ::rename(tmp.c_str(), idFile.c_str()) != 0) {
        const int e = errno;
        (void)::unlink(tmp.c_str());
        return unexpected(ErrorCode::Io, "cannot link " + idFile + " to " + target + ": " + std::strerror(e));
    }
    return {};
}

void UserRecords::unlinkIdIfOurs(const std::string& idFile, const std::string& target) const
{
    if (isSymlink(idFile) && readLink(idFile) == target) {
        (void)::unlink(idFile.c_str());
    }
}

Status UserRecords::publish(const std::string& app, std::uint32_t id, std::uint32_t inside)
{
    if (!enabled()) {
        return {};
    }
    if (auto st = fs::makeDirs(dir_, 0755); !st) {
        return st;
    }
    const std::string name = userName(app, inside);
    const std::string userFile = dir_ + "/" + name + ".user";
    const std::string groupFile = dir_ + "/" + name + ".group";
    // An older id of the app (its range moved): its links go.
    if (fs::exists(userFile) && ours(userFile)) {
        auto text = fs::readFile(userFile, 1u << 16);
        try {
            const auto old = json::parse(*text).value("uid", static_cast<std::uint64_t>(id));
            if (old != id) {
                unlinkIdIfOurs(dir_ + "/" + std::to_string(old) + ".user", name + ".user");
                unlinkIdIfOurs(dir_ + "/" + std::to_string(old) + ".group", name + ".group");
            }
        } catch (const std::exception&) {
        }
    }
    const json owner = {{"stateDir", owner_}, {"app", app}, {"inside", inside}};
    const json user = {{"userName", name},
                       {"uid", id},
                       {"gid", id},
                       {"realName", "MBL app " + app + (inside == 0 ? "" : " uid " + std::to_string(inside))},
                       {"homeDirectory", "/nonexistent"},
                       {"shell", "/usr/sbin/nologin"},
                       {"disposition", "container"},
                       {"locked", true},
                       {"service", kService},
                       {kOwnerKey, owner}};
    const json group = {{"groupName", name},
                        {"gid", id},
                        {"description", "MBL app " + app},
                        {"disposition", "container"},
                        {"service", kService},
                        {kOwnerKey, owner}};
    if (auto st = writeRecord(userFile, user.dump() + "\n"); !st) {
        return st;
    }
    if (auto st = writeRecord(groupFile, group.dump() + "\n"); !st) {
        return st;
    }
    if (auto st = linkId(dir_ + "/" + std::to_string(id) + ".user", name + ".user"); !st) {
        return st;
    }
    return linkId(dir_ + "/" + std::to_string(id) + ".group", name + ".group");
}

Status UserRecords::removeRecord(const std::string& name)
{
    for (const char* kind : {".user", ".group"}) {
        const std::string file = dir_ + "/" + name + kind;
        if (!fs::exists(file) || !ours(file)) {
            continue;
        }
        auto text = fs::readFile(file, 1u << 16);
        try {
            const json j = json::parse(*text);
            const char* idKey = std::string(kind) == ".user" ? "uid" : "gid";
            if (j.contains(idKey) && j[idKey].is_number_unsigned()) {
                unlinkIdIfOurs(dir_ + "/" + std::to_string(j[idKey].get<std::uint64_t>()) + kind, name + kind);
            }
        } catch (const std::exception&) {
        }
        if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
            return unexpected(ErrorCode::Io, "cannot remove " + file + ": " + std::strerror(errno));
        }
    }
    return {};
}

// This manager's record names in the folder, with the app each names.
std::map<std::string, std::string> UserRecords::listOurs() const
{
    std::map<std::string, std::string> out;
    if (DIR* d = ::opendir(dir_.c_str())) {
        while (struct dirent* e = ::readdir(d)) {
            const std::string f = e->d_name;
            if (!str::startsWith(f, prefix_) || !endsWith(f, ".user")) {
                continue;
            }
            const std::string app = appOf(dir_ + "/" + f);
            if (!app.empty()) {
                out[f.substr(0, f.size() - 5)] = app;
            }
        }
        ::closedir(d);
    }
    return out;
}

Status UserRecords::remove(const std::string& app)
{
    if (!enabled()) {
        return {};
    }
    Status failed = removeRecord(userName(app));
    for (const auto& [name, owner] : listOurs()) {
        if (owner == app) {
            if (auto st = removeRecord(name); !st && failed) {
                failed = st;
            }
        }
    }
    return failed;
}

Expected<std::size_t> UserRecords::sync(const std::map<std::string, std::uint32_t>& apps)
{
    if (!enabled()) {
        return std::size_t{0};
    }
    Status failed;
    for (const auto& [app, id] : apps) {
        if (auto st = publish(app, id); !st && failed) {
            failed = st;
        }
    }
    // This manager's records of apps it no longer has (removed while /run kept them).
    std::set<std::string> stale;
    for (const auto& [name, app] : listOurs()) {
        if (apps.count(app) == 0) {
            stale.insert(app);
        }
    }
    for (const auto& app : stale) {
        if (auto st = remove(app); !st && failed) {
            failed = st;
        }
    }
    if (!failed) {
        return unexpected(failed.error());
    }
    return stale.size();
}

std::string lookUpUserName(std::uint32_t uid)
{
    std::vector<char> buf(16384);
    struct passwd pw {};
    struct passwd* found = nullptr;
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        return "";
    }
    return pw.pw_name;
}

} // namespace mbl::containers
