// SPDX-License-Identifier: Apache-2.0
#pragma once
// User namespaces for apps: each app gets its own range of host uids and gids
// (the same number for both), allocated once and recorded, so that it stays
// the same across updates and reinstalls and /data keeps its owners. Root in
// the app is the first id of its range on the host: an unprivileged user.
//
// Files are given to the range by changing their owners ("chown at install"):
// runc 1.1 (Debian 12) cannot mount a rootfs idmapped, so the rootfs is
// re-owned once when a version is installed, and /data when a version with a
// user namespace first starts on it (data from before user namespaces).
//
// On disk: <state>/apps/.idmap.json  {"<app>": <first host id>, ...} (atomic writes).
// Each range's first id gets a name through UserRecords (user_records.h), kept
// with the allocation: published when allocated and at load, removed when freed.

#include "user_records.h"

#include "mbl/expected.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace mbl::containers {

struct IdRange {
    std::uint32_t base = 0; // host id of the app's id 0
    std::uint32_t size = 0; // ids 0 .. size-1 inside the app
    bool operator==(const IdRange& o) const { return base == o.base && size == o.size; }
};

// Thread-safe: install workers allocate, the loop releases.
class IdAllocator {
public:
    IdAllocator(std::string path, std::uint32_t firstId, std::uint32_t idsPerApp,
                UserRecords records = UserRecords("", "", ""));
    // Reads the record; a missing file is an empty one. Publishes the names of
    // all ranges again and removes this manager's names of ranges it no longer
    // holds (a failure to publish is logged: only "app_api" apps need the names).
    Status load();
    // The app's range, allocated (and recorded durably) on first use: the
    // lowest free slot. NoSpace when the 32-bit id space is exhausted.
    Expected<IdRange> acquire(const std::string& app);
    std::optional<IdRange> find(const std::string& app) const;
    // Frees the app's range (its /data is gone) and its name. Recorded durably.
    Status release(const std::string& app);
    // Names id `inside` of the app's range too (the uid its image's process
    // runs as, when not root): NotFound if the app holds no range.
    Status nameId(const std::string& app, std::uint32_t inside);
    const UserRecords& records() const { return records_; }
    std::uint32_t idsPerApp() const { return size_; }

private:
    Status saveLocked() const;

    std::string path_;
    std::uint32_t first_;
    std::uint32_t size_;
    mutable std::mutex mu_;
    std::map<std::string, std::uint32_t> bases_;
    UserRecords records_;
};

struct ShiftStats {
    std::uint64_t entries = 0; // entries looked at
    std::uint64_t changed = 0; // entries whose owner changed
};

// Gives every entry of the tree at `root` (root included; symlinks themselves,
// never followed) owner base+uid and group base+gid. An id at or beyond
// range.size (outside what the app can map) is InvalidArgument naming the
// path. setuid/setgid bits, which a chown clears, are put back.
// `again`: entries already owned inside the range are left as they are (for
// /data, which may hold both); otherwise (a freshly unpacked rootfs) such ids
// are beyond range.size like any other and refused.
Expected<ShiftStats> shiftOwnership(const std::string& root, const IdRange& range, bool again);

// Does the kernel give user namespaces? (/proc/self/ns/user and user.max_user_namespaces > 0)
bool userNamespacesAvailable();

} // namespace mbl::containers
