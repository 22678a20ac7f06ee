// SPDX-License-Identifier: Apache-2.0
#pragma once
// The only place mbl-coordinator serves the bus: org.mbl.Coordinator1.

#include "coordinator.h"

#include "org.mbl.Coordinator1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

namespace mbl::coordinator {

class CoordinatorBus final
    : public sdbus::AdaptorInterfaces<org::mbl::Coordinator1_adaptor, sdbus::Properties_adaptor>,
      public Listener {
public:
    explicit CoordinatorBus(sdbus::IConnection& conn);
    ~CoordinatorBus() override;

    void attach(Coordinator& coordinator) { coordinator_ = &coordinator; }

    // Listener
    void propertiesChanged(const std::vector<std::string>& names) override;
    void operationCompleted(const std::string& id, bool success, const std::string& errorName,
                            const std::string& message) override;

private:
    std::string InstallBundle(const sdbus::UnixFd& bundle) override;
    std::string Install(const sdbus::UnixFd& bundle, const std::map<std::string, sdbus::Variant>& options) override;
    std::string GetStatus() override;
    std::string GetHistory(const uint32_t& count) override;
    void Cancel(const std::string& operationId) override;

    std::string Version() override;
    std::string State() override;
    std::string Operation() override;
    uint32_t Progress() override;
    std::string Step() override;
    std::string LastError() override;

    Coordinator& c();
    Coordinator* coordinator_ = nullptr;
};

} // namespace mbl::coordinator
