#pragma once
// The only place mbl-device-identity touches the bus: org.mbl.DeviceIdentity1.

#include "identity.h"

#include "org.mbl.DeviceIdentity1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

namespace mbl::identity {

class IdentityBus final
    : public sdbus::AdaptorInterfaces<org::mbl::DeviceIdentity1_adaptor, sdbus::Properties_adaptor> {
public:
    IdentityBus(sdbus::IConnection& conn, Identity& identity);
    ~IdentityBus();

private:
    std::string CreateCertificateRequest(const std::map<std::string, sdbus::Variant>& options) override;
    void InstallCertificate(const std::string& chainPem) override;
    void Provision(const std::string& documentJson) override;
    std::string GetProvisioning() override;
    std::string GetProvisioningSecrets() override;
    std::vector<uint8_t> Sign(const std::vector<uint8_t>& data) override;
    std::tuple<sdbus::UnixFd, std::string> GetTlsCredentials() override;
    void FactoryReset() override;

    std::string Version() override;
    std::string DeviceId() override;
    bool Provisioned() override;
    uint64_t CertificateNotAfter() override;
    std::string KeyStorage() override;
    std::string State() override;

    Identity& identity_;
};

} // namespace mbl::identity
