// SPDX-License-Identifier: Apache-2.0
// Our side of bench/peers/firmware.sh: the real mbl-update daemon on a private
// bus (tests/harness TestStack: dbus-daemon with dbus-policy/, the daemon as it
// runs on a device), two file-backed slots the script preallocated, a file
// bootloader environment; this process stays connected (as RAUC's CLI talks to
// a running RAUC service) and installs on request:
//   stdin  "install BUNDLE"  -> Install(fd of BUNDLE) over the bus, then waits for
//                               the Completed signal of that operation
//   stdout "ok"               once Completed(ok) arrived, or "fail NAME: MSG"
//   stdin  "hwm"              -> "hwm KiB" (the daemon's VmHWM: its peak RSS so far)
// The script times each request from the line written to the "ok" read, so every
// side is timed the same way. EOF: the stack is torn down.
// Usage: peer-update SLOT_A SLOT_B CA_PEM COMPATIBLE [readBack true|false]
// (root; MBL_BUILD_ROOT and MBL_POLICY_DIR as in meson's test environment)

#include "harness.h"

#include "mbl/dbus/bus.h"
#include "peer_memory.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <unistd.h>

using namespace mbl;

namespace {

constexpr const char* kIface = "org.mbl.Update1";

} // namespace

int main(int argc, char** argv)
{
    if (argc < 5) {
        std::cerr << "usage: peer-update SLOT_A SLOT_B CA_PEM COMPATIBLE [readBack true|false]\n";
        return 2;
    }
    const std::string slotA = argv[1];
    const std::string slotB = argv[2];
    const bool readBack = argc < 6 || std::string(argv[5]) != "false";
    auto ca = fs::readFile(argv[3]);
    if (!ca) {
        std::cerr << "peer-update: cannot read " << argv[3] << "\n";
        return 1;
    }
    test::TempDir work("mbl-peer-update");
    test::TestStack stack;
    const std::string root = stack.root();
    (void)fs::makeDirs(root + "/etc/mbl/trust");
    (void)fs::writeFileAtomic(root + "/etc/mbl/trust/ca.pem", *ca);
    nlohmann::json cfg = {{"compatible", argv[4]},
                          {"bootedSlot", "a"},
                          {"bootloader", {{"type", "file"}, {"path", work.path() + "/bootenv"}}},
                          {"readBack", readBack},
                          {"slots", {{{"name", "a"}, {"device", slotA}}, {{"name", "b"}, {"device", slotB}}}}};
    (void)fs::writeFileAtomic(root + "/etc/mbl/update.json", cfg.dump());
    if (auto st = stack.start("update"); !st) {
        std::cerr << "peer-update: " << st.error().message << "\n";
        return 1;
    }
    auto conn = dbus::connectSystemBus();
    auto proxy = sdbus::createProxy(*conn, "org.mbl.Update1", "/org/mbl/Update1");
    std::mutex m;
    std::condition_variable cv;
    std::map<std::string, std::pair<bool, std::string>> done;
    proxy->uponSignal("Completed")
        .onInterface(kIface)
        .call([&](const std::string& id, bool ok, const std::string& name, const std::string& msg) {
            std::lock_guard<std::mutex> l(m);
            done[id] = {ok, name + ": " + msg};
            cv.notify_all();
        });
    proxy->finishRegistration();
    conn->enterEventLoopAsync();
    std::printf("ready %d\n", static_cast<int>(stack.pid("update")));
    std::fflush(stdout);

    std::string line;
    while (std::getline(std::cin, line)) {
        if (str::startsWith(line, "install ")) {
            const std::string bundle = line.substr(8);
            Fd fd(::open(bundle.c_str(), O_RDONLY | O_CLOEXEC));
            if (!fd) {
                std::printf("fail open %s\n", bundle.c_str());
            } else {
                try {
                    std::string id;
                    proxy->callMethod("Install")
                        .onInterface(kIface)
                        .withArguments(sdbus::UnixFd(fd.get()), std::map<std::string, sdbus::Variant>{})
                        .storeResultsTo(id);
                    std::unique_lock<std::mutex> l(m);
                    cv.wait(l, [&] { return done.count(id) > 0; });
                    if (done[id].first) {
                        std::printf("ok\n");
                    } else {
                        std::printf("fail %s\n", done[id].second.c_str());
                    }
                } catch (const sdbus::Error& e) {
                    std::printf("fail %s: %s\n", e.getName().c_str(), e.getMessage().c_str());
                }
            }
        } else if (line == "hwm") {
            std::printf("hwm %s\n", bench::vmHwmKiB(stack.pid("update")).c_str());
        } else if (line == "log") {
            std::fputs(stack.log("update").c_str(), stderr);
            std::printf("log\n");
        } else {
            std::printf("fail unknown request\n");
        }
        std::fflush(stdout);
    }
    proxy.reset();
    conn->leaveEventLoop();
    return 0;
}
