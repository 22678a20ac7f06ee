#include "coordinator.h"

#include "mbl/fs.h"

namespace mbl::coordinator {

Expected<Coordinator> Coordinator::open(const Paths& paths, const Config&)
{
    Coordinator c;
    c.journalDir_ = paths.state("coordinator");
    if (auto st = fs::makeDirs(c.journalDir_, 0700); !st) {
        return unexpected(st.error());
    }
    return c;
}

} // namespace mbl::coordinator
