#include "update_engine.h"

#include "mbl/fs.h"

namespace mbl::update {

Expected<UpdateEngine> UpdateEngine::open(const Paths& paths, const Config& config)
{
    auto compatible = config.getString("compatible", "");
    if (!compatible) {
        return unexpected(compatible.error());
    }
    UpdateEngine e;
    e.stateDir_ = paths.state("update");
    e.compatible_ = *compatible;
    if (auto st = fs::makeDirs(e.stateDir_, 0700); !st) {
        return unexpected(st.error());
    }
    return e;
}

} // namespace mbl::update
