// SPDX-License-Identifier: Apache-2.0
#include "mbl/paths.h"

#include <cstdlib>

namespace mbl {

Paths Paths::underRoot(const std::string& root)
{
    std::string r = root;
    while (r.size() > 1 && r.back() == '/') {
        r.pop_back();
    }
    if (r == "/") {
        r.clear();
    }
    Paths p;
    p.root = r;
    p.configDir = r + "/etc/mbl";
    p.stateDir = r + "/var/lib/mbl";
    p.runtimeDir = r + "/run/mbl";
    p.logDir = r + "/var/log/mbl";
    return p;
}

Paths Paths::resolve(const std::string& rootOption)
{
    if (!rootOption.empty()) {
        return underRoot(rootOption);
    }
    const char* env = std::getenv("MBL_ROOT");
    return underRoot(env != nullptr ? env : "");
}

} // namespace mbl
