// SPDX-License-Identifier: Apache-2.0
#include "userns.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace mbl::containers {

using nlohmann::json;

IdAllocator::IdAllocator(std::string path, std::uint32_t firstId, std::uint32_t idsPerApp, UserRecords records)
    : path_(std::move(path)), first_(firstId), size_(idsPerApp), records_(std::move(records))
{
}

Status IdAllocator::load()
{
    std::lock_guard<std::mutex> lock(mu_);
    bases_.clear();
    if (!fs::exists(path_)) {
        return {};
    }
    auto text = fs::readFile(path_, 1u << 20);
    if (!text) {
        return unexpected(text.error());
    }
    try {
        const json j = json::parse(*text);
        for (auto it = j.begin(); it != j.end(); ++it) {
            if (!str::isSafeName(it.key(), 48) || !it.value().is_number_unsigned()) {
                return unexpected(ErrorCode::Io, path_ + ": entry '" + it.key() + "' is not <app>: <first id>");
            }
            bases_[it.key()] = it.value().get<std::uint32_t>();
        }
    } catch (const std::exception& e) {
        return unexpected(ErrorCode::Io, path_ + " is unreadable: " + e.what());
    }
    auto stale = records_.sync(bases_);
    if (!stale) {
        log::warning("app user records: " + stale.error().message);
    } else if (*stale > 0) {
        log::notice("removed the user records of " + std::to_string(*stale) + " apps that are gone");
    }
    return {};
}

Status IdAllocator::saveLocked() const
{
    json j = json::object();
    for (const auto& [app, base] : bases_) {
        j[app] = base;
    }
    return fs::writeFileAtomic(path_, j.dump(2) + "\n", 0600);
}

Expected<IdRange> IdAllocator::acquire(const std::string& app)
{
    std::lock_guard<std::mutex> lock(mu_);
    auto it = bases_.find(app);
    if (it != bases_.end()) {
        return IdRange{it->second, size_};
    }
    // The lowest slot no app holds.
    std::uint64_t candidate = first_;
    while (true) {
        bool taken = false;
        for (const auto& [other, base] : bases_) {
            if (base < candidate + size_ && candidate < static_cast<std::uint64_t>(base) + size_) {
                taken = true;
                candidate = static_cast<std::uint64_t>(base) + size_;
                break;
            }
        }
        if (!taken) {
            break;
        }
    }
    // uid 65535 and 4294967295 mean "no id" to the kernel: stay below the last.
    if (candidate + size_ > 0xFFFFFFFFull) {
        return unexpected(ErrorCode::NoSpace, "no free range of " + std::to_string(size_) +
                                                  " host ids is left for app '" + app + "'");
    }
    bases_[app] = static_cast<std::uint32_t>(candidate);
    if (auto st = saveLocked(); !st) {
        bases_.erase(app);
        return unexpected(st.error());
    }
    if (auto st = records_.publish(app, static_cast<std::uint32_t>(candidate)); !st) {
        log::warning("app '" + app + "': no user record for host id " + std::to_string(candidate) + ": " +
                     st.error().message);
    }
    return IdRange{static_cast<std::uint32_t>(candidate), size_};
}

Status IdAllocator::nameId(const std::string& app, std::uint32_t inside)
{
    std::lock_guard<std::mutex> lock(mu_);
    auto it = bases_.find(app);
    if (it == bases_.end() || inside >= size_) {
        return unexpected(ErrorCode::NotFound, "app '" + app + "' holds no host id for its id " + std::to_string(inside));
    }
    return records_.publish(app, it->second + inside, inside);
}

std::optional<IdRange> IdAllocator::find(const std::string& app) const
{
    std::lock_guard<std::mutex> lock(mu_);
    auto it = bases_.find(app);
    if (it == bases_.end()) {
        return std::nullopt;
    }
    return IdRange{it->second, size_};
}

Status IdAllocator::release(const std::string& app)
{
    std::lock_guard<std::mutex> lock(mu_);
    if (bases_.erase(app) == 0) {
        return {};
    }
    if (auto st = records_.remove(app); !st) {
        log::warning("app '" + app + "': " + st.error().message);
    }
    return saveLocked();
}

namespace {

struct Shifter {
    IdRange range;
    bool again = false;
    ShiftStats stats;
    // Files with several links, shifted at their first name: the next name of the
    // same inode already shows the new owner (which `map` would refuse as beyond
    // the range on a fresh rootfs).
    std::set<std::pair<dev_t, ino_t>> linked;

    // The new id, or nullopt when it cannot be mapped.
    std::optional<std::uint32_t> map(std::uint32_t id) const
    {
        if (again && id >= range.base && id - range.base < range.size) {
            return id; // already the app's
        }
        if (id < range.size) {
            return range.base + id;
        }
        return std::nullopt;
    }

    Status entry(int dirfd, const std::string& name, const struct stat& st, const std::string& path)
    {
        ++stats.entries;
        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second) {
            return {};
        }
        auto uid = map(st.st_uid);
        auto gid = map(st.st_gid);
        if (!uid || !gid) {
            return unexpected(ErrorCode::InvalidArgument,
                              path + " is owned by " + std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) +
                                  ", beyond the " + std::to_string(range.size) + " ids an app's user namespace maps");
        }
        if (*uid == st.st_uid && *gid == st.st_gid) {
            return {};
        }
        if (::fchownat(dirfd, name.c_str(), *uid, *gid, AT_SYMLINK_NOFOLLOW) != 0) {
            return unexpected(errnoError("chown " + path, errno));
        }
        ++stats.changed;
        // A chown clears setuid/setgid (kept only where the device policy allowed them).
        if (S_ISREG(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID)) != 0 &&
            ::fchmodat(dirfd, name.c_str(), st.st_mode & 07777, 0) != 0) {
            return unexpected(errnoError("chmod " + path, errno));
        }
        return {};
    }

    Status walk(int dirfd, const std::string& path)
    {
        Fd copy{::dup(dirfd)};
        DIR* d = copy ? ::fdopendir(copy.get()) : nullptr;
        if (d == nullptr) {
            return unexpected(errnoError("read " + path, errno));
        }
        (void)copy.release(); // owned by d now
        Status result;
        while (struct dirent* e = ::readdir(d)) {
            const std::string name = e->d_name;
            if (name == "." || name == "..") {
                continue;
            }
            struct stat st {};
            if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
                result = unexpected(errnoError("stat " + path + "/" + name, errno));
                break;
            }
            if (S_ISDIR(st.st_mode)) {
                Fd sub{::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
                if (!sub) {
                    result = unexpected(errnoError("open " + path + "/" + name, errno));
                    break;
                }
                if (auto st2 = walk(sub.get(), path + "/" + name); !st2) {
                    result = st2;
                    break;
                }
            }
            if (auto st2 = entry(dirfd, name, st, path + "/" + name); !st2) {
                result = st2;
                break;
            }
        }
        ::closedir(d);
        return result;
    }
};

} // namespace

Expected<ShiftStats> shiftOwnership(const std::string& root, const IdRange& range, bool again)
{
    Fd dir{::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
    if (!dir) {
        return unexpected(errnoError("open " + root, errno));
    }
    Shifter s{range, again, {}, {}};
    if (auto st = s.walk(dir.get(), root); !st) {
        return unexpected(st.error());
    }
    struct stat st {};
    if (::fstat(dir.get(), &st) != 0) {
        return unexpected(errnoError("stat " + root, errno));
    }
    // The root itself (through its own fd: "" with AT_EMPTY_PATH).
    ++s.stats.entries;
    auto uid = s.map(st.st_uid);
    auto gid = s.map(st.st_gid);
    if (!uid || !gid) {
        return unexpected(ErrorCode::InvalidArgument, root + " is owned by an id beyond the app's range");
    }
    if ((*uid != st.st_uid || *gid != st.st_gid) && ::fchown(dir.get(), *uid, *gid) != 0) {
        return unexpected(errnoError("chown " + root, errno));
    }
    return s.stats;
}

bool userNamespacesAvailable()
{
    auto max = fs::readFile("/proc/sys/user/max_user_namespaces", 64);
    return fs::exists("/proc/self/ns/user") && max && std::strtoul(max->c_str(), nullptr, 10) > 0;
}

} // namespace mbl::containers
