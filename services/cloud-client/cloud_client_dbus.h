// SPDX-License-Identifier: Apache-2.0
#pragma once
// The only place mbl-cloud-client touches the bus: org.mbl.CloudClient1.

#include "attribute_access.h"
#include "cloud_client.h"

#include "mbl/event_loop.h"
#include "mbl/serial_worker.h"

#include "org.mbl.CloudClient1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

#include <atomic>
#include <memory>

namespace mbl::cloud {

class CloudClientBus final
    : public sdbus::AdaptorInterfaces<org::mbl::CloudClient1_adaptor, sdbus::Properties_adaptor>,
      public Listener {
public:
    // `privileged` and `adminGroup`: who writes any attributes namespace (AttributeAccess).
    CloudClientBus(sdbus::IConnection& conn, EventLoop& loop, CloudClient& client, std::set<uid_t> privileged,
                   std::optional<gid_t> adminGroup);
    ~CloudClientBus();

    // Listener: called from worker threads; everything is posted to the loop thread.
    void propertiesChanged(const std::vector<std::string>& names) override;
    void deploymentRequested(const std::string& actionId, const std::string& json) override;
    void cancelRequested(const std::string& actionId) override;
    void downloadFinished(const std::string& actionId, const std::string& filename, const std::string& result,
                          const std::string& message) override;
    void confirmationRequested(const std::string& actionId, const std::string& json) override;

private:
    // Runs `emit` (a signal) on the loop thread while the adaptor exists.
    template <typename F>
    void emitOnLoop(F&& emit);

    void PollNow() override;
    sdbus::UnixFd Download(const std::string& actionId, const std::string& artifactJson) override;
    void ReportFeedback(sdbus::Result<>&& reply, std::string actionId, std::string execution, std::string result,
                        uint32_t progressCount, uint32_t progressOf, std::vector<std::string> details) override;
    void SetAttributes(sdbus::Result<>&& reply, std::string ns, std::map<std::string, std::string> attributes) override;
    void Confirm(sdbus::Result<>&& reply, std::string actionId, bool confirmed, std::vector<std::string> details) override;
    std::map<std::string, std::string> GetPendingConfirmations() override;
    std::map<std::string, std::string> GetAttributes() override;
    std::string GetSettings() override;
    std::string GetInstalledDeployment() override;
    std::string InstalledActionId() override;
    void ApplySettings(const std::string& settingsJson) override;

    std::string Version() override;
    std::string ConnectionState() override;
    uint64_t LastContact() override;
    uint32_t PollInterval() override;
    std::string ServerUrl() override;
    uint32_t DownloadProgress() override;
    uint32_t ActiveDownloads() override;
    uint64_t NextPoll() override;
    std::string LastError() override;

    EventLoop& loop_;
    CloudClient& client_;
    // Posted work checks this so nothing runs against a destroyed adaptor.
    std::shared_ptr<std::atomic<bool>> alive_;
    // NameOwnerChanged of the coordinator: a new owner hears every open action again.
    std::unique_ptr<sdbus::IProxy> busWatch_;
    // ContainerManager1.GetAppByUid for SetAttributes, called on the store worker
    // only, over a connection of its own (made at the first app caller).
    Expected<std::string> appByUid(uid_t uid);
    std::unique_ptr<sdbus::IConnection> appConn_;
    AttributeAccess access_;
    // Runs the calls that persist state (ReportFeedback, SetAttributes) in order.
    SerialWorker store_; // last: its destructor finishes the queued calls while the rest still exists
};

} // namespace mbl::cloud
