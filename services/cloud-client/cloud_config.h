#pragma once
// The cloud client's configuration (/etc/mbl/cloud.json): read, checked and
// turned into the settings of its parts. Unknown keys and wrong types are
// refused with the file and key named.

#include "ddi.h"
#include "downloader.h"
#include "poller.h"

#include "mbl/config.h"
#include "mbl/expected.h"

#include <chrono>
#include <cstdint>
#include <string>

namespace mbl::cloud {

struct CloudSettings {
    std::chrono::seconds defaultSleep{300};
    PollerSettings poller;
    long connectTimeoutSec = 30;
    long requestTimeoutSec = 120;
    std::size_t maxBodyBytes = 1u << 20;
    long lowSpeedLimit = 1024;
    long lowSpeedTimeSec = 60;
    DownloadSettings download;
    std::int64_t maxBytesPerSec = 0;
    // Artifacts of download-only actions kept for the later install (bytes; 0: none).
    std::uint64_t keepDownloadOnlyBytes = 256ull << 20;
    std::string deviceClass;
    LinkPolicy links;
    // CA bundle for other hosts (allow_other_hosts); empty: the system's trust store.
    std::string otherHostsCaFile;
    bool verbose = false;
    // hawkBit's confirmation flow: confirm every action at once ("auto"), or ask
    // through ConfirmationRequested and wait for Confirm ("manual").
    bool confirmManually = false;

    static Expected<CloudSettings> fromConfig(const Config& config);
};

} // namespace mbl::cloud
