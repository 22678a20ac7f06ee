#pragma once
// The only place mbl-container-manager touches the bus: org.mbl.ContainerManager1
// at the root (with ObjectManager) and org.mbl.ContainerManager1.App per app.

#include "container_manager.h"

#include "org.mbl.ContainerManager1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

namespace mbl::containers {

class ContainerManagerBus final
    : public sdbus::AdaptorInterfaces<org::mbl::ContainerManager1_adaptor, sdbus::Properties_adaptor,
                                      sdbus::ObjectManager_adaptor> {
public:
    ContainerManagerBus(sdbus::IConnection& conn, ContainerManager& manager);
    ~ContainerManagerBus();

private:
    std::string InstallApp(const sdbus::UnixFd& archive, const std::string& optionsJson) override;
    void RemoveApp(const std::string& name, const bool& removeData) override;
    void StartApp(const std::string& name) override;
    void StopApp(const std::string& name) override;
    void RestartApp(const std::string& name) override;
    std::vector<sdbus::Struct<std::string, std::string, std::string>> ListApps() override;
    std::string GetLogs(const std::string& name, const uint32_t& lines) override;

    std::string Version() override;
    std::string Operation() override;
    uint32_t AppCount() override;

    ContainerManager& manager_;
};

} // namespace mbl::containers
