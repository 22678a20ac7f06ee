// SPDX-License-Identifier: Apache-2.0
// A full staging file system: the install fails with NoSpace and leaves staging
// clean, whether the space is known to be short up front or runs out mid-write.
// Staging is a tiny tmpfs mounted by the test (skipped where mounting is impossible).

#include "update_fixture.h"

#include "harness.h"
#include "update_engine.h"

#include "mbl/config.h"
#include "mbl/fs.h"

#include <catch2/catch.hpp>

#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <sys/mount.h>
#include <thread>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test::update;
using mbl::update::UpdateEngine;

namespace {

struct TinyStaging {
    std::string path;
    explicit TinyStaging(const std::string& p) : path(p)
    {
        (void)fs::makeDirs(path, 0700);
        if (::mount("tmpfs", path.c_str(), "tmpfs", 0, "size=512k,mode=0700") != 0) {
            test::skip("cannot mount a tmpfs for the staging directory (" + std::string(std::strerror(errno)) +
                       "): needs root and mount rights");
        }
    }
    ~TinyStaging() { ::umount2(path.c_str(), MNT_DETACH); }
};

std::string listing(const std::string& dir)
{
    return mustRun({"find", dir, "-mindepth", "1"}).out;
}

} // namespace

TEST_CASE("a full staging disk fails the install with NoSpace and staging is cleaned")
{
    test::TempDir dir("mbl-update-nospace");
    Pki pki(dir.path() + "/pki");
    Device dev(dir.path() + "/root", pki);
    TinyStaging staging(dir.path() + "/staging");
    dev.config["stagingDir"] = staging.path;
    dev.writeConfig();
    auto cfg = Config::load(dev.configDir + "/update.json", false);
    REQUIRE(cfg);
    auto engine = UpdateEngine::open(Paths::underRoot(dev.root), *cfg);
    REQUIRE(engine);
    auto& e = **engine;

    BundleSpec spec;
    spec.key = pki.signKey;
    spec.cert = pki.signPem;
    spec.chain = pki.intPem;

    SECTION("known up front: the app payloads are larger than the free space")
    {
        const std::string app = dir.path() + "/big-app.tar";
        makeImage(app, 1u << 20, 4);
        spec.apps = {{"big", app}};
        REQUIRE(createBundle(spec, dir.path() + "/b.bundle").status.success());
        Fd fd(::open((dir.path() + "/b.bundle").c_str(), O_RDONLY | O_CLOEXEC));
        auto st = e.install(fd.get(), UpdateEngine::newOperationId(), nullptr, {});
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ErrorCode::NoSpace);
        CHECK(listing(staging.path).empty());
    }
    SECTION("running out while the payload streams in")
    {
        const std::string app = dir.path() + "/app.tar";
        makeImage(app, 300u << 10, 4);
        spec.apps = {{"app", app}};
        REQUIRE(createBundle(spec, dir.path() + "/b.bundle").status.success());
        const std::string data = readFile(dir.path() + "/b.bundle");
        ::signal(SIGPIPE, SIG_IGN);
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
        Fd rd(p[0]);
        Fd wr(p[1]);
        std::thread feeder([&] {
            // Head and the first bytes; then something else fills the disk.
            const std::size_t first = 8192;
            (void)fs::writeAll(wr.get(), data.data(), first);
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
            mustRun({"dd", "if=/dev/zero", "of=" + staging.path + "/filler", "bs=64k", "count=7"});
            (void)fs::writeAll(wr.get(), data.data() + first, data.size() - first);
            wr.reset();
        });
        auto st = e.install(rd.get(), UpdateEngine::newOperationId(), nullptr, {});
        rd.reset(); // the feeder's remaining writes fail with EPIPE
        feeder.join();
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ErrorCode::NoSpace);
        ::unlink((staging.path + "/filler").c_str());
        CHECK(listing(staging.path).empty());
        CHECK(e.snapshot().lastError.rfind("org.mbl.Error.NoSpace: ", 0) == 0);
    }
}
