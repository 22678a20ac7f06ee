#pragma once
// The coordinator's logic: the operation journal and the deployment state
// machine that drives the other four services. No bus code here.

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/paths.h"

#include <string>

namespace mbl::coordinator {

class Coordinator {
public:
    static Expected<Coordinator> open(const Paths& paths, const Config& config);

    std::string state() const { return "idle"; }
    const std::string& journalDir() const { return journalDir_; }

private:
    std::string journalDir_;
};

} // namespace mbl::coordinator
