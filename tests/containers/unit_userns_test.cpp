// SPDX-License-Identifier: Apache-2.0
// User-namespace ids without a container: the per-app allocation of host id
// ranges (persisted, lowest free slot, released) and the giving of a tree to a
// range (owners shifted, setuid kept, symlinks not followed, ids beyond the
// range refused). Runs as root (it changes owners), like the rest of the suite.

#include "userns.h"
#include "user_records.h"

#include "harness.h"

#include "mbl/fs.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iterator>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace mbl;
using namespace mbl::containers;

namespace {
struct stat statOf(const std::string& p)
{
    struct stat st {};
    ::lstat(p.c_str(), &st);
    return st;
}
} // namespace

TEST_CASE("host id ranges: one per app, the lowest free slot, the same after a reload, freed on release")
{
    test::TempDir dir("mbl-idmap");
    const std::string path = dir.path() + "/idmap.json";
    IdAllocator ids(path, 100000, 65536);
    REQUIRE(ids.load());
    auto a = ids.acquire("a");
    auto b = ids.acquire("b");
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->base == 100000);
    CHECK(b->base == 165536);
    CHECK(ids.acquire("a")->base == 100000); // stable
    IdAllocator again(path, 100000, 65536);
    REQUIRE(again.load());
    CHECK(again.find("b")->base == 165536);
    REQUIRE(again.release("a"));
    CHECK_FALSE(again.find("a"));
    CHECK(again.acquire("c")->base == 100000); // the freed slot
    CHECK(again.acquire("d")->base == 231072);
    // The 32-bit id space ends: NoSpace, nothing recorded.
    IdAllocator tight(dir.path() + "/tight.json", 0xFFFF0000u - 65536, 65536);
    REQUIRE(tight.acquire("x"));
    auto full = tight.acquire("y");
    REQUIRE_FALSE(full);
    CHECK(full.error().code == ErrorCode::NoSpace);
    CHECK_FALSE(tight.find("y"));
    // A damaged record is refused, not silently reset.
    REQUIRE(fs::writeFileAtomic(dir.path() + "/bad.json", R"({"../x": 5})"));
    IdAllocator bad(dir.path() + "/bad.json", 100000, 65536);
    CHECK_FALSE(bad.load());
}

TEST_CASE("a tree given to an app's ids: owners shifted into the range, setuid bits kept, symlinks not followed, "
          "hardlinks once; an id beyond the range is refused")
{
    if (::geteuid() != 0) {
        test::skip("changing owners needs root");
    }
    test::TempDir dir("mbl-shift");
    const std::string root = dir.path() + "/rootfs";
    REQUIRE(fs::makeDirs(root + "/bin"));
    REQUIRE(fs::writeFileAtomic(root + "/bin/tool", "x", 0755));
    REQUIRE(::chown((root + "/bin/tool").c_str(), 0, 0) == 0);
    REQUIRE(::chmod((root + "/bin/tool").c_str(), 04755) == 0);
    REQUIRE(fs::writeFileAtomic(root + "/bin/user-file", "y", 0644));
    REQUIRE(::chown((root + "/bin/user-file").c_str(), 1000, 1000) == 0);
    REQUIRE(::link((root + "/bin/user-file").c_str(), (root + "/bin/hard").c_str()) == 0);
    // A symlink to something outside: its own owner changes, never the target's.
    REQUIRE(fs::writeFileAtomic(dir.path() + "/outside", "z", 0644));
    REQUIRE(::symlink((dir.path() + "/outside").c_str(), (root + "/bin/link").c_str()) == 0);
    const IdRange range{200000, 65536};
    auto shifted = shiftOwnership(root, range, false);
    INFO((shifted ? std::string() : shifted.error().message));
    REQUIRE(shifted);
    CHECK(shifted->entries == 6); // rootfs, bin, tool, user-file, hard, link
    CHECK(statOf(root).st_uid == 200000);
    CHECK(statOf(root + "/bin").st_gid == 200000);
    CHECK(statOf(root + "/bin/tool").st_uid == 200000);
    CHECK((statOf(root + "/bin/tool").st_mode & 07777) == 04755);
    CHECK(statOf(root + "/bin/user-file").st_uid == 201000);
    CHECK(statOf(root + "/bin/hard").st_gid == 201000);
    CHECK(statOf(root + "/bin/link").st_uid == 200000);
    CHECK(statOf(dir.path() + "/outside").st_uid == 0);
    // Again on /data ("again"): what is the app's already stays, new host-root files join it.
    REQUIRE(fs::writeFileAtomic(root + "/new", "n"));
    auto again = shiftOwnership(root, range, true);
    REQUIRE(again);
    CHECK(again->changed == 1);
    CHECK(statOf(root + "/new").st_uid == 200000);
    // A fresh rootfs holding an id the app cannot map: refused, naming the file.
    const std::string other = dir.path() + "/other";
    REQUIRE(fs::makeDirs(other));
    REQUIRE(fs::writeFileAtomic(other + "/far", "f"));
    REQUIRE(::chown((other + "/far").c_str(), 70000, 0) == 0);
    auto refused = shiftOwnership(other, range, false);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == ErrorCode::InvalidArgument);
    CHECK(refused.error().message.find("far") != std::string::npos);
}

// The drop-in layout nss-systemd(8) (systemd 252) reads: <name>.user and
// <name>.group, world-readable JSON records, and <id>.user/<id>.group symlinks to them.
TEST_CASE("user records: an app's first host id is published as a user and a group with id links, removed with "
          "the range, rewritten on load, and records of others are left alone")
{
    test::TempDir dir("mbl-userdb");
    const std::string db = dir.path() + "/userdb";
    const std::string path = dir.path() + "/idmap.json";
    auto records = [&] { return UserRecords(db, "mbl-app-", dir.path() + "/apps"); };
    IdAllocator ids(path, 100000, 65536, records());
    REQUIRE(ids.load());
    REQUIRE(ids.acquire("sensor"));
    REQUIRE(ids.acquire("camera"));

    auto user = nlohmann::json::parse(*fs::readFile(db + "/mbl-app-sensor.user"));
    CHECK(user["userName"] == "mbl-app-sensor");
    CHECK(user["uid"] == 100000);
    CHECK(user["gid"] == 100000);
    CHECK(user["disposition"] == "container");
    auto group = nlohmann::json::parse(*fs::readFile(db + "/mbl-app-sensor.group"));
    CHECK(group["groupName"] == "mbl-app-sensor");
    CHECK(group["gid"] == 100000);
    CHECK((statOf(db + "/mbl-app-sensor.user").st_mode & 0777) == 0644);
    char link[256] = {};
    REQUIRE(::readlink((db + "/100000.user").c_str(), link, sizeof link - 1) > 0);
    CHECK(std::string(link) == "mbl-app-sensor.user");
    std::fill(std::begin(link), std::end(link), '\0');
    REQUIRE(::readlink((db + "/165536.group").c_str(), link, sizeof link - 1) > 0);
    CHECK(std::string(link) == "mbl-app-camera.group");

    // Released: its records and links go, the other app's stay.
    REQUIRE(ids.release("sensor"));
    CHECK_FALSE(fs::exists(db + "/mbl-app-sensor.user"));
    CHECK_FALSE(fs::exists(db + "/mbl-app-sensor.group"));
    CHECK(::access((db + "/100000.user").c_str(), F_OK) != 0);
    CHECK(statOf(db + "/100000.group").st_mode == 0);
    CHECK(fs::exists(db + "/mbl-app-camera.user"));

    // A record of someone else under the same name is never overwritten.
    REQUIRE(fs::writeFileAtomic(db + "/mbl-app-other.user", R"({"userName":"mbl-app-other","uid":5000})"));
    REQUIRE(ids.acquire("other")); // the range is taken all the same
    CHECK(nlohmann::json::parse(*fs::readFile(db + "/mbl-app-other.user"))["uid"] == 5000);

    // Load (start-up): the records of held ranges are back (/run emptied by a
    // reboot), the manager's records of ranges no longer held are gone, others' stay.
    REQUIRE(fs::removeTree(db));
    REQUIRE(fs::makeDirs(db, 0755));
    REQUIRE(fs::writeFileAtomic(db + "/mbl-app-other.user", R"({"userName":"mbl-app-other","uid":5000})"));
    {
        // A record this manager wrote for an app it no longer has.
        UserRecords stale(db, "mbl-app-", dir.path() + "/apps");
        REQUIRE(stale.publish("ghost", 900000));
        // The same name from another manager (another state directory): not ours.
        UserRecords theirs(db, "mbl-app-", dir.path() + "/elsewhere");
        REQUIRE(theirs.publish("theirs", 950000));
    }
    IdAllocator again(path, 100000, 65536, records());
    REQUIRE(again.load());
    CHECK(fs::exists(db + "/mbl-app-camera.user"));
    CHECK(fs::exists(db + "/165536.user"));
    CHECK_FALSE(fs::exists(db + "/mbl-app-ghost.user"));
    CHECK(statOf(db + "/900000.user").st_mode == 0);
    CHECK(fs::exists(db + "/mbl-app-theirs.user"));
    CHECK(fs::exists(db + "/950000.user"));
    CHECK(nlohmann::json::parse(*fs::readFile(db + "/mbl-app-other.user"))["uid"] == 5000);

    // The uid an image's `User` runs as is named too (<app>+<id inside>), and goes with the app.
    REQUIRE(again.nameId("camera", 1000));
    CHECK(nlohmann::json::parse(*fs::readFile(db + "/mbl-app-camera+1000.user"))["uid"] == 166536);
    CHECK(fs::exists(db + "/166536.group"));
    CHECK_FALSE(again.nameId("camera", 65536)); // beyond its range
    CHECK_FALSE(again.nameId("nobody", 1));
    REQUIRE(again.release("camera"));
    CHECK_FALSE(fs::exists(db + "/mbl-app-camera+1000.user"));
    CHECK_FALSE(fs::exists(db + "/mbl-app-camera+1000.group"));
    CHECK(statOf(db + "/166536.user").st_mode == 0);
    CHECK_FALSE(fs::exists(db + "/mbl-app-camera.user"));

    // No folder: nothing published, nothing fails.
    IdAllocator none(dir.path() + "/none.json", 100000, 65536, UserRecords("", "mbl-app-", "x"));
    REQUIRE(none.load());
    REQUIRE(none.acquire("x"));
}
