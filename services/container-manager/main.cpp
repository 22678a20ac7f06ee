// SPDX-License-Identifier: Apache-2.0
#include "container_manager.h"
#include "container_manager_dbus.h"

#include "mbl/dbus/bus.h"

#include <malloc.h>

namespace {
struct Service {
    std::unique_ptr<mbl::containers::ContainerManager> manager;
    std::unique_ptr<mbl::containers::ContainerManagerBus> bus;
    ~Service() { bus.reset(); } // the bus objects go before the manager they show
};
} // namespace

int main(int argc, char** argv)
{
    // Footprint (issue 18): one malloc arena for all threads (a worker thread's own
    // arena keeps its pages after the job), and a fixed mmap threshold so large
    // buffers go back to the kernel when freed instead of raising the threshold.
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    const mbl::dbus::DaemonInfo info{"mbl-container-manager", "org.mbl.ContainerManager1", "containers.json",
                                     "OCI applications run by runc: install, lifecycle, hardening."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto manager = mbl::containers::ContainerManager::open(ctx.paths, ctx.config, ctx.loop);
        if (!manager) {
            return mbl::unexpected(manager.error());
        }
        auto svc = std::make_shared<Service>();
        svc->manager = std::move(manager).value();
        svc->bus = std::make_unique<mbl::containers::ContainerManagerBus>(ctx.connection, *svc->manager);
        // SIGTERM: the manager decides from what systemd says of the system
        // whether the apps stop with it (system shutdown) or outlive it.
        ctx.beforeExit = [bus = svc->bus.get()](std::function<void()> proceed) { bus->terminate(std::move(proceed)); };
        // Starts run from the loop: their replies and signals need it running.
        ctx.loop.post([m = svc->manager.get()] { m->startup(); });
        return std::shared_ptr<void>(svc);
    });
}
