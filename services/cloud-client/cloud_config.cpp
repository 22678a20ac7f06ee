// SPDX-License-Identifier: Apache-2.0
#include "cloud_config.h"

#include <functional>
#include <vector>

namespace mbl::cloud {

using std::chrono::milliseconds;
using std::chrono::seconds;

Expected<CloudSettings> CloudSettings::fromConfig(const Config& c)
{
    CloudSettings s;
    auto sleepText = c.getString("poll.default_sleep", "00:05:00");
    if (!sleepText) {
        return unexpected(sleepText.error());
    }
    auto sleep = parseSleep(*sleepText);
    if (!sleep) {
        return unexpected(ErrorCode::InvalidArgument, c.origin() + ": key 'poll.default_sleep': " + sleep.error().message);
    }
    s.defaultSleep = *sleep;
    struct IntKey {
        const char* key;
        std::int64_t fallback, min, max;
        std::function<void(std::int64_t)> set;
    };
    const std::vector<IntKey> keys = {
        {"poll.backoff_base_ms", 2000, 10, 3600000, [&](std::int64_t v) { s.poller.backoffBase = milliseconds(v); }},
        {"poll.backoff_cap_ms", 600000, 10, 86400000, [&](std::int64_t v) { s.poller.backoffCap = milliseconds(v); }},
        {"poll.auth_retry_sec", 300, 1, 86400, [&](std::int64_t v) { s.poller.authRetry = seconds(v); }},
        {"poll.unprovisioned_retry_sec", 60, 1, 86400,
         [&](std::int64_t v) { s.poller.unprovisionedRetry = seconds(v); }},
        {"poll.jitter_percent", 10, 0, 50, [&](std::int64_t v) { s.poller.jitterPercent = static_cast<unsigned>(v); }},
        {"poll.first_poll_spread_sec", 60, 0, 86400, [&](std::int64_t v) { s.poller.firstPollSpread = seconds(v); }},
        {"http.connect_timeout_sec", 30, 1, 600, [&](std::int64_t v) { s.connectTimeoutSec = static_cast<long>(v); }},
        {"http.request_timeout_sec", 120, 1, 3600, [&](std::int64_t v) { s.requestTimeoutSec = static_cast<long>(v); }},
        {"http.max_body_bytes", 1 << 20, 1024, 64 << 20,
         [&](std::int64_t v) { s.maxBodyBytes = static_cast<std::size_t>(v); }},
        {"download.low_speed_limit", 1024, 1, 1LL << 30, [&](std::int64_t v) { s.lowSpeedLimit = static_cast<long>(v); }},
        {"download.low_speed_time_sec", 60, 1, 3600,
         [&](std::int64_t v) { s.lowSpeedTimeSec = static_cast<long>(v); }},
        {"download.max_retries", 5, 0, 100, [&](std::int64_t v) { s.download.maxRetries = static_cast<int>(v); }},
        {"download.retry_base_ms", 1000, 1, 3600000,
         [&](std::int64_t v) { s.download.retryBase = milliseconds(v); }},
        {"download.max_bytes_per_sec", 0, 0, 1LL << 40, [&](std::int64_t v) { s.maxBytesPerSec = v; }},
        {"download.keep_download_only_bytes", 256LL << 20, 0, 1LL << 42,
         [&](std::int64_t v) { s.keepDownloadOnlyBytes = static_cast<std::uint64_t>(v); }},
    };
    for (const auto& k : keys) {
        auto v = c.getInt(k.key, k.fallback, k.min, k.max);
        if (!v) {
            return unexpected(v.error());
        }
        k.set(*v);
    }
    auto dc = c.getString("device_class", "");
    auto other = c.getBool("allow_other_hosts", false);
    auto http = c.getBool("allow_http", false);
    auto verbose = c.getBool("verbose", false);
    auto confirmation = c.getEnum("confirmation", "auto", {"auto", "manual"});
    auto otherCa = c.getString("download.other_hosts_ca_file", "");
    if (!dc || !other || !http || !verbose || !confirmation || !otherCa) {
        return unexpected(!dc ? dc.error()
                              : !other ? other.error()
                                       : !http ? http.error()
                                               : !verbose ? verbose.error()
                                                          : !confirmation ? confirmation.error() : otherCa.error());
    }
    // Every key the client knows was read above; anything else, at any depth, is a typo.
    if (auto st = c.rejectUnreadKeys(); !st) {
        return unexpected(st.error());
    }
    s.confirmManually = *confirmation == "manual";
    s.deviceClass = *dc;
    s.links.allowOtherHosts = *other;
    s.links.allowHttp = *http;
    s.otherHostsCaFile = *otherCa;
    s.verbose = *verbose;
    return s;
}

} // namespace mbl::cloud
