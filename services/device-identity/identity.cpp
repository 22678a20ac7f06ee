#include "identity.h"

#include "mbl/fs.h"

namespace mbl::identity {

Expected<Identity> Identity::open(const Paths& paths, const Config& config)
{
    if (auto st = config.rejectUnknownKeys({"key_type", "key_uri", "fleet_ca", "state_dir"}); !st) {
        return unexpected(st.error());
    }
    auto dir = config.getString("state_dir", paths.state("identity"));
    if (!dir) {
        return unexpected(dir.error());
    }
    Identity id;
    id.stateDir_ = *dir;
    if (auto st = fs::makeDirs(id.stateDir_, 0700); !st) {
        return unexpected(st.error());
    }
    auto uri = config.getString("key_uri", id.stateDir_ + "/device.key");
    if (!uri) {
        return unexpected(uri.error());
    }
    id.keyUri_ = *uri;
    return id;
}

} // namespace mbl::identity
