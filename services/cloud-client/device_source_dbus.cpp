#include "device_source_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/fs.h"
#include "mbl/log.h"

#include "identity_client.h"

#include <nlohmann/json.hpp>

#include <openssl/crypto.h>

namespace mbl::cloud {

namespace {

std::string str(const nlohmann::json& j, const char* key)
{
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

} // namespace

struct BusDeviceSource::Proxies {
    std::unique_ptr<IdentityProxy> identity;
};

BusDeviceSource::BusDeviceSource() = default;
BusDeviceSource::~BusDeviceSource()
{
    watch_.reset();
    proxies_.reset();
    conn_.reset();
}

void BusDeviceSource::watchIdentity(sdbus::IConnection& loopConnection, std::function<void()> changed)
{
    watch_ = sdbus::createProxy(loopConnection, "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1");
    watch_->uponSignal("IdentityChanged")
        .onInterface("org.mbl.DeviceIdentity1")
        .call([changed = std::move(changed)](const std::string&) { changed(); });
    watch_->finishRegistration();
}

Status BusDeviceSource::ensureConnection()
{
    if (conn_) {
        return {};
    }
    try {
        conn_ = dbus::connectSystemBus();
        proxies_ = std::make_unique<Proxies>();
        proxies_->identity = std::make_unique<IdentityProxy>(*conn_);
    } catch (const sdbus::Error& e) {
        proxies_.reset();
        conn_.reset();
        return unexpected(ErrorCode::Io, "cannot connect to the system bus: " + e.getMessage());
    }
    return {};
}

Expected<Provisioning> BusDeviceSource::provisioning()
{
    if (auto st = ensureConnection(); !st) {
        return unexpected(st.error());
    }
    try {
        std::string doc = proxies_->identity->GetProvisioningSecrets();
        std::string deviceId = proxies_->identity->DeviceId();
        auto j = nlohmann::json::parse(doc, nullptr, false);
        OPENSSL_cleanse(doc.data(), doc.size());
        if (!j.is_object()) {
            return unexpected(ErrorCode::InvalidArgument, "the identity service sent a provisioning document that is not JSON");
        }
        Provisioning p;
        p.serverUrl = str(j, "server_url");
        p.tenant = str(j, "tenant");
        p.authMode = str(j, "auth_mode");
        p.token = str(j, "token");
        p.serverCaPem = str(j, "server_ca_pem");
        p.deviceId = str(j, "device_id");
        if (p.deviceId.empty()) {
            p.deviceId = deviceId;
        }
        if (p.serverUrl.empty()) {
            return unexpected(ErrorCode::NotProvisioned, "the device is not provisioned (no server_url)");
        }
        if (p.tenant.empty()) {
            p.tenant = "DEFAULT";
        }
        if (p.authMode.empty()) {
            p.authMode = "mtls";
        }
        return p;
    } catch (const sdbus::Error& e) {
        auto err = dbus::fromBusError(e);
        if (e.getName() == "org.freedesktop.DBus.Error.ServiceUnknown" ||
            e.getName() == "org.freedesktop.DBus.Error.NameHasNoOwner") {
            return unexpected(ErrorCode::NotProvisioned, "the identity service (org.mbl.DeviceIdentity1) is not running");
        }
        if (e.getName() == "org.freedesktop.DBus.Error.NoReply" || e.getName() == "org.freedesktop.DBus.Error.Disconnected") {
            proxies_.reset();
            conn_.reset();
        }
        return unexpected(err.code == ErrorCode::Failed ? ErrorCode::NotProvisioned : err.code,
                          "identity service: " + e.getName() + ": " + e.getMessage());
    }
}

Expected<TlsCredentials> BusDeviceSource::tlsCredentials()
{
    if (auto st = ensureConnection(); !st) {
        return unexpected(st.error());
    }
    try {
        auto [fd, chain] = proxies_->identity->GetTlsCredentials();
        // The received UnixFd owns a dup of the key descriptor; read the PEM into memory only.
        auto key = fs::readAll(fd.get(), 64 * 1024);
        if (!key) {
            return unexpected(ErrorCode::Io, "cannot read the device key from the identity service: " + key.error().message);
        }
        if (chain.empty() || key->empty()) {
            return unexpected(ErrorCode::NotProvisioned, "the identity service has no certificate chain or key for mutual TLS");
        }
        return TlsCredentials{std::move(key).value(), chain};
    } catch (const sdbus::Error& e) {
        return unexpected(ErrorCode::NotProvisioned, "identity service: GetTlsCredentials: " + e.getName() + ": " + e.getMessage());
    }
}

std::map<std::string, std::string> BusDeviceSource::systemAttributes()
{
    std::map<std::string, std::string> out;
    if (!ensureConnection()) {
        return out;
    }
    try {
        auto p = sdbus::createProxy(*conn_, "org.mbl.Update1", "/org/mbl/Update1");
        sdbus::Variant v = p->getProperty("FirmwareVersion").onInterface("org.mbl.Update1");
        auto fw = v.get<std::string>();
        if (!fw.empty()) {
            out["firmware_version"] = fw;
        }
    } catch (const sdbus::Error&) {
        // the update service is optional here
    }
    try {
        auto p = sdbus::createProxy(*conn_, "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1");
        std::vector<sdbus::Struct<std::string, std::string, std::string>> apps;
        p->callMethod("ListApps").onInterface("org.mbl.ContainerManager1").storeResultsTo(apps);
        for (const auto& a : apps) {
            if (out.size() >= 40) {
                break; // leave room for the apps' own attributes
            }
            out["app." + std::get<0>(a)] = std::get<1>(a);
        }
    } catch (const sdbus::Error&) {
        // no container manager, or not ready
    }
    return out;
}

} // namespace mbl::cloud
