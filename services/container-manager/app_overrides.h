// SPDX-License-Identifier: Apache-2.0
#pragma once
// Over-the-air settings (ApplySettings / GetSettings): the daemon's log level
// and per-app overrides of environment and cgroup limits, layered over each
// app's install options when its runtime config is generated. The document
// has one canonical form, so toJson(parse(x)) applied again changes nothing.
//
//   {"log_level": "debug|info|notice|warning|error",
//    "apps": {"<name>": {"env": {"K": "V"}, "memory_limit": <bytes>,
//                         "pids_limit": <n>, "cpu_percent": <n>}}}

#include "app_config.h"

#include "mbl/expected.h"

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace mbl::containers {

struct AppOverride {
    std::optional<std::map<std::string, std::string>> env; // over the app's own environment, key by key
    std::optional<std::uint64_t> memoryLimit;              // bytes
    std::optional<std::int64_t> pidsLimit;
    std::optional<std::uint32_t> cpuPercent;               // of one CPU

    bool operator==(const AppOverride& o) const
    {
        return env == o.env && memoryLimit == o.memoryLimit && pidsLimit == o.pidsLimit && cpuPercent == o.cpuPercent;
    }
    bool operator!=(const AppOverride& o) const { return !(*this == o); }
};

struct Overrides {
    std::optional<std::string> logLevel;
    std::map<std::string, AppOverride> apps; // kept also for apps not installed (yet)

    nlohmann::json toJson() const;
    // The override for an app ({} when there is none).
    AppOverride forApp(const std::string& name) const;
};

// Parses and checks a settings document: unknown keys, wrong types, values out
// of range or beyond the device policy, unsafe app names → InvalidArgument
// with the reason.
Expected<Overrides> parseOverrides(const std::string& text, const DevicePolicy& policy);

// The app's effective settings: its install settings with the override applied.
AppSettings applyOverride(AppSettings settings, const AppOverride& o);

} // namespace mbl::containers
