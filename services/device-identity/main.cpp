// SPDX-License-Identifier: Apache-2.0
#include "identity.h"
#include "identity_dbus.h"

#include "mbl/dbus/bus.h"

namespace {
struct Service {
    std::unique_ptr<mbl::identity::Identity> identity;
    std::unique_ptr<mbl::identity::IdentityBus> bus;
    ~Service() { bus.reset(); } // the bus object (and its worker) goes before the identity it uses
};
} // namespace

int main(int argc, char** argv)
{
    const mbl::dbus::DaemonInfo info{"mbl-device-identity", "org.mbl.DeviceIdentity1", "identity.json",
                                     "The device's key, certificate, device id and provisioning data."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto identity = mbl::identity::Identity::open(ctx.paths, ctx.config);
        if (!identity) {
            return mbl::unexpected(identity.error());
        }
        auto svc = std::make_shared<Service>();
        svc->identity = std::move(identity).value();
        svc->bus = std::make_unique<mbl::identity::IdentityBus>(ctx.connection, ctx.loop, *svc->identity);
        return std::shared_ptr<void>(svc);
    });
}
