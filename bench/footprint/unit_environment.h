// SPDX-License-Identifier: Apache-2.0
#pragma once
// The Environment= of a daemon's systemd unit, for the benchmarks that start the
// daemons as shipped (footprint-idle, peer-idle) outside systemd.

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

// The five daemons, by the test stack's labels, each with its unit's
// Environment= (unit mbl-<label>), to start them as shipped.
inline std::map<std::string, std::vector<std::string>> shippedEnvironments(const std::string& unitDir)
{
    std::map<std::string, std::vector<std::string>> out;
    for (const char* label : {"device-identity", "update", "container-manager", "cloud-client", "coordinator"}) {
        out[label] = unitEnvironment(unitDir, std::string("mbl-") + label);
    }
    return out;
}

} // namespace mbl::bench
