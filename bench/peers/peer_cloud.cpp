// SPDX-License-Identifier: Apache-2.0
// Our side of bench/peers/download.sh, and the server every side downloads from:
// the cloud tests' world (tests/cloud CloudEnv: private bus, the real identity
// service provisioned over D-Bus, the DDI test server behind real nginx with
// mutual TLS, mbl-cloud-client running as on a device), as bench/cloud's
// cloud-bench sets it up. The artifact ARTIFACT is registered with the server
// and served by nginx itself (the server's X-Accel-Redirect, cloud-bench's
// "static" mode) outside any action (skip_artifact_access_check), so every side
// gets the same bytes the same way. A second device, dev-02 (a certificate from
// the same test CA), is there for a peer that needs deployments of its own.
// On stdout first, one "key value" a line, then "ready":
//   server URL, admin URL (the test server's control API, loopback HTTP), url
//   (the artifact for dev-01), ca, cert01/key01 (dev-01, what our daemon uses),
//   cert02/key02 (dev-02), size, sha256, smid
// Then, per stdin line:
//   "download DEST" -> CloudClient1.Download(artifact) -> the fd's bytes written
//                      to DEST (created, truncated) -> "ok" once EOF came with all
//                      `size` bytes (the daemon holds back the last byte until the
//                      SHA-256 matched), else "fail ..."
//   "hwm"           -> "hwm KiB" (the daemon's VmHWM)
// Usage: peer-cloud ARTIFACT   (root; MBL_BUILD_ROOT, MBL_SOURCE_ROOT, MBL_POLICY_DIR
// as in meson's test environment; needs nginx, python3)

#include "cloud_env.h"

#include "peer_memory.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <iostream>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test;
using nlohmann::json;

namespace {

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2) {
        std::cerr << "usage: peer-cloud ARTIFACT\n";
        return 2;
    }
    const std::string path = argv[1];
    try {
        CloudEnv env;
        env.cloud.admin("POST", "/admin/config", {{"sleep", "00:00:02"}});
        if (!CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; })) {
            std::cerr << "peer-cloud: the cloud client did not connect\n" << env.clientLog();
            return 1;
        }
        const std::string name = path.substr(path.rfind('/') + 1);
        auto art = env.cloud.admin("POST", "/admin/artifacts", {{"name", name}, {"path", path}});
        env.cloud.admin("POST", "/admin/config",
                        {{"skip_artifact_access_check", true}, {"accel_redirect", "/_mbl_artifact"}});
        const std::string server = env.cloud.serverUrl();
        const std::string url = server + "/DEFAULT/controller/v1/" + env.deviceId + "/softwaremodules/" +
                                std::to_string(art["smid"].get<int>()) + "/artifacts/" + name;
        const json artifact = {{"url", url}, {"size", art["size"]}, {"sha256", art["sha256"]}, {"filename", name}};
        const std::uint64_t size = art["size"].get<std::uint64_t>();
        env.cloud.makeDevice("dev-02");
        const std::string pki = env.cloud.dir() + "/pki";
        std::printf("server %s\nadmin http://127.0.0.1:%d\nurl %s\nca %s\ncert01 %s\nkey01 %s\ncert02 %s\nkey02 %s\n"
                    "size %llu\nsha256 %s\nsmid %d\nready\n",
                    server.c_str(), env.cloud.backendPort(), url.c_str(), (pki + "/test-ca.pem").c_str(),
                    (pki + "/device-dev-01.pem").c_str(), (pki + "/device-dev-01.key").c_str(),
                    (pki + "/device-dev-02.pem").c_str(), (pki + "/device-dev-02.key").c_str(),
                    static_cast<unsigned long long>(size), art["sha256"].get<std::string>().c_str(),
                    art["smid"].get<int>());
        std::fflush(stdout);

        const pid_t daemon = env.stack.pid("cloud-client");
        std::string line;
        while (std::getline(std::cin, line)) {
            if (str::startsWith(line, "download ")) {
                const std::string dest = line.substr(9);
                Fd out(::open(dest.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
                sdbus::UnixFd fd;
                std::string why;
                try {
                    env.proxy()
                        .callMethod("Download")
                        .onInterface("org.mbl.CloudClient1")
                        .withArguments(std::string("1"), artifact.dump())
                        .storeResultsTo(fd);
                } catch (const sdbus::Error& e) {
                    why = e.getName() + ": " + e.getMessage();
                }
                std::uint64_t got = 0;
                if (why.empty() && !out) {
                    why = "cannot create " + dest;
                }
                if (why.empty()) {
                    // The pipe's bytes into the file: splice, no copy through this process.
                    while (true) {
                        const ssize_t n = ::splice(fd.get(), nullptr, out.get(), nullptr, 1 << 20, SPLICE_F_MOVE);
                        if (n <= 0) {
                            break;
                        }
                        got += static_cast<std::uint64_t>(n);
                    }
                    if (got != size) {
                        why = "got " + std::to_string(got) + " of " + std::to_string(size) + " bytes";
                    }
                }
                if (why.empty()) {
                    std::printf("ok\n");
                } else {
                    std::printf("fail %s\n", why.c_str());
                }
            } else if (line == "hwm") {
                std::printf("hwm %s\n", bench::vmHwmKiB(daemon).c_str());
            } else {
                std::printf("fail unknown request\n");
            }
            std::fflush(stdout);
        }
    } catch (const std::exception& e) {
        std::cerr << "peer-cloud: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
