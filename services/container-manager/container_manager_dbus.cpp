// SPDX-License-Identifier: Apache-2.0
#include "container_manager_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/error_names.h"
#include "mbl/log.h"
#include "mbl_version.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mbl::containers {

namespace {
const char kRoot[] = "/org/mbl/ContainerManager1";

// The reply of an async method: success, or the error as a named bus error.
std::function<void(Status)> replier(std::shared_ptr<sdbus::Result<>> result)
{
    return [result](Status st) {
        try {
            if (st) {
                result->returnResults();
            } else {
                result->returnError(dbus::toBusError(st.error()));
            }
        } catch (const std::exception& e) {
            log::warning(std::string("cannot send a reply: ") + e.what());
        }
    };
}

// systemd's manager (org.freedesktop.systemd1(5)). Its SystemState property is
// "stopping" as soon as shutdown.target is active or queued (src/core/manager.c,
// manager_state()): every poweroff, reboot, halt and kexec queues it before
// systemd stops this unit (Conflicts=/Before=shutdown.target, the default
// dependencies). Chosen over a helper unit whose ExecStop= runs at shutdown:
// the decision and the stop stay in the manager, which alone knows its apps,
// and nothing else has to be ordered against it.
const char kSystemdName[] = "org.freedesktop.systemd1";
const char kSystemdPath[] = "/org/freedesktop/systemd1";
const char kSystemdManager[] = "org.freedesktop.systemd1.Manager";
// PID 1 answers at once, also while it shuts down; no answer by then counts as unknown.
constexpr auto kSystemdTimeout = std::chrono::seconds(5);
} // namespace

// ---------------------------------------------------------------- AppObject

AppObject::AppObject(sdbus::IConnection& conn, const std::string& path, ContainerManager& manager, std::string name)
    : AdaptorInterfaces(conn, path), manager_(manager), name_(std::move(name))
{
    registerAdaptor();
}

AppObject::~AppObject()
{
    unregisterAdaptor();
}

void AppObject::emitChanged(const std::vector<std::string>& props)
{
    std::vector<std::string> names(props.begin(), props.end());
    try {
        emitPropertiesChangedSignal(org::mbl::ContainerManager1::App_adaptor::INTERFACE_NAME, names);
    } catch (const sdbus::Error& e) {
        log::warning("cannot emit PropertiesChanged: " + e.getMessage());
    }
}

AppView AppObject::view()
{
    return dbus::unwrap(manager_.app(name_));
}

std::string AppObject::Name()
{
    return name_;
}
std::string AppObject::State()
{
    return dbus::guard([&] { return view().state; });
}
std::string AppObject::Version()
{
    return dbus::guard([&] { return view().version; });
}
uint32_t AppObject::Pid()
{
    return dbus::guard([&] { return view().pid; });
}
int32_t AppObject::ExitCode()
{
    return dbus::guard([&] { return view().exitCode; });
}
uint32_t AppObject::RestartCount()
{
    return dbus::guard([&] { return view().restartCount; });
}
std::string AppObject::Health()
{
    return dbus::guard([&] { return view().health; });
}
bool AppObject::OomKilled()
{
    return dbus::guard([&] { return view().oomKilled; });
}
std::vector<std::string> AppObject::Withheld()
{
    return dbus::guard([&] { return view().withheld; });
}

// ---------------------------------------------------------------- root object

ContainerManagerBus::ContainerManagerBus(sdbus::IConnection& conn, ContainerManager& manager)
    : AdaptorInterfaces(conn, kRoot), conn_(conn), manager_(manager)
{
    registerAdaptor();
    for (const auto& a : manager_.list()) {
        apps_[a.name] = std::make_unique<AppObject>(conn_, appPath(a.name), manager_, a.name);
    }
    manager_.setEvents(this);
}

ContainerManagerBus::~ContainerManagerBus()
{
    manager_.setEvents(nullptr);
    apps_.clear();
    unregisterAdaptor();
}

std::string ContainerManagerBus::appPath(const std::string& name)
{
    // App names are [A-Za-z0-9._-]; object path elements allow [A-Za-z0-9_].
    std::string el;
    for (char c : name) {
        if (c == '.' || c == '-') {
            char buf[8];
            std::snprintf(buf, sizeof buf, "_%02x", static_cast<unsigned char>(c));
            el += buf;
        } else {
            el += c;
        }
    }
    return std::string(kRoot) + "/apps/" + el;
}

std::string ContainerManagerBus::InstallApp(const sdbus::UnixFd& archive, const std::string& optionsJson)
{
    return dbus::guard([&] {
        struct stat st {};
        if (!archive.isValid() || ::fstat(archive.get(), &st) != 0) {
            throw sdbus::Error(errors::kInvalidArgument, "the archive must be an open file or pipe");
        }
        if (S_ISDIR(st.st_mode)) {
            // skopeo's "oci:DIR" (an image layout directory) is the usual cause.
            throw sdbus::Error(errors::kInvalidArgument,
                               "the archive is a directory, not a file or pipe: an OCI image layout directory "
                               "must be archived first (skopeo copy oci:DIR:TAG oci-archive:app.tar:TAG, or "
                               "tar -C DIR -cf app.tar .)");
        }
        Fd fd{::fcntl(archive.get(), F_DUPFD_CLOEXEC, 3)};
        if (!fd) {
            throw sdbus::Error(errors::kIo, "cannot take the archive descriptor");
        }
        return dbus::unwrap(manager_.install(std::move(fd), optionsJson));
    });
}

void ContainerManagerBus::RemoveApp(sdbus::Result<>&& result, std::string name, bool removeData)
{
    auto r = std::make_shared<sdbus::Result<>>(std::move(result));
    dbus::guard([&] { manager_.remove(name, removeData, replier(r)); });
}

void ContainerManagerBus::StartApp(sdbus::Result<>&& result, std::string name)
{
    auto r = std::make_shared<sdbus::Result<>>(std::move(result));
    dbus::guard([&] { manager_.start(name, replier(r)); });
}

void ContainerManagerBus::StopApp(sdbus::Result<>&& result, std::string name)
{
    auto r = std::make_shared<sdbus::Result<>>(std::move(result));
    dbus::guard([&] { manager_.stop(name, replier(r)); });
}

void ContainerManagerBus::RestartApp(sdbus::Result<>&& result, std::string name)
{
    auto r = std::make_shared<sdbus::Result<>>(std::move(result));
    dbus::guard([&] { manager_.restart(name, replier(r)); });
}

void ContainerManagerBus::ActivateTransaction(sdbus::Result<>&& result, std::string id)
{
    auto r = std::make_shared<sdbus::Result<>>(std::move(result));
    dbus::guard([&] { manager_.activateTransaction(id, replier(r)); });
}

void ContainerManagerBus::CommitTransaction(sdbus::Result<>&& result, std::string id)
{
    auto r = std::make_shared<sdbus::Result<>>(std::move(result));
    dbus::guard([&] { manager_.commitTransaction(id, replier(r)); });
}

void ContainerManagerBus::RollbackTransaction(sdbus::Result<>&& result, std::string id)
{
    auto r = std::make_shared<sdbus::Result<>>(std::move(result));
    dbus::guard([&] { manager_.rollbackTransaction(id, replier(r)); });
}

std::string ContainerManagerBus::GetTransaction(const std::string& id)
{
    return dbus::guard([&] { return manager_.transaction(id); });
}

std::string ContainerManagerBus::GetAppByUid(const uint32_t& uid)
{
    return dbus::guard([&] { return dbus::unwrap(manager_.appOfUid(uid)); });
}

std::string ContainerManagerBus::GetSettings()
{
    return dbus::guard([&] { return manager_.settings(); });
}

void ContainerManagerBus::ApplySettings(const std::string& settingsJson)
{
    dbus::guard([&] { dbus::unwrap(manager_.applySettings(settingsJson)); });
}

std::vector<sdbus::Struct<std::string, std::string, std::string>> ContainerManagerBus::ListApps()
{
    return dbus::guard([&] {
        std::vector<sdbus::Struct<std::string, std::string, std::string>> out;
        for (const auto& a : manager_.list()) {
            out.emplace_back(a.name, a.version, a.state);
        }
        return out;
    });
}

std::string ContainerManagerBus::GetLogs(const std::string& name, const uint32_t& lines)
{
    return dbus::guard([&] {
        std::string text = dbus::unwrap(manager_.logs(name, lines));
        // D-Bus strings must be valid UTF-8: replace anything else.
        std::string clean;
        clean.reserve(text.size());
        for (std::size_t i = 0; i < text.size();) {
            unsigned char c = static_cast<unsigned char>(text[i]);
            std::size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
            bool ok = len > 0 && i + len <= text.size() && c != 0;
            for (std::size_t k = 1; ok && k < len; ++k) {
                ok = (static_cast<unsigned char>(text[i + k]) >> 6) == 2;
            }
            if (ok) {
                clean.append(text, i, len);
                i += len;
            } else {
                clean += '?';
                ++i;
            }
        }
        return clean;
    });
}

std::string ContainerManagerBus::Version()
{
    return MBL_VERSION;
}

std::string ContainerManagerBus::Operation()
{
    return manager_.operation();
}

uint32_t ContainerManagerBus::AppCount()
{
    return manager_.appCount();
}

// ---------------------------------------------------------------- daemon stop (loop thread)

void ContainerManagerBus::terminate(std::function<void()> proceed)
{
    auto answer = [this, proceed](const Expected<std::string>& state) { manager_.terminate(state, proceed); };
    try {
        systemd_ = sdbus::createProxy(conn_, kSystemdName, kSystemdPath);
        // Asynchronous: the reply comes through the loop, which meanwhile keeps
        // watching the apps (their exits, the timers of their stops).
        (void)systemd_->callMethodAsync("Get")
            .onInterface("org.freedesktop.DBus.Properties")
            .withTimeout(kSystemdTimeout)
            .withArguments(std::string(kSystemdManager), std::string("SystemState"))
            .uponReplyInvoke([answer](const sdbus::Error* error, sdbus::Variant value) {
                if (error != nullptr) {
                    answer(unexpected(ErrorCode::Failed, error->getName() + ": " + error->getMessage()));
                    return;
                }
                std::string state;
                try {
                    state = value.get<std::string>();
                } catch (const sdbus::Error& e) {
                    answer(unexpected(ErrorCode::Failed, "its SystemState is not a string: " + e.getMessage()));
                    return;
                }
                answer(state);
            });
    } catch (const sdbus::Error& e) {
        answer(unexpected(ErrorCode::Failed, e.getName() + ": " + e.getMessage()));
    }
}

// ---------------------------------------------------------------- events (loop thread)

void ContainerManagerBus::appAdded(const std::string& name)
{
    try {
        auto obj = std::make_unique<AppObject>(conn_, appPath(name), manager_, name);
        obj->emitInterfacesAddedSignal();
        apps_[name] = std::move(obj);
    } catch (const sdbus::Error& e) {
        log::error("cannot export app " + name + ": " + e.getMessage());
    }
}

void ContainerManagerBus::appRemoved(const std::string& name)
{
    auto it = apps_.find(name);
    if (it == apps_.end()) {
        return;
    }
    try {
        it->second->emitInterfacesRemovedSignal();
    } catch (const sdbus::Error& e) {
        log::warning("cannot emit InterfacesRemoved: " + e.getMessage());
    }
    apps_.erase(it);
}

void ContainerManagerBus::appChanged(const std::string& name, const std::vector<std::string>& properties)
{
    auto it = apps_.find(name);
    if (it != apps_.end()) {
        it->second->emitChanged(properties);
    }
}

void ContainerManagerBus::appStateChanged(const std::string& name, const std::string& state)
{
    try {
        emitAppStateChanged(name, state);
    } catch (const sdbus::Error& e) {
        log::warning("cannot emit AppStateChanged: " + e.getMessage());
    }
}

void ContainerManagerBus::installCompleted(const std::string& operationId, const std::string& name,
                                           const Status& result)
{
    try {
        emitInstallCompleted(operationId, name, result.ok(), result.ok() ? std::string() : result.error().name(),
                             result.ok() ? std::string() : result.error().message);
    } catch (const sdbus::Error& e) {
        log::warning("cannot emit InstallCompleted: " + e.getMessage());
    }
}

void ContainerManagerBus::managerChanged(const std::vector<std::string>& properties)
{
    try {
        emitPropertiesChangedSignal(org::mbl::ContainerManager1_adaptor::INTERFACE_NAME, properties);
    } catch (const sdbus::Error& e) {
        log::warning("cannot emit PropertiesChanged: " + e.getMessage());
    }
}

} // namespace mbl::containers
