// SPDX-License-Identifier: Apache-2.0
#include "coordinator.h"
#include "coordinator_dbus.h"
#include "peers_dbus.h"

#include "mbl/dbus/bus.h"

#include <cstdlib>
#include <malloc.h>

namespace {
struct Service {
    std::unique_ptr<mbl::coordinator::CoordinatorBus> bus;
    std::unique_ptr<mbl::coordinator::BusPeers> peers;
    std::unique_ptr<mbl::coordinator::Coordinator> coordinator;
    ~Service()
    {
        // The coordinator calls into the peers and the bus object: it goes first.
        coordinator.reset();
        peers.reset();
        bus.reset();
    }
};
} // namespace

int main(int argc, char** argv)
{
    // Footprint (issue 18): one malloc arena for all threads (a worker thread's own
    // arena keeps its pages after the job), and a fixed mmap threshold so large
    // buffers go back to the kernel when freed instead of raising the threshold.
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    const mbl::dbus::DaemonInfo info{"mbl-coordinator", "org.mbl.Coordinator1", "coordinator.json",
                                     "Orchestrates deployments through the other MBL services."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto settings = mbl::coordinator::Settings::fromConfig(ctx.paths, ctx.config);
        if (!settings) {
            return mbl::unexpected(settings.error());
        }
        if (const char* pause = std::getenv("MBL_COORDINATOR_TEST_PAUSE")) {
            settings->pausePoint = pause; // test hook: see Settings::pausePoint
        }
        auto svc = std::make_shared<Service>();
        svc->bus = std::make_unique<mbl::coordinator::CoordinatorBus>(ctx.connection);
        svc->peers = std::make_unique<mbl::coordinator::BusPeers>(ctx.connection, ctx.loop, settings->rebootCommand,
                                                                  settings->rebootRequestFile);
        svc->peers->setHostnameCommand(settings->hostnameCommand);
        svc->coordinator = std::make_unique<mbl::coordinator::Coordinator>(std::move(settings).value(), *svc->peers,
                                                                           ctx.loop, *svc->bus);
        svc->bus->attach(*svc->coordinator);
        svc->peers->connectSignals(*svc->coordinator);
        // Resume what the journal holds once the loop runs (after the name is taken).
        auto* coordinator = svc->coordinator.get();
        ctx.loop.post([coordinator] { coordinator->start(); });
        return std::shared_ptr<void>(svc);
    });
}
