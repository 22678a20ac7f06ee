// SPDX-License-Identifier: Apache-2.0
// The runtime binary is configurable: the same app under crun. crun 1.8 refuses
// the cgroup v1/v2 hybrid layout of some hosts; there the test skips, naming why.

#include "cm_client.h"
#include "harness.h"
#include "image_tools.h"

#include "mbl/fs.h"

#include <catch2/catch.hpp>

using namespace mbl;
using test::CmClient;

TEST_CASE("an app runs under crun when the runtime setting names it")
{
    if (!test::haveTool("crun")) {
        test::skip("crun is not installed");
    }
    std::string skipReason;
    {
    test::TestStack stack;
    test::TempDir work{"mbl-cm-crun"};
    (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/containers.json",
                              R"({"runtime": "crun", "stop_grace_ms": 1000, "defaults": {"restart": "no"}, "userns": {"userdb_dir": ""}})");
    REQUIRE(stack.start("container-manager"));
    CmClient cm;
    auto layout = test::umociBusyboxImage(work.path(), "l", "v1", {"/bin/sh", "-c", "echo under-crun; exec sleep 1000"});
    auto archive = test::layoutArchive(layout, "v1", work.path() + "/v1.tar", false);
    auto r = cm.install(archive, R"({"name": "c"})");
    REQUIRE(r.success);
    CmClient::waitFor([&] { return cm.state("c") != "installed"; });
    CmClient::waitFor([&] { return cm.state("c") == "running" || cm.state("c") == "failed"; });
    const std::string log = cm.logs("c");
    if (cm.state("c") == "failed" && log.find("hybrid") != std::string::npos) {
        const auto at = log.find("cgroups in hybrid");
        skipReason = "crun refuses this host's cgroup layout: " + log.substr(at == std::string::npos ? 0 : at, 100);
    } else {
        INFO(log);
        REQUIRE(cm.state("c") == "running");
        REQUIRE(cm.waitLog("c", "under-crun"));
        cm.call("StopApp", "c");
        CHECK(cm.state("c") == "stopped");
    }
    } // the stack and the temporary files are gone before a skip
    if (!skipReason.empty()) {
        test::skip(skipReason);
    }
}
