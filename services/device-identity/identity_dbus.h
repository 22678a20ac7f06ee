// SPDX-License-Identifier: Apache-2.0
#pragma once
// The only place mbl-device-identity touches the bus: org.mbl.DeviceIdentity1.
// Reads, CSRs and Sign with an in-memory key answer on the bus thread (each well
// under a millisecond of work); Sign with a TPM key runs on its own worker; the
// mutating calls, which validate and fsync, run one at a time on a worker thread
// and reply, emit IdentityChanged and PropertiesChanged from the bus thread
// through EventLoop::post. The EST renewal timer lives here too (an EventLoop
// timer at Identity::renewalWakeup()); the exchange itself runs on the worker.

#include "identity.h"
#include "signer.h"

#include "mbl/event_loop.h"
#include "mbl/serial_worker.h"

#include "org.mbl.DeviceIdentity1_adaptor.h"

#include <sdbus-c++/sdbus-c++.h>

#include <functional>

namespace mbl::identity {

class IdentityBus final
    : public sdbus::AdaptorInterfaces<org::mbl::DeviceIdentity1_adaptor, sdbus::Properties_adaptor> {
public:
    IdentityBus(sdbus::IConnection& conn, EventLoop& loop, Identity& identity, Signer& signer);
    ~IdentityBus();

private:
    std::string CreateCertificateRequest(const std::map<std::string, sdbus::Variant>& options) override;
    void InstallCertificate(sdbus::Result<>&& result, std::string chainPem) override;
    void Provision(sdbus::Result<>&& result, std::string documentJson) override;
    std::string GetProvisioning() override;
    std::string GetProvisioningSecrets() override;
    void Sign(sdbus::Result<std::vector<uint8_t>>&& result, std::string algorithm,
              std::vector<uint8_t> digest) override;
    std::tuple<std::string, std::string> GetTlsCredentials() override;
    void FactoryReset(sdbus::Result<>&& result) override;
    void Enroll(sdbus::Result<>&& result) override;
    void Renew(sdbus::Result<>&& result) override;

    std::string Version() override;
    uint32_t InterfaceRevision() override;
    std::string DeviceId() override;
    bool Provisioned() override;
    uint64_t CertificateNotAfter() override;
    std::string KeyStorage() override;
    std::string State() override;
    std::vector<std::string> SigningAlgorithms() override;
    std::string RenewalState() override;
    uint64_t NextRenewal() override;
    std::string LastRenewalError() override;

    // Bus thread: announces a renewal change (and a new certificate), re-arms the timer.
    void renewalChanged();
    void armRenewalTimer();

    // uid and pid of the sender of the message being handled, from the bus daemon;
    // cached per unique name (a connection's credentials never change and unique
    // names are not reused), so a Sign costs no extra round trip.
    std::pair<uid_t, pid_t> caller();

    // Runs `job` on the worker; replies and announces the change on the bus thread.
    void mutate(sdbus::Result<>&& result, std::function<Status()> job);

    EventLoop& loop_;
    Identity& identity_;
    Signer& signer_;
    std::map<std::string, std::pair<uid_t, pid_t>> callers_; // bus thread only
    EventLoop::TimerId renewalTimer_ = 0;                     // bus thread only
    RenewalStatus announced_;                                 // bus thread only: what was last emitted
    SerialWorker signWorker_; // slow keys sign here, apart from the mutating calls
    SerialWorker worker_; // last: its destructor finishes the queued jobs while the rest still exists
};

} // namespace mbl::identity
