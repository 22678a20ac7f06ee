// SPDX-License-Identifier: Apache-2.0
#pragma once
// The only place mbl-container-manager touches the bus: org.mbl.ContainerManager1
// at the root (with ObjectManager) and org.mbl.ContainerManager1.App per app.

#include "container_manager.h"

#include "org.mbl.ContainerManager1.App_adaptor.h"
#include "org.mbl.ContainerManager1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

#include <map>
#include <memory>

namespace mbl::containers {

// One installed app at /org/mbl/ContainerManager1/apps/<name>.
class AppObject final
    : public sdbus::AdaptorInterfaces<org::mbl::ContainerManager1::App_adaptor, sdbus::Properties_adaptor,
                                      sdbus::ManagedObject_adaptor> {
public:
    AppObject(sdbus::IConnection& conn, const std::string& path, ContainerManager& manager, std::string name);
    ~AppObject();
    void emitChanged(const std::vector<std::string>& props);

private:
    std::string Name() override;
    std::string State() override;
    std::string Version() override;
    uint32_t Pid() override;
    int32_t ExitCode() override;
    uint32_t RestartCount() override;
    std::string Health() override;
    bool OomKilled() override;
    std::vector<std::string> Withheld() override;
    AppView view();

    ContainerManager& manager_;
    std::string name_;
};

class ContainerManagerBus final
    : public sdbus::AdaptorInterfaces<org::mbl::ContainerManager1_adaptor, sdbus::Properties_adaptor,
                                      sdbus::ObjectManager_adaptor>,
      public ManagerEvents {
public:
    ContainerManagerBus(sdbus::IConnection& conn, ContainerManager& manager);
    ~ContainerManagerBus();

    static std::string appPath(const std::string& name);

    // The daemon was told to stop: asks systemd whether the system is going
    // down and hands the answer to the manager, which decides
    // (ContainerManager::terminate); `proceed` lets the daemon exit.
    void terminate(std::function<void()> proceed);

private:
    std::string InstallApp(const sdbus::UnixFd& archive, const std::string& optionsJson) override;
    void RemoveApp(sdbus::Result<>&& result, std::string name, bool removeData) override;
    void StartApp(sdbus::Result<>&& result, std::string name) override;
    void StopApp(sdbus::Result<>&& result, std::string name) override;
    void RestartApp(sdbus::Result<>&& result, std::string name) override;
    std::vector<sdbus::Struct<std::string, std::string, std::string>> ListApps() override;
    std::string GetLogs(const std::string& name, const uint32_t& lines) override;
    std::string GetSettings() override;
    void ApplySettings(const std::string& settingsJson) override;
    void ActivateTransaction(sdbus::Result<>&& result, std::string id) override;
    void CommitTransaction(sdbus::Result<>&& result, std::string id) override;
    void RollbackTransaction(sdbus::Result<>&& result, std::string id) override;
    std::string GetTransaction(const std::string& id) override;
    std::string GetAppByUid(const uint32_t& uid) override;

    std::string Version() override;
    std::string Operation() override;
    uint32_t AppCount() override;

    // ManagerEvents
    void appAdded(const std::string& name) override;
    void appRemoved(const std::string& name) override;
    void appChanged(const std::string& name, const std::vector<std::string>& properties) override;
    void appStateChanged(const std::string& name, const std::string& state) override;
    void installCompleted(const std::string& operationId, const std::string& name, const Status& result) override;
    void managerChanged(const std::vector<std::string>& properties) override;

    sdbus::IConnection& conn_;
    ContainerManager& manager_;
    std::map<std::string, std::unique_ptr<AppObject>> apps_;
    std::unique_ptr<sdbus::IProxy> systemd_; // org.freedesktop.systemd1, asked at terminate()
};

} // namespace mbl::containers
