// A test double of org.mbl.DeviceIdentity1 for the cloud client's tests (the real
// identity service is built in parallel). It speaks the interface XML exactly
// (generated adaptor) and serves what the JSON file named by
// MBL_TEST_IDENTITY_SPEC says, re-read on every call so a test can change the
// provisioning or the credentials while the cloud client runs:
//   {"device_id": "...", "provisioning": {server_url, tenant, auth_mode, token,
//    server_ca_pem, device_id}, "key_path": "...", "chain_pem": "..."}

#include "mbl/dbus/bus.h"
#include "mbl/fd.h"
#include "mbl/fs.h"

#include "org.mbl.DeviceIdentity1_adaptor.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fcntl.h>

namespace {

using nlohmann::json;

json spec()
{
    const char* p = std::getenv("MBL_TEST_IDENTITY_SPEC");
    if (p == nullptr) {
        throw sdbus::Error("org.mbl.Error.Failed", "MBL_TEST_IDENTITY_SPEC is not set");
    }
    auto text = mbl::fs::readFile(p);
    if (!text) {
        throw sdbus::Error("org.mbl.Error.Io", text.error().message);
    }
    json j = json::parse(*text, nullptr, false);
    if (!j.is_object()) {
        throw sdbus::Error("org.mbl.Error.Failed", "spec is not JSON");
    }
    return j;
}

class IdentityDouble final
    : public sdbus::AdaptorInterfaces<org::mbl::DeviceIdentity1_adaptor, sdbus::Properties_adaptor> {
public:
    explicit IdentityDouble(sdbus::IConnection& conn) : AdaptorInterfaces(conn, "/org/mbl/DeviceIdentity1")
    {
        registerAdaptor();
    }
    ~IdentityDouble() { unregisterAdaptor(); }

private:
    std::string CreateCertificateRequest(const std::map<std::string, sdbus::Variant>&) override
    {
        throw sdbus::Error("org.mbl.Error.NotSupported", "test double");
    }
    // The double only serves what the cloud client reads; the mutating methods are
    // not part of what it stands in for.
    void InstallCertificate(sdbus::Result<>&& result, std::string) override
    {
        result.returnError(sdbus::Error("org.mbl.Error.NotSupported", "test double"));
    }
    void Provision(sdbus::Result<>&& result, std::string) override
    {
        result.returnError(sdbus::Error("org.mbl.Error.NotSupported", "test double"));
    }
    std::string GetProvisioning() override
    {
        return mbl::dbus::guard([&] {
            json p = spec().value("provisioning", json::object());
            p.erase("token");
            return p.dump();
        });
    }
    std::string GetProvisioningSecrets() override
    {
        return mbl::dbus::guard([&] {
            json s = spec();
            if (!s.contains("provisioning")) {
                throw sdbus::Error("org.mbl.Error.NotProvisioned", "no provisioning document stored");
            }
            return s["provisioning"].dump();
        });
    }
    std::vector<uint8_t> Sign(const std::vector<uint8_t>&) override
    {
        throw sdbus::Error("org.mbl.Error.NotSupported", "test double");
    }
    std::tuple<sdbus::UnixFd, std::string> GetTlsCredentials() override
    {
        return mbl::dbus::guard([&] {
            json s = spec();
            const std::string keyPath = s.value("key_path", "");
            if (keyPath.empty()) {
                throw sdbus::Error("org.mbl.Error.NotProvisioned", "no certificate installed");
            }
            mbl::Fd fd{::open(keyPath.c_str(), O_RDONLY | O_CLOEXEC)};
            if (!fd) {
                throw sdbus::Error("org.mbl.Error.Io", "cannot open " + keyPath);
            }
            return std::make_tuple(sdbus::UnixFd{fd.release(), sdbus::adopt_fd}, s.value("chain_pem", std::string()));
        });
    }
    void FactoryReset(sdbus::Result<>&& result) override
    {
        result.returnError(sdbus::Error("org.mbl.Error.NotSupported", "test double"));
    }

    std::string Version() override { return "test-double"; }
    std::string DeviceId() override
    {
        return mbl::dbus::guard([&] { return spec().value("device_id", std::string()); });
    }
    bool Provisioned() override
    {
        return mbl::dbus::guard([&] { return spec().contains("provisioning"); });
    }
    uint64_t CertificateNotAfter() override { return 0; }
    std::string KeyStorage() override { return "file"; }
    std::string State() override { return "ok"; }
};

} // namespace

int main(int argc, char** argv)
{
    const mbl::dbus::DaemonInfo info{"mbl-identity-double", "org.mbl.DeviceIdentity1", "identity.json",
                                     "Test double of org.mbl.DeviceIdentity1 (tests only)."};
    return mbl::dbus::runDaemon(argc, argv, info, [](mbl::dbus::DaemonContext& ctx) -> mbl::Expected<std::shared_ptr<void>> {
        return std::shared_ptr<void>(std::make_shared<IdentityDouble>(ctx.connection));
    });
}
