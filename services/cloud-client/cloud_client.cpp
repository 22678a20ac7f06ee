#include "cloud_client.h"

#include "mbl/fs.h"

namespace mbl::cloud {

Expected<CloudClient> CloudClient::open(const Paths& paths, const Config&)
{
    CloudClient c;
    c.stateDir_ = paths.state("cloud");
    if (auto st = fs::makeDirs(c.stateDir_, 0700); !st) {
        return unexpected(st.error());
    }
    return c;
}

} // namespace mbl::cloud
