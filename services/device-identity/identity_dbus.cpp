#include "identity_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl_version.h"

namespace mbl::identity {

IdentityBus::IdentityBus(sdbus::IConnection& conn, Identity& identity)
    : AdaptorInterfaces(conn, "/org/mbl/DeviceIdentity1"), identity_(identity)
{
    registerAdaptor();
}

IdentityBus::~IdentityBus()
{
    unregisterAdaptor();
}

std::string IdentityBus::CreateCertificateRequest(const std::map<std::string, sdbus::Variant>&)
{
    dbus::notSupported("CreateCertificateRequest");
}

void IdentityBus::InstallCertificate(const std::string&)
{
    dbus::notSupported("InstallCertificate");
}

void IdentityBus::Provision(const std::string&)
{
    dbus::notSupported("Provision");
}

std::string IdentityBus::GetProvisioning()
{
    dbus::notSupported("GetProvisioning");
}

std::string IdentityBus::GetProvisioningSecrets()
{
    dbus::notSupported("GetProvisioningSecrets");
}

std::vector<uint8_t> IdentityBus::Sign(const std::vector<uint8_t>&)
{
    dbus::notSupported("Sign");
}

std::tuple<sdbus::UnixFd, std::string> IdentityBus::GetTlsCredentials()
{
    dbus::notSupported("GetTlsCredentials");
}

void IdentityBus::FactoryReset()
{
    dbus::notSupported("FactoryReset");
}

std::string IdentityBus::Version()
{
    return MBL_VERSION;
}

std::string IdentityBus::DeviceId()
{
    return identity_.deviceId();
}

bool IdentityBus::Provisioned()
{
    return identity_.provisioned();
}

uint64_t IdentityBus::CertificateNotAfter()
{
    return identity_.certificateNotAfter();
}

std::string IdentityBus::KeyStorage()
{
    return identity_.keyStorage();
}

std::string IdentityBus::State()
{
    return identity_.state();
}

} // namespace mbl::identity
