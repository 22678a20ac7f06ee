#pragma once
// The only place mbl-coordinator touches the bus: org.mbl.Coordinator1.

#include "coordinator.h"

#include "org.mbl.Coordinator1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

namespace mbl::coordinator {

class CoordinatorBus final
    : public sdbus::AdaptorInterfaces<org::mbl::Coordinator1_adaptor, sdbus::Properties_adaptor> {
public:
    CoordinatorBus(sdbus::IConnection& conn, Coordinator& coordinator);
    ~CoordinatorBus();

private:
    std::string InstallBundle(const sdbus::UnixFd& bundle) override;
    std::string GetStatus() override;
    std::string GetHistory(const uint32_t& count) override;
    void Cancel(const std::string& operationId) override;

    std::string Version() override;
    std::string State() override;
    std::string Operation() override;
    uint32_t Progress() override;
    std::string Step() override;
    std::string LastError() override;

    Coordinator& coordinator_;
};

} // namespace mbl::coordinator
