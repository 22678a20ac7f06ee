#include "coordinator.h"
#include "coordinator_dbus.h"

#include "mbl/dbus/bus.h"

namespace {
struct Service {
    mbl::coordinator::Coordinator coordinator;
    std::unique_ptr<mbl::coordinator::CoordinatorBus> bus;
};
} // namespace

int main(int argc, char** argv)
{
    const mbl::dbus::DaemonInfo info{"mbl-coordinator", "org.mbl.Coordinator1", "coordinator.json",
                                     "Orchestrates deployments through the other MBL services."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto coordinator = mbl::coordinator::Coordinator::open(ctx.paths, ctx.config);
        if (!coordinator) {
            return mbl::unexpected(coordinator.error());
        }
        auto svc = std::make_shared<Service>(Service{std::move(coordinator).value(), nullptr});
        svc->bus = std::make_unique<mbl::coordinator::CoordinatorBus>(ctx.connection, svc->coordinator);
        return std::shared_ptr<void>(svc);
    });
}
