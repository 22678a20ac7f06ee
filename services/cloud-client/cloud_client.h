#pragma once
// The cloud client's logic: the hawkBit DDI connection, polling, downloads and
// feedback. No bus code here.

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/paths.h"

#include <string>

namespace mbl::cloud {

class CloudClient {
public:
    static Expected<CloudClient> open(const Paths& paths, const Config& config);

    std::string connectionState() const { return "unprovisioned"; }
    const std::string& stateDir() const { return stateDir_; }

private:
    std::string stateDir_;
};

} // namespace mbl::cloud
