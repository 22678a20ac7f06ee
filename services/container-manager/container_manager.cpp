#include "container_manager.h"

#include "mbl/fs.h"

namespace mbl::containers {

Expected<ContainerManager> ContainerManager::open(const Paths& paths, const Config&)
{
    ContainerManager m;
    m.appsDir_ = paths.state("apps");
    if (auto st = fs::makeDirs(m.appsDir_, 0700); !st) {
        return unexpected(st.error());
    }
    return m;
}

} // namespace mbl::containers
