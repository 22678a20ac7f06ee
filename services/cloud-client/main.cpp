#include "cloud_client.h"
#include "cloud_client_dbus.h"

#include "mbl/dbus/bus.h"

namespace {
struct Service {
    mbl::cloud::CloudClient client;
    std::unique_ptr<mbl::cloud::CloudClientBus> bus;
};
} // namespace

int main(int argc, char** argv)
{
    const mbl::dbus::DaemonInfo info{"mbl-cloud-client", "org.mbl.CloudClient1", "cloud.json",
                                     "Eclipse hawkBit DDI client over mutual TLS."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto client = mbl::cloud::CloudClient::open(ctx.paths, ctx.config);
        if (!client) {
            return mbl::unexpected(client.error());
        }
        auto svc = std::make_shared<Service>(Service{std::move(client).value(), nullptr});
        svc->bus = std::make_unique<mbl::cloud::CloudClientBus>(ctx.connection, svc->client);
        return std::shared_ptr<void>(svc);
    });
}
