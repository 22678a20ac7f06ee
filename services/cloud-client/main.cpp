// SPDX-License-Identifier: Apache-2.0
#include "cloud_client.h"
#include "cloud_client_dbus.h"
#include "device_source_dbus.h"

#include "mbl/dbus/bus.h"

#include <csignal>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>

namespace {
// Destroyed in reverse order: the worker threads stop before the adaptor and the source go.
struct Service {
    std::unique_ptr<mbl::cloud::BusDeviceSource> source;
    std::unique_ptr<mbl::cloud::CloudClient> client;
    std::unique_ptr<mbl::cloud::CloudClientBus> bus;
    ~Service()
    {
        if (client) {
            client->stop();
        }
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
    // A reader closing its download pipe must not kill the daemon.
    std::signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const mbl::dbus::DaemonInfo info{"mbl-cloud-client", "org.mbl.CloudClient1", "cloud.json",
                                     "Eclipse hawkBit DDI client over mutual TLS."};
    int rc = mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto client = mbl::cloud::CloudClient::open(ctx.paths, ctx.config);
        if (!client) {
            return mbl::unexpected(client.error());
        }
        auto svc = std::make_shared<Service>();
        svc->source = std::make_unique<mbl::cloud::BusDeviceSource>();
        svc->client = std::move(client).value();
        // Who writes any attributes namespace besides root (apps write their own only).
        std::set<uid_t> privileged;
        if (const struct passwd* pw = ::getpwnam(MBL_COORDINATOR_USER)) {
            privileged.insert(pw->pw_uid);
        }
        std::optional<gid_t> admins;
        if (const struct group* gr = ::getgrnam(MBL_ADMIN_GROUP)) {
            admins = gr->gr_gid;
        }
        svc->bus = std::make_unique<mbl::cloud::CloudClientBus>(ctx.connection, ctx.loop, *svc->client,
                                                                std::move(privileged), admins);
        svc->source->watchIdentity(ctx.connection, [client = svc->client.get()] { client->identityChanged(); });
        svc->client->start(*svc->source, *svc->bus);
        return std::shared_ptr<void>(svc);
    });
    curl_global_cleanup();
    return rc;
}
