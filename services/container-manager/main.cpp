#include "container_manager.h"
#include "container_manager_dbus.h"

#include "mbl/dbus/bus.h"

namespace {
struct Service {
    mbl::containers::ContainerManager manager;
    std::unique_ptr<mbl::containers::ContainerManagerBus> bus;
};
} // namespace

int main(int argc, char** argv)
{
    const mbl::dbus::DaemonInfo info{"mbl-container-manager", "org.mbl.ContainerManager1", "containers.json",
                                     "OCI applications run by runc: install, lifecycle, hardening."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto manager = mbl::containers::ContainerManager::open(ctx.paths, ctx.config);
        if (!manager) {
            return mbl::unexpected(manager.error());
        }
        auto svc = std::make_shared<Service>(Service{std::move(manager).value(), nullptr});
        svc->bus = std::make_unique<mbl::containers::ContainerManagerBus>(ctx.connection, svc->manager);
        return std::shared_ptr<void>(svc);
    });
}
