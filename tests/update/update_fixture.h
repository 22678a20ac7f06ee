// SPDX-License-Identifier: Apache-2.0
#pragma once
// Test fixtures for the update service: a throw-away PKI made with the real
// openssl CLI, bundles made with mbl-bundle (or hand-built tars for malformed
// ones), a device folder with two slot image files and a bootloader environment,
// and the boot simulator that stands in for U-Boot/GRUB on a reboot.

#include "mbl/expected.h"
#include "mbl/process.h"

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace mbl::test::update {

std::string bundleTool();
// Runs argv; fails the test (throws) if it cannot run at all.
RunResult mustRun(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});
std::string sha256File(const std::string& path);
void writeFile(const std::string& path, const std::string& data);
std::string readFile(const std::string& path);
// A file of `size` pseudo-random bytes (seeded).
void makeImage(const std::string& path, std::size_t size, unsigned seed);

// A root CA, an intermediate, a code-signing signer under it, a signer without
// the code-signing EKU, and an unrelated CA with its own signer.
struct Pki {
    explicit Pki(const std::string& dir);
    std::string dir, caPem, intPem, signKey, signPem, noEkuKey, noEkuPem, otherCaPem, otherKey, otherPem;
};

struct BundleSpec {
    std::string version = "2.0.0";
    int securityVersion = 1;
    std::string compatible = "mbl-test-board";
    std::string rootfs;                               // image path, "" for none
    std::string slotClass = "rootfs";
    std::vector<std::pair<std::string, std::string>> apps; // name -> file
    std::string config;                               // JSON file, "" for none
    std::string key, cert, chain;                     // signer
};
// mbl-bundle create; returns its result.
RunResult createBundle(const BundleSpec& s, const std::string& out);

// A tar with exactly these members, in this order (for malformed bundles).
void writeTar(const std::string& out, const std::vector<std::pair<std::string, std::string>>& members);
// The members of a bundle as (name, content).
std::vector<std::pair<std::string, std::string>> readTar(const std::string& path);

// A device: <root>/etc/mbl/update.json, trust store, slots a/b as image files,
// the bootloader environment, a kernel command line and a boot id.
struct Device {
    Device(const std::string& root, const Pki& pki, const std::string& bootloader = "file",
           std::size_t slotSize = 4u << 20);
    std::string root, configDir, stateDir, slotA, slotB, env, cmdline, bootId, fwConfig, bootloader;
    nlohmann::json config;
    void writeConfig() const;
    // Reads the environment the way the boot script does.
    std::map<std::string, std::string> readEnv() const;
    void writeEnv(const std::map<std::string, std::string>& vars) const;
    // The simulated reboot: picks the slot as the U-Boot/GRUB script would, decrements
    // its attempts, writes mbl.slot=<name> to the command line and a new boot id.
    // Returns the slot booted ("" if none is bootable).
    std::string reboot();
    std::string booted() const;
    int boots = 0;
};

} // namespace mbl::test::update
