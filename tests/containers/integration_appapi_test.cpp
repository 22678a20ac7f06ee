// SPDX-License-Identifier: Apache-2.0
// The app-facing API seen from inside a container: a real app (busybox image
// made by umoci, real runc, its own user namespace) runs busctl against the test
// stack's real dbus-daemon with our policy files, and the real cloud client
// decides by the caller's uid. Also the names the manager gives the apps' host
// ids (systemd userdb records, resolved through nss-systemd), without which the
// bus refuses an app's connection.

#include "cm_client.h"
#include "cm_fixture.h"
#include "harness.h"
#include "image_tools.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sdbus-c++/sdbus-c++.h>

#include <fcntl.h>
#include <grp.h>
#include <map>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace mbl;
using test::CmClient;
using nlohmann::json;
using namespace mbl::test::cm;

namespace {

// nss-systemd resolves the manager's records only if nsswitch.conf lists it
// (tests/setup.sh adds it; Debian 12's default has it).
void requireNssSystemd()
{
    auto conf = fs::readFile("/etc/nsswitch.conf");
    bool passwd = false;
    for (const auto& line : str::split(conf ? *conf : "", '\n')) {
        if (str::startsWith(line, "passwd:") && line.find("systemd") != std::string::npos) {
            passwd = true;
        }
    }
    if (!passwd) {
        test::skip("/etc/nsswitch.conf does not list 'systemd' for passwd (tests/setup.sh adds it)");
    }
}

std::string userName(std::uint32_t uid)
{
    std::vector<char> buf(16384);
    struct passwd pw {};
    struct passwd* found = nullptr;
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        return "";
    }
    return pw.pw_name;
}

// The test stack's bus socket: "unix:path=/tmp/mbl-stack.X/system_bus_socket,guid=..."
std::string busSocket(const test::TestStack& stack)
{
    std::string socket = stack.address().substr(std::string("unix:path=").size());
    return socket.substr(0, socket.find(','));
}

// busctl and the libraries ldd names for it, laid out under `stage` as on the
// host (lib/x86_64-linux-gnu/..., lib64/ld-linux-..., usr/lib/.../systemd/
// libsystemd-shared-252.so): a real D-Bus client an app runs inside its
// container. sd-bus, not libdbus: in a user namespace libdbus claims the
// namespace's uid 0 in its EXTERNAL authentication, which dbus-daemon refuses
// (it sees the host uid); sd-bus lets the bus take the peer's credentials.
std::vector<std::pair<std::string, std::string>> busClientFiles(const std::string& stage)
{
    auto ldd = test::mustRun({"ldd", "/usr/bin/busctl"});
    for (const auto& line : str::split(ldd.out, '\n')) {
        std::string path;
        const auto arrow = line.find("=> ");
        if (arrow != std::string::npos) {
            path = line.substr(arrow + 3);
        } else if (str::startsWith(str::trim(line), "/")) {
            path = str::trim(line);
        }
        path = path.substr(0, path.find(" ("));
        if (path.empty() || path[0] != '/') {
            continue;
        }
        const std::string to = stage + path;
        (void)fs::makeDirs(to.substr(0, to.rfind('/')), 0755);
        test::mustRun({"cp", "-L", path, to});
    }
    std::vector<std::pair<std::string, std::string>> files = {{"/usr/bin/busctl", "bin/busctl"}};
    for (const char* top : {"lib", "lib64", "usr"}) {
        if (fs::exists(stage + "/" + top)) {
            files.push_back({stage + "/" + top, top});
        }
    }
    return files;
}

std::map<std::string, std::string> cloudAttributes()
{
    std::map<std::string, std::string> attrs;
    auto cloud = sdbus::createProxy("org.mbl.CloudClient1", "/org/mbl/CloudClient1");
    cloud->callMethod("GetAttributes").onInterface("org.mbl.CloudClient1").storeResultsTo(attrs);
    return attrs;
}

// SetAttributes(ns, {key: value}) called as host uid `uid` (a child that drops
// to it, as the app's process is on the host): "" on success, else the D-Bus
// error name. The bus sees the same credentials as from inside the container.
std::string setAttributesAs(std::uint32_t uid, const std::string& ns, const std::string& key, const std::string& value)
{
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::close(p[0]);
        std::string result;
        // Raw syscalls: this thread only (the child has no other).
        if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, uid, uid, uid) != 0 ||
            ::syscall(SYS_setresuid, uid, uid, uid) != 0) {
            result = "setresuid failed";
        } else {
            try {
                auto conn = sdbus::createSystemBusConnection();
                auto cloud = sdbus::createProxy(*conn, "org.mbl.CloudClient1", "/org/mbl/CloudClient1");
                cloud->callMethod("SetAttributes")
                    .onInterface("org.mbl.CloudClient1")
                    .withArguments(ns, std::map<std::string, std::string>{{key, value}});
            } catch (const sdbus::Error& e) {
                result = e.getName();
            } catch (const std::exception& e) {
                result = std::string("exception: ") + e.what();
            }
        }
        (void)!::write(p[1], result.data(), result.size());
        ::_exit(0);
    }
    ::close(p[1]);
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) {
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(p[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    return out;
}

} // namespace

TEST_CASE("an app with app_api calls SetAttributes from inside its container with busctl: its own namespace is "
          "written and visible through the cloud client, another app's is refused with AccessDenied and nothing "
          "changes; an app without app_api has no bus")
{
    if (!test::haveTool("busctl") || !test::haveTool("ldd")) {
        test::skip("busctl and ldd are needed to put a D-Bus client in the test image");
    }
    requireNssSystemd();
    Fixture f;
    // The app's bus is the test stack's bus (on a device: /run/dbus/system_bus_socket).
    f.configure({{"app_api", {{"bus_socket", busSocket(f.stack)}}}});
    REQUIRE(f.stack.start("cloud-client"));
    CmClient cm;
    const auto before = cloudAttributes();
    REQUIRE(before.count("sensor.temp") == 0);

    const std::string call = "busctl --system call org.mbl.CloudClient1 /org/mbl/CloudClient1 org.mbl.CloudClient1 "
                             "SetAttributes sa{ss} ";
    const std::string script = call + "sensor 1 temp 21 2>&1; echo \"OWN-RC=$?\"; " + call +
                               "camera 1 x 1 2>&1; echo \"OTHER-RC=$?\"; exec sleep 100000";
    auto layout = test::umociBusyboxImage(f.work.path(), "layout", "sensor", {"/bin/sh", "-c", script}, "",
                                          busClientFiles(f.work.path() + "/stage"));
    const std::string archive = test::layoutArchive(layout, "sensor", f.work.path() + "/sensor.tar", true);

    auto r = cm.install(archive, R"({"name": "sensor", "app_api": true})");
    INFO(r.errorName << ": " << r.message);
    REQUIRE(r.success);
    const bool ran = cm.waitLog("sensor", "OTHER-RC=", std::chrono::seconds(120));
    const std::string log = cm.logs("sensor");
    INFO("state " << cm.state("sensor") << "; log:\n" << log << "\nmanager:\n" << f.stack.log("container-manager"));
    REQUIRE(ran);
    // From inside: its own namespace written, the other refused with the cloud client's reason.
    CHECK(contains(log, "OWN-RC=0"));
    CHECK_FALSE(contains(log, "Transport endpoint is not connected"));
    CHECK(contains(log, "OTHER-RC=1"));
    CHECK(contains(log, "which may write only the namespace 'sensor', not 'camera'"));

    // From the cloud client: the value is there, nothing else changed.
    auto after = cloudAttributes();
    CHECK(after["sensor.temp"] == "21");
    CHECK(after.count("camera.x") == 0);
    after.erase("sensor.temp");
    CHECK(after == before);

    // The refusal's name, asked with the app's own host credentials (the uid the
    // bus saw from the container: its process's uid on the host).
    const pid_t pid = static_cast<pid_t>(cm.pid("sensor"));
    REQUIRE(alive(pid));
    const std::uint32_t appUid = static_cast<std::uint32_t>(std::stoul(str::split(statusField(pid, "Uid"), '\t')[0]));
    CHECK(appUid >= f.firstId);
    CHECK(userName(appUid) == f.userPrefix + "sensor");
    CHECK(setAttributesAs(appUid, "camera", "x", "2") == "org.mbl.Error.AccessDenied");
    CHECK(setAttributesAs(appUid, "sensor", "temp", "22").empty());
    CHECK(cloudAttributes().count("camera.x") == 0);
    CHECK(cloudAttributes()["sensor.temp"] == "22");

    // An image whose process runs as a user of its own (`User` 1000): that uid
    // is named too (<prefix>meter+1000) and reaches the bus as the same app.
    const std::string meterScript = call + "meter 1 kwh 7 2>&1; echo \"OWN-RC=$?\"; id -u; exec sleep 100000";
    auto meterLayout = test::umociBusyboxImage(f.work.path(), "layout", "meter", {"/bin/sh", "-c", meterScript}, "",
                                               busClientFiles(f.work.path() + "/stage"));
    test::mustRun({"umoci", "config", "--image", meterLayout + ":meter", "--config.user=1000:1000"});
    const std::string meterArchive = test::layoutArchive(meterLayout, "meter", f.work.path() + "/meter.tar", true);
    auto mr = cm.install(meterArchive, R"({"name": "meter", "app_api": true})");
    INFO(mr.errorName << ": " << mr.message);
    REQUIRE(mr.success);
    const bool meterRan = cm.waitLog("meter", "OWN-RC=", std::chrono::seconds(120));
    INFO("meter: " << cm.state("meter") << "\n" << cm.logs("meter"));
    REQUIRE(meterRan);
    CHECK(contains(cm.logs("meter"), "OWN-RC=0"));
    CHECK(contains(cm.logs("meter"), "\n1000\n"));
    CHECK(cloudAttributes()["meter.kwh"] == "7");
    const pid_t meterPid = static_cast<pid_t>(cm.pid("meter"));
    const std::uint32_t meterUid =
        static_cast<std::uint32_t>(std::stoul(str::split(statusField(meterPid, "Uid"), '\t')[0]));
    CHECK(userName(meterUid) == f.userPrefix + "meter+1000");
    CHECK(userName(meterUid - 1000) == f.userPrefix + "meter");
    cm.remove("meter", true);
    CHECK(userName(meterUid).empty());

    // Without app_api the same image has no bus socket at all.
    REQUIRE(cm.install(archive, R"({"name": "nobus"})").success);
    REQUIRE(cm.waitLog("nobus", "OTHER-RC=", std::chrono::seconds(120)));
    CHECK_FALSE(contains(cm.logs("nobus"), "OWN-RC=0"));
    CHECK(cloudAttributes().count("nobus.temp") == 0);
}

TEST_CASE("each app's root-mapped host uid has a user name while the app is installed: published at install, "
          "removed with the app, written again at start-up, and a record of an app that is gone is removed")
{
    requireNssSystemd();
    Fixture f;
    CmClient cm;
    const std::string archive = f.image("named", "exec sleep 100000");
    REQUIRE(cm.install(archive, R"({"name": "named"})").success);
    REQUIRE(cm.waitState("named", "running", std::chrono::seconds(60)));
    const std::string name = f.userPrefix + "named";
    const auto user = test::lookupUser(name);
    REQUIRE(user.has_value());
    const std::optional<std::uint32_t> uid = user->first;
    CHECK(*uid >= f.firstId);
    CHECK(userName(*uid) == name);
    // The host-side owner of the app's /data is that name (ls -l shows it).
    struct stat st {};
    REQUIRE(::stat(f.dataDir("named").c_str(), &st) == 0);
    CHECK(st.st_uid == *uid);
    struct group* g = ::getgrgid(*uid);
    REQUIRE(g != nullptr);
    CHECK(std::string(g->gr_name) == name);
    // The app's process runs as that uid.
    CHECK(str::startsWith(statusField(static_cast<pid_t>(cm.pid("named")), "Uid"), std::to_string(*uid) + "\t"));

    // /run is empty after a reboot; the apps are not: the manager's start-up writes the names again.
    // And a record this manager wrote for an app that is gone (removed while the records were kept) goes.
    (void)f.stack.stop("container-manager");
    const std::string record = "/run/userdb/" + name + ".user";
    const std::string text = *fs::readFile(record);
    for (const auto& file : {record, "/run/userdb/" + name + ".group", "/run/userdb/" + std::to_string(*uid) + ".user",
                             "/run/userdb/" + std::to_string(*uid) + ".group"}) {
        REQUIRE(::unlink(file.c_str()) == 0);
    }
    CHECK(userName(*uid).empty());
    const std::string ghost = f.userPrefix + "ghost";
    auto ghostRecord = json::parse(text);
    ghostRecord["userName"] = ghost;
    ghostRecord["uid"] = 4000000000u;
    ghostRecord["gid"] = 4000000000u;
    ghostRecord["org.mbl.ContainerManager1"]["app"] = "ghost";
    REQUIRE(fs::writeFileAtomic("/run/userdb/" + ghost + ".user", ghostRecord.dump(), 0644));
    REQUIRE(::symlink((ghost + ".user").c_str(), "/run/userdb/4000000000.user") == 0);
    CHECK(userName(4000000000u) == ghost);
    // Someone else's record under our prefix (not written by this manager) is left alone.
    const std::string foreign = f.userPrefix + "foreign";
    REQUIRE(fs::writeFileAtomic("/run/userdb/" + foreign + ".user",
                                json{{"userName", foreign}, {"uid", 4000000001u}, {"gid", 4000000001u}}.dump(), 0644));
    f.startManager();
    REQUIRE(cm.waitState("named", "running", std::chrono::seconds(60)));
    CHECK(userName(*uid) == name);
    CHECK(userName(4000000000u).empty());
    CHECK_FALSE(fs::exists("/run/userdb/4000000000.user"));
    CHECK(fs::exists("/run/userdb/" + foreign + ".user"));

    // Removing the app (and its data) frees its ids and their name.
    cm.remove("named", true);
    CHECK(userName(*uid).empty());
    CHECK_FALSE(test::lookupUser(name).has_value());
    CHECK(::getgrgid(*uid) == nullptr);
}

TEST_CASE("an app_api app whose bus socket is missing fails to start naming the socket and the setting")
{
    Fixture f;
    const std::string missing = f.work.path() + "/no-such-socket";
    f.configure({{"app_api", {{"bus_socket", missing}}}});
    CmClient cm;
    const std::string archive = f.image("sensor", "while true; do sleep 1; done");
    REQUIRE(cm.install(archive, R"({"name": "sensor", "app_api": true})").success);
    REQUIRE(cm.waitLog("sensor", "start failed", std::chrono::seconds(60)));
    CHECK(contains(cm.logs("sensor"), "app_api: no bus socket at " + missing + " (app_api.bus_socket in containers.json)"));
    CHECK_FALSE(contains(cm.logs("sensor"), "can't get final child's PID"));
    // The same image without app_api needs no socket and runs.
    REQUIRE(cm.install(archive, R"({"name": "plain"})").success);
    CHECK(cm.waitState("plain", "running", std::chrono::seconds(60)));
}

TEST_CASE("an app_api app whose host uid has no user name fails to start saying why, instead of running without "
          "a bus it can reach")
{
    Fixture f;
    // Records written where nss-systemd does not look: the uid has no name.
    f.configure({{"app_api", {{"bus_socket", busSocket(f.stack)}}},
                 {"userns", {{"userdb_dir", f.work.path() + "/not-read-by-nss"}}}});
    CmClient cm;
    const std::string archive = f.image("sensor", "while true; do sleep 1; done");
    REQUIRE(cm.install(archive, R"({"name": "sensor", "app_api": true})").success);
    REQUIRE(cm.waitLog("sensor", "start failed", std::chrono::seconds(60)));
    const std::string log = cm.logs("sensor");
    INFO(log);
    CHECK(contains(log, "has no user name, and the bus refuses uids it cannot look up"));
    CHECK(contains(log, "/etc/nsswitch.conf"));
    CHECK(cm.state("sensor") != "running");
    // The records are in the configured folder all the same.
    CHECK(fs::exists(f.work.path() + "/not-read-by-nss/" + f.userPrefix + "sensor.user"));
}
