// SPDX-License-Identifier: Apache-2.0
// mbl-demo: the README's main command. Starts the whole product in a sandbox
// folder (world.h: private system-type bus with the real policies, the five
// daemons as their users, the DDI test server behind nginx with mutual TLS, a
// test CA), provisions the device, builds and signs a bundle with a rootfs image
// and an OCI app, creates the deployment on the server and shows the device
// carrying it out, step by step, to closed/success. --keep leaves it running.

#include "world.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <unistd.h>

using namespace mbl::test;
using namespace mbl::test::e2e;
using namespace std::chrono_literals;

namespace {

const auto t0 = std::chrono::steady_clock::now();

void line(const std::string& text)
{
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "[%3lld.%01lld s] ", static_cast<long long>(ms / 1000),
                  static_cast<long long>((ms % 1000) / 100));
    std::cout << stamp << text << std::endl;
}

int run(bool keep)
{
    WorldOptions opts;
    opts.narrate = line;
    opts.coordinator = {{"health_grace_ms", 3000}};
    line("starting the stack in a sandbox folder (nothing on this machine is changed)");
    World w(opts);
    line("test CA, nginx (mutual TLS) and the hawkBit DDI test server are up: " + w.cloud.serverUrl());
    w.startAll();
    line("five daemons on a private system bus (real policies): " + w.stack.address());

    const auto app = w.appImage("hello", "1.0.0", {"sh", "-c", "echo hello from an MBL app; while true; do sleep 5; done"});
    const auto bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {{"hello@1.0.0", app}}, ""}, "fw-2.0.0.mblb");
    line("device before: booted slot " + w.bootedSlot() + ", firmware " + w.device->config.value("factoryVersion", "") +
         ", no apps");
    const auto action = w.deploy(bundle);
    w.pollNow();

    std::string lastStep;
    std::size_t feedbackSeen = 0;
    const bool done = w.runUntil(
        [&] {
            const std::string step = w.coordinatorString("Step");
            if (!step.empty() && step != lastStep) {
                line("device: " + step);
                lastStep = step;
            }
            const auto fb = w.feedbackDetails(action);
            for (; feedbackSeen < fb.size(); ++feedbackSeen) {
                line("server received feedback: " + fb[feedbackSeen]);
            }
            const auto st = w.actionStatus(action);
            return st == "FINISHED" || st == "ERROR" || st == "CANCELED";
        },
        300s);

    const auto status = w.actionStatus(action);
    std::cout << "\n=== summary ===\n";
    std::cout << "server action " << action << ": " << (status.empty() ? "?" : status) << "\n";
    std::cout << "booted slot: " << w.bootedSlot() << " (reboots: " << w.device->boots << ")\n";
    std::cout << "bootloader environment: ";
    for (const auto& [k, v] : w.bootEnv()) {
        std::cout << k << "=" << v << " ";
    }
    std::cout << "\napps:";
    for (const auto& a : w.apps()) {
        std::cout << " " << a.name << " " << a.version << " (" << a.state << ")";
    }
    std::cout << "\nrunc containers: " << w.runcContainers().size() << "\n\n";
    auto st = w.stack.runTool({buildRoot() + "/services/mblctl/mblctl", "status"});
    std::cout << st.out << st.err;
    auto hist = w.stack.runTool({buildRoot() + "/services/mblctl/mblctl", "history"});
    std::cout << "\n" << hist.out << hist.err;

    const bool ok = done && status == "FINISHED";
    std::cout << (ok ? "\nDEMO OK: deployment carried out and reported closed/success\n"
                     : "\nDEMO FAILED: the deployment did not reach closed/success\n");
    if (!ok) {
        std::cout << "coordinator log:\n" << w.stack.log("coordinator");
    }
    if (keep) {
        std::cout << "\nThe stack keeps running. In another shell:\n"
                  << "  export DBUS_SYSTEM_BUS_ADDRESS=" << w.stack.address() << "\n"
                  << "  busctl --address=$DBUS_SYSTEM_BUS_ADDRESS tree org.mbl.ContainerManager1\n"
                  << "  " << buildRoot() << "/services/mblctl/mblctl --root " << w.stack.root() << " status\n"
                  << "  " << buildRoot() << "/services/mblctl/mblctl --root " << w.stack.root() << " app list\n"
                  << "  curl -s http://127.0.0.1:" << w.cloud.backendPort() << "/admin/state   # the server's view\n"
                  << "Press Ctrl-C to stop it and remove everything.\n"
                  << std::flush;
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        int sig = 0;
        sigwait(&mask, &sig);
    }
    return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv)
{
    bool keep = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--keep") {
            keep = true;
        } else {
            std::cerr << "usage: mbl-demo [--keep]\n";
            return 2;
        }
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    try {
        return run(keep);
    } catch (const std::exception& e) {
        std::cerr << "mbl-demo: " << e.what() << "\n";
        return 1;
    }
}
