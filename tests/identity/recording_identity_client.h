// SPDX-License-Identifier: Apache-2.0
#pragma once
// A DeviceIdentity1 proxy on a connection and event thread of its own that
// records what the identity service announces: the ids of IdentityChanged, the
// names of changed properties and every RenewalState value, in order.

#include "org.mbl.DeviceIdentity1_proxy.h"

#include <sdbus-c++/sdbus-c++.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace mbl::test {

class IdentityClient final
    : public sdbus::ProxyInterfaces<org::mbl::DeviceIdentity1_proxy, sdbus::Properties_proxy> {
public:
    explicit IdentityClient(std::unique_ptr<sdbus::IConnection> conn)
        : ProxyInterfaces(std::move(conn), "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1")
    {
        registerProxy();
        getProxy().getConnection().enterEventLoopAsync();
    }
    ~IdentityClient()
    {
        unregisterProxy();
        getProxy().getConnection().leaveEventLoop();
    }
    std::vector<std::string> identityChanged()
    {
        std::lock_guard<std::mutex> lock(mu_);
        return changedIds_;
    }
    std::size_t identityChangedCount()
    {
        std::lock_guard<std::mutex> lock(mu_);
        return changedIds_.size();
    }
    std::set<std::string> changedProperties()
    {
        std::lock_guard<std::mutex> lock(mu_);
        return changedProps_;
    }
    std::vector<std::string> renewalStates()
    {
        std::lock_guard<std::mutex> lock(mu_);
        return states_;
    }
    void clearSignals()
    {
        std::lock_guard<std::mutex> lock(mu_);
        changedIds_.clear();
        changedProps_.clear();
        states_.clear();
    }

private:
    void onIdentityChanged(const std::string& id) override
    {
        std::lock_guard<std::mutex> lock(mu_);
        changedIds_.push_back(id);
    }
    void onPropertiesChanged(const std::string&, const std::map<std::string, sdbus::Variant>& changed,
                             const std::vector<std::string>&) override
    {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& [k, v] : changed) {
            changedProps_.insert(k);
            if (k == "RenewalState") {
                states_.push_back(v.get<std::string>());
            }
        }
    }
    std::mutex mu_;
    std::vector<std::string> changedIds_;
    std::set<std::string> changedProps_;
    std::vector<std::string> states_;
};

} // namespace mbl::test
