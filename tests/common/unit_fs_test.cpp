// SPDX-License-Identifier: Apache-2.0
#include "mbl/fs.h"
#include "mbl/paths.h"

#include "harness.h"

#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace mbl;

namespace {
int countEntries(const std::string& dir)
{
    int n = 0;
    DIR* d = opendir(dir.c_str());
    while (struct dirent* e = readdir(d)) {
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") {
            ++n;
        }
    }
    closedir(d);
    return n;
}
} // namespace

TEST_CASE("an atomic write replaces the content whole, with the mode asked, and leaves no temp file")
{
    test::TempDir tmp;
    const std::string p = tmp.path() + "/state.json";
    REQUIRE(fs::writeFileAtomic(p, "first", 0600));
    REQUIRE(fs::writeFileAtomic(p, "second version", 0600));
    auto back = fs::readFile(p);
    REQUIRE(back);
    CHECK(*back == "second version");
    struct stat st {};
    REQUIRE(stat(p.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(countEntries(tmp.path()) == 1);
}

TEST_CASE("an atomic write into a missing directory fails with a named error and creates nothing")
{
    test::TempDir tmp;
    auto st = fs::writeFileAtomic(tmp.path() + "/missing/x", "data");
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::NotFound);
    CHECK(countEntries(tmp.path()) == 0);
}

TEST_CASE("reading a file larger than the limit is refused")
{
    test::TempDir tmp;
    const std::string p = tmp.path() + "/big";
    REQUIRE(fs::writeFileAtomic(p, std::string(1000, 'x')));
    auto r = fs::readFile(p, 999);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::InvalidArgument);
    CHECK(fs::readFile(p, 1000));
}

TEST_CASE("makeDirs and removeTree handle nested trees and never follow symlinks")
{
    test::TempDir tmp;
    test::TempDir outside;
    REQUIRE(fs::writeFileAtomic(outside.path() + "/keep", "precious"));
    REQUIRE(fs::makeDirs(tmp.path() + "/a/b/c", 0700));
    REQUIRE(fs::writeFileAtomic(tmp.path() + "/a/b/c/f", "x"));
    REQUIRE(symlink(outside.path().c_str(), (tmp.path() + "/a/link").c_str()) == 0);
    REQUIRE(fs::removeTree(tmp.path() + "/a"));
    CHECK_FALSE(fs::exists(tmp.path() + "/a"));
    CHECK(fs::exists(outside.path() + "/keep"));
    CHECK(fs::removeTree(tmp.path() + "/does-not-exist"));
}

TEST_CASE("MBL_ROOT and --root relocate every directory under one folder")
{
    auto device = Paths::underRoot("");
    CHECK(device.configDir == "/etc/mbl");
    CHECK(device.stateDir == "/var/lib/mbl");
    CHECK(device.runtimeDir == "/run/mbl");
    CHECK(device.logDir == "/var/log/mbl");

    setenv("MBL_ROOT", "/tmp/demo/", 1);
    auto env = Paths::resolve("");
    CHECK(env.configDir == "/tmp/demo/etc/mbl");
    CHECK(env.stateDir == "/tmp/demo/var/lib/mbl");
    CHECK(env.runtimeDir == "/tmp/demo/run/mbl");
    CHECK(env.logDir == "/tmp/demo/var/log/mbl");
    auto opt = Paths::resolve("/srv/x");
    CHECK(opt.state("update") == "/srv/x/var/lib/mbl/update");
    unsetenv("MBL_ROOT");
    CHECK(Paths::resolve("").configDir == "/etc/mbl");
}

TEST_CASE("syncing the file system of a folder works there and names the missing path")
{
    test::TempDir tmp;
    REQUIRE(fs::writeFileAtomic(tmp.path() + "/f", "data"));
    CHECK(fs::syncFileSystem(tmp.path()));
    auto st = fs::syncFileSystem(tmp.path() + "/missing");
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::NotFound);
    CHECK(st.error().message.find(tmp.path() + "/missing") != std::string::npos);
}
