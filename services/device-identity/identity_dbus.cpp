// SPDX-License-Identifier: Apache-2.0
#include "identity_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/dbus/caller.h"
#include "mbl/error_names.h"
#include "mbl/log.h"
#include "mbl_version.h"

#include <algorithm>
#include <chrono>

namespace mbl::identity {

namespace {
CsrOptions csrOptionsFrom(const std::map<std::string, sdbus::Variant>& options)
{
    CsrOptions out;
    for (const auto& [key, value] : options) {
        const std::string type = value.peekValueType();
        if (key == "SAN") {
            if (type != "as") {
                throw sdbus::Error(errors::kInvalidArgument,
                                   "option 'SAN' must be an array of strings (as), not '" + type + "'");
            }
            out.san = value.get<std::vector<std::string>>();
        } else if (type == "s") {
            out.subject[key] = value.get<std::string>();
        } else {
            throw sdbus::Error(errors::kInvalidArgument, "option '" + key + "' must be a string (s), not '" + type + "'");
        }
    }
    return out;
}
} // namespace

IdentityBus::IdentityBus(sdbus::IConnection& conn, EventLoop& loop, Identity& identity, Signer& signer)
    : AdaptorInterfaces(conn, "/org/mbl/DeviceIdentity1"), loop_(loop), identity_(identity), signer_(signer)
{
    announced_ = identity_.renewalStatus();
    // From the worker (or the bus thread): the bus work happens on the bus thread.
    identity_.setRenewalObserver([this] { loop_.post([this] { renewalChanged(); }); });
    registerAdaptor();
    armRenewalTimer();
}

IdentityBus::~IdentityBus()
{
    if (renewalTimer_ != 0) {
        loop_.cancelTimer(renewalTimer_);
    }
    unregisterAdaptor();
}

void IdentityBus::renewalChanged()
{
    const RenewalStatus now = identity_.renewalStatus();
    std::vector<std::string> changed;
    if (now.state != announced_.state) {
        changed.push_back("RenewalState");
    }
    if (now.nextRenewal != announced_.nextRenewal) {
        changed.push_back("NextRenewal");
    }
    if (now.lastError != announced_.lastError) {
        changed.push_back("LastRenewalError");
    }
    announced_ = now;
    try {
        if (!changed.empty()) {
            emitPropertiesChangedSignal(org::mbl::DeviceIdentity1_adaptor::INTERFACE_NAME, changed);
        }
    } catch (const std::exception& e) {
        log::error(std::string("cannot announce the renewal state: ") + e.what());
    }
    armRenewalTimer();
}

void IdentityBus::armRenewalTimer()
{
    if (renewalTimer_ != 0) {
        loop_.cancelTimer(renewalTimer_);
        renewalTimer_ = 0;
    }
    const std::time_t wake = identity_.renewalWakeup();
    if (wake == 0) {
        return;
    }
    using namespace std::chrono;
    const auto nowMs = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
    // The wake-up time is a whole second: run just after it, not just before.
    const auto delay = std::max<long long>(0, static_cast<long long>(wake) * 1000 + 20 - nowMs);
    renewalTimer_ = loop_.addTimer(milliseconds(delay), [this] {
        renewalTimer_ = 0;
        worker_.post([this] {
            auto ran = identity_.runScheduledRenewal(); // a failure is in the renewal state
            const bool renewed = ran && *ran;
            loop_.post([this, renewed] {
                if (renewed) { // as after the mutating methods
                    try {
                        emitPropertiesChangedSignal(org::mbl::DeviceIdentity1_adaptor::INTERFACE_NAME,
                                                    {"CertificateNotAfter"});
                        emitIdentityChanged(identity_.deviceId());
                    } catch (const std::exception& e) {
                        log::error(std::string("cannot announce the renewed certificate: ") + e.what());
                    }
                }
                renewalChanged();
            });
        });
    });
}

void IdentityBus::mutate(sdbus::Result<>&& result, std::function<Status()> job)
{
    dbus::completeOnWorker(worker_, loop_, std::move(result), std::move(job), [this] {
        emitPropertiesChangedSignal(org::mbl::DeviceIdentity1_adaptor::INTERFACE_NAME,
                                    {"DeviceId", "Provisioned", "CertificateNotAfter", "State"});
        emitIdentityChanged(identity_.deviceId());
    });
}

std::string IdentityBus::CreateCertificateRequest(const std::map<std::string, sdbus::Variant>& options)
{
    return dbus::guard([&] { return dbus::unwrap(identity_.createCertificateRequest(csrOptionsFrom(options))); });
}

void IdentityBus::InstallCertificate(sdbus::Result<>&& result, std::string chainPem)
{
    dbus::guard([&] {
        mutate(std::move(result), [this, pem = std::move(chainPem)] { return identity_.installCertificate(pem); });
    });
}

void IdentityBus::Provision(sdbus::Result<>&& result, std::string documentJson)
{
    dbus::guard([&] {
        mutate(std::move(result), [this, doc = std::move(documentJson)] { return identity_.provision(doc); });
    });
}

void IdentityBus::FactoryReset(sdbus::Result<>&& result)
{
    dbus::guard([&] { mutate(std::move(result), [this] { return identity_.factoryReset(); }); });
}

void IdentityBus::Enroll(sdbus::Result<>&& result)
{
    dbus::guard([&] { mutate(std::move(result), [this] { return identity_.enroll(); }); });
}

void IdentityBus::Renew(sdbus::Result<>&& result)
{
    dbus::guard([&] { mutate(std::move(result), [this] { return identity_.renew(); }); });
}

std::string IdentityBus::GetProvisioning()
{
    return dbus::guard([&] { return dbus::unwrap(identity_.provisioningJson(false)); });
}

std::string IdentityBus::GetProvisioningSecrets()
{
    return dbus::guard([&] { return dbus::unwrap(identity_.provisioningJson(true)); });
}

std::pair<uid_t, pid_t> IdentityBus::caller()
{
    const sdbus::Message* msg = getObject().getCurrentlyProcessedMessage();
    const std::string sender = msg->getSender();
    if (auto it = callers_.find(sender); it != callers_.end()) {
        return it->second;
    }
    const dbus::Caller c = dbus::unwrap(dbus::callerOf(getObject().getConnection(), *msg));
    const std::pair<uid_t, pid_t> creds{c.uid, c.pid};
    if (callers_.size() >= 256) {
        callers_.clear(); // callers come and go; a handful is the normal case
    }
    callers_.emplace(sender, creds);
    return creds;
}

void IdentityBus::Sign(sdbus::Result<std::vector<uint8_t>>&& result, std::string algorithm, std::vector<uint8_t> digest)
{
    dbus::guard([&] {
        SignRequest req;
        std::tie(req.uid, req.pid) = caller();
        req.algorithm = std::move(algorithm);
        req.digest.assign(digest.begin(), digest.end());
        auto reply = [](sdbus::Result<std::vector<uint8_t>>& r, const Expected<std::string>& sig) {
            if (!sig) {
                r.returnError(dbus::toBusError(sig.error()));
            } else {
                r.returnResults(std::vector<uint8_t>(sig->begin(), sig->end()));
            }
        };
        if (!identity_.keyIsSlow()) {
            reply(result, signer_.sign(req));
            return;
        }
        auto pending = std::make_shared<sdbus::Result<std::vector<uint8_t>>>(std::move(result));
        signWorker_.post([this, pending, req = std::move(req), reply] {
            auto sig = std::make_shared<Expected<std::string>>(signer_.sign(req));
            loop_.post([pending, sig, reply] {
                try {
                    reply(*pending, *sig);
                } catch (const std::exception& e) {
                    log::error(std::string("cannot send the Sign reply: ") + e.what());
                }
            });
        });
    });
}

std::tuple<std::string, std::string> IdentityBus::GetTlsCredentials()
{
    return dbus::guard([&] {
        auto creds = dbus::unwrap(identity_.tlsCredentials());
        return std::make_tuple(std::move(creds.chainPem), std::move(creds.caPem));
    });
}

uint32_t IdentityBus::InterfaceRevision()
{
    return 3;
}

std::string IdentityBus::RenewalState()
{
    return dbus::guard([&] { return identity_.renewalStatus().state; });
}

uint64_t IdentityBus::NextRenewal()
{
    return dbus::guard([&] { return identity_.renewalStatus().nextRenewal; });
}

std::string IdentityBus::LastRenewalError()
{
    return dbus::guard([&] { return identity_.renewalStatus().lastError; });
}

std::string IdentityBus::Version()
{
    return MBL_VERSION;
}

std::string IdentityBus::DeviceId()
{
    return dbus::guard([&] { return identity_.properties().deviceId; });
}

bool IdentityBus::Provisioned()
{
    return dbus::guard([&] { return identity_.properties().provisioned; });
}

uint64_t IdentityBus::CertificateNotAfter()
{
    return dbus::guard([&] { return identity_.properties().certificateNotAfter; });
}

std::string IdentityBus::KeyStorage()
{
    return dbus::guard([&] { return identity_.properties().keyStorage; });
}

std::vector<std::string> IdentityBus::SigningAlgorithms()
{
    return dbus::guard([&] { return identity_.signingAlgorithms(); });
}

std::string IdentityBus::State()
{
    return dbus::guard([&] { return identity_.properties().state; });
}

} // namespace mbl::identity
