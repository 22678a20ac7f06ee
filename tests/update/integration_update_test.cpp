// SPDX-License-Identifier: Apache-2.0
// mbl-update on a private system bus with its real policy: Install streamed from
// a pipe with progress and a Completed signal, Busy, Inspect, the reboot cycle
// with the daemon restarted as after a real reboot, kill -9 at the test pause
// points, mblctl update, and who may call what.

#include "update_fixture.h"

#include "harness.h"

#include "mbl/crypto.h"
#include "mbl/dbus/bus.h"
#include "mbl/fs.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <fcntl.h>
#include <mutex>
#include <thread>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test::update;
using test::TestStack;

namespace {

constexpr const char* kIface = "org.mbl.Update1";

const Pki& pki()
{
    static test::TempDir dir("mbl-update-pki");
    static Pki p(dir.path() + "/pki");
    return p;
}

BundleSpec signedSpec()
{
    BundleSpec s;
    s.key = pki().signKey;
    s.cert = pki().signPem;
    s.chain = pki().intPem;
    return s;
}

// A client connection with its own event-loop thread, recording what the service emits.
struct Client {
    std::unique_ptr<sdbus::IConnection> conn = dbus::connectSystemBus();
    std::unique_ptr<sdbus::IProxy> proxy;
    std::mutex m;
    std::condition_variable cv;
    struct Done {
        std::string id;
        bool ok;
        std::string name, message;
    };
    std::vector<Done> completed;
    std::vector<std::uint32_t> progress;

    Client()
    {
        proxy = sdbus::createProxy(*conn, "org.mbl.Update1", "/org/mbl/Update1");
        proxy->uponSignal("Completed")
            .onInterface(kIface)
            .call([this](const std::string& id, bool ok, const std::string& n, const std::string& msg) {
                std::lock_guard<std::mutex> l(m);
                completed.push_back({id, ok, n, msg});
                cv.notify_all();
            });
        proxy->uponSignal("PropertiesChanged")
            .onInterface("org.freedesktop.DBus.Properties")
            .call([this](const std::string&, const std::map<std::string, sdbus::Variant>& changed,
                         const std::vector<std::string>&) {
                auto it = changed.find("Progress");
                if (it != changed.end()) {
                    std::lock_guard<std::mutex> l(m);
                    progress.push_back(it->second.get<std::uint32_t>());
                    cv.notify_all();
                }
            });
        proxy->finishRegistration();
        conn->enterEventLoopAsync();
    }
    ~Client()
    {
        proxy.reset();
        conn->leaveEventLoop();
    }
    std::string install(int fd, const std::map<std::string, sdbus::Variant>& options = {})
    {
        std::string id;
        proxy->callMethod("Install").onInterface(kIface).withArguments(sdbus::UnixFd(fd), options).storeResultsTo(id);
        return id;
    }
    // Waits for a Progress change that satisfies pred (an event, not a delay).
    bool waitProgress(const std::function<bool(std::uint32_t)>& pred, std::chrono::seconds timeout)
    {
        std::unique_lock<std::mutex> l(m);
        return cv.wait_for(l, timeout, [&] { return std::any_of(progress.begin(), progress.end(), pred); });
    }
    Done waitCompleted(const std::string& id, std::chrono::seconds timeout = std::chrono::seconds(60))
    {
        std::unique_lock<std::mutex> l(m);
        Done d{"", false, "timeout", "no Completed signal"};
        cv.wait_for(l, timeout, [&] {
            for (const auto& c : completed) {
                if (c.id == id) {
                    d = c;
                    return true;
                }
            }
            return false;
        });
        return d;
    }
    template <typename T>
    T get(const char* name)
    {
        return proxy->getProperty(name).onInterface(kIface).get<T>();
    }
};

Fd openRead(const std::string& path)
{
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    return fd;
}

bool waitForFile(const std::string& path, std::chrono::seconds timeout)
{
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (fs::exists(path)) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
}

std::string mblctl()
{
    return test::buildRoot() + "/services/mblctl/mblctl";
}

} // namespace

TEST_CASE("Install streams a bundle from a pipe with progress and Completed; after the reboot Commit raises the floor")
{
    TestStack stack;
    test::TempDir work("mbl-update-it");
    Device dev(stack.root(), pki());
    const std::string image = work.path() + "/rootfs.img";
    makeImage(image, 3u << 20, 5);
    auto spec = signedSpec();
    spec.rootfs = image;
    spec.securityVersion = 7;
    const std::string bundle = work.path() + "/fw.bundle";
    REQUIRE(createBundle(spec, bundle).status.success());
    REQUIRE(stack.start("update"));
    const std::string aBefore = sha256File(dev.slotA);
    {
        Client c;
        CHECK(c.get<std::string>("BootedSlot") == "a");
        CHECK(c.get<std::string>("FirmwareVersion") == "1.0.0");
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
        Fd rd(p[0]);
        Fd wr(p[1]);
        const std::string id = c.install(rd.get());
        rd.reset();
        CHECK_FALSE(id.empty());
        CHECK(c.get<std::string>("Operation") == id);
        // A second install while the first runs is refused at once.
        Fd other = openRead(bundle);
        try {
            c.install(other.get());
            FAIL("second Install was accepted");
        } catch (const sdbus::Error& e) {
            CHECK(e.getName() == "org.mbl.Error.Busy");
        }
        const std::string data = readFile(bundle);
        for (std::size_t off = 0; off < data.size(); off += 256 * 1024) {
            REQUIRE(fs::writeAll(wr.get(), data.data() + off, std::min<std::size_t>(256 * 1024, data.size() - off)));
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        wr.reset();
        auto done = c.waitCompleted(id);
        INFO(done.name << ": " << done.message << "\n" << stack.log("update"));
        REQUIRE(done.ok);
        CHECK(c.get<std::string>("Operation").empty());
        CHECK(c.get<std::uint32_t>("Progress") == 100);
        CHECK(c.get<std::string>("ActiveSlot") == "b");
        {
            std::lock_guard<std::mutex> l(c.m);
            CHECK(c.progress.size() >= 3);
        }
    }
    CHECK(sha256File(dev.slotA) == aBefore);
    stack.stop("update");
    REQUIRE(dev.reboot() == "b");
    REQUIRE(stack.start("update"));
    auto status = stack.runTool({mblctl(), "--json", "update", "status"});
    INFO(status.out << status.err);
    auto sj = nlohmann::json::parse(status.out);
    CHECK(sj["booted_slot"] == "b");
    CHECK(sj["firmware_version"] == "2.0.0");
    CHECK(sj["slots"][1]["state"] == "trial");
    auto commit = stack.runTool({mblctl(), "update", "commit"});
    INFO(commit.err);
    CHECK(commit.status.success());
    auto floor = stack.busctl({"get-property", "org.mbl.Update1", "/org/mbl/Update1", kIface, "SecurityVersionFloor"});
    CHECK(floor.out == "t 7\n");
}

TEST_CASE("Inspect returns the verified manifest and writes nothing; a foreign signature is SignatureInvalid")
{
    TestStack stack;
    test::TempDir work("mbl-update-it");
    Device dev(stack.root(), pki());
    const std::string image = work.path() + "/rootfs.img";
    makeImage(image, 1u << 20, 6);
    auto spec = signedSpec();
    spec.rootfs = image;
    const std::string bundle = work.path() + "/fw.bundle";
    REQUIRE(createBundle(spec, bundle).status.success());
    REQUIRE(stack.start("update"));
    const std::string bBefore = sha256File(dev.slotB);
    const auto envBefore = dev.readEnv();
    Client c;
    Fd fd = openRead(bundle);
    std::string manifest;
    c.proxy->callMethod("Inspect").onInterface(kIface).withArguments(sdbus::UnixFd(fd.get())).storeResultsTo(manifest);
    auto j = nlohmann::json::parse(manifest);
    CHECK(j["version"] == "2.0.0");
    CHECK(j["payloads"][0]["type"] == "rootfs");
    CHECK(sha256File(dev.slotB) == bBefore);
    CHECK(dev.readEnv() == envBefore);

    spec.key = pki().otherKey;
    spec.cert = pki().otherPem;
    spec.chain.clear();
    REQUIRE(createBundle(spec, bundle).status.success());
    Fd bad = openRead(bundle);
    try {
        c.proxy->callMethod("Inspect").onInterface(kIface).withArguments(sdbus::UnixFd(bad.get())).storeResultsTo(manifest);
        FAIL("foreign bundle passed Inspect");
    } catch (const sdbus::Error& e) {
        CHECK(e.getName() == "org.mbl.Error.SignatureInvalid");
    }
    // Install of the same bundle: Completed with the error name, LastError set.
    Fd bad2 = openRead(bundle);
    const std::string id = c.install(bad2.get());
    auto done = c.waitCompleted(id);
    CHECK_FALSE(done.ok);
    CHECK(done.name == "org.mbl.Error.SignatureInvalid");
    CHECK(c.get<std::string>("LastError").rfind("org.mbl.Error.SignatureInvalid: ", 0) == 0);
    CHECK(sha256File(dev.slotB) == bBefore);
}

TEST_CASE("kill -9 at any point of an install leaves the active slot untouched and the next start reports it failed")
{
    for (const char* point : {"verified", "rootfs-half", "rootfs-written", "before-arm", "after-arm"}) {
        SECTION(point)
        {
            TestStack stack;
            test::TempDir work("mbl-update-it");
            Device dev(stack.root(), pki());
            const std::string image = work.path() + "/rootfs.img";
            makeImage(image, 3u << 20, 8);
            auto spec = signedSpec();
            spec.rootfs = image;
            const std::string bundle = work.path() + "/fw.bundle";
            REQUIRE(createBundle(spec, bundle).status.success());
            TestStack::StartOptions so;
            so.env = {std::string("MBL_UPDATE_TEST_PAUSE=") + point};
            REQUIRE(stack.start("update", so));
            const std::string aBefore = sha256File(dev.slotA);
            {
                Client c;
                Fd fd = openRead(bundle);
                c.install(fd.get());
                REQUIRE(waitForFile(dev.stateDir + "/paused", std::chrono::seconds(30)));
            }
            stack.kill("update");
            CHECK(sha256File(dev.slotA) == aBefore);
            auto env = dev.readEnv();
            const bool armed = env["BOOT_ORDER"].rfind("B", 0) == 0 && env["BOOT_B_LEFT"] != "0";
            if (std::string(point) == "after-arm") {
                // Armed, but only for a fully written and verified slot.
                CHECK(armed);
                CHECK(crypto::sha256Hex(readFile(dev.slotB).substr(0, 3u << 20)) == sha256File(image));
            } else {
                CHECK_FALSE(armed);
            }
            ::unlink((dev.stateDir + "/paused").c_str());
            REQUIRE(stack.start("update"));
            Client c;
            CHECK(c.get<std::string>("LastError").find("interrupted") != std::string::npos);
            CHECK(c.get<std::string>("Operation").empty());
            CHECK(c.get<std::string>("ActiveSlot") == "a");
            env = dev.readEnv();
            CHECK(env["BOOT_ORDER"] == "A");
            auto staging = mustRun({"find", dev.stateDir + "/staging", "-mindepth", "1"});
            CHECK(staging.out.empty());
            stack.stop("update");
            CHECK(dev.reboot() == "a");
        }
    }
}

TEST_CASE("kill -9 while app payloads are being staged leaves no staged garbage and the next start reports that "
          "operation failed")
{
    // "rootfs-half": the rootfs (first payload) is half written, staging made for the
    // apps; "staged": the rootfs is written and verified, one app staged, one not.
    for (const char* point : {"staged", "rootfs-half"}) {
        SECTION(point)
        {
            TestStack stack;
            test::TempDir work("mbl-update-it");
            Device dev(stack.root(), pki());
            const std::string image = work.path() + "/rootfs.img";
            const std::string app1 = work.path() + "/one.oci.tar";
            const std::string app2 = work.path() + "/two.oci.tar";
            makeImage(image, 3u << 20, 8);
            makeImage(app1, 200000, 3);
            makeImage(app2, 200000, 4);
            auto spec = signedSpec();
            spec.rootfs = image;
            spec.apps = {{"one", app1}, {"two", app2}};
            const std::string bundle = work.path() + "/fw.bundle";
            REQUIRE(createBundle(spec, bundle).status.success());
            TestStack::StartOptions so;
            so.env = {std::string("MBL_UPDATE_TEST_PAUSE=") + point};
            REQUIRE(stack.start("update", so));
            std::string id;
            {
                Client c;
                Fd fd = openRead(bundle);
                id = c.install(fd.get());
                REQUIRE(waitForFile(dev.stateDir + "/paused", std::chrono::seconds(30)));
            }
            auto before = mustRun({"find", dev.stateDir + "/staging", "-mindepth", "2", "-type", "f"});
            INFO("staged at the kill: " << before.out);
            stack.kill("update");
            ::unlink((dev.stateDir + "/paused").c_str());
            REQUIRE(stack.start("update"));
            Client c;
            const std::string last = c.get<std::string>("LastError");
            CHECK(last.rfind("org.mbl.Error.Failed: install " + id + " was interrupted", 0) == 0);
            CHECK(c.get<std::string>("Operation").empty());
            CHECK(c.get<std::string>("ActiveSlot") == "a");
            auto staging = mustRun({"find", dev.stateDir + "/staging", "-mindepth", "1"});
            CHECK(staging.out.empty());
            // Nothing of the interrupted operation can be handed on.
            CHECK_THROWS(c.proxy->callMethod("OpenPayload").onInterface(kIface).withArguments(id, std::string("app-one")));
            auto states = c.get<std::vector<sdbus::Struct<std::string, std::string, std::string, std::uint64_t>>>(
                "SlotStates");
            for (const auto& st : states) {
                if (st.get<0>() == "b") {
                    CHECK(st.get<1>() == "empty");
                    CHECK(st.get<2>().empty());
                }
            }
            // A new install after the restart works.
            Fd fd = openRead(bundle);
            const std::string again = c.install(fd.get());
            auto done = c.waitCompleted(again);
            INFO(done.name << ": " << done.message);
            CHECK(done.ok);
            stack.stop("update");
            CHECK(dev.reboot() == "b");
        }
    }
}

TEST_CASE("mblctl update install shows the result, and mutating methods are closed to unprivileged users")
{
    TestStack stack;
    test::TempDir work("mbl-update-it");
    Device dev(stack.root(), pki());
    const std::string app = work.path() + "/app.tar";
    makeImage(app, 200000, 3);
    auto spec = signedSpec();
    spec.apps = {{"hello", app}};
    const std::string bundle = work.path() + "/apps.bundle";
    REQUIRE(createBundle(spec, bundle).status.success());
    REQUIRE(stack.start("update"));
    auto r = stack.runTool({mblctl(), "update", "install", bundle});
    INFO(r.out << r.err << stack.log("update"));
    CHECK(r.status.success());
    CHECK(r.out.find("installed (operation op-") != std::string::npos);
    auto denied = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Update1", kIface, "Commit"}, "mbl-test-user");
    CHECK_FALSE(denied.status.success());
    CHECK(denied.err.find("Access denied") != std::string::npos);
    auto deniedBad = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Update1", kIface, "MarkBad"}, "mbl-test-user");
    CHECK(deniedBad.err.find("Access denied") != std::string::npos);
    auto admin = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Update1", kIface, "Commit"}, "mbl-test-admin");
    CHECK(admin.status.success()); // slot a is good already: Commit is idempotent
    auto readable = stack.busctl({"get-property", "org.mbl.Update1", "/org/mbl/Update1", kIface, "SlotStates"},
                                 "mbl-test-user");
    CHECK(readable.status.success());
    auto bad = stack.runTool({mblctl(), "update", "mark-bad"});
    CHECK(bad.status.code == 1);
    CHECK(bad.err.find("mblctl: InvalidArgument:") != std::string::npos);
}

TEST_CASE("a new slot that is not committed before the next reboot is rolled back and the service says so")
{
    TestStack stack;
    test::TempDir work("mbl-update-it");
    Device dev(stack.root(), pki(), "uboot");
    const std::string image = work.path() + "/rootfs.img";
    makeImage(image, 2u << 20, 11);
    auto spec = signedSpec();
    spec.rootfs = image;
    spec.securityVersion = 9;
    const std::string bundle = work.path() + "/fw.bundle";
    REQUIRE(createBundle(spec, bundle).status.success());
    REQUIRE(stack.start("update"));
    auto r = stack.runTool({mblctl(), "update", "install", bundle});
    INFO(r.out << r.err << stack.log("update"));
    REQUIRE(r.status.success());
    stack.stop("update");
    REQUIRE(dev.reboot() == "b");
    REQUIRE(stack.start("update")); // the new firmware runs; nobody commits
    stack.stop("update");
    REQUIRE(dev.reboot() == "a"); // its single trial is used up: the bootloader falls back
    REQUIRE(stack.start("update"));
    auto status = stack.runTool({mblctl(), "--json", "update", "status"});
    auto sj = nlohmann::json::parse(status.out);
    CHECK(sj["booted_slot"] == "a");
    CHECK(sj["active_slot"] == "a");
    CHECK(sj["firmware_version"] == "1.0.0");
    CHECK(sj["security_version_floor"] == 0);
    CHECK(sj["slots"][1]["state"] == "bad");
    CHECK(sj["last_error"].get<std::string>().find("rollback: slot b (version 2.0.0)") != std::string::npos);
    auto commit = stack.runTool({mblctl(), "update", "commit"});
    CHECK(commit.status.success()); // slot a is good: nothing to commit
    CHECK(dev.reboot() == "a");
}

namespace {

std::string busErrorOf(const std::function<void()>& call)
{
    try {
        call();
    } catch (const sdbus::Error& e) {
        return e.getName();
    }
    return "";
}

std::string slotStateOf(Client& c, const std::string& slot)
{
    for (const auto& st :
         c.get<std::vector<sdbus::Struct<std::string, std::string, std::string, std::uint64_t>>>("SlotStates")) {
        if (st.get<0>() == slot) {
            return st.get<1>();
        }
    }
    return "?";
}

} // namespace

TEST_CASE("Install with arm=false over the bus stages firmware and apps without arming; after a restart Arm arms it "
          "and the reboot tries it; Release drops it; bad options and unknown operations are named errors")
{
    TestStack stack;
    test::TempDir work("mbl-update-it");
    Device dev(stack.root(), pki());
    const std::string image = work.path() + "/rootfs.img";
    const std::string app = work.path() + "/hello.oci.tar";
    makeImage(image, 2u << 20, 21);
    makeImage(app, 100000, 22);
    auto spec = signedSpec();
    spec.rootfs = image;
    spec.securityVersion = 2;
    const std::string fw = work.path() + "/fw.bundle";
    REQUIRE(createBundle(spec, fw).status.success());
    auto appSpec = signedSpec();
    appSpec.apps = {{"hello", app}};
    const std::string apps = work.path() + "/apps.bundle";
    REQUIRE(createBundle(appSpec, apps).status.success());
    REQUIRE(stack.start("update"));
    const std::map<std::string, sdbus::Variant> noArm{{"arm", sdbus::Variant(false)}};
    std::string fwOp, appOp;
    {
        Client c;
        // Options are checked before anything starts.
        Fd f0 = openRead(fw);
        CHECK(busErrorOf([&] { c.install(f0.get(), {{"arm", sdbus::Variant(std::string("no"))}}); }) ==
              "org.mbl.Error.InvalidArgument");
        CHECK(busErrorOf([&] { c.install(f0.get(), {{"amr", sdbus::Variant(false)}}); }) ==
              "org.mbl.Error.InvalidArgument");
        CHECK(c.get<std::string>("Operation").empty());
        Fd f1 = openRead(fw);
        fwOp = c.install(f1.get(), noArm);
        auto d1 = c.waitCompleted(fwOp);
        INFO(d1.name << ": " << d1.message << "\n" << stack.log("update"));
        REQUIRE(d1.ok);
        Fd f2 = openRead(apps);
        appOp = c.install(f2.get(), noArm);
        REQUIRE(c.waitCompleted(appOp).ok);
        CHECK(c.get<std::string>("ActiveSlot") == "a");
        CHECK(slotStateOf(c, "b") == "staged");
        CHECK(dev.readEnv()["BOOT_ORDER"] == "A");
    }
    stack.kill("update"); // staging is on disk: it survives even a kill -9
    REQUIRE(stack.start("update"));
    {
        Client c;
        CHECK(slotStateOf(c, "b") == "staged");
        sdbus::UnixFd payload;
        c.proxy->callMethod("OpenPayload").onInterface(kIface).withArguments(appOp, std::string("app-hello"))
            .storeResultsTo(payload);
        CHECK(crypto::sha256HexOfFd(payload.get())->first == sha256File(app));
        CHECK(busErrorOf([&] { c.proxy->callMethod("Arm").onInterface(kIface).withArguments(appOp); }) ==
              "org.mbl.Error.NotFound");
        CHECK(busErrorOf([&] { c.proxy->callMethod("Arm").onInterface(kIface).withArguments(std::string("op-x")); }) ==
              "org.mbl.Error.NotFound");
        // Who may: Arm and Release are mutating.
        auto denied = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Update1", kIface, "Arm", "s", fwOp},
                                   "mbl-test-user");
        CHECK(denied.err.find("Access denied") != std::string::npos);
        denied = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Update1", kIface, "Release", "s", fwOp},
                              "mbl-test-user");
        CHECK(denied.err.find("Access denied") != std::string::npos);
        auto armed = stack.runTool({mblctl(), "update", "arm", fwOp});
        INFO(armed.out << armed.err << stack.log("update"));
        REQUIRE(armed.status.success());
        CHECK(c.get<std::string>("ActiveSlot") == "b");
        CHECK(slotStateOf(c, "b") == "trial");
        c.proxy->callMethod("Release").onInterface(kIface).withArguments(appOp);
        c.proxy->callMethod("Release").onInterface(kIface).withArguments(appOp); // idempotent
        CHECK(busErrorOf([&] {
                  c.proxy->callMethod("OpenPayload").onInterface(kIface).withArguments(appOp, std::string("app-hello"));
              }) == "org.mbl.Error.NotFound");
    }
    stack.stop("update");
    REQUIRE(dev.reboot() == "b");
    REQUIRE(stack.start("update"));
    auto commit = stack.runTool({mblctl(), "update", "commit"});
    INFO(commit.err);
    CHECK(commit.status.success());
    auto floor = stack.busctl({"get-property", "org.mbl.Update1", "/org/mbl/Update1", kIface, "SecurityVersionFloor"});
    CHECK(floor.out == "t 2\n");
    auto released = stack.runTool({mblctl(), "update", "release", fwOp});
    CHECK(released.status.success());
    auto staging = mustRun({"find", dev.stateDir + "/staging", "-mindepth", "1"});
    CHECK(staging.out.empty());
}

TEST_CASE("Progress of an Install moves while the slot is written")
{
    TestStack stack;
    test::TempDir work("mbl-update-it");
    Device dev(stack.root(), pki());
    const std::string image = work.path() + "/rootfs.img";
    makeImage(image, 3u << 20, 31);
    auto spec = signedSpec();
    spec.rootfs = image;
    const std::string bundle = work.path() + "/fw.bundle";
    REQUIRE(createBundle(spec, bundle).status.success());
    TestStack::StartOptions so;
    so.env = {"MBL_UPDATE_TEST_PAUSE=rootfs-half"};
    REQUIRE(stack.start("update", so));
    {
        Client c;
        Fd fd = openRead(bundle);
        const std::string id = c.install(fd.get());
        // The daemon stops in the middle of the slot write; by then Progress was announced above 0.
        REQUIRE(waitForFile(dev.stateDir + "/paused", std::chrono::seconds(30)));
        CHECK(c.waitProgress([](std::uint32_t p) { return p >= 40 && p < 100; }, std::chrono::seconds(30)));
        const auto now = c.get<std::uint32_t>("Progress");
        CHECK(now >= 40);
        CHECK(now < 100);
        CHECK(c.get<std::string>("Operation") == id);
    }
    stack.kill("update");
}

TEST_CASE("kill -9 during an install, then /var/lib/mbl wiped (a new data partition): a partly written slot is never "
          "armed; a slot armed before the kill is tried, and falls back without a commit")
{
    for (const char* point : {"rootfs-half", "before-arm", "after-arm"}) {
        SECTION(point)
        {
            TestStack stack;
            test::TempDir work("mbl-update-it");
            Device dev(stack.root(), pki(), "uboot");
            const std::string image = work.path() + "/rootfs.img";
            makeImage(image, 3u << 20, 12);
            auto spec = signedSpec();
            spec.rootfs = image;
            spec.securityVersion = 6;
            const std::string bundle = work.path() + "/fw.bundle";
            REQUIRE(createBundle(spec, bundle).status.success());
            TestStack::StartOptions so;
            so.env = {std::string("MBL_UPDATE_TEST_PAUSE=") + point};
            REQUIRE(stack.start("update", so));
            {
                Client c;
                Fd fd = openRead(bundle);
                c.install(fd.get());
                REQUIRE(waitForFile(dev.stateDir + "/paused", std::chrono::seconds(30)));
            }
            stack.kill("update");
            REQUIRE(fs::removeTree(stack.root() + "/var/lib/mbl"));
            REQUIRE(stack.start("update"));
            const bool armed = std::string(point) == "after-arm";
            {
                Client c;
                CHECK(c.get<std::string>("ActiveSlot") == (armed ? "b" : "a"));
                CHECK(slotStateOf(c, "b") == (armed ? "trial" : "empty"));
                CHECK(c.get<std::uint64_t>("SecurityVersionFloor") == 0);
            }
            stack.stop("update");
            REQUIRE(dev.reboot() == (armed ? "b" : "a"));
            REQUIRE(stack.start("update"));
            if (armed) {
                {
                    Client c;
                    CHECK(slotStateOf(c, "b") == "trial"); // on trial, not committed by itself
                    CHECK(c.get<std::uint64_t>("SecurityVersionFloor") == 0);
                }
                stack.stop("update");
                REQUIRE(dev.reboot() == "a"); // never committed: the bootloader falls back
                REQUIRE(stack.start("update"));
                Client c;
                CHECK(slotStateOf(c, "b") == "bad");
                CHECK(c.get<std::string>("LastError").find("rollback: slot b") != std::string::npos);
            }
        }
    }
}

TEST_CASE("mbl-update refuses to start on a misspelled key of update.json and says which")
{
    TestStack stack;
    Device dev(stack.root(), pki());
    dev.config["slots"][1]["devcie"] = "/dev/mmcblk0p3";
    dev.writeConfig();
    auto st = stack.start("update");
    REQUIRE_FALSE(st);
    CHECK(stack.log("update").find("update.json: unknown key 'slots[1].devcie'") != std::string::npos);
    // The state directory is made by the harness (as systemd's StateDirectory=
    // would); the service wrote nothing in it and never touched the environment.
    CHECK_FALSE(fs::exists(dev.stateDir + "/state.json"));
    CHECK_FALSE(fs::exists(dev.env));
}

TEST_CASE("a rootfs that is not a whole file system for the slots (a truncated ext4 image; other bytes where the slots "
          "hold ext4) is refused before the slot is touched, with a named error; the whole image installs")
{
    TestStack stack;
    test::TempDir work("mbl-update-it");
    Device dev(stack.root(), pki());
    // A real ext4 image (mke2fs -d of a small tree), and the same image cut
    // short, as a broken build or a partial copy leaves it, then signed.
    const std::string tree = work.path() + "/tree";
    REQUIRE(fs::makeDirs(tree + "/etc"));
    writeFile(tree + "/etc/os-release", "ID=mbl\n");
    const std::string image = work.path() + "/rootfs.ext4";
    REQUIRE(mustRun({"mke2fs", "-q", "-t", "ext4", "-d", tree, image, "3M"}).status.success());
    const std::string cut = work.path() + "/rootfs-cut.ext4";
    writeFile(cut, readFile(image).substr(0, 1u << 20));
    const std::string other = work.path() + "/rootfs.bin";
    makeImage(other, 1u << 20, 21);
    auto bundleOf = [&](const std::string& rootfs, const std::string& name) {
        auto spec = signedSpec();
        spec.rootfs = rootfs;
        const std::string out = work.path() + "/" + name;
        REQUIRE(createBundle(spec, out).status.success());
        return out;
    };
    const std::string bCut = bundleOf(cut, "cut.bundle");
    const std::string bOther = bundleOf(other, "other.bundle");
    const std::string bWhole = bundleOf(image, "whole.bundle");
    const std::string slotBefore = sha256File(dev.slotB);
    auto install = [&](const std::string& bundle) {
        Client c;
        Fd fd = openRead(bundle);
        auto done = c.waitCompleted(c.install(fd.get()));
        INFO(stack.log("update"));
        return done;
    };

    REQUIRE(stack.start("update"));
    const auto envBefore = dev.readEnv(); // as the service wrote it at start
    auto done = install(bCut);
    CHECK_FALSE(done.ok);
    CHECK(done.name == "org.mbl.Error.InvalidArgument");
    CHECK(done.message.find("truncated") != std::string::npos);
    CHECK(done.message.find(std::to_string(3u << 20)) != std::string::npos);
    CHECK(sha256File(dev.slotB) == slotBefore);
    CHECK(dev.readEnv() == envBefore);

    // Slots declared to hold ext4: bytes that are not ext4 are refused.
    stack.stop("update");
    dev.config["slots"][0]["filesystem"] = "ext4";
    dev.config["slots"][1]["filesystem"] = "ext4";
    dev.writeConfig();
    REQUIRE(stack.start("update"));
    done = install(bOther);
    CHECK_FALSE(done.ok);
    CHECK(done.name == "org.mbl.Error.Incompatible");
    CHECK(done.message.find("not an ext4 file system") != std::string::npos);
    CHECK(sha256File(dev.slotB) == slotBefore);
    CHECK(dev.readEnv() == envBefore);

    done = install(bWhole);
    INFO(done.name << ": " << done.message);
    CHECK(done.ok);
    CHECK(sha256File(dev.slotB).size() == 64);
    Client c;
    CHECK(c.get<std::string>("ActiveSlot") == "b");
}

TEST_CASE("mbl-update refuses a slot file system it does not know and names the key")
{
    TestStack stack;
    Device dev(stack.root(), pki());
    dev.config["slots"][0]["filesystem"] = "ext5";
    dev.writeConfig();
    auto st = stack.start("update");
    REQUIRE_FALSE(st);
    CHECK(stack.log("update").find("key 'slots[0].filesystem' must be") != std::string::npos);
}
