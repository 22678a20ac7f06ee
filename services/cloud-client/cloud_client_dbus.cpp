// SPDX-License-Identifier: Apache-2.0
#include "cloud_client_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/dbus/caller.h"
#include "mbl/error_names.h"
#include "mbl_version.h"

namespace mbl::cloud {

CloudClientBus::CloudClientBus(sdbus::IConnection& conn, EventLoop& loop, CloudClient& client,
                               std::set<uid_t> privileged, std::optional<gid_t> adminGroup)
    : AdaptorInterfaces(conn, "/org/mbl/CloudClient1"),
      loop_(loop),
      client_(client),
      alive_(std::make_shared<std::atomic<bool>>(true)),
      access_(std::move(privileged), adminGroup, [this](uid_t uid) { return appByUid(uid); })
{
    registerAdaptor();
    // Signals reach only who listens when they are sent: a coordinator that
    // (re)starts missed every announcement before, so it hears the open actions
    // again (the handler runs on the loop thread; the client only sets flags).
    busWatch_ = sdbus::createProxy(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    busWatch_->uponSignal("NameOwnerChanged")
        .onInterface("org.freedesktop.DBus")
        .call([this](const std::string& name, const std::string& /*oldOwner*/, const std::string& newOwner) {
            if (name == "org.mbl.Coordinator1" && !newOwner.empty()) {
                client_.listenerRestarted();
            }
        });
    busWatch_->finishRegistration();
}

CloudClientBus::~CloudClientBus()
{
    *alive_ = false;
    busWatch_.reset();
    unregisterAdaptor();
}

template <typename F>
void CloudClientBus::emitOnLoop(F&& emit)
{
    auto alive = alive_;
    loop_.post([alive, emit = std::forward<F>(emit)] {
        if (*alive) {
            try {
                emit();
            } catch (const sdbus::Error&) {
                // the bus is going away; nobody to tell
            }
        }
    });
}

void CloudClientBus::propertiesChanged(const std::vector<std::string>& names)
{
    emitOnLoop([this, names] { emitPropertiesChangedSignal(org::mbl::CloudClient1_adaptor::INTERFACE_NAME, names); });
}

void CloudClientBus::deploymentRequested(const std::string& actionId, const std::string& json)
{
    emitOnLoop([this, actionId, json] {
        // A signal the bus refuses was not sent: the deployment is not announced
        // (the client announces it again), never taken as delivered.
        try {
            emitDeploymentRequested(actionId, json);
        } catch (const sdbus::Error& e) {
            client_.deploymentNotAnnounced(actionId, json, e.getName() + ": " + e.getMessage());
        }
    });
}

void CloudClientBus::cancelRequested(const std::string& actionId)
{
    emitOnLoop([this, actionId] { emitCancelRequested(actionId); });
}

void CloudClientBus::downloadFinished(const std::string& actionId, const std::string& filename,
                                      const std::string& result, const std::string& message)
{
    emitOnLoop([this, actionId, filename, result, message] { emitDownloadFinished(actionId, filename, result, message); });
}

void CloudClientBus::confirmationRequested(const std::string& actionId, const std::string& json)
{
    emitOnLoop([this, actionId, json] { emitConfirmationRequested(actionId, json); });
}

void CloudClientBus::PollNow()
{
    dbus::guard([&] { client_.pollNow(); });
}

sdbus::UnixFd CloudClientBus::Download(const std::string& actionId, const std::string& artifactJson)
{
    return dbus::guard([&] {
        Fd fd = dbus::unwrap(client_.download(actionId, artifactJson));
        return sdbus::UnixFd{fd.release(), sdbus::adopt_fd};
    });
}

// Both persist state with fsync before they answer (the reply means "kept, and
// delivered in order"), so they run on the store worker, never on the bus thread.
void CloudClientBus::ReportFeedback(sdbus::Result<>&& reply, std::string actionId, std::string execution,
                                    std::string result, uint32_t progressCount, uint32_t progressOf,
                                    std::vector<std::string> details)
{
    dbus::guard([&] {
        Feedback f{std::move(execution), std::move(result), progressCount, progressOf, std::move(details)};
        dbus::completeOnWorker(store_, loop_, std::move(reply),
                               [this, id = std::move(actionId), f = std::move(f)] { return client_.reportFeedback(id, f); });
    });
}

Expected<std::string> CloudClientBus::appByUid(uid_t uid)
{
    try {
        if (!appConn_) {
            appConn_ = dbus::connectSystemBus();
        }
        auto proxy = sdbus::createProxy(*appConn_, "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1");
        std::string name;
        proxy->callMethod("GetAppByUid")
            .onInterface("org.mbl.ContainerManager1")
            .withTimeout(std::chrono::seconds(10))
            .withArguments(static_cast<uint32_t>(uid))
            .storeResultsTo(name);
        return name;
    } catch (const sdbus::Error& e) {
        return unexpected(e.getName() == errors::kNotFound ? ErrorCode::NotFound : ErrorCode::Failed,
                          "the container manager: " + e.getName() + ": " + e.getMessage());
    }
}

// Anyone may call it (apps publish their own attributes); the caller's uid
// decides which namespace it may write (AttributeAccess), on the store worker,
// since asking the container manager which app a uid is may take a moment.
void CloudClientBus::SetAttributes(sdbus::Result<>&& reply, std::string ns, std::map<std::string, std::string> attributes)
{
    dbus::guard([&] {
        const uid_t caller =
            dbus::unwrap(dbus::callerOf(getObject().getConnection(), *getObject().getCurrentlyProcessedMessage())).uid;
        dbus::completeOnWorker(store_, loop_, std::move(reply),
                               [this, caller, ns = std::move(ns), a = std::move(attributes)]() -> Status {
                                   if (auto st = access_.check(caller, ns); !st) {
                                       return st;
                                   }
                                   return client_.setAttributes(ns, a);
                               });
    });
}

void CloudClientBus::Confirm(sdbus::Result<>&& reply, std::string actionId, bool confirmed,
                             std::vector<std::string> details)
{
    dbus::guard([&] {
        dbus::completeOnWorker(store_, loop_, std::move(reply),
                               [this, id = std::move(actionId), confirmed, d = std::move(details)] {
                                   return client_.confirm(id, confirmed, d);
                               });
    });
}

std::map<std::string, std::string> CloudClientBus::GetPendingConfirmations()
{
    return dbus::guard([&] { return client_.pendingConfirmations(); });
}

std::map<std::string, std::string> CloudClientBus::GetAttributes()
{
    return dbus::guard([&] { return client_.attributes(); });
}

std::string CloudClientBus::GetInstalledDeployment()
{
    return dbus::guard([&] { return client_.installedDeployment(); });
}

std::string CloudClientBus::InstalledActionId()
{
    return dbus::guard([&] { return client_.snapshot().installedActionId; });
}

std::string CloudClientBus::GetSettings()
{
    return dbus::guard([&] { return client_.settingsJson(); });
}

void CloudClientBus::ApplySettings(const std::string& settingsJson)
{
    dbus::guard([&] { dbus::unwrap(client_.applySettings(settingsJson)); });
}

std::string CloudClientBus::Version()
{
    return MBL_VERSION;
}

std::string CloudClientBus::ConnectionState()
{
    return dbus::guard([&] { return client_.snapshot().connectionState; });
}

uint64_t CloudClientBus::LastContact()
{
    return dbus::guard([&] { return client_.snapshot().lastContact; });
}

uint32_t CloudClientBus::PollInterval()
{
    return dbus::guard([&] { return client_.snapshot().pollInterval; });
}

std::string CloudClientBus::ServerUrl()
{
    return dbus::guard([&] { return client_.snapshot().serverUrl; });
}

uint32_t CloudClientBus::DownloadProgress()
{
    return dbus::guard([&] { return client_.snapshot().downloadProgress; });
}

uint32_t CloudClientBus::ActiveDownloads()
{
    return dbus::guard([&] { return client_.snapshot().activeDownloads; });
}

uint64_t CloudClientBus::NextPoll()
{
    return dbus::guard([&] { return client_.snapshot().nextPoll; });
}

std::string CloudClientBus::LastError()
{
    return dbus::guard([&] { return client_.snapshot().lastError; });
}

} // namespace mbl::cloud
