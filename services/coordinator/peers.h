// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the coordinator needs from the other four services, as asynchronous
// calls whose callbacks run on the coordinator's event loop. The D-Bus
// implementation is peers_dbus.cpp; unit tests drive the logic with a fake.

#include "mbl/expected.h"
#include "mbl/fd.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mbl::coordinator {

template <typename T>
using Callback = std::function<void(Expected<T>)>;
using Done = std::function<void(Status)>;

struct AppInfo {
    std::string name;
    std::string version;
    std::string state;  // installed, created, running, stopped, exited, failed
    std::string health; // unknown, starting, healthy, unhealthy ("" if the manager does not say)
};

struct SlotInfo {
    std::string slot;
    std::string state; // good, bad, trial, empty
    std::string version;
};

struct UpdateState {
    std::string bootedSlot;
    std::string activeSlot; // what the bootloader boots next
    std::string firmwareVersion;
    std::vector<SlotInfo> slots;
};

// ContainerManager1.GetTransaction (contract C3).
struct TransactionInfo {
    struct App {
        std::string name, fromVersion, toVersion, state;
    };
    std::string id;
    std::string state; // staged, active, committed, rolled-back, unknown
    std::vector<App> apps;
};

class Peers {
public:
    virtual ~Peers() = default;

    // cloud client
    virtual void download(const std::string& actionId, const std::string& artifactJson, Callback<Fd> cb) = 0;
    virtual void reportFeedback(const std::string& actionId, const std::string& execution, const std::string& result,
                                std::uint32_t cnt, std::uint32_t of, const std::vector<std::string>& details,
                                Done cb) = 0;
    virtual void setAttributes(const std::string& ns, const std::vector<std::pair<std::string, std::string>>& attrs,
                               Done cb) = 0;
    virtual void cloudConnectionState(Callback<std::string> cb) = 0;

    // update (contract C2). Install's completion arrives through
    // Coordinator::onUpdateCompleted, its progress through onUpdateProgress.
    // arm=false: verified and staged, the bootloader untouched.
    virtual void installBundle(Fd bundle, bool arm, Callback<std::string> cb) = 0;
    virtual void operationManifest(const std::string& updateOp, Callback<std::string> cb) = 0;
    virtual void openPayload(const std::string& updateOp, const std::string& payload, Callback<Fd> cb) = 0;
    virtual void arm(const std::string& updateOp, Done cb) = 0;
    virtual void release(const std::string& updateOp, Done cb) = 0;
    virtual void updateState(Callback<UpdateState> cb) = 0;
    virtual void commit(Done cb) = 0;
    virtual void markBad(Done cb) = 0;

    // container manager (contract C3). InstallApp's completion arrives through
    // Coordinator::onAppInstallCompleted.
    virtual void installApp(Fd archive, const std::string& optionsJson, Callback<std::string> cb) = 0;
    virtual void activateTransaction(const std::string& id, Done cb) = 0;
    virtual void commitTransaction(const std::string& id, Done cb) = 0;
    virtual void rollbackTransaction(const std::string& id, Done cb) = 0;
    virtual void getTransaction(const std::string& id, Callback<TransactionInfo> cb) = 0;
    virtual void removeApp(const std::string& name, bool removeData, Done cb) = 0;
    // Every installed app with its State and Health.
    virtual void listApps(Callback<std::vector<AppInfo>> cb) = 0;

    // Over-the-air settings of org.mbl.CloudClient1 / org.mbl.ContainerManager1
    // (GetSettings / ApplySettings: replace semantics, so a saved document restores).
    virtual void getSettings(const std::string& busName, Callback<std::string> cb) = 0;
    virtual void applySettings(const std::string& busName, const std::string& settingsJson, Done cb) = 0;
    // The configured hostname command with the name appended; the name in effect.
    virtual void setHostname(const std::string& hostname, Done cb) = 0;
    virtual std::string currentHostname() = 0;

    // The "Operation" property of org.mbl.Update1 or org.mbl.ContainerManager1: the
    // install running there ("" when idle). A service that restarted has forgotten
    // the install it was doing; this is how the coordinator notices.
    virtual void runningOperation(const std::string& busName, Callback<std::string> cb) = 0;

    // any service answers Peer.Ping
    virtual void ping(const std::string& busName, Done cb) = 0;

    // the configured reboot command
    virtual void reboot(Done cb) = 0;
};

} // namespace mbl::coordinator
