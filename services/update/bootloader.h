// SPDX-License-Identifier: Apache-2.0
#pragma once
// Bootloader environment backends. The slot convention (the same for all three,
// as RAUC uses it): BOOT_ORDER lists the boot names of the slots to try, first
// first ("B A"); BOOT_<name>_LEFT is how many more times that slot may be tried.
// The boot script walks BOOT_ORDER, boots the first slot with attempts left and
// decrements its counter; a slot with none left is skipped (fallback).

#include "mbl/expected.h"

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace mbl::update {

class Bootloader {
public:
    virtual ~Bootloader() = default;
    virtual Expected<std::map<std::string, std::string>> read() = 0;
    // Sets (value) or deletes (nullopt) variables in one environment write.
    virtual Status write(const std::map<std::string, std::optional<std::string>>& changes) = 0;
    virtual std::string describe() const = 0;
};

struct BootloaderConfig {
    std::string type;      // "file", "uboot", "grub"
    std::string path;      // file: env file; grub: grubenv; uboot: fw_env.config
    std::string defaults;  // uboot: default environment for a blank env (fw_setenv -f)
    std::string fwPrintenv = "fw_printenv";
    std::string fwSetenv = "fw_setenv";
    std::string grubEditenv = "grub-editenv";
};

Expected<std::unique_ptr<Bootloader>> makeBootloader(const BootloaderConfig& cfg);

} // namespace mbl::update
