// SPDX-License-Identifier: Apache-2.0
#include "update_dbus.h"
#include "update_engine.h"

#include "mbl/dbus/bus.h"

#include <malloc.h>

namespace {
struct Service {
    std::unique_ptr<mbl::update::UpdateEngine> engine;
    std::unique_ptr<mbl::update::UpdateBus> bus;
};
} // namespace

int main(int argc, char** argv)
{
    // Footprint (issue 18): one malloc arena for all threads (a worker thread's own
    // arena keeps its pages after the job), and a fixed mmap threshold so large
    // buffers go back to the kernel when freed instead of raising the threshold.
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    const mbl::dbus::DaemonInfo info{"mbl-update", "org.mbl.Update1", "update.json",
                                     "Signed update bundles, A/B slots, bootloader trial and commit, anti-rollback."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto engine = mbl::update::UpdateEngine::open(ctx.paths, ctx.config);
        if (!engine) {
            return mbl::unexpected(engine.error());
        }
        auto svc = std::make_shared<Service>();
        svc->engine = std::move(engine).value();
        svc->bus = std::make_unique<mbl::update::UpdateBus>(ctx.connection, ctx.loop, *svc->engine);
        return std::shared_ptr<void>(svc);
    });
}
