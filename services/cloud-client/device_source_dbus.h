// SPDX-License-Identifier: Apache-2.0
#pragma once
// DeviceSource over the bus: provisioning, the certificate chain, handshake
// signatures and device id from org.mbl.DeviceIdentity1, the firmware version
// from org.mbl.Update1 and the installed apps from org.mbl.ContainerManager1.
// Used from the cloud client's worker thread only, on a bus connection of its
// own (synchronous calls there never touch the daemon's event loop). The
// handshake signer is called from whichever thread runs a TLS handshake (the
// worker, a download): it has a connection of its own too, one call at a time.

#include "cloud_client.h"

#include <sdbus-c++/sdbus-c++.h>

#include <functional>
#include <memory>

namespace mbl::cloud {

class BusDeviceSource final : public DeviceSource {
public:
    BusDeviceSource();
    ~BusDeviceSource() override;

    // Calls `changed` (on the loop thread of `loopConnection`, the daemon's own
    // connection) whenever the identity service emits IdentityChanged: new
    // provisioning, certificate or key. Re-provisioning thus takes effect without
    // a restart.
    void watchIdentity(sdbus::IConnection& loopConnection, std::function<void()> changed);

    Expected<Provisioning> provisioning() override;
    Expected<TlsCredentials> tlsCredentials() override;
    std::map<std::string, std::string> systemAttributes() override;

private:
    Status ensureConnection();
    std::unique_ptr<sdbus::IConnection> conn_;
    struct Proxies;
    std::unique_ptr<Proxies> proxies_;
    std::unique_ptr<sdbus::IProxy> watch_;
    class Signer;
    std::shared_ptr<Signer> signer_;
};

} // namespace mbl::cloud
