#pragma once
// The update engine: bundle verification, A/B slots, bootloader state and the
// anti-rollback floor. No bus code here.

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/paths.h"

#include <cstdint>
#include <string>

namespace mbl::update {

class UpdateEngine {
public:
    static Expected<UpdateEngine> open(const Paths& paths, const Config& config);

    const std::string& stateDir() const { return stateDir_; }
    const std::string& compatible() const { return compatible_; }

private:
    std::string stateDir_;
    std::string compatible_;
};

} // namespace mbl::update
