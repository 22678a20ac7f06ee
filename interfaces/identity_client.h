// SPDX-License-Identifier: Apache-2.0
#pragma once
// A ready proxy for org.mbl.DeviceIdentity1 at its root object, for clients
// that call it (the cloud client, mblctl, benchmarks). It does not watch
// IdentityChanged: clients that need to notice a change ask again.

#include "org.mbl.DeviceIdentity1_proxy.h"

#include <sdbus-c++/sdbus-c++.h>

namespace mbl {

class IdentityProxy final : public sdbus::ProxyInterfaces<org::mbl::DeviceIdentity1_proxy> {
public:
    explicit IdentityProxy(sdbus::IConnection& conn)
        : ProxyInterfaces(conn, "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1")
    {
        registerProxy();
    }
    ~IdentityProxy() { unregisterProxy(); }

private:
    void onIdentityChanged(const std::string&) override {}
};

} // namespace mbl
