// SPDX-License-Identifier: Apache-2.0
#pragma once
// The whole product on one machine, for the end-to-end tests, the coordinator
// benchmark and the README demo: the private system-type bus with the real
// policies, the five daemons as their real users, the hawkBit DDI test server
// behind a real nginx terminating mutual TLS, a test CA, a device with two slot
// image files and a bootloader environment, real runc for the apps.
//
// What is simulated (services/coordinator/README.md lists the same):
// - the server: tests/cloud/ddi_server.py, written from hawkBit's DDI
//   documentation, not hawkBit itself;
// - the reboot and power loss: the coordinator asks for a reboot by writing its
//   reboot-request file (as on a device, where mbl-reboot.path answers it);
//   simulateReboot() kills every daemon and container (SIGKILL), removes the
//   request (/run is a tmpfs) and starts the daemons again — no kernel, init or
//   file-system recovery runs;
// - the bootloader: the boot simulator of the update tests reads the environment
//   file and picks the slot as the U-Boot/GRUB scripts do, then writes the
//   kernel command line (mbl.slot=) and a new boot id to files the update
//   service and the coordinator read instead of /proc;
// - the slots and the root file system: two image files, never mounted or
//   booted. What apps see of the running rootfs is stood for by
//   <root>/etc/os-release, written at each simulated boot from the first line
//   of the booted slot image (rootfsImage() starts its images with
//   "VERSION_ID=<version>"): an app that bind-mounts it and refuses a version is
//   an app the new rootfs breaks;
// - CLOCK_BOOTTIME is the host's (it does not restart at a simulated reboot;
//   the new boot id is what tells);
// - the hostname command, where a test sets one, writes a file;
// - the network is loopback; outages are faults of the test server.

#include "cloud_fixture.h"
#include "harness.h"
#include "update_fixture.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mbl::test::e2e {

struct WorldOptions {
    std::size_t slotSize = 8u << 20;
    nlohmann::json coordinator = nlohmann::json::object(); // merged into coordinator.json
    nlohmann::json containers = nlohmann::json::object();  // merged into containers.json
    nlohmann::json cloud = nlohmann::json::object();       // merged into cloud.json
    // Receives one line per step the world takes (the demo prints them).
    std::function<void(const std::string&)> narrate;
};

struct AppRow {
    std::string name, version, state;
};

class World {
public:
    explicit World(WorldOptions options = {});
    ~World();
    World(const World&) = delete;
    World& operator=(const World&) = delete;

    TestStack stack;
    CloudFixture cloud;
    TempDir work{"mbl-e2e"};
    update::Pki pki;
    std::unique_ptr<update::Device> device;
    std::string deviceId;

    // identity → provisioning (first time) → update → container manager → cloud
    // client → coordinator. Extra start options per daemon label (e.g. a test pause
    // point); they hold for the starts after simulated reboots too, until forgotten.
    void startAll(const std::map<std::string, TestStack::StartOptions>& extra = {});
    void forgetStartOptions() { startExtra_.clear(); }
    void start(const std::string& label, const TestStack::StartOptions& opts = {});
    // A CSR from the identity service, signed by the test CA, and the
    // provisioning document for the DDI server behind nginx (mutual TLS).
    void provision();

    // Artifacts, made with the independent tools (umoci, skopeo, mbl-bundle).
    // An OCI image archive of a busybox app that runs `cmd`.
    std::string appImage(const std::string& name, const std::string& version, const std::vector<std::string>& cmd);
    // A rootfs image of `size` pseudo-random bytes (0: half a slot).
    std::string rootfsImage(const std::string& version, std::size_t size = 0);
    struct BundleParts {
        std::string version = "2.0.0";
        int securityVersion = 1;
        std::string rootfs;                                    // "" for an apps-only bundle
        std::vector<std::pair<std::string, std::string>> apps; // "name@version" -> OCI archive
        std::string config;                                    // JSON file, "" for none
    };
    std::string bundle(const BundleParts& parts, const std::string& fileName);
    // The first line of a rootfs image made by rootfsImage(): what its /etc/os-release says.
    static std::string osReleaseOf(const std::string& image);

    // The server side: upload the bundles and create one deployment of them for this
    // device (one chunk per bundle, each with its artifact).
    std::string deploy(const std::string& bundlePath, const nlohmann::json& extra = nlohmann::json::object());
    std::string deploy(const std::vector<std::string>& bundlePaths, const nlohmann::json& extra);
    nlohmann::json action(const std::string& actionId);
    std::string actionStatus(const std::string& actionId);
    // The feedback details the server received for the action, oldest first.
    std::vector<std::string> feedbackDetails(const std::string& actionId);

    // The device side.
    // An app installed by hand (ContainerManager1.InstallApp with these options, no
    // bundle, no coordinator), as a field engineer would; returns once it runs.
    void installAppByHand(const std::string& image, const nlohmann::json& options);
    std::string osRelease() const; // <root>/etc/os-release: the running rootfs's
    bool rebootRequested() const;
    // Power cycle: SIGKILL every daemon and container, boot simulator, start again.
    // Returns the slot the simulated bootloader booted.
    std::string simulateReboot();
    // Waits for pred, answering reboot requests on the way; false on timeout.
    bool runUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout);
    void pollNow();

    std::string coordinatorString(const std::string& property);
    nlohmann::json coordinatorStatus();
    nlohmann::json coordinatorHistory(unsigned count = 10);
    std::vector<AppRow> apps();
    std::vector<std::string> runcContainers();
    std::string runcRoot() const { return stack.root() + "/run/mbl/apps/runc"; }
    std::string bootedSlot() const { return device->booted(); }
    std::map<std::string, std::string> bootEnv() const { return device->readEnv(); }

    void say(const std::string& line) const;

private:
    void writeConfigs(const WorldOptions& options);
    WorldOptions options_;
    std::map<std::string, TestStack::StartOptions> startExtra_;
    bool provisioned_ = false;
    int appImages_ = 0;
};

} // namespace mbl::test::e2e
