#pragma once
// The only place mbl-update touches the bus: org.mbl.Update1.

#include "update_engine.h"

#include "org.mbl.Update1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

namespace mbl::update {

class UpdateBus final : public sdbus::AdaptorInterfaces<org::mbl::Update1_adaptor, sdbus::Properties_adaptor> {
public:
    UpdateBus(sdbus::IConnection& conn, UpdateEngine& engine);
    ~UpdateBus();

private:
    std::string Inspect(const sdbus::UnixFd& bundle) override;
    std::string Install(const sdbus::UnixFd& bundle, const std::map<std::string, sdbus::Variant>& options) override;
    sdbus::UnixFd OpenPayload(const std::string& operationId, const std::string& payloadName) override;
    void Commit() override;
    void MarkBad() override;

    std::string Version() override;
    std::string Operation() override;
    uint32_t Progress() override;
    std::string LastError() override;
    std::string BootedSlot() override;
    std::string ActiveSlot() override;
    std::vector<sdbus::Struct<std::string, std::string, std::string, uint64_t>> SlotStates() override;
    std::string FirmwareVersion() override;
    uint64_t SecurityVersionFloor() override;
    std::string Compatible() override;

    UpdateEngine& engine_;
};

} // namespace mbl::update
