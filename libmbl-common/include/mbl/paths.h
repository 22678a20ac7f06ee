// SPDX-License-Identifier: Apache-2.0
#pragma once
// The one place that decides where configuration, state, runtime and log files
// live. MBL_ROOT=<dir> (or --root <dir>) relocates all of them under <dir>, so
// tests and the demo run the whole stack inside one folder.

#include <string>

namespace mbl {

struct Paths {
    std::string root;       // "" on a device
    std::string configDir;  // <root>/etc/mbl
    std::string stateDir;   // <root>/var/lib/mbl
    std::string runtimeDir; // <root>/run/mbl
    std::string logDir;     // <root>/var/log/mbl

    static Paths underRoot(const std::string& root);
    // --root wins over MBL_ROOT; neither means the device layout.
    static Paths resolve(const std::string& rootOption);

    std::string config(const std::string& name) const { return configDir + "/" + name; }
    std::string state(const std::string& name) const { return stateDir + "/" + name; }
    std::string runtime(const std::string& name) const { return runtimeDir + "/" + name; }
    std::string log(const std::string& name) const { return logDir + "/" + name; }
};

} // namespace mbl
