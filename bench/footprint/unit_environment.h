// SPDX-License-Identifier: Apache-2.0
#pragma once
// The Environment= of a daemon's systemd unit, for the benchmarks that start the
// daemons as shipped (footprint-idle, peer-idle) outside systemd.

#include "world.h"

#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace mbl::bench {

// The KEY=VALUE words of the Environment= lines of <unitDir>/<unit>.service.in
// (the units use no quoting; a quoted one is refused rather than misread).
inline std::vector<std::string> unitEnvironment(const std::string& unitDir, const std::string& unit)
{
    const std::string path = unitDir + "/" + unit + ".service.in";
    std::ifstream in(path);
    if (!in) {
        throw std::runtime_error("cannot read " + path);
    }
    std::vector<std::string> env;
    std::string line;
    while (std::getline(in, line)) {
        const std::string key = "Environment=";
        if (line.compare(0, key.size(), key) != 0) {
            continue;
        }
        if (line.find_first_of("\"'") != std::string::npos) {
            throw std::runtime_error(path + ": quoted Environment= is not understood here: " + line);
        }
        std::istringstream words(line.substr(key.size()));
        for (std::string w; words >> w;) {
            env.push_back(w);
        }
    }
    return env;
}

// Starts the five daemons of `w` as shipped: each with the Environment= of its
// unit (mbl-<label>) under `unitDir`. Returns their labels.
inline std::vector<std::string> startAsShipped(test::e2e::World& w, const std::string& unitDir)
{
    std::map<std::string, test::TestStack::StartOptions> opts;
    std::vector<std::string> labels;
    for (const char* label : {"device-identity", "update", "container-manager", "cloud-client", "coordinator"}) {
        labels.emplace_back(label);
        opts[label].env = unitEnvironment(unitDir, std::string("mbl-") + label);
    }
    w.startAll(opts);
    return labels;
}

} // namespace mbl::bench
