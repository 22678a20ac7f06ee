#pragma once
// The only place mbl-cloud-client touches the bus: org.mbl.CloudClient1.

#include "cloud_client.h"

#include "org.mbl.CloudClient1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

namespace mbl::cloud {

class CloudClientBus final
    : public sdbus::AdaptorInterfaces<org::mbl::CloudClient1_adaptor, sdbus::Properties_adaptor> {
public:
    CloudClientBus(sdbus::IConnection& conn, CloudClient& client);
    ~CloudClientBus();

private:
    void PollNow() override;
    sdbus::UnixFd Download(const std::string& actionId, const std::string& artifactJson) override;
    void ReportFeedback(const std::string& actionId, const std::string& execution, const std::string& result,
                        const uint32_t& progressCount, const uint32_t& progressOf,
                        const std::vector<std::string>& details) override;
    void SetAttributes(const std::string& ns, const std::map<std::string, std::string>& attributes) override;
    std::map<std::string, std::string> GetAttributes() override;

    std::string Version() override;
    std::string ConnectionState() override;
    uint64_t LastContact() override;
    uint32_t PollInterval() override;
    std::string ServerUrl() override;
    uint32_t DownloadProgress() override;

    CloudClient& client_;
};

} // namespace mbl::cloud
