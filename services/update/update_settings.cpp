// SPDX-License-Identifier: Apache-2.0
#include "update_settings.h"

#include "bundle.h"

#include "mbl/strings.h"

#include <algorithm>
#include <cctype>
#include <limits>

namespace mbl::update {

namespace {

bool isBootname(const std::string& s)
{
    return !s.empty() && s.size() <= 16 && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
    });
}

} // namespace

Expected<UpdateSettings> UpdateSettings::fromConfig(const Paths& paths, const Config& config)
{
    UpdateSettings s;
    const std::string& file = config.origin();
    auto bad = [&](const std::string& key, const std::string& expected) {
        return unexpected(ErrorCode::InvalidArgument, file + ": key '" + key + "' must be " + expected);
    };
    s.stateDir = paths.state("update");
    // Strings, then numbers and flags: the first error is reported.
    struct Str {
        const char* key;
        std::string* into;
        std::string fallback;
    };
    std::string bootId;
    for (const Str& k : {Str{"compatible", &s.compatible, ""}, Str{"trustDir", &s.trustDir, paths.config("trust")},
                         Str{"stagingDir", &s.stagingDir, s.stateDir + "/staging"},
                         Str{"factoryVersion", &s.factoryVersion, "0.0.0"},
                         Str{"cmdlinePath", &s.cmdlinePath, "/proc/cmdline"},
                         // Accepted for older configurations; the bootloader environment
                         // now tells a trial boot from a fallback.
                         Str{"bootIdPath", &bootId, ""}, Str{"bootedSlot", &s.bootedOverride, ""},
                         Str{"slotClass", &s.slotClass, "rootfs"}}) {
        auto v = config.getString(k.key, k.fallback);
        if (!v) {
            return unexpected(v.error());
        }
        *k.into = *v;
    }
    if (!bundle::isSemver(s.factoryVersion)) {
        return bad("factoryVersion", "a semantic version (e.g. 1.0.0), not '" + str::quotable(s.factoryVersion) + "'");
    }
    if (s.slotClass.empty()) {
        return bad("slotClass", "a non-empty string");
    }
    auto maxManifest = config.getInt("maxManifestBytes", bundle::kDefaultMaxManifestBytes, 1024, 64 << 20);
    auto trial = config.getInt("trialAttempts", 1, 1, 100);
    auto good = config.getInt("goodAttempts", 3, 1, 100);
    auto readBack = config.getBool("readBack", true);
    for (const auto* r : {&maxManifest, &trial, &good}) {
        if (!*r) {
            return unexpected(r->error());
        }
    }
    if (!readBack) {
        return unexpected(readBack.error());
    }
    s.maxManifestBytes = static_cast<std::uint64_t>(*maxManifest);
    s.trialAttempts = static_cast<int>(*trial);
    s.goodAttempts = static_cast<int>(*good);
    s.readBack = *readBack;

    auto count = config.getListSize("slots");
    if (!count) {
        return unexpected(count.error());
    }
    for (std::size_t i = 0; i < *count; ++i) {
        const std::string at = "slots[" + std::to_string(i) + "]";
        SlotConfig c;
        auto name = config.getString(at + ".name", "");
        auto device = config.getString(at + ".device", "");
        auto bootname = config.getString(at + ".bootname", "");
        auto filesystem = config.getString(at + ".filesystem", "");
        auto size = config.getInt(at + ".size", 0, 0, std::numeric_limits<std::int64_t>::max());
        for (const auto* r : {&name, &device, &bootname, &filesystem}) {
            if (!*r) {
                return unexpected(r->error());
            }
        }
        if (!size) {
            return unexpected(size.error());
        }
        if (!str::isSafeName(*name, 16)) {
            return bad(at + ".name", "a short safe name such as \"a\" ([A-Za-z0-9._-], at most 16)");
        }
        if (device->empty()) {
            return bad(at + ".device", "the slot's block device or image file");
        }
        if (!filesystem->empty() && *filesystem != "ext4") {
            return bad(at + ".filesystem", "\"ext4\" (the file system a rootfs payload must be) or absent (any)");
        }
        c.name = *name;
        c.device = *device;
        c.filesystem = *filesystem;
        c.bootname = *bootname;
        if (c.bootname.empty()) {
            for (char ch : c.name) {
                c.bootname += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
            }
        }
        if (!isBootname(c.bootname)) {
            return bad(at + ".bootname", "a boot name of [A-Za-z0-9_] (the boot scripts use it in variable names)");
        }
        for (const auto& other : s.slots) {
            if (other.name == c.name || other.bootname == c.bootname) {
                return bad(at, "a slot of its own (name '" + c.name + "' or boot name '" + c.bootname +
                                   "' is used twice)");
            }
        }
        c.size = static_cast<std::uint64_t>(*size);
        s.slots.push_back(std::move(c));
    }
    if (!s.slots.empty() && s.slots.size() != 2) {
        return bad("slots", "a list of exactly two slots (A/B)");
    }
    if (!s.bootedOverride.empty() &&
        std::none_of(s.slots.begin(), s.slots.end(), [&](const SlotConfig& c) { return c.name == s.bootedOverride; })) {
        return bad("bootedSlot", "the name of one of 'slots'");
    }

    // The bootloader: named explicitly wherever there are slots to switch (a
    // missing or misspelled type must never leave a real board on the file backend).
    auto type = config.getEnum("bootloader.type", "file", {"file", "uboot", "grub"});
    if (!type) {
        return unexpected(type.error());
    }
    const std::string defaultPath = *type == "uboot" ? "/etc/fw_env.config"
                                    : *type == "grub" ? "/boot/grub/grubenv"
                                                      : s.stateDir + "/bootenv";
    auto path = config.getString("bootloader.path", defaultPath);
    auto defaults = config.getString("bootloader.defaults", "");
    if (!path) {
        return unexpected(path.error());
    }
    if (!defaults) {
        return unexpected(defaults.error());
    }
    if (path->empty()) {
        return bad("bootloader.path", "a path (environment file, fw_env.config or grubenv)");
    }
    if (!defaults->empty() && *type != "uboot") {
        return bad("bootloader.defaults", "absent unless bootloader.type is uboot");
    }
    s.bootloader.type = *type;
    s.bootloader.path = *path;
    s.bootloader.defaults = *defaults;

    // Anything in the file that nothing above read is a mistake; checked before
    // the rules below, so that `bootloader.typ` is named as the misspelling it is.
    if (auto st = config.rejectUnreadKeys(); !st) {
        return unexpected(st.error());
    }
    if (!s.slots.empty() && !config.has("bootloader.type")) {
        return bad("bootloader.type", "set when 'slots' are (file, uboot or grub): without it the slots would never "
                                      "switch on a real board");
    }
    return s;
}

} // namespace mbl::update
