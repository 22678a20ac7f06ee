// SPDX-License-Identifier: Apache-2.0
#include "coordinator_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl_version.h"

#include <fcntl.h>

namespace mbl::coordinator {

CoordinatorBus::CoordinatorBus(sdbus::IConnection& conn) : AdaptorInterfaces(conn, "/org/mbl/Coordinator1")
{
    registerAdaptor();
}

CoordinatorBus::~CoordinatorBus()
{
    unregisterAdaptor();
}

Coordinator& CoordinatorBus::c()
{
    if (coordinator_ == nullptr) {
        throw sdbus::Error("org.mbl.Error.Failed", "the coordinator is starting");
    }
    return *coordinator_;
}

void CoordinatorBus::propertiesChanged(const std::vector<std::string>& names)
{
    emitPropertiesChangedSignal(org::mbl::Coordinator1_adaptor::INTERFACE_NAME, names);
}

void CoordinatorBus::operationCompleted(const std::string& id, bool success, const std::string& errorName,
                                        const std::string& message)
{
    emitOperationCompleted(id, success, errorName, message);
}

std::string CoordinatorBus::InstallBundle(const sdbus::UnixFd& bundle)
{
    return dbus::guard([&] {
        // Our own descriptor: sdbus-c++ closes the one in the message.
        Fd fd{::fcntl(bundle.get(), F_DUPFD_CLOEXEC, 3)};
        if (!fd) {
            throw dbus::toBusError(errnoError("dup of the bundle descriptor", errno));
        }
        return dbus::unwrap(c().installBundle(std::move(fd)));
    });
}

std::string CoordinatorBus::Install(const sdbus::UnixFd& bundle, const std::map<std::string, sdbus::Variant>& options)
{
    return dbus::guard([&] {
        LocalOptions o;
        for (const auto& [key, value] : options) {
            if (key == "replace_apps" && value.containsValueOfType<bool>()) {
                o.replaceApps = value.get<bool>();
            } else {
                throw dbus::toBusError(Error{ErrorCode::InvalidArgument,
                                             key == "replace_apps" ? "option 'replace_apps' must be a boolean"
                                                                   : "unknown option '" + key + "' (known: replace_apps)"});
            }
        }
        Fd fd{::fcntl(bundle.get(), F_DUPFD_CLOEXEC, 3)};
        if (!fd) {
            throw dbus::toBusError(errnoError("dup of the bundle descriptor", errno));
        }
        return dbus::unwrap(c().installBundle(std::move(fd), o));
    });
}

std::string CoordinatorBus::GetStatus()
{
    return dbus::guard([&] { return c().status().dump(); });
}

std::string CoordinatorBus::GetHistory(const uint32_t& count)
{
    return dbus::guard([&] { return c().history(count == 0 ? 10 : count).dump(); });
}

void CoordinatorBus::Cancel(const std::string& operationId)
{
    dbus::guard([&] { dbus::unwrap(c().cancel(operationId)); });
}

std::string CoordinatorBus::Version()
{
    return MBL_VERSION;
}

std::string CoordinatorBus::State()
{
    return coordinator_ ? coordinator_->state() : "starting";
}

std::string CoordinatorBus::Operation()
{
    return coordinator_ ? coordinator_->operationId() : "";
}

uint32_t CoordinatorBus::Progress()
{
    return coordinator_ ? coordinator_->progress() : 0;
}

std::string CoordinatorBus::Step()
{
    return coordinator_ ? coordinator_->step() : "";
}

std::string CoordinatorBus::LastError()
{
    return coordinator_ ? coordinator_->lastError() : "";
}

} // namespace mbl::coordinator
