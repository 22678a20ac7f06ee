// SPDX-License-Identifier: Apache-2.0
#include "settings.h"

#include "mbl/log.h"

#include <nlohmann/json.hpp>

namespace mbl::cloud {

using nlohmann::json;

Expected<RuntimeSettings> RuntimeSettings::parse(const std::string& text)
{
    auto bad = [](const std::string& why) {
        return unexpected(ErrorCode::InvalidArgument, "settings: " + why);
    };
    if (text.size() > kMaxJsonBytes) {
        return bad("the document is larger than " + std::to_string(kMaxJsonBytes) + " bytes");
    }
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) {
        return bad("not valid JSON");
    }
    if (!j.is_object()) {
        return bad("must be a JSON object, e.g. {\"poll_interval_sec\": 300, \"log_level\": \"info\"}");
    }
    RuntimeSettings s;
    for (auto& [key, v] : j.items()) {
        if (key == "poll_interval_sec") {
            if (!v.is_number_integer()) {
                return bad("'poll_interval_sec' must be an integer number of seconds");
            }
            const bool negative = v.is_number_integer() && !v.is_number_unsigned() && v.get<std::int64_t>() < 0;
            if (negative || v.get<std::uint64_t>() < kMinPollSec || v.get<std::uint64_t>() > kMaxPollSec) {
                return bad("'poll_interval_sec' must be between " + std::to_string(kMinPollSec) + " and " +
                           std::to_string(kMaxPollSec) + " (30 days), not " + v.dump());
            }
            s.pollIntervalSec = static_cast<std::uint32_t>(v.get<std::uint64_t>());
        } else if (key == "log_level") {
            log::Level lvl;
            if (!v.is_string() || !log::parseLevel(v.get<std::string>(), lvl)) {
                return bad("'log_level' must be one of \"debug\", \"info\", \"notice\", \"warning\", \"error\", not " +
                           v.dump());
            }
            s.logLevel = v.get<std::string>();
        } else {
            return bad("unknown key '" + key + "' (known: poll_interval_sec, log_level)");
        }
    }
    return s;
}

std::string RuntimeSettings::dump() const
{
    json j = json::object();
    if (pollIntervalSec) {
        j["poll_interval_sec"] = *pollIntervalSec;
    }
    if (logLevel) {
        j["log_level"] = *logLevel;
    }
    return j.dump();
}

} // namespace mbl::cloud
