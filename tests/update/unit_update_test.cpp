// SPDX-License-Identifier: Apache-2.0
// The bundle format and the update engine without a bus: signatures in both
// directions with plain openssl, every bad input of issue 5 refused with its
// named error and nothing activated, and the A/B trial/commit/rollback cycle
// through the boot simulator on all three bootloader backends.

#include "update_fixture.h"

#include "harness.h"
#include "update_engine.h"

#include "mbl/config.h"
#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <thread>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test::update;
using mbl::update::UpdateEngine;

namespace {

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

std::unique_ptr<UpdateEngine> openEngine(const Device& d)
{
    auto cfg = Config::load(d.configDir + "/update.json", false);
    REQUIRE(cfg);
    auto e = UpdateEngine::open(Paths::underRoot(d.root), *cfg);
    if (!e) {
        FAIL("engine did not start: " << e.error().describe());
    }
    return std::move(e).value();
}

Status installFile(UpdateEngine& e, const std::string& path)
{
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    return e.install(fd.get(), UpdateEngine::newOperationId(), nullptr, {});
}

std::string slotState(const UpdateEngine& e, const std::string& slot)
{
    for (const auto& [name, s] : e.snapshot().slots) {
        if (name == slot) {
            return s.state;
        }
    }
    return "?";
}

struct World {
    test::TempDir dir{"mbl-update-unit"};
    Device dev;
    std::string image, bundle;
    explicit World(const std::string& bl = "file") : dev(dir.path() + "/root", pki(), bl)
    {
        image = dir.path() + "/rootfs-2.0.0.img";
        makeImage(image, 3u << 20, 42);
        bundle = dir.path() + "/fw-2.0.0.bundle";
    }
};

} // namespace

TEST_CASE("a bundle made by mbl-bundle verifies with plain openssl cms -verify")
{
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    auto r = createBundle(spec, w.bundle);
    REQUIRE(r.status.success());
    auto members = readTar(w.bundle);
    REQUIRE(members.size() == 3);
    CHECK(members[0].first == "manifest.json");
    CHECK(members[1].first == "manifest.json.sig");
    CHECK(members[2].first == "rootfs");
    writeFile(w.dir.path() + "/m.json", members[0].second);
    writeFile(w.dir.path() + "/m.sig", members[1].second);
    auto v = mustRun({"openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", w.dir.path() + "/m.sig",
                      "-content", w.dir.path() + "/m.json", "-CAfile", pki().caPem, "-purpose", "any", "-out",
                      "/dev/null"});
    INFO(v.err);
    CHECK(v.status.success());
}

TEST_CASE("a manifest signed by plain openssl cms -sign is accepted by mbl-bundle verify and installed by the engine")
{
    World w;
    const std::string manifest = w.dir.path() + "/manifest.json";
    const std::string sig = w.dir.path() + "/manifest.json.sig";
    auto m = mustRun({bundleTool(), "create", "--version", "2.0.0", "--security-version", "1", "--compatible",
                      "mbl-test-board", "--rootfs", w.image, "--manifest-out", manifest});
    REQUIRE(m.status.success());
    auto s = mustRun({"openssl", "cms", "-sign", "-binary", "-in", manifest, "-signer", pki().signPem, "-inkey",
                      pki().signKey, "-certfile", pki().intPem, "-outform", "DER", "-out", sig, "-nosmimecap"});
    REQUIRE(s.status.success());
    auto a = mustRun({bundleTool(), "assemble", "--manifest", manifest, "--signature", sig, "--rootfs", w.image, "-o",
                      w.bundle});
    INFO(a.err);
    REQUIRE(a.status.success());
    auto v = mustRun({bundleTool(), "verify", "--trust", w.dev.configDir + "/trust", w.bundle});
    INFO(v.err);
    CHECK(v.status.success());
    auto e = openEngine(w.dev);
    auto st = installFile(*e, w.bundle);
    INFO((st ? std::string() : st.error().describe()));
    CHECK(st);
    CHECK(sha256File(w.dev.slotB).substr(0, 8) != std::string());
}

TEST_CASE("mbl-bundle inspect shows the manifest, as text and as JSON")
{
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    auto t = mustRun({bundleTool(), "inspect", w.bundle});
    CHECK(t.status.success());
    CHECK(t.out.find("security_version: 1") != std::string::npos);
    auto j = mustRun({bundleTool(), "inspect", "--json", w.bundle});
    auto doc = nlohmann::json::parse(j.out);
    CHECK(doc["version"] == "2.0.0");
    CHECK(doc["payloads"][0]["sha256"] == sha256File(w.image));
}

TEST_CASE("firmware install → boot → commit makes the new slot permanent and raises the floor, on every backend")
{
    for (const char* bl : {"file", "uboot", "grub"}) {
        SECTION(bl)
        {
            World w(bl);
            auto spec = signedSpec();
            spec.rootfs = w.image;
            spec.securityVersion = 5;
            REQUIRE(createBundle(spec, w.bundle).status.success());
            const std::string slotABefore = sha256File(w.dev.slotA);
            {
                auto e = openEngine(w.dev);
                CHECK(e->snapshot().bootedSlot == "a");
                CHECK(e->snapshot().activeSlot == "a");
                CHECK(e->snapshot().firmwareVersion == "1.0.0");
                auto st = installFile(*e, w.bundle);
                INFO((st ? std::string() : st.error().describe()));
                REQUIRE(st);
                CHECK(e->snapshot().activeSlot == "b");
                CHECK(slotState(*e, "b") == "trial");
                // Commit before the reboot is refused: the new slot has not run yet.
                CHECK_FALSE(e->commit());
            }
            auto envArmed = w.dev.readEnv();
            CHECK(envArmed["BOOT_ORDER"] == "B A");
            CHECK(envArmed["BOOT_B_LEFT"] == "1");
            CHECK(sha256File(w.dev.slotA) == slotABefore);
            std::string bHead = readFile(w.dev.slotB).substr(0, 3u << 20);
            CHECK(crypto::sha256Hex(bHead) == sha256File(w.image));

            REQUIRE(w.dev.reboot() == "b");
            auto e = openEngine(w.dev);
            CHECK(e->snapshot().bootedSlot == "b");
            CHECK(slotState(*e, "b") == "trial");
            CHECK(e->snapshot().firmwareVersion == "2.0.0");
            CHECK(e->snapshot().floor == 0);
            REQUIRE(e->commit());
            CHECK(e->snapshot().floor == 5);
            CHECK(slotState(*e, "b") == "good");
            CHECK(w.dev.readEnv()["BOOT_B_LEFT"] == "3");
            // The floor is persistent.
            auto again = openEngine(w.dev);
            CHECK(again->snapshot().floor == 5);
            CHECK(w.dev.reboot() == "b");
        }
    }
}

TEST_CASE("the GRUB script mbl-ab.cfg passes grub-script-check")
{
    if (!fs::exists("/usr/bin/grub-script-check")) {
        test::skip("grub-script-check (grub-common) is not installed");
    }
    auto r = mustRun({"grub-script-check", test::sourceRoot() + "/services/update/grub/mbl-ab.cfg"});
    INFO(r.out << r.err);
    CHECK(r.status.success());
}

TEST_CASE("the GRUB script boots the first slot of BOOT_ORDER with attempts left and counts down in decimal")
{
    World w("grub");
    // Counters of two and three digits, an invalid counter and an unsafe name are handled.
    w.dev.writeEnv({{"BOOT_ORDER", "X;echo B A"}, {"BOOT_B_LEFT", "10"}, {"BOOT_A_LEFT", "100"}});
    for (int i = 10; i > 0; --i) {
        REQUIRE(w.dev.reboot() == "b");
        CHECK(w.dev.readEnv()["BOOT_B_LEFT"] == std::to_string(i - 1));
    }
    CHECK(w.dev.reboot() == "a");
    CHECK(w.dev.readEnv()["BOOT_A_LEFT"] == "99");
    CHECK(w.dev.readEnv()["BOOT_B_LEFT"] == "0");
    w.dev.writeEnv({{"BOOT_ORDER", "A B"}, {"BOOT_A_LEFT", "garbage"}, {"BOOT_B_LEFT", "1"}});
    CHECK(w.dev.reboot() == "b");
    CHECK(w.dev.reboot() == "");
}

TEST_CASE("a trial that is never committed falls back to the old slot after its attempts and reports the rollback")
{
    for (const char* bl : {"file", "grub"}) {
        SECTION(bl)
        {
            World w(bl);
            w.dev.config["trialAttempts"] = 2;
            w.dev.writeConfig();
            auto spec = signedSpec();
            spec.rootfs = w.image;
            spec.securityVersion = 3;
            REQUIRE(createBundle(spec, w.bundle).status.success());
            {
                auto e = openEngine(w.dev);
                REQUIRE(installFile(*e, w.bundle));
            }
            for (int i = 0; i < 2; ++i) {
                REQUIRE(w.dev.reboot() == "b");
                auto e = openEngine(w.dev); // the new firmware runs, nobody commits
                CHECK(slotState(*e, "b") == "trial");
                CHECK(e->snapshot().lastError.empty());
            }
            REQUIRE(w.dev.reboot() == "a");
            auto e = openEngine(w.dev);
            CHECK(e->snapshot().bootedSlot == "a");
            CHECK(e->snapshot().lastError.find("rollback") != std::string::npos);
            CHECK(slotState(*e, "b") == "bad");
            CHECK(e->snapshot().floor == 0);
            CHECK(e->snapshot().firmwareVersion == "1.0.0");
            CHECK(e->snapshot().activeSlot == "a");
            CHECK(w.dev.reboot() == "a");
        }
    }
}

TEST_CASE("the slot is written and verified the same with O_DIRECT, through the page cache, and with readBack off")
{
    struct Mode {
        const char* name;
        bool buffered;
        bool readBack;
    };
    for (const Mode& m : {Mode{"O_DIRECT, read back", false, true}, Mode{"page cache, read back", true, true},
                          Mode{"O_DIRECT, readBack off", false, false}}) {
        SECTION(m.name)
        {
            World w;
            w.dev.config["readBack"] = m.readBack;
            w.dev.writeConfig();
            // An image whose size is not a multiple of the O_DIRECT alignment: the tail goes
            // through the page cache.
            makeImage(w.image, (3u << 20) + 1234, 77);
            auto spec = signedSpec();
            spec.rootfs = w.image;
            REQUIRE(createBundle(spec, w.bundle).status.success());
            if (m.buffered) {
                ::setenv("MBL_UPDATE_TEST_BUFFERED", "1", 1);
            }
            auto e = openEngine(w.dev);
            ::unsetenv("MBL_UPDATE_TEST_BUFFERED");
            auto st = installFile(*e, w.bundle);
            INFO((st ? std::string() : st.error().describe()));
            REQUIRE(st);
            CHECK(slotState(*e, "b") == "trial");
            CHECK(crypto::sha256Hex(readFile(w.dev.slotB).substr(0, (3u << 20) + 1234)) == sha256File(w.image));
            CHECK(w.dev.reboot() == "b");
        }
    }
}

TEST_CASE("MarkBad abandons a trial: the next boot falls back to the old slot")
{
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    REQUIRE(installFile(*openEngine(w.dev), w.bundle));
    REQUIRE(w.dev.reboot() == "b");
    auto e = openEngine(w.dev);
    REQUIRE(e->markBad());
    CHECK(slotState(*e, "b") == "bad");
    CHECK(e->snapshot().activeSlot == "a");
    CHECK(w.dev.reboot() == "a");
    auto after = openEngine(w.dev);
    CHECK(after->snapshot().floor == 0);
}

TEST_CASE("a bundle with a corrupted rootfs byte is refused with SignatureInvalid and nothing is armed")
{
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    auto members = readTar(w.bundle);
    members[2].second[members[2].second.size() / 2] ^= 0x01;
    writeTar(w.bundle, members);
    const std::string aBefore = sha256File(w.dev.slotA);
    auto e = openEngine(w.dev);
    auto envBefore = w.dev.readEnv();
    auto st = installFile(*e, w.bundle);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::SignatureInvalid);
    CHECK(sha256File(w.dev.slotA) == aBefore);
    CHECK(e->snapshot().activeSlot == "a");
    CHECK(w.dev.readEnv()["BOOT_B_LEFT"] == "0");
    CHECK(w.dev.readEnv()["BOOT_ORDER"] == "A");
    CHECK(slotState(*e, "b") == "empty");
    CHECK(e->snapshot().lastError.find("SignatureInvalid") != std::string::npos);
    CHECK(w.dev.reboot() == "a");
}

TEST_CASE("a rootfs found bad only after it streamed leaves the inactive slot empty, wiped and unarmed; the next good "
          "install works")
{
    for (const char* bl : {"file", "grub"}) {
        SECTION(bl)
        {
            World w(bl);
            auto spec = signedSpec();
            spec.rootfs = w.image;
            REQUIRE(createBundle(spec, w.bundle).status.success());
            const std::string good = w.dir.path() + "/good.bundle";
            REQUIRE(mustRun({"cp", w.bundle, good}).status.success());
            // The very last byte of the rootfs: known bad only once the whole payload was written.
            auto members = readTar(w.bundle);
            members[2].second.back() ^= 0x01;
            writeTar(w.bundle, members);
            const std::string aBefore = sha256File(w.dev.slotA);
            {
                auto e = openEngine(w.dev);
                auto st = installFile(*e, w.bundle);
                REQUIRE_FALSE(st);
                CHECK(st.error().code == ErrorCode::SignatureInvalid);
                for (const auto& [name, s] : e->snapshot().slots) {
                    if (name == "b") {
                        CHECK(s.state == "empty");
                        CHECK(s.version.empty());
                        CHECK(s.installed == 0);
                    }
                }
                CHECK(e->snapshot().activeSlot == "a");
                CHECK(e->snapshot().firmwareVersion == "1.0.0");
                // Neither Commit nor MarkBad can make anything of the refused slot.
                (void)e->commit();
                CHECK_FALSE(e->markBad());
                CHECK(slotState(*e, "b") == "empty");
            }
            CHECK(sha256File(w.dev.slotA) == aBefore);
            // Its head is zeroed: no file system of the refused image can be mounted or booted by hand.
            CHECK(readFile(w.dev.slotB).substr(0, 1u << 20) == std::string(1u << 20, '\0'));
            auto env = w.dev.readEnv();
            CHECK(env["BOOT_ORDER"] == "A");
            CHECK(env["BOOT_B_LEFT"] == "0");
            // Reboots keep running slot a, and a restart still reports b as empty.
            CHECK(w.dev.reboot() == "a");
            {
                auto e = openEngine(w.dev);
                CHECK(slotState(*e, "b") == "empty");
                CHECK(e->snapshot().bootedSlot == "a");
                // A good bundle afterwards installs, boots and commits as usual.
                auto st = installFile(*e, good);
                INFO((st ? std::string() : st.error().describe()));
                REQUIRE(st);
                CHECK(slotState(*e, "b") == "trial");
            }
            REQUIRE(w.dev.reboot() == "b");
            auto e = openEngine(w.dev);
            REQUIRE(e->commit());
            CHECK(slotState(*e, "b") == "good");
            CHECK(e->snapshot().firmwareVersion == "2.0.0");
            CHECK(crypto::sha256Hex(readFile(w.dev.slotB).substr(0, 3u << 20)) == sha256File(w.image));
        }
    }
}

TEST_CASE("every malformed, foreign or older bundle is refused with its named error and changes nothing")
{
    World w;
    auto good = signedSpec();
    good.rootfs = w.image;
    const std::string goodBundle = w.dir.path() + "/good.bundle";
    REQUIRE(createBundle(good, goodBundle).status.success());
    const auto members = readTar(goodBundle);
    const std::string out = w.dir.path() + "/bad.bundle";

    struct Case {
        std::string name;
        ErrorCode code;
        std::function<void()> make;
        // Found only after the rootfs streamed into the inactive slot: that slot
        // may hold garbage then, but it is never armed and the active slot is untouched.
        bool afterStreaming = false;
    };
    auto withSpec = [&](std::function<void(BundleSpec&)> f) {
        return [&, f] {
            BundleSpec s = good;
            f(s);
            auto r = createBundle(s, out);
            REQUIRE(r.status.success());
        };
    };
    auto withMembers = [&](std::function<void(std::vector<std::pair<std::string, std::string>>&)> f) {
        return [&, f] {
            auto m = members;
            f(m);
            writeTar(out, m);
        };
    };
    const std::string bigImage = w.dir.path() + "/big.img";
    makeImage(bigImage, (4u << 20) + 1, 7);
    std::vector<Case> cases{
        {"unsigned (no signature member)", ErrorCode::SignatureInvalid,
         withMembers([](auto& m) { m.erase(m.begin() + 1); })},
        {"empty signature", ErrorCode::SignatureInvalid, withMembers([](auto& m) { m[1].second.clear(); })},
        {"signed by an unknown CA", ErrorCode::SignatureInvalid, withSpec([](BundleSpec& s) {
             s.key = pki().otherKey;
             s.cert = pki().otherPem;
             s.chain.clear();
         })},
        {"signer without the code-signing purpose", ErrorCode::SignatureInvalid, withSpec([](BundleSpec& s) {
             s.key = pki().noEkuKey;
             s.cert = pki().noEkuPem;
         })},
        {"manifest altered by one byte", ErrorCode::SignatureInvalid,
         withMembers([](auto& m) { m[0].second[m[0].second.find("2.0.0")] = '3'; })},
        {"truncated bundle", ErrorCode::InvalidArgument,
         [&] {
             auto data = readFile(goodBundle);
             writeFile(out, data.substr(0, data.size() / 2));
         },
         true},
        {"extra member", ErrorCode::InvalidArgument,
         withMembers([](auto& m) { m.emplace_back("evil.sh", "#!/bin/sh\n"); }), true},
        {"missing payload", ErrorCode::InvalidArgument, withMembers([](auto& m) { m.pop_back(); })},
        {"duplicated member", ErrorCode::InvalidArgument, withMembers([](auto& m) { m.push_back(m[2]); }), true},
        {"reordered members", ErrorCode::InvalidArgument, withMembers([](auto& m) { std::swap(m[0], m[1]); })},
        {"manifest over the size limit", ErrorCode::InvalidArgument,
         withMembers([](auto& m) { m[0].second += std::string(2u << 20, ' '); })},
        {"payload larger than the slot", ErrorCode::NoSpace, withSpec([&](BundleSpec& s) { s.rootfs = bigImage; })},
        {"rootfs for another slot class", ErrorCode::Incompatible,
         withSpec([](BundleSpec& s) { s.slotClass = "recovery"; })},
        {"wrong compatible", ErrorCode::Incompatible,
         withSpec([](BundleSpec& s) { s.compatible = "some-other-board"; })},
    };
    auto e = openEngine(w.dev);
    const std::string aBefore = sha256File(w.dev.slotA);
    const auto envBefore = w.dev.readEnv();
    for (const auto& c : cases) {
        INFO(c.name);
        c.make();
        const std::string bBefore = sha256File(w.dev.slotB);
        auto st = installFile(*e, out);
        REQUIRE_FALSE(st);
        CHECK(errorCodeName(st.error().code) == std::string(errorCodeName(c.code)));
        CHECK_FALSE(st.error().message.empty());
        CHECK(sha256File(w.dev.slotA) == aBefore);
        if (!c.afterStreaming) {
            CHECK(sha256File(w.dev.slotB) == bBefore);
        }
        CHECK(slotState(*e, "b") == "empty");
        CHECK(w.dev.readEnv() == envBefore);
        CHECK(e->snapshot().activeSlot == "a");
        // Inspect agrees for the errors it can see from the head.
        Fd fd(::open(out.c_str(), O_RDONLY | O_CLOEXEC));
        auto insp = e->inspect(fd.get(), nullptr);
        if (c.code == ErrorCode::SignatureInvalid && c.name.find("manifest") != std::string::npos) {
            CHECK_FALSE(insp);
        }
    }
    CHECK(mbl::fs::exists(w.dev.stateDir + "/staging"));
}

TEST_CASE("a bundle member with a hostile name is refused with InvalidArgument, its name quoted fit for D-Bus")
{
    // Found by tests/fuzz/fuzz_bundle. The tar headers are not signed, and the
    // member name went into the error as it was: sd-bus refuses a string that is
    // not UTF-8 (or holds a noncharacter), so the Completed signal, the Inspect
    // reply and every read of LastError failed, and control characters reached the log.
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    const auto members = readTar(w.bundle);
    const std::string hostile = "evil\n\xff\xfe\xef\xbf\xbe.sh";
    const std::string out = w.dir.path() + "/hostile.bundle";
    auto e = openEngine(w.dev);
    for (const bool extra : {false, true}) {
        INFO((extra ? "an extra member" : "a payload member renamed"));
        auto m = members;
        if (extra) {
            m.emplace_back(hostile, "#!/bin/sh\n");
        } else {
            m.back().first = hostile;
        }
        writeTar(out, m);
        auto st = installFile(*e, out);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ErrorCode::InvalidArgument);
        const std::string& msg = st.error().message;
        CHECK(msg.find(extra ? "is not named in the manifest" : "found where the manifest expects 'rootfs'") !=
              std::string::npos);
        CHECK(msg.find("'evil??????.sh'") != std::string::npos);
        CHECK(str::sanitizeUtf8(msg) == msg);
        const std::string lastError = e->snapshot().lastError;
        CHECK(lastError.find("evil??????.sh") != std::string::npos);
        CHECK(str::sanitizeUtf8(lastError) == lastError);
        CHECK(slotState(*e, "a") != "empty");
        CHECK(e->snapshot().activeSlot == "a");
    }
}

TEST_CASE("a signature whose SignedData names a digest nobody knows is refused with SignatureInvalid, leaking nothing")
{
    // Found by tests/fuzz/fuzz_bundle: one byte changed in the digestAlgorithms
    // of a genuinely signed bundle made OpenSSL's CMS_verify leak a BIO per check
    // (openssl/openssl#30535), memory a long-running mbl-update never got back.
    // LeakSanitizer (the ASan build) fails this test if it comes back.
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    auto members = readTar(w.bundle);
    const std::string sha256Oid("\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01", 11);
    std::string& sig = members[1].second;
    const auto at = sig.find(sha256Oid);
    REQUIRE(at != std::string::npos);
    sig[at + sha256Oid.size() - 1] = '\x7f';
    for (int i = 0; i < 3; ++i) {
        auto r = bundle::verifySignature(members[0].second, sig, w.dev.configDir + "/trust");
        REQUIRE_FALSE(r);
        CHECK(r.error().code == ErrorCode::SignatureInvalid);
        CHECK(r.error().message.find("does not verify") != std::string::npos);
    }
    const std::string out = w.dir.path() + "/unknown-digest.bundle";
    writeTar(out, members);
    auto e = openEngine(w.dev);
    auto st = installFile(*e, out);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::SignatureInvalid);
    // The untouched signature still verifies through the same path.
    CHECK(bundle::verifySignature(members[0].second, readTar(w.bundle)[1].second, w.dev.configDir + "/trust"));
}

TEST_CASE("a bundle below the anti-rollback floor is refused with Downgrade")
{
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    spec.securityVersion = 4;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    REQUIRE(installFile(*openEngine(w.dev), w.bundle));
    REQUIRE(w.dev.reboot() == "b");
    REQUIRE(openEngine(w.dev)->commit());
    spec.securityVersion = 3;
    spec.version = "1.9.0";
    REQUIRE(createBundle(spec, w.bundle).status.success());
    auto e = openEngine(w.dev);
    const std::string aBefore = sha256File(w.dev.slotA);
    auto envBefore = w.dev.readEnv();
    Fd fd(::open(w.bundle.c_str(), O_RDONLY | O_CLOEXEC));
    auto insp = e->inspect(fd.get(), nullptr);
    REQUIRE_FALSE(insp);
    CHECK(insp.error().code == ErrorCode::Downgrade);
    auto st = installFile(*e, w.bundle);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::Downgrade);
    CHECK(sha256File(w.dev.slotA) == aBefore);
    CHECK(w.dev.readEnv() == envBefore);
}

TEST_CASE("app and config payloads are verified, staged and handed out by file descriptor; no reboot needed")
{
    World w;
    const std::string app = w.dir.path() + "/hello.oci.tar";
    const std::string cfg = w.dir.path() + "/settings.json";
    makeImage(app, 300000, 9);
    writeFile(cfg, R"({"pollInterval": 60})");
    auto spec = signedSpec();
    spec.apps = {{"hello", app}};
    spec.config = cfg;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    auto e = openEngine(w.dev);
    const auto envBefore = w.dev.readEnv();
    const std::string op = UpdateEngine::newOperationId();
    Fd in(::open(w.bundle.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(e->install(in.get(), op, nullptr, {}));
    CHECK(w.dev.readEnv() == envBefore);
    CHECK(e->snapshot().activeSlot == "a");
    auto fd = e->openPayload(op, "app-hello");
    REQUIRE(fd);
    auto h = crypto::sha256HexOfFd(fd->get());
    REQUIRE(h);
    CHECK(h->first == sha256File(app));
    auto c = e->openPayload(op, "config");
    REQUIRE(c);
    CHECK(*fs::readAll(c->get()) == R"({"pollInterval": 60})");
    auto missing = e->openPayload(op, "nope");
    REQUIRE_FALSE(missing);
    CHECK(missing.error().code == ErrorCode::NotFound);
    CHECK_FALSE(e->openPayload("op-other", "config"));
}

TEST_CASE("a config payload that is not a JSON object is refused")
{
    World w;
    const std::string cfg = w.dir.path() + "/settings.json";
    writeFile(cfg, "not json");
    auto spec = signedSpec();
    spec.config = cfg;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    auto st = installFile(*openEngine(w.dev), w.bundle);
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::InvalidArgument);
}

TEST_CASE("a bundle streamed through a pipe installs like a file")
{
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    Fd rd(p[0]);
    Fd wr(p[1]);
    const std::string data = readFile(w.bundle);
    std::thread writer([&] {
        (void)fs::writeAll(wr.get(), data.data(), data.size());
        wr.reset();
    });
    auto e = openEngine(w.dev);
    std::vector<unsigned> progress;
    auto st = e->install(rd.get(), UpdateEngine::newOperationId(), nullptr,
                         [&](unsigned pct) { progress.push_back(pct); });
    writer.join();
    REQUIRE(st);
    CHECK_FALSE(progress.empty());
    CHECK(std::is_sorted(progress.begin(), progress.end()));
    CHECK(crypto::sha256Hex(readFile(w.dev.slotB).substr(0, 3u << 20)) == sha256File(w.image));
}

TEST_CASE("manifest rules: semantic versions, safe names, one rootfs")
{
    CHECK(bundle::isSemver("1.2.3"));
    CHECK(bundle::isSemver("1.2.3-rc.1+build.5"));
    CHECK_FALSE(bundle::isSemver("1.2"));
    CHECK_FALSE(bundle::isSemver("01.2.3"));
    CHECK_FALSE(bundle::isSemver("1.2.3-"));
    const std::string base = R"({"format":1,"version":"1.0.0","security_version":1,"compatible":["x"],"payloads":[)";
    const std::string p = R"({"name":"rootfs","type":"rootfs","size":1,"sha256":")" + std::string(64, 'a') +
                          R"(","slot_class":"rootfs"})";
    CHECK(bundle::Manifest::parse(base + p + "]}"));
    CHECK_FALSE(bundle::Manifest::parse(base + p + "," + p + "]}"));
    CHECK_FALSE(bundle::Manifest::parse(base + "]}"));
    auto evil = p;
    evil.replace(evil.find("rootfs"), 6, "../etc");
    CHECK_FALSE(bundle::Manifest::parse(base + evil + "]}"));
    CHECK_FALSE(bundle::Manifest::parse("{\"format\":2}"));
}

// ---------------------------------------------------------------------------
// C2: installs held for a transaction (arm=false), Arm and Release.

namespace {

Expected<std::string> installHeld(UpdateEngine& e, const std::string& path, bool arm = false)
{
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    const std::string op = UpdateEngine::newOperationId();
    mbl::update::InstallOptions o;
    o.arm = arm;
    if (auto st = e.install(fd.get(), op, nullptr, {}, o); !st) {
        return unexpected(st.error());
    }
    return op;
}

std::string appBundle(World& w, const std::string& name, unsigned seed)
{
    const std::string app = w.dir.path() + "/" + name + ".oci.tar";
    makeImage(app, 100000, seed);
    auto spec = signedSpec();
    spec.apps = {{name, app}};
    const std::string out = w.dir.path() + "/" + name + ".bundle";
    REQUIRE(createBundle(spec, out).status.success());
    return out;
}

} // namespace

TEST_CASE("Install with arm=false writes and verifies the slot but arms nothing; Arm, even after a restart, makes the "
          "next boot try it and Commit keeps it")
{
    for (const char* bl : {"file", "uboot", "grub"}) {
        SECTION(bl)
        {
            World w(bl);
            auto spec = signedSpec();
            spec.rootfs = w.image;
            spec.securityVersion = 4;
            REQUIRE(createBundle(spec, w.bundle).status.success());
            std::string op;
            {
                auto e = openEngine(w.dev);
                const auto envBefore = w.dev.readEnv();
                auto held = installHeld(*e, w.bundle);
                INFO((held ? std::string() : held.error().describe()));
                REQUIRE(held);
                op = *held;
                CHECK(slotState(*e, "b") == "staged");
                CHECK(e->snapshot().activeSlot == "a");
                CHECK(w.dev.readEnv()["BOOT_ORDER"] == "A");
                CHECK(w.dev.readEnv()["BOOT_B_LEFT"] == "0");
                CHECK(w.dev.readEnv()["BOOT_A_LEFT"] == envBefore.at("BOOT_A_LEFT"));
                CHECK(crypto::sha256Hex(readFile(w.dev.slotB).substr(0, 3u << 20)) == sha256File(w.image));
                // Not armed: Commit and MarkBad have nothing to act on.
                CHECK_FALSE(e->markBad());
            }
            // A reboot without Arm keeps running slot a; the staged slot survives the restart.
            REQUIRE(w.dev.reboot() == "a");
            {
                auto e = openEngine(w.dev);
                CHECK(slotState(*e, "b") == "staged");
                auto m = e->operationManifest(op);
                REQUIRE(m);
                CHECK(nlohmann::json::parse(*m)["version"] == "2.0.0");
                auto st = e->arm(op);
                INFO((st ? std::string() : st.error().describe()));
                REQUIRE(st);
                CHECK(slotState(*e, "b") == "trial");
                CHECK(e->snapshot().activeSlot == "b");
                CHECK(e->arm(op)); // again: already armed
                CHECK(w.dev.readEnv()["BOOT_ORDER"] == "B A");
                CHECK(w.dev.readEnv()["BOOT_B_LEFT"] == "1");
            }
            REQUIRE(w.dev.reboot() == "b");
            auto e = openEngine(w.dev);
            CHECK(slotState(*e, "b") == "trial");
            CHECK(e->arm(op)); // booted: on trial already
            REQUIRE(e->commit());
            CHECK(slotState(*e, "b") == "good");
            CHECK(e->snapshot().floor == 4);
            CHECK(e->snapshot().firmwareVersion == "2.0.0");
            REQUIRE(e->release(op));
            CHECK(slotState(*e, "b") == "good"); // Release drops staging, never a committed slot
            CHECK(w.dev.reboot() == "b");
        }
    }
}

TEST_CASE("the staging of held operations coexists and survives a restart; a later Install never drops it; Release "
          "drops it, idempotently")
{
    World w;
    const std::string one = appBundle(w, "one", 1);
    const std::string two = appBundle(w, "two", 2);
    const std::string three = appBundle(w, "three", 3);
    auto spec = signedSpec();
    spec.rootfs = w.image;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    std::string opOne, opFw, opThree;
    {
        auto e = openEngine(w.dev);
        auto a = installHeld(*e, one);
        REQUIRE(a);
        opOne = *a;
        auto f = installHeld(*e, w.bundle);
        REQUIRE(f);
        opFw = *f;
        // A default (arm=true) install keeps its staging only until the next install, as before.
        auto t = installHeld(*e, three, true);
        REQUIRE(t);
        opThree = *t;
        CHECK(e->openPayload(opThree, "app-three"));
        auto again = installHeld(*e, two, true);
        REQUIRE(again);
        auto gone = e->openPayload(opThree, "app-three");
        REQUIRE_FALSE(gone);
        CHECK(gone.error().code == ErrorCode::NotFound);
        CHECK(e->openPayload(*again, "app-two"));
    }
    // A restart (as after a kill or a reboot) keeps every held operation.
    auto e = openEngine(w.dev);
    auto p1 = e->openPayload(opOne, "app-one");
    REQUIRE(p1);
    CHECK(crypto::sha256HexOfFd(p1->get())->first == sha256File(w.dir.path() + "/one.oci.tar"));
    CHECK(e->operationManifest(opFw));
    CHECK(slotState(*e, "b") == "staged");
    REQUIRE(e->release(opOne));
    auto released = e->openPayload(opOne, "app-one");
    REQUIRE_FALSE(released);
    CHECK(released.error().code == ErrorCode::NotFound);
    CHECK(e->release(opOne)); // idempotent
    CHECK(e->release("op-never-was"));
    CHECK_FALSE(fs::exists(w.dev.stateDir + "/staging/" + opOne));
    // Releasing the firmware operation empties its never-armed slot: it is never booted.
    REQUIRE(e->release(opFw));
    CHECK(slotState(*e, "b") == "empty");
    CHECK(readFile(w.dev.slotB).substr(0, 1u << 20) == std::string(1u << 20, '\0'));
    auto armGone = e->arm(opFw);
    REQUIRE_FALSE(armGone);
    CHECK(armGone.error().code == ErrorCode::NotFound);
    CHECK(w.dev.readEnv()["BOOT_ORDER"] == "A");
    CHECK(w.dev.reboot() == "a");
}

TEST_CASE("a firmware Install while the inactive slot holds a held operation's unarmed firmware is Busy and changes "
          "nothing")
{
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    const std::string other = w.dir.path() + "/fw-2.1.0.bundle";
    const std::string image2 = w.dir.path() + "/rootfs-2.1.0.img";
    makeImage(image2, 2u << 20, 43);
    spec.rootfs = image2;
    spec.version = "2.1.0";
    REQUIRE(createBundle(spec, other).status.success());
    auto e = openEngine(w.dev);
    auto op = installHeld(*e, w.bundle);
    REQUIRE(op);
    const std::string bBefore = sha256File(w.dev.slotB);
    for (const bool arm : {true, false}) {
        auto again = installHeld(*e, other, arm);
        REQUIRE_FALSE(again);
        CHECK(again.error().code == ErrorCode::Busy);
        CHECK(again.error().message.find(*op) != std::string::npos);
    }
    CHECK(sha256File(w.dev.slotB) == bBefore);
    CHECK(slotState(*e, "b") == "staged");
    REQUIRE(e->arm(*op));
    CHECK(slotState(*e, "b") == "trial");
    // Once armed, a later firmware install replaces it (before C2 it did the same): the earlier Arm is gone.
    auto replaced = installHeld(*e, other);
    REQUIRE(replaced);
    auto stale = e->arm(*op);
    REQUIRE_FALSE(stale);
    CHECK(stale.error().code == ErrorCode::NotFound);
    REQUIRE(e->arm(*replaced));
    REQUIRE(w.dev.reboot() == "b");
    auto after = openEngine(w.dev);
    CHECK(after->snapshot().firmwareVersion == "2.1.0");
}

TEST_CASE("Arm of an operation that wrote no slot, or that was never installed, is NotFound and changes nothing")
{
    World w;
    const std::string apps = appBundle(w, "hello", 5);
    auto e = openEngine(w.dev);
    auto op = installHeld(*e, apps);
    REQUIRE(op);
    const auto envBefore = w.dev.readEnv();
    for (const std::string& id : {*op, std::string("op-unknown"), std::string()}) {
        auto st = e->arm(id);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ErrorCode::NotFound);
    }
    CHECK(w.dev.readEnv() == envBefore);
    CHECK(e->openPayload(*op, "app-hello"));
}

// ---------------------------------------------------------------------------
// State that cannot betray the boot chain: the bootloader environment is the
// authority on the slots and keeps a copy of the floor (issue 19, item 4).

namespace {

// What a wiped (or empty, new) data partition looks like: /var/lib/mbl is gone.
void wipeDataPartition(const Device& d)
{
    REQUIRE(fs::removeTree(d.root + "/var/lib/mbl"));
    REQUIRE_FALSE(fs::exists(d.stateDir + "/state.json"));
}

} // namespace

TEST_CASE("the slot state machine is one table: nothing commits an armed slot, arms a good one or boots a staged one")
{
    using mbl::update::nextStatus;
    using mbl::update::SlotEvent;
    using mbl::update::SlotStatus;
    CHECK(nextStatus(SlotStatus::Armed, SlotEvent::Commit) == std::nullopt);
    CHECK(nextStatus(SlotStatus::Trial, SlotEvent::Commit) == SlotStatus::Good);
    CHECK(nextStatus(SlotStatus::Good, SlotEvent::Arm) == std::nullopt);
    CHECK(nextStatus(SlotStatus::Staged, SlotEvent::Boot) == std::nullopt);
    CHECK(nextStatus(SlotStatus::Staged, SlotEvent::Arm) == SlotStatus::Armed);
    CHECK(nextStatus(SlotStatus::Trial, SlotEvent::Claim) == std::nullopt);
    CHECK(nextStatus(SlotStatus::Armed, SlotEvent::FallBack) == SlotStatus::Bad);
    for (auto st : {SlotStatus::Empty, SlotStatus::Staged, SlotStatus::Armed, SlotStatus::Trial, SlotStatus::Good,
                    SlotStatus::Bad}) {
        CHECK(mbl::update::slotStatusFromName(mbl::update::slotStatusName(st)) == st);
    }
}

TEST_CASE("a wipe of /var/lib/mbl at any step of a firmware update never commits the trial, never drops the fallback "
          "and never lowers the floor, on every backend")
{
    for (const char* bl : {"file", "uboot", "grub"}) {
        for (const char* step : {"armed", "on trial", "on trial, then committed", "committed", "fallen back"}) {
            SECTION(std::string(bl) + ": wiped when " + step)
            {
                const std::string when = step;
                World w(bl);
                auto spec = signedSpec();
                spec.rootfs = w.image;
                spec.securityVersion = 5;
                REQUIRE(createBundle(spec, w.bundle).status.success());
                REQUIRE(installFile(*openEngine(w.dev), w.bundle));
                if (when != "armed") {
                    REQUIRE(w.dev.reboot() == "b");
                }
                if (when == "committed") {
                    REQUIRE(openEngine(w.dev)->commit());
                }
                if (when == "fallen back") {
                    (void)openEngine(w.dev); // on trial, never committed
                    REQUIRE(w.dev.reboot() == "a");
                    CHECK(slotState(*openEngine(w.dev), "b") == "bad");
                }
                wipeDataPartition(w.dev);
                auto e = openEngine(w.dev);
                auto env = w.dev.readEnv();
                if (when == "armed") {
                    CHECK(slotState(*e, "b") == "trial");
                    CHECK(e->snapshot().activeSlot == "b");
                    CHECK(e->snapshot().floor == 0);
                    CHECK(env["BOOT_ORDER"] == "B A");
                    CHECK_FALSE(e->commit()); // not booted yet
                    e.reset();
                    REQUIRE(w.dev.reboot() == "b");
                    e = openEngine(w.dev);
                    REQUIRE(e->commit());
                    CHECK(e->snapshot().floor == 5);
                    CHECK(slotState(*e, "b") == "good");
                } else if (when == "on trial" || when == "on trial, then committed") {
                    // Still on trial: nothing committed it, the fallback is still there.
                    CHECK(slotState(*e, "b") == "trial");
                    CHECK(slotState(*e, "a") == "good");
                    CHECK(e->snapshot().floor == 0);
                    CHECK(e->snapshot().firmwareVersion == "2.0.0");
                    CHECK(env["BOOT_ORDER"] == "B A");
                    CHECK(env["BOOT_B_LEFT"] == "0");
                    CHECK(env["BOOT_A_LEFT"] == "3");
                    if (when == "on trial") {
                        e.reset();
                        REQUIRE(w.dev.reboot() == "a"); // no commit: the bootloader falls back
                        e = openEngine(w.dev);
                        CHECK(slotState(*e, "b") == "bad");
                        CHECK(e->snapshot().lastError.find("rollback: slot b (version 2.0.0)") != std::string::npos);
                        CHECK(e->snapshot().firmwareVersion == "1.0.0");
                        CHECK(e->snapshot().floor == 0);
                    } else {
                        REQUIRE(e->commit());
                        CHECK(e->snapshot().floor == 5);
                        e.reset();
                        REQUIRE(w.dev.reboot() == "b");
                    }
                } else if (when == "committed") {
                    CHECK(slotState(*e, "b") == "good");
                    CHECK(slotState(*e, "a") == "good");
                    CHECK(e->snapshot().floor == 5);
                    CHECK(e->snapshot().firmwareVersion == "2.0.0");
                    CHECK(env["BOOT_ORDER"] == "B A");
                    // The floor held: an older security version is still refused.
                    auto older = signedSpec();
                    older.rootfs = w.image;
                    older.securityVersion = 4;
                    older.version = "2.0.1";
                    const std::string old = w.dir.path() + "/older.bundle";
                    REQUIRE(createBundle(older, old).status.success());
                    auto st = installFile(*e, old);
                    REQUIRE_FALSE(st);
                    CHECK(st.error().code == ErrorCode::Downgrade);
                    e.reset();
                    CHECK(w.dev.reboot() == "b");
                } else {
                    CHECK(slotState(*e, "b") == "bad");
                    CHECK(slotState(*e, "a") == "good");
                    CHECK(e->snapshot().activeSlot == "a");
                    CHECK(env["BOOT_ORDER"] == "A");
                    e.reset();
                    CHECK(w.dev.reboot() == "a");
                }
            }
        }
    }
}

TEST_CASE("the anti-rollback floor is the highest of its copies in the bootloader environment and the state file")
{
    World w;
    auto spec = signedSpec();
    spec.rootfs = w.image;
    spec.securityVersion = 5;
    REQUIRE(createBundle(spec, w.bundle).status.success());
    REQUIRE(installFile(*openEngine(w.dev), w.bundle));
    REQUIRE(w.dev.reboot() == "b");
    REQUIRE(openEngine(w.dev)->commit());
    CHECK(w.dev.readEnv()["MBL_SECURITY_VERSION_FLOOR"] == "5");
    // The state file says more: the environment's copy rises to it.
    auto state = nlohmann::json::parse(readFile(w.dev.stateDir + "/state.json"));
    state["floor"] = 7;
    writeFile(w.dev.stateDir + "/state.json", state.dump());
    CHECK(openEngine(w.dev)->snapshot().floor == 7);
    CHECK(w.dev.readEnv()["MBL_SECURITY_VERSION_FLOOR"] == "7");
    // The environment says more (an older state file): the higher one holds.
    w.dev.writeEnv({{"MBL_SECURITY_VERSION_FLOOR", "9"}});
    auto e = openEngine(w.dev);
    CHECK(e->snapshot().floor == 9);
    CHECK(nlohmann::json::parse(readFile(w.dev.stateDir + "/state.json"))["floor"] == 9);
}

TEST_CASE("a trial armed before the environment held the slot record stays on trial, its record written; a wipe then "
          "changes nothing")
{
    // What the previous release left on a device: BOOT_* only, the trial known
    // from state.json alone, the device rebooted into it.
    World w;
    w.dev.writeEnv({{"BOOT_ORDER", "B A"}, {"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "0"}});
    (void)fs::makeDirs(w.dev.stateDir, 0700);
    writeFile(w.dev.stateDir + "/state.json", R"({"floor": 2, "lastError": "", "stagedOperation": "",
        "slots": {"a": {"state": "good", "version": "1.0.0", "installed": 0, "security_version": 2},
                  "b": {"state": "trial", "version": "2.0.0", "installed": 1, "security_version": 4}},
        "pending": {"slot": "b", "version": "2.0.0", "security_version": 4, "boot_id": "boot-0", "operation": "op-1"}})");
    writeFile(w.dev.cmdline, "console=ttyS0 mbl.slot=b rootwait\n");
    writeFile(w.dev.bootId, "boot-1\n");
    {
        auto e = openEngine(w.dev);
        CHECK(slotState(*e, "b") == "trial");
        CHECK(e->snapshot().floor == 2);
    }
    auto env = w.dev.readEnv();
    CHECK(env["MBL_B_STATE"] == "trial");
    CHECK(env["MBL_B_SECURITY_VERSION"] == "4");
    CHECK(env["MBL_A_STATE"] == "good");
    CHECK(env["MBL_SECURITY_VERSION_FLOOR"] == "2");
    CHECK(env["BOOT_ORDER"] == "B A");
    wipeDataPartition(w.dev);
    auto e = openEngine(w.dev);
    CHECK(slotState(*e, "b") == "trial");
    CHECK(e->snapshot().floor == 2);
    REQUIRE(e->commit());
    CHECK(e->snapshot().floor == 4);
}

TEST_CASE("a slot nothing is on record for, that the bootloader can boot, is never taken out of the boot order")
{
    // A factory image that flashed both slots: nothing says what slot b holds.
    World w;
    w.dev.writeEnv({{"BOOT_ORDER", "A B"}, {"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "3"}});
    auto e = openEngine(w.dev);
    CHECK(e->snapshot().bootedSlot == "a");
    CHECK(slotState(*e, "a") == "good");
    auto env = w.dev.readEnv();
    CHECK(env["BOOT_ORDER"] == "A B");
    CHECK(env["BOOT_B_LEFT"] == "3");
    CHECK(env.count("MBL_B_STATE") == 0);
}

// ---------------------------------------------------------------------------
// Strict configuration (issue 19, item 5).

TEST_CASE("an update.json with an unknown, misspelled, mistyped or out-of-range key at any depth is refused at start "
          "with the file, the key path and what was expected, and nothing is touched")
{
    struct Case {
        const char* name;
        std::function<void(nlohmann::json&)> edit;
        const char* message;
    };
    const std::vector<Case> cases{
        {"a misspelled slot key", [](nlohmann::json& c) { c["slots"][1]["devcie"] = c["slots"][1]["device"]; },
         "unknown key 'slots[1].devcie' (expected one of: bootname, device, filesystem, name, size)"},
        {"a misspelled bootloader key",
         [](nlohmann::json& c) {
             c["bootloader"]["typ"] = c["bootloader"]["type"];
             c["bootloader"].erase("type");
         },
         "unknown key 'bootloader.typ' (expected one of: defaults, path, type)"},
        {"an unknown bootloader type", [](nlohmann::json& c) { c["bootloader"]["type"] = "grbu"; },
         "key 'bootloader.type' must be one of file, uboot, grub (not 'grbu')"},
        {"no bootloader type beside slots", [](nlohmann::json& c) { c["bootloader"].erase("type"); },
         "key 'bootloader.type' must be set when 'slots' are"},
        {"an unknown top-level key", [](nlohmann::json& c) { c["trialAttempt"] = 2; },
         "unknown key 'trialAttempt'"},
        {"a nested object nobody reads", [](nlohmann::json& c) { c["bootloader"]["extra"] = {{"deep", true}}; },
         "unknown key 'bootloader.extra'"},
        {"a number of the wrong type", [](nlohmann::json& c) { c["trialAttempts"] = "2"; },
         "key 'trialAttempts' must be an integer"},
        {"a number out of range", [](nlohmann::json& c) { c["goodAttempts"] = 0; },
         "key 'goodAttempts' must be between 1 and 100 (not 0)"},
        {"a slot size that overflows", [](nlohmann::json& c) { c["slots"][0]["size"] = 18446744073709551615ull; },
         "key 'slots[0].size' must be between 0 and 9223372036854775807"},
        {"a slot without a device", [](nlohmann::json& c) { c["slots"][0].erase("device"); },
         "key 'slots[0].device' must be the slot's block device or image file"},
        {"three slots", [](nlohmann::json& c) { c["slots"].push_back({{"name", "c"}, {"device", "/dev/null"}}); },
         "key 'slots' must be a list of exactly two slots (A/B)"},
        {"a flag of the wrong type", [](nlohmann::json& c) { c["readBack"] = "yes"; },
         "key 'readBack' must be true or false"},
        {"a factory version that is not one", [](nlohmann::json& c) { c["factoryVersion"] = "1.0"; },
         "key 'factoryVersion' must be a semantic version"},
    };
    for (const char* bl : {"file", "grub"}) {
        for (const auto& k : cases) {
            DYNAMIC_SECTION(bl << ": " << k.name)
            {
                World w(bl);
                const std::string envFile = w.dev.env;
                k.edit(w.dev.config);
                w.dev.writeConfig();
                auto cfg = Config::load(w.dev.configDir + "/update.json", false);
                REQUIRE(cfg);
                auto e = UpdateEngine::open(Paths::underRoot(w.dev.root), *cfg);
                REQUIRE_FALSE(e);
                CHECK(e.error().code == ErrorCode::InvalidArgument);
                CHECK(e.error().message.rfind(w.dev.configDir + "/update.json: ", 0) == 0);
                INFO(e.error().message);
                CHECK(e.error().message.find(k.message) != std::string::npos);
                // Refused before anything was made or written.
                CHECK_FALSE(fs::exists(w.dev.stateDir));
                CHECK_FALSE(fs::exists(envFile));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Payload types (issue 19, item 3) and per-app settings (contract C4).

namespace {

// A bundle whose manifest is `manifest` exactly, signed by the test signer
// (so only the rules of the format, not the signature, can refuse it), with
// `payloads` as its members after the head.
void handSignedBundle(const std::string& out, const nlohmann::json& manifest,
                      const std::vector<std::pair<std::string, std::string>>& payloads)
{
    const std::string text = manifest.dump(2) + "\n";
    auto sig = bundle::signManifest(text, readFile(pki().signKey), readFile(pki().signPem), readFile(pki().intPem));
    REQUIRE(sig);
    std::vector<std::pair<std::string, std::string>> members{{"manifest.json", text}, {"manifest.json.sig", *sig}};
    members.insert(members.end(), payloads.begin(), payloads.end());
    writeTar(out, members);
}

nlohmann::json payloadOf(const std::string& name, const std::string& type, const std::string& data)
{
    return {{"name", name}, {"type", type}, {"size", data.size()}, {"sha256", crypto::sha256Hex(data)}};
}

nlohmann::json appPayloadOf(const std::string& data, const std::string& version)
{
    auto p = payloadOf("app-hello", "app", data);
    p["app"] = {{"name", "hello"}, {"version", version}};
    return p;
}

nlohmann::json manifestOf(const nlohmann::json& payloads)
{
    return {{"format", 1},           {"version", "2.0.0"},  {"security_version", 1},
            {"compatible", nlohmann::json::array({"mbl-test-board"})}, {"created", "2026-12-05T00:00:00Z"}, {"payloads", payloads}};
}

} // namespace

TEST_CASE("a file payload is refused by mbl-bundle create, verify and inspect and by the device, never staged and "
          "ignored")
{
    World w;
    const std::string notes = w.dir.path() + "/notes.txt";
    writeFile(notes, "hello\n");
    const std::string app = w.dir.path() + "/hello.oci.tar";
    makeImage(app, 50000, 3);

    // The build host: no --file flag makes a bundle any more.
    auto c = mustRun({bundleTool(), "create", "--key", pki().signKey, "--cert", pki().signPem, "--version", "2.0.0",
                      "--security-version", "1", "--compatible", "mbl-test-board", "--app", "hello=" + app, "--file",
                      "notes.txt=" + notes, "-o", w.bundle});
    CHECK_FALSE(c.status.success());
    CHECK(c.err.find("file payloads are not supported") != std::string::npos);
    CHECK_FALSE(fs::exists(w.bundle));

    // A manifest made elsewhere, signed by a trusted signer, with a file payload.
    const std::string appData = readFile(app);
    handSignedBundle(w.bundle,
                     manifestOf(nlohmann::json::array({appPayloadOf(appData, "2.0.0"), payloadOf("notes.txt", "file", "hello\n")})),
                     {{"app-hello", appData}, {"notes.txt", "hello\n"}});
    for (const char* cmd : {"verify", "inspect"}) {
        INFO(cmd);
        std::vector<std::string> argv{bundleTool(), cmd};
        if (std::string(cmd) == "verify") {
            argv.insert(argv.end(), {"--trust", w.dev.configDir + "/trust"});
        }
        argv.push_back(w.bundle);
        auto r = mustRun(argv);
        CHECK_FALSE(r.status.success());
        CHECK(r.err.find("payload 'notes.txt': type 'file' is not supported") != std::string::npos);
    }

    // The device: Inspect and Install refuse it with InvalidArgument, nothing staged or armed.
    auto e = openEngine(w.dev);
    const auto envBefore = w.dev.readEnv();
    {
        Fd fd(::open(w.bundle.c_str(), O_RDONLY | O_CLOEXEC));
        auto insp = e->inspect(fd.get(), nullptr);
        REQUIRE_FALSE(insp);
        CHECK(insp.error().code == ErrorCode::InvalidArgument);
    }
    const std::string op = UpdateEngine::newOperationId();
    Fd in(::open(w.bundle.c_str(), O_RDONLY | O_CLOEXEC));
    auto st = e->install(in.get(), op, nullptr, {});
    REQUIRE_FALSE(st);
    CHECK(st.error().code == ErrorCode::InvalidArgument);
    CHECK(st.error().message.find("payload 'notes.txt': type 'file' is not supported") != std::string::npos);
    CHECK_FALSE(fs::exists(w.dev.stateDir + "/staging/" + op));
    CHECK_FALSE(e->operationManifest(op));
    CHECK(w.dev.readEnv() == envBefore);
    CHECK(slotState(*e, "b") == "empty");
}

TEST_CASE("an app's settings file goes into the signed manifest with mbl-bundle create --app NAME@VERSION=ARCHIVE,"
          "SETTINGS and reaches the device's operation manifest unchanged")
{
    World w;
    const std::string app = w.dir.path() + "/hello.oci.tar";
    makeImage(app, 50000, 4);
    const std::string settings = w.dir.path() + "/hello-settings.json";
    const nlohmann::json doc = {{"env", {{"GREETING", "hi"}}}, {"restart", "always"}, {"limits", {{"memory", 1 << 20}}}};
    writeFile(settings, doc.dump());
    auto spec = signedSpec();
    spec.apps = {{"hello@1.4.0", app + "," + settings}};
    auto r = createBundle(spec, w.bundle);
    INFO(r.err);
    REQUIRE(r.status.success());
    auto j = mustRun({bundleTool(), "inspect", "--json", w.bundle});
    REQUIRE(j.status.success());
    const auto m = nlohmann::json::parse(j.out);
    CHECK(m["payloads"][0]["app"] == nlohmann::json({{"name", "hello"}, {"version", "1.4.0"}}));
    CHECK(m["payloads"][0]["settings"] == doc);
    // The archive itself is the payload, not the settings file.
    CHECK(m["payloads"][0]["sha256"] == sha256File(app));
    auto v = mustRun({bundleTool(), "verify", "--trust", w.dev.configDir + "/trust", w.bundle});
    CHECK(v.status.success());

    auto e = openEngine(w.dev);
    const std::string op = UpdateEngine::newOperationId();
    Fd in(::open(w.bundle.c_str(), O_RDONLY | O_CLOEXEC));
    mbl::update::InstallOptions o;
    o.arm = false;
    REQUIRE(e->install(in.get(), op, nullptr, {}, o));
    auto staged = e->operationManifest(op);
    REQUIRE(staged);
    const auto sm = nlohmann::json::parse(*staged);
    CHECK(sm["payloads"][0]["settings"] == doc);

    // Without a settings file: no settings key at all.
    auto plain = signedSpec();
    plain.apps = {{"hello@1.4.0", app}};
    REQUIRE(createBundle(plain, w.bundle).status.success());
    auto pj = nlohmann::json::parse(mustRun({bundleTool(), "inspect", "--json", w.bundle}).out);
    CHECK_FALSE(pj["payloads"][0].contains("settings"));
}

TEST_CASE("app settings that are not one JSON object of at most 64 KiB are refused by mbl-bundle create and by the "
          "device")
{
    World w;
    const std::string app = w.dir.path() + "/hello.oci.tar";
    makeImage(app, 50000, 5);
    const std::string appData = readFile(app);
    const std::string big = "{\"env\": {\"X\": \"" + std::string(64u << 10, 'x') + "\"}}";
    struct Case {
        const char* name;
        std::string text;
        const char* message;
    };
    for (const Case& k : {Case{"a list", "[1, 2]", "must be a JSON object"},
                          Case{"a string", "\"hi\"", "must be a JSON object"},
                          Case{"not JSON", "{\"env\": ", "is not valid JSON"},
                          Case{"empty", "", "is not valid JSON"},
                          Case{"over 64 KiB", big, "larger than 65536 bytes"}}) {
        INFO(k.name);
        const std::string settings = w.dir.path() + "/settings.json";
        writeFile(settings, k.text);
        (void)::unlink(w.bundle.c_str());
        auto spec = signedSpec();
        spec.apps = {{"hello@1.4.0", app + "," + settings}};
        auto r = createBundle(spec, w.bundle);
        CHECK_FALSE(r.status.success());
        CHECK(r.err.find(k.message) != std::string::npos);
        CHECK_FALSE(fs::exists(w.bundle));
    }
    // Made elsewhere and signed: the device refuses what is not an object
    // within the size, or settings on a payload that is not an app.
    const nlohmann::json appPayload = appPayloadOf(appData, "1.4.0");
    auto e = openEngine(w.dev);
    struct Signed {
        const char* name;
        nlohmann::json manifest;
        std::vector<std::pair<std::string, std::string>> members;
        const char* message;
    };
    auto withSettings = [&](const nlohmann::json& s) {
        auto p = appPayload;
        p["settings"] = s;
        return manifestOf(nlohmann::json::array({p}));
    };
    auto configWithSettings = payloadOf("config", "config", "{}");
    configWithSettings["settings"] = nlohmann::json::object();
    for (const Signed& k :
         {Signed{"a list", withSettings(nlohmann::json::array({1, 2})), {{"app-hello", appData}}, "'settings' must be a JSON object"},
          Signed{"null", withSettings(nullptr), {{"app-hello", appData}}, "'settings' must be a JSON object"},
          Signed{"over 64 KiB", withSettings(nlohmann::json::parse(big)), {{"app-hello", appData}},
                 "'settings' is larger than 65536 bytes"},
          Signed{"on a config payload", manifestOf(nlohmann::json::array({configWithSettings})), {{"config", "{}"}},
                 "payload 'config': 'settings' belongs to app payloads only"}}) {
        INFO(k.name);
        handSignedBundle(w.bundle, k.manifest, k.members);
        const std::string op = UpdateEngine::newOperationId();
        Fd in(::open(w.bundle.c_str(), O_RDONLY | O_CLOEXEC));
        auto st = e->install(in.get(), op, nullptr, {});
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ErrorCode::InvalidArgument);
        CHECK(st.error().message.find(k.message) != std::string::npos);
        CHECK_FALSE(fs::exists(w.dev.stateDir + "/staging/" + op));
    }
    // Exactly at the limit is fine.
    nlohmann::json edge = {{"env", {{"X", ""}}}};
    edge["env"]["X"] = std::string((64u << 10) - edge.dump().size(), 'y');
    REQUIRE(edge.dump().size() == (64u << 10));
    handSignedBundle(w.bundle, withSettings(edge), {{"app-hello", appData}});
    auto ok = installFile(*e, w.bundle);
    INFO((ok ? std::string() : ok.error().describe()));
    CHECK(ok);
}
