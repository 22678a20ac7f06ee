// SPDX-License-Identifier: Apache-2.0
#include "device_source_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/log.h"

#include "identity_client.h"

#include <nlohmann/json.hpp>

#include <openssl/crypto.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

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

// DeviceIdentity1.Sign for the TLS handshake. It runs inside curl_easy_perform on
// a worker or download thread (never the daemon's loop thread), so a synchronous
// call is fine there; the connection is its own and one call runs at a time, as
// sd-bus connections are not thread-safe.
class BusDeviceSource::Signer {
public:
    Expected<std::string> sign(const std::string& algorithm, const std::string& digest)
    {
        std::lock_guard<std::mutex> lk(mu_);
        try {
            if (!conn_) {
                conn_ = dbus::connectSystemBus();
                proxy_ = sdbus::createProxy(*conn_, "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1");
            }
            std::vector<std::uint8_t> signature;
            // A TPM signs in tens of milliseconds; a handshake waits no longer than libcurl's connect timeout anyway.
            proxy_->callMethod("Sign")
                .onInterface("org.mbl.DeviceIdentity1")
                .withTimeout(std::chrono::seconds(20))
                .withArguments(algorithm, std::vector<std::uint8_t>(digest.begin(), digest.end()))
                .storeResultsTo(signature);
            return std::string(signature.begin(), signature.end());
        } catch (const sdbus::Error& e) {
            const auto& name = e.getName();
            if (name == "org.freedesktop.DBus.Error.NoReply" || name == "org.freedesktop.DBus.Error.Disconnected" ||
                name == "org.freedesktop.DBus.Error.NoServer") {
                proxy_.reset();
                conn_.reset();
            }
            if (name == "org.freedesktop.DBus.Error.ServiceUnknown" || name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
                return unexpected(ErrorCode::Io, name + ": the identity service (org.mbl.DeviceIdentity1) is not running");
            }
            auto err = dbus::fromBusError(e);
            return unexpected(err.code, name + ": " + e.getMessage());
        }
    }

private:
    std::mutex mu_;
    std::unique_ptr<sdbus::IConnection> conn_;
    std::unique_ptr<sdbus::IProxy> proxy_;
};

BusDeviceSource::BusDeviceSource() : signer_(std::make_shared<Signer>()) {}
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
        // The chain only: the key stays in the identity service, which signs the handshake.
        auto [chain, ca] = proxies_->identity->GetTlsCredentials();
        (void)ca; // the server CA comes with the provisioning document
        if (chain.empty()) {
            return unexpected(ErrorCode::NotProvisioned, "the identity service has no certificate chain for mutual TLS");
        }
        TlsCredentials creds;
        creds.chainPem = std::move(chain);
        creds.signer = [signer = signer_](const std::string& algorithm, const std::string& digest) {
            return signer->sign(algorithm, digest);
        };
        return creds;
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
