// SPDX-License-Identifier: Apache-2.0
// Our side of bench/peers/idle.sh, and the server suricatta polls there: the
// whole stack idle as footprint-idle starts it (tests/e2e/world.h: the five
// daemons on a private bus as their real users, each with the Environment= of
// its systemd unit; the cloud client provisioned as mbl-device-0001 and polling
// the DDI test server behind real nginx with mutual TLS; nothing deployed), held
// until stdin closes. A second device, for a peer that polls the same server, is
// made with an id of the same length as ours (the controller id is in every poll's
// URL path, so both paths cost the same bytes) and a certificate from the same CA.
// On stdout, one "key value" a line, then "ready":
//   server URL, admin URL (the test server's control API, loopback HTTP), port
//   (nginx's TLS port), log (nginx's access log: format `ddi` of
//   tests/cloud/cloud_fixture.cpp), ca, id (our controller id), peerid, peercert,
//   peerkey, and pid-<label> for each daemon
// Then, per stdin line:
//   "running" -> "ok" when all five still run (none restarted: the same pids),
//                else "fail <label>"
// Usage: peer-idle   (root; MBL_BUILD_ROOT, MBL_SOURCE_ROOT, MBL_POLICY_DIR as in
// meson's test environment; needs nginx, python3, openssl)

#include "world.h"

#include "unit_environment.h"

#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

using namespace mbl;
using namespace mbl::test::e2e;

int main()
{
    try {
        World w;
        const std::vector<std::string> labels = bench::startAsShipped(w, MBL_SYSTEMD_UNIT_DIR);
        std::string peerId = w.deviceId; // "mbl-device-0001" -> "mbl-device-0002"
        peerId.back() = peerId.back() == '2' ? '3' : '2';
        const auto creds = w.cloud.makeDevice(peerId);
        const std::string pki = w.cloud.dir() + "/pki";
        const std::string server = w.cloud.serverUrl();
        std::printf("server %s\nadmin http://127.0.0.1:%d\nport %s\nlog %s\nca %s\nid %s\npeerid %s\npeercert %s\n"
                    "peerkey %s\n",
                    server.c_str(), w.cloud.backendPort(), server.substr(server.rfind(':') + 1).c_str(),
                    (w.cloud.dir() + "/nginx/logs/access.log").c_str(), (pki + "/test-ca.pem").c_str(),
                    w.deviceId.c_str(), peerId.c_str(), (pki + "/device-" + peerId + ".pem").c_str(),
                    creds.keyPath.c_str());
        std::map<std::string, pid_t> pids;
        for (const auto& label : labels) {
            pids[label] = w.stack.pid(label);
            std::printf("pid-%s %d\n", label.c_str(), static_cast<int>(pids[label]));
        }
        std::printf("ready\n");
        std::fflush(stdout);

        std::string line;
        while (std::getline(std::cin, line)) {
            if (line == "running") {
                std::string down;
                for (const auto& label : labels) {
                    if (!w.stack.running(label) || w.stack.pid(label) != pids[label]) {
                        down += " " + label;
                    }
                }
                std::printf(down.empty() ? "ok\n" : "fail%s\n", down.c_str());
            } else {
                std::printf("fail unknown request\n");
            }
            std::fflush(stdout);
        }
    } catch (const std::exception& e) {
        std::cerr << "peer-idle: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
