#pragma once
// The container manager's logic: installed apps, their OCI bundles and the
// runc containers that run them. No bus code here.

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/paths.h"

#include <string>

namespace mbl::containers {

class ContainerManager {
public:
    static Expected<ContainerManager> open(const Paths& paths, const Config& config);

    const std::string& appsDir() const { return appsDir_; }

private:
    std::string appsDir_;
};

} // namespace mbl::containers
