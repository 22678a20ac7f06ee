// SPDX-License-Identifier: Apache-2.0
#pragma once
// One QEMU device and its cloud for the scenarios of tests/device: the machine
// (machine.h) booting the cached image, the DDI test server behind real nginx
// with mutual TLS (tests/cloud's CloudFixture, unchanged: the guest reaches it
// at https://10.0.2.100), and the artifacts a fleet operator makes: OCI app
// images (umoci + skopeo), firmware bundles signed by the image's firmware CA
// (mbl-bundle of the release build). Everything in one temporary folder;
// nothing keeps running after the world is gone.

#include "cloud_fixture.h"
#include "machine.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mbl::test::device {

class DeviceWorld {
public:
    explicit DeviceWorld(Bootloader b);
    ~DeviceWorld();
    DeviceWorld(const DeviceWorld&) = delete;
    DeviceWorld& operator=(const DeviceWorld&) = delete;

    TempDir work{"mbl-device"};
    Image image;
    CloudFixture cloud;
    std::unique_ptr<Machine> m;
    const std::string deviceId = "mbl-qemu-0001";

    // Power on and wait for multi-user (running or degraded); fails the test
    // with the console's tail if it does not come. Returns seconds taken.
    double boot(std::chrono::seconds timeout = std::chrono::seconds(300));
    // Waits for the next boot (a reboot the guest does itself, or a reset).
    double waitReboot(const std::string& previousBootId, std::chrono::seconds timeout = std::chrono::seconds(300));

    // Runs a shell script in the guest; throws with its output unless it exits 0.
    std::string guest(const std::string& script, std::chrono::seconds timeout = std::chrono::seconds(120));
    ExecResult guestTry(const std::string& script, std::chrono::seconds timeout = std::chrono::seconds(120));

    // The factory step, in the guest: the identity service's CSR (mblctl),
    // signed by the fleet CA (the cloud fixture's), installed, and the
    // provisioning document for https://10.0.2.100 (mutual TLS).
    void provision();
    // The cloud client says connected.
    bool waitConnected(std::chrono::seconds timeout);

    // Artifacts.
    std::string appImage(const std::string& name, const std::string& version, const std::vector<std::string>& cmd);
    struct BundleParts {
        std::string version = "2.0.0";
        int securityVersion = 1;
        std::string rootfs; // an ext4 slot image ("" for apps only)
        std::vector<std::pair<std::string, std::string>> apps; // "name@version" -> OCI archive
        std::string compatible = "mbl-qemu-x86_64";
        std::string config; // a config payload (JSON file), "" for none
    };
    std::string bundle(const BundleParts& parts, const std::string& fileName);
    // A copy of the image's slot image changed with debugfs commands (-w -f).
    std::string rootfsVariant(const std::string& name, const std::vector<std::string>& debugfsCommands);

    // The server.
    std::string deploy(const std::string& bundlePath);
    nlohmann::json action(const std::string& actionId);
    std::string actionStatus(const std::string& actionId);
    std::vector<std::string> feedbackDetails(const std::string& actionId);
    // Waits until the server's action reaches a final state (FINISHED, ERROR,
    // CANCELED, DOWNLOADED); returns it (the last state seen on timeout).
    std::string waitClosed(const std::string& actionId, std::chrono::seconds timeout);

    // The device, through the agent.
    std::string bootedSlot();          // /proc/cmdline's mbl.slot=
    std::map<std::string, std::string> bootEnv(); // the bootloader environment, as Linux reads it
    nlohmann::json updateStatus();     // mblctl update status --json

    // Prints a line to the test log with the time since the world began.
    void say(const std::string& line) const;
    // On failure: the console's tail and the guest's journal of MBL units.
    std::string diagnostics();

private:
    std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
    int apps_ = 0;
};

} // namespace mbl::test::device
