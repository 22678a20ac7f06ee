// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the container manager's memory benchmarks (bench-containers-idle,
// bench-containers-churn) share: the manager started alone on the test stack,
// a process's memory from /proc/PID/smaps, and the median of readings.

#include "harness.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <sys/types.h>
#include <vector>

namespace mbl::bench {

// The manager alone on `stack`'s private bus, with no user records (the
// benchmarks' apps need no bus) and a short stop grace; its pid.
inline pid_t startManagerAlone(test::TestStack& stack)
{
    (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/containers.json",
                              R"({"stop_grace_ms": 500, "userns": {"userdb_dir": ""}})");
    if (auto st = stack.start("container-manager"); !st) {
        throw std::runtime_error(st.error().describe());
    }
    return stack.pid("container-manager");
}

struct ProcMem {
    long rss = 0;
    long pss = 0;
    long uss = 0;  // Private_Clean + Private_Dirty
    long heap = 0; // Rss of the [heap] mapping
};

// A process's memory in kB, summed over the mappings of /proc/PID/smaps; all
// zero when the process is gone.
inline ProcMem procMem(pid_t pid)
{
    ProcMem m;
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/smaps");
    if (!text) {
        return m;
    }
    auto value = [](const std::string& line) { return std::atol(line.c_str() + line.find(':') + 1); };
    bool inHeap = false;
    for (const auto& line : str::split(*text, '\n')) {
        // A mapping's header: "start-end perms offset dev inode [path]".
        if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) != 0 &&
            line.find('-') < line.find(' ')) {
            inHeap = line.size() >= 6 && line.compare(line.size() - 6, 6, "[heap]") == 0;
            continue;
        }
        if (str::startsWith(line, "Rss:")) {
            m.rss += value(line);
            if (inHeap) {
                m.heap += value(line);
            }
        } else if (str::startsWith(line, "Pss:")) {
            m.pss += value(line);
        } else if (str::startsWith(line, "Private_Clean:") || str::startsWith(line, "Private_Dirty:")) {
            m.uss += value(line);
        }
    }
    return m;
}

inline long median(std::vector<long> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

} // namespace mbl::bench
