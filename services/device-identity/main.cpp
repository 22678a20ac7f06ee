// SPDX-License-Identifier: Apache-2.0
#include "identity.h"
#include "identity_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/log.h"

#include <malloc.h>
#include <pwd.h>
#include <set>

namespace {
struct Service {
    std::unique_ptr<mbl::identity::Identity> identity;
    std::unique_ptr<mbl::identity::Signer> signer;
    std::unique_ptr<mbl::identity::IdentityBus> bus;
    ~Service() { bus.reset(); } // the bus object (and its worker) goes before the identity it uses
};
// Who may ask for handshake signatures: root and the cloud client's user (the
// same name the bus policy was built with).
std::set<uid_t> signers()
{
    std::set<uid_t> uids{0};
    if (const struct passwd* pw = ::getpwnam(MBL_CLOUD_USER)) {
        uids.insert(pw->pw_uid);
    } else {
        mbl::log::warning("user " MBL_CLOUD_USER " does not exist: only root may ask for handshake signatures");
    }
    return uids;
}
} // namespace

int main(int argc, char** argv)
{
    // Footprint (issue 18): one malloc arena for all threads (a worker thread's own
    // arena keeps its pages after the job), and a fixed mmap threshold so large
    // buffers go back to the kernel when freed instead of raising the threshold.
    mallopt(M_ARENA_MAX, 1);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    const mbl::dbus::DaemonInfo info{"mbl-device-identity", "org.mbl.DeviceIdentity1", "identity.json",
                                     "The device's key, certificate, device id and provisioning data."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        auto identity = mbl::identity::Identity::open(ctx.paths, ctx.config);
        if (!identity) {
            return mbl::unexpected(identity.error());
        }
        auto svc = std::make_shared<Service>();
        svc->identity = std::move(identity).value();
        auto* id = svc->identity.get();
        svc->signer = std::make_unique<mbl::identity::Signer>(
            signers(), mbl::identity::RateLimiter(mbl::identity::kSignRatePerSecond, mbl::identity::kSignBurst),
            [id](mbl::identity::SignAlgorithm alg, const std::string& digest) { return id->signDigest(alg, digest); });
        svc->bus = std::make_unique<mbl::identity::IdentityBus>(ctx.connection, ctx.loop, *svc->identity, *svc->signer);
        return std::shared_ptr<void>(svc);
    });
}
