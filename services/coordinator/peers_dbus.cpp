// SPDX-License-Identifier: Apache-2.0
#include "peers_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/process.h"

#include <nlohmann/json.hpp>

#include <ctime>
#include <thread>
#include <unistd.h>

namespace mbl::coordinator {

namespace {
constexpr const char* kCloud = "org.mbl.CloudClient1";
constexpr const char* kUpdate = "org.mbl.Update1";
constexpr const char* kContainers = "org.mbl.ContainerManager1";
constexpr auto kCallTimeout = std::chrono::seconds(30);
// ActivateTransaction and RollbackTransaction reply once every app is switched.
constexpr auto kSwitchTimeout = std::chrono::minutes(10);

// The peer's own org.mbl.Error.* errors pass through; the bus's errors say the
// peer did not answer (it died, restarts or hangs): Io, which the steps retry.
Error busError(const sdbus::Error* e)
{
    const std::string name = e->getName();
    if (name.rfind("org.mbl.Error.", 0) == 0) {
        return dbus::fromBusError(*e);
    }
    if (name == "org.freedesktop.DBus.Error.AccessDenied") {
        return Error{ErrorCode::AccessDenied, e->getMessage()};
    }
    if (name == "org.freedesktop.DBus.Error.UnknownMethod" || name == "org.freedesktop.DBus.Error.UnknownInterface" ||
        name == "org.freedesktop.DBus.Error.UnknownObject") {
        return Error{ErrorCode::NotSupported, e->getMessage()};
    }
    return Error{ErrorCode::Io, "no answer (" + name + ": " + e->getMessage() + ")"};
}
} // namespace

BusPeers::BusPeers(sdbus::IConnection& conn, EventLoop& loop, std::vector<std::string> rebootCommand,
                   std::string rebootRequestFile)
    : conn_(conn), loop_(loop), rebootCommand_(std::move(rebootCommand)),
      rebootRequestFile_(std::move(rebootRequestFile)),
      cloud_(sdbus::createProxy(conn, kCloud, "/org/mbl/CloudClient1")),
      update_(sdbus::createProxy(conn, kUpdate, "/org/mbl/Update1")),
      containers_(sdbus::createProxy(conn, kContainers, "/org/mbl/ContainerManager1"))
{
}

BusPeers::~BusPeers() = default;

namespace {
// A signal has nobody to answer: an exception out of its handler is logged, never thrown into sdbus-c++.
template <typename F>
void inSignal(F&& fn)
{
    try {
        fn();
    } catch (const std::exception& e) {
        log::error(std::string("handling a signal failed: ") + e.what());
    } catch (...) {
        log::error("handling a signal failed");
    }
}
} // namespace

void BusPeers::connectSignals(Coordinator& c)
{
    cloud_->uponSignal("DeploymentRequested").onInterface(kCloud).call([&c](const std::string& action, const std::string& json) {
        inSignal([&] { c.onDeploymentRequested(action, json); });
    });
    cloud_->uponSignal("CancelRequested").onInterface(kCloud).call([&c](const std::string& action) {
        inSignal([&] { c.onCancelRequested(action); });
    });
    cloud_->uponSignal("DownloadFinished")
        .onInterface(kCloud)
        .call([&c](const std::string& action, const std::string& file, const std::string& result,
                   const std::string& message) { inSignal([&] { c.onDownloadFinished(action, file, result, message); }); });
    cloud_->finishRegistration();
    update_->uponSignal("Completed").onInterface(kUpdate).call(
        [&c](const std::string& op, bool ok, const std::string& err, const std::string& msg) {
            inSignal([&] { c.onUpdateCompleted(op, ok, err, msg); });
        });
    // Update1.Progress moves during the slot write: relayed into ours.
    update_->uponSignal("PropertiesChanged")
        .onInterface("org.freedesktop.DBus.Properties")
        .call([&c](const std::string& iface, const std::map<std::string, sdbus::Variant>& changed,
                   const std::vector<std::string>&) {
            inSignal([&] {
                auto it = changed.find("Progress");
                if (iface == kUpdate && it != changed.end() && it->second.containsValueOfType<std::uint32_t>()) {
                    c.onUpdateProgress(it->second.get<std::uint32_t>());
                }
            });
        });
    update_->finishRegistration();
    containers_->uponSignal("InstallCompleted").onInterface(kContainers).call(
        [&c](const std::string& op, const std::string& name, bool ok, const std::string& err, const std::string& msg) {
            inSignal([&] { c.onAppInstallCompleted(op, name, ok, err, msg); });
        });
    containers_->finishRegistration();
}

void BusPeers::download(const std::string& actionId, const std::string& artifactJson, Callback<Fd> cb)
{
    cloud_->callMethodAsync("Download").onInterface(kCloud).withTimeout(kCallTimeout).withArguments(actionId, artifactJson)
        .uponReplyInvoke([cb](const sdbus::Error* e, sdbus::UnixFd fd) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            cb(Fd{fd.release()});
        });
}

void BusPeers::reportFeedback(const std::string& actionId, const std::string& execution, const std::string& result,
                              std::uint32_t cnt, std::uint32_t of, const std::vector<std::string>& details, Done cb)
{
    cloud_->callMethodAsync("ReportFeedback").onInterface(kCloud).withTimeout(kCallTimeout)
        .withArguments(actionId, execution, result, cnt, of, details)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::setAttributes(const std::string& ns, const std::vector<std::pair<std::string, std::string>>& attrs,
                             Done cb)
{
    std::map<std::string, std::string> m(attrs.begin(), attrs.end());
    cloud_->callMethodAsync("SetAttributes").onInterface(kCloud).withTimeout(kCallTimeout).withArguments(ns, m)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::cloudConnectionState(Callback<std::string> cb)
{
    cloud_->callMethodAsync("Get").onInterface("org.freedesktop.DBus.Properties").withTimeout(kCallTimeout)
        .withArguments(std::string(kCloud), std::string("ConnectionState"))
        .uponReplyInvoke([cb](const sdbus::Error* e, sdbus::Variant v) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            cb(v.get<std::string>());
        });
}

void BusPeers::installBundle(Fd bundle, bool arm, Callback<std::string> cb)
{
    std::map<std::string, sdbus::Variant> options{{"arm", sdbus::Variant(arm)}};
    update_->callMethodAsync("Install").onInterface(kUpdate).withTimeout(kCallTimeout)
        .withArguments(sdbus::UnixFd{bundle.release(), sdbus::adopt_fd}, options)
        .uponReplyInvoke([cb](const sdbus::Error* e, std::string op) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            cb(op);
        });
}

void BusPeers::operationManifest(const std::string& updateOp, Callback<std::string> cb)
{
    update_->callMethodAsync("GetOperationManifest").onInterface(kUpdate).withTimeout(kCallTimeout)
        .withArguments(updateOp)
        .uponReplyInvoke([cb](const sdbus::Error* e, std::string manifest) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            cb(manifest);
        });
}

void BusPeers::openPayload(const std::string& updateOp, const std::string& payload, Callback<Fd> cb)
{
    update_->callMethodAsync("OpenPayload").onInterface(kUpdate).withTimeout(kCallTimeout)
        .withArguments(updateOp, payload)
        .uponReplyInvoke([cb](const sdbus::Error* e, sdbus::UnixFd fd) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            cb(Fd{fd.release()});
        });
}

void BusPeers::updateState(Callback<UpdateState> cb)
{
    update_->callMethodAsync("GetAll").onInterface("org.freedesktop.DBus.Properties").withTimeout(kCallTimeout)
        .withArguments(std::string(kUpdate))
        .uponReplyInvoke([cb](const sdbus::Error* e, std::map<std::string, sdbus::Variant> props) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            try {
                UpdateState s;
                s.bootedSlot = props.at("BootedSlot").get<std::string>();
                s.activeSlot = props.at("ActiveSlot").get<std::string>();
                s.firmwareVersion = props.at("FirmwareVersion").get<std::string>();
                for (const auto& st :
                     props.at("SlotStates").get<std::vector<sdbus::Struct<std::string, std::string, std::string, uint64_t>>>()) {
                    s.slots.push_back({std::get<0>(st), std::get<1>(st), std::get<2>(st)});
                }
                cb(s);
            } catch (const std::exception& ex) {
                cb(unexpected(ErrorCode::Failed, std::string("unexpected org.mbl.Update1 properties: ") + ex.what()));
            }
        });
}

void BusPeers::arm(const std::string& updateOp, Done cb)
{
    update_->callMethodAsync("Arm").onInterface(kUpdate).withTimeout(kCallTimeout).withArguments(updateOp)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::release(const std::string& updateOp, Done cb)
{
    update_->callMethodAsync("Release").onInterface(kUpdate).withTimeout(kCallTimeout).withArguments(updateOp)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::commit(Done cb)
{
    update_->callMethodAsync("Commit").onInterface(kUpdate).withTimeout(kCallTimeout)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::markBad(Done cb)
{
    update_->callMethodAsync("MarkBad").onInterface(kUpdate).withTimeout(kCallTimeout)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::installApp(Fd archive, const std::string& optionsJson, Callback<std::string> cb)
{
    containers_->callMethodAsync("InstallApp").onInterface(kContainers).withTimeout(kCallTimeout)
        .withArguments(sdbus::UnixFd{archive.release(), sdbus::adopt_fd}, optionsJson)
        .uponReplyInvoke([cb](const sdbus::Error* e, std::string op) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            cb(op);
        });
}

void BusPeers::activateTransaction(const std::string& id, Done cb)
{
    containers_->callMethodAsync("ActivateTransaction").onInterface(kContainers).withTimeout(kSwitchTimeout)
        .withArguments(id)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::commitTransaction(const std::string& id, Done cb)
{
    containers_->callMethodAsync("CommitTransaction").onInterface(kContainers).withTimeout(kSwitchTimeout)
        .withArguments(id)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::rollbackTransaction(const std::string& id, Done cb)
{
    containers_->callMethodAsync("RollbackTransaction").onInterface(kContainers).withTimeout(kSwitchTimeout)
        .withArguments(id)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::getTransaction(const std::string& id, Callback<TransactionInfo> cb)
{
    containers_->callMethodAsync("GetTransaction").onInterface(kContainers).withTimeout(kCallTimeout)
        .withArguments(id)
        .uponReplyInvoke([cb](const sdbus::Error* e, std::string text) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            auto j = nlohmann::json::parse(text, nullptr, false);
            if (!j.is_object()) {
                cb(unexpected(ErrorCode::Failed, "GetTransaction returned something that is not a JSON object"));
                return;
            }
            TransactionInfo t;
            t.id = j.value("id", std::string());
            t.state = j.value("state", std::string("unknown"));
            if (j.contains("apps") && j["apps"].is_array()) {
                for (const auto& a : j["apps"]) {
                    if (a.is_object()) {
                        t.apps.push_back({a.value("name", std::string()), a.value("from_version", std::string()),
                                          a.value("to_version", std::string()), a.value("state", std::string())});
                    }
                }
            }
            cb(t);
        });
}

void BusPeers::removeApp(const std::string& name, bool removeData, Done cb)
{
    containers_->callMethodAsync("RemoveApp").onInterface(kContainers).withTimeout(kCallTimeout)
        .withArguments(name, removeData)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::listApps(Callback<std::vector<AppInfo>> cb)
{
    // One call for every app's State, Version and Health: the manager's ObjectManager.
    using Props = std::map<std::string, sdbus::Variant>;
    containers_->callMethodAsync("GetManagedObjects").onInterface("org.freedesktop.DBus.ObjectManager")
        .withTimeout(kCallTimeout)
        .uponReplyInvoke([cb](const sdbus::Error* e, std::map<sdbus::ObjectPath, std::map<std::string, Props>> objects) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            auto text = [](const Props& p, const char* key) {
                auto it = p.find(key);
                return it != p.end() && it->second.containsValueOfType<std::string>() ? it->second.get<std::string>()
                                                                                     : std::string();
            };
            std::vector<AppInfo> out;
            for (const auto& [path, interfaces] : objects) {
                auto it = interfaces.find("org.mbl.ContainerManager1.App");
                if (it == interfaces.end()) {
                    continue;
                }
                out.push_back({text(it->second, "Name"), text(it->second, "Version"), text(it->second, "State"),
                               text(it->second, "Health")});
            }
            cb(out);
        });
}

std::unique_ptr<sdbus::IProxy>& BusPeers::proxyOf(const std::string& busName)
{
    return busName == kCloud ? cloud_ : busName == kUpdate ? update_ : containers_;
}

void BusPeers::getSettings(const std::string& busName, Callback<std::string> cb)
{
    auto& proxy = proxyOf(busName);
    proxy->callMethodAsync("GetSettings").onInterface(busName).withTimeout(kCallTimeout)
        .uponReplyInvoke([cb](const sdbus::Error* e, std::string settings) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            cb(settings);
        });
}

void BusPeers::applySettings(const std::string& busName, const std::string& settingsJson, Done cb)
{
    auto& proxy = proxyOf(busName);
    proxy->callMethodAsync("ApplySettings").onInterface(busName).withTimeout(kCallTimeout).withArguments(settingsJson)
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::setHostname(const std::string& hostname, Done cb)
{
    if (hostnameCommand_.empty()) {
        cb(unexpected(ErrorCode::NotSupported, "hostname changes are not configured on this device "
                                               "(coordinator.json: hostname_command)"));
        return;
    }
    auto argv = hostnameCommand_;
    argv.push_back(hostname);
    std::thread([&loop = loop_, argv, cb]() {
        auto r = mbl::run(argv);
        Status st;
        if (!r) {
            st = unexpected(r.error());
        } else if (!r->status.success()) {
            st = unexpected(ErrorCode::Failed, argv.front() + " failed: " + r->err);
        }
        loop.post([cb, st]() { cb(st); });
    }).detach();
}

std::string BusPeers::currentHostname()
{
    char name[256] = {};
    return ::gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string();
}

void BusPeers::runningOperation(const std::string& busName, Callback<std::string> cb)
{
    auto& proxy = proxyOf(busName);
    proxy->callMethodAsync("Get").onInterface("org.freedesktop.DBus.Properties").withTimeout(kCallTimeout)
        .withArguments(busName, std::string("Operation"))
        .uponReplyInvoke([cb](const sdbus::Error* e, sdbus::Variant v) {
            if (e != nullptr) {
                cb(unexpected(busError(e)));
                return;
            }
            if (!v.containsValueOfType<std::string>()) {
                cb(unexpected(ErrorCode::Failed, "the Operation property is not a string"));
                return;
            }
            cb(v.get<std::string>());
        });
}

void BusPeers::ping(const std::string& busName, Done cb)
{
    std::string path = "/" + busName;
    for (auto& c : path) {
        c = c == '.' ? '/' : c;
    }
    auto& proxy = pingProxies_[busName];
    if (!proxy) {
        proxy = sdbus::createProxy(conn_, busName, path);
    }
    proxy->callMethodAsync("Ping").onInterface("org.freedesktop.DBus.Peer").withTimeout(std::chrono::seconds(5))
        .uponReplyInvoke([cb](const sdbus::Error* e) { cb(e ? Status{unexpected(busError(e))} : Status{}); });
}

void BusPeers::reboot(Done cb)
{
    if (rebootCommand_.empty()) {
        // The unit's mbl-reboot.path answers the request with reboot.target.
        log::notice("rebooting: requesting a reboot through " + rebootRequestFile_);
        cb(fs::writeFileAtomic(rebootRequestFile_, std::to_string(::time(nullptr)) + "\n", 0644));
        return;
    }
    log::notice("rebooting: running the configured reboot command");
    auto child = Child::spawn(rebootCommand_);
    if (!child) {
        cb(unexpected(child.error()));
        return;
    }
    // Waiting off the loop thread: the command may take a while before the system goes down.
    auto shared = std::make_shared<Child>(std::move(child).value());
    std::thread([this, shared, cb]() {
        ExitStatus st = shared->wait();
        loop_.post([st, cb]() {
            if (st.success()) {
                cb({});
            } else {
                cb(unexpected(ErrorCode::Failed, "reboot command " + st.describe()));
            }
        });
    }).detach();
}

} // namespace mbl::coordinator
