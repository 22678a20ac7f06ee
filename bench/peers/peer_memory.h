// SPDX-License-Identifier: Apache-2.0
#pragma once
// The peer benchmarks' helpers (peer-update, peer-cloud): a daemon's peak RSS.

#include "mbl/strings.h"

#include <fstream>
#include <sstream>
#include <string>
#include <sys/types.h>

namespace mbl::bench {

// VmHWM of /proc/<pid>/status in KiB, "0" when unknown. /proc files report
// size 0, so the file is read as a stream.
inline std::string vmHwmKiB(pid_t pid)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (str::startsWith(line, "VmHWM:")) {
            std::istringstream fields(line.substr(6)); // "\t   12345 kB"
            std::string kib;
            fields >> kib;
            return kib;
        }
    }
    return "0";
}

} // namespace mbl::bench
