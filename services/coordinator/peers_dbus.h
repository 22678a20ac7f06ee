// SPDX-License-Identifier: Apache-2.0
#pragma once
// The coordinator's peers over D-Bus: asynchronous calls through sdbus-c++
// proxies on the daemon's own connection (replies and signals arrive on its
// event loop), and the reboot command.

#include "coordinator.h"
#include "peers.h"

#include "mbl/event_loop.h"

#include <sdbus-c++/sdbus-c++.h>

#include <map>
#include <memory>
#include <vector>

namespace mbl::coordinator {

class BusPeers final : public Peers {
public:
    BusPeers(sdbus::IConnection& conn, EventLoop& loop, std::vector<std::string> rebootCommand,
             std::string rebootRequestFile);
    ~BusPeers() override;

    // Subscribes the coordinator to the peers' signals.
    void connectSignals(Coordinator& coordinator);

    void download(const std::string& actionId, const std::string& artifactJson, Callback<Fd> cb) override;
    void reportFeedback(const std::string& actionId, const std::string& execution, const std::string& result,
                        std::uint32_t cnt, std::uint32_t of, const std::vector<std::string>& details,
                        Done cb) override;
    void setAttributes(const std::string& ns, const std::vector<std::pair<std::string, std::string>>& attrs,
                       Done cb) override;
    void cloudConnectionState(Callback<std::string> cb) override;
    void installBundle(Fd bundle, bool arm, Callback<std::string> cb) override;
    void operationManifest(const std::string& updateOp, Callback<std::string> cb) override;
    void openPayload(const std::string& updateOp, const std::string& payload, Callback<Fd> cb) override;
    void updateState(Callback<UpdateState> cb) override;
    void arm(const std::string& updateOp, Done cb) override;
    void release(const std::string& updateOp, Done cb) override;
    void commit(Done cb) override;
    void markBad(Done cb) override;
    void installApp(Fd archive, const std::string& optionsJson, Callback<std::string> cb) override;
    void activateTransaction(const std::string& id, Done cb) override;
    void commitTransaction(const std::string& id, Done cb) override;
    void rollbackTransaction(const std::string& id, Done cb) override;
    void getTransaction(const std::string& id, Callback<TransactionInfo> cb) override;
    void removeApp(const std::string& name, bool removeData, Done cb) override;
    void listApps(Callback<std::vector<AppInfo>> cb) override;
    void runningOperation(const std::string& busName, Callback<std::string> cb) override;
    void getSettings(const std::string& busName, Callback<std::string> cb) override;
    void applySettings(const std::string& busName, const std::string& settingsJson, Done cb) override;
    void setHostname(const std::string& hostname, Done cb) override;
    std::string currentHostname() override;
    void setHostnameCommand(std::vector<std::string> argv) { hostnameCommand_ = std::move(argv); }
    void ping(const std::string& busName, Done cb) override;
    void reboot(Done cb) override;

private:
    std::vector<std::string> hostnameCommand_;
    sdbus::IConnection& conn_;
    EventLoop& loop_;
    std::vector<std::string> rebootCommand_;
    std::string rebootRequestFile_;
    // The proxy of one of the three peers, by bus name.
    std::unique_ptr<sdbus::IProxy>& proxyOf(const std::string& busName);
    std::unique_ptr<sdbus::IProxy> cloud_;
    std::unique_ptr<sdbus::IProxy> update_;
    std::unique_ptr<sdbus::IProxy> containers_;
    std::map<std::string, std::unique_ptr<sdbus::IProxy>> pingProxies_;
};

} // namespace mbl::coordinator
