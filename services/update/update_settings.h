#pragma once
// The update service's configuration (<configDir>/update.json), read through
// libmbl-common's schema-checked Config: every key typed and range-checked,
// unknown or misspelled keys refused at any depth, before anything is touched.

#include "boot_policy.h"
#include "bootloader.h"

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/paths.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mbl::update {

struct UpdateSettings {
    std::string stateDir;
    std::string stagingDir;
    std::string trustDir;
    std::string compatible;
    std::string factoryVersion = "0.0.0";
    std::string cmdlinePath = "/proc/cmdline";
    std::string bootedOverride;
    std::string slotClass = "rootfs";
    std::uint64_t maxManifestBytes = 0;
    int trialAttempts = 1;
    int goodAttempts = 3;
    bool readBack = true;
    std::vector<SlotConfig> slots;
    BootloaderConfig bootloader;

    // InvalidArgument naming the file, the key path and what was expected.
    static Expected<UpdateSettings> fromConfig(const Paths& paths, const Config& config);
};

} // namespace mbl::update
