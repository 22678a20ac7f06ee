// SPDX-License-Identifier: Apache-2.0
#pragma once
// Over-the-air settings of the cloud client (ApplySettings / GetSettings): the
// overrides a fleet operator may set remotely, as one JSON object. Pure parsing
// and printing; CloudClient applies and persists them.

#include "mbl/expected.h"

#include <cstdint>
#include <optional>
#include <string>

namespace mbl::cloud {

struct RuntimeSettings {
    static constexpr std::uint32_t kMinPollSec = 1;
    static constexpr std::uint32_t kMaxPollSec = 2592000; // 30 days
    static constexpr std::size_t kMaxJsonBytes = 64 * 1024;

    // Overrides the server's config.polling.sleep when set.
    std::optional<std::uint32_t> pollIntervalSec;
    // debug, info, notice, warning, error; the daemon's start level when unset.
    std::optional<std::string> logLevel;

    // {"poll_interval_sec": 1..2592000, "log_level": "debug|info|notice|warning|error"},
    // every key optional. Unknown keys, wrong types, values out of range, not an
    // object: InvalidArgument naming the key and the reason.
    static Expected<RuntimeSettings> parse(const std::string& text);
    // The same form parse() takes; "{}" when nothing is overridden.
    std::string dump() const;

    bool operator==(const RuntimeSettings& o) const
    {
        return pollIntervalSec == o.pollIntervalSec && logLevel == o.logLevel;
    }
};

} // namespace mbl::cloud
