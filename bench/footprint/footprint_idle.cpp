// SPDX-License-Identifier: Apache-2.0
// Starts the whole stack idle (tests/e2e/world.h: the five daemons on a private
// bus, the cloud client connected to the DDI test server behind nginx mTLS,
// nothing deployed), each daemon with the Environment= of its systemd unit
// (services/systemd/<unit>.service.in: the daemons measured as shipped), waits
// SETTLE seconds, then runs
// footprint.py on the five daemons: per daemon RSS, PSS, USS, threads and where
// the resident pages go; summed PSS/USS and the distinct resident pages of all five.
// Usage: footprint-idle [SETTLE_SEC] [footprint.py options]   (root; release build)

#include "world.h"

#include "unit_environment.h"

#include "mbl/process.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <thread>

using namespace mbl;
using namespace mbl::test::e2e;

int main(int argc, char** argv)
{
    const int settle = argc > 1 ? std::max(0, std::atoi(argv[1])) : 5;
    try {
        World w;
        const std::vector<std::string> labels = bench::startAsShipped(w, MBL_SYSTEMD_UNIT_DIR);
        std::this_thread::sleep_for(std::chrono::seconds(settle)); // idle is the state measured, not a wait for an event
        std::vector<std::string> argvPy = {"python3", MBL_FOOTPRINT_PY};
        for (int i = 2; i < argc; ++i) {
            argvPy.emplace_back(argv[i]);
        }
        for (const auto& label : labels) {
            if (!w.stack.running(label)) {
                std::cerr << "footprint-idle: " << label << " is not running\n";
                return 1;
            }
            argvPy.push_back(label + "=" + std::to_string(w.stack.pid(label)));
        }
        auto r = mbl::run(argvPy);
        if (!r || !r->status.success()) {
            std::cerr << "footprint.py failed: " << (r ? r->err : r.error().message) << "\n";
            return 1;
        }
        std::fputs(r->out.c_str(), stdout);
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "footprint-idle: " << e.what() << "\n";
        return 1;
    }
}
