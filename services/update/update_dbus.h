#pragma once
// The only place mbl-update touches the bus: org.mbl.Update1. Long work (Install,
// Inspect of a possibly slow pipe) runs on worker threads that report back to the
// event loop with post(); signals and PropertiesChanged are emitted from the loop.

#include "update_engine.h"

#include "mbl/event_loop.h"

#include "org.mbl.Update1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mbl::update {

class UpdateBus final : public sdbus::AdaptorInterfaces<org::mbl::Update1_adaptor, sdbus::Properties_adaptor> {
public:
    UpdateBus(sdbus::IConnection& conn, EventLoop& loop, UpdateEngine& engine);
    ~UpdateBus();

private:
    void Inspect(sdbus::Result<std::string>&& result, sdbus::UnixFd bundle) override;
    std::string Install(const sdbus::UnixFd& bundle, const std::map<std::string, sdbus::Variant>& options) override;
    sdbus::UnixFd OpenPayload(const std::string& operationId, const std::string& payloadName) override;
    std::string GetOperationManifest(const std::string& operationId) override;
    void Arm(sdbus::Result<>&& result, std::string operationId) override;
    void Release(sdbus::Result<>&& result, std::string operationId) override;
    void Commit(sdbus::Result<>&& result) override;
    void MarkBad(sdbus::Result<>&& result) override;

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

    // Runs fn on the loop thread unless this object is gone by then.
    void postToLoop(std::function<void()> fn);
    void startWorker(std::function<void()> fn);
    void reapWorkers();
    void emitState(const std::vector<std::string>& props);
    // Runs a short mutation (an environment write and fsync, a slot wipe) on a
    // worker and replies from the loop, then announces the changed properties.
    // exclusive: refused with Busy while an install or another such call runs.
    void mutate(sdbus::Result<>&& result, bool exclusive, const char* what, std::function<Status()> work,
                std::vector<std::string> props);

    struct Worker {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> done;
    };

    EventLoop& loop_;
    UpdateEngine& engine_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    std::atomic<bool> stopping_{false};
    std::vector<Worker> workers_;
    std::map<std::uint64_t, sdbus::Result<std::string>> pendingInspects_;
    std::uint64_t nextInspect_ = 1;
    // Loop-thread state of the running install.
    std::string operation_;
    uint32_t progress_ = 0;
};

} // namespace mbl::update
