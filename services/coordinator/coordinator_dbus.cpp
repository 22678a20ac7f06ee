#include "coordinator_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl_version.h"

namespace mbl::coordinator {

CoordinatorBus::CoordinatorBus(sdbus::IConnection& conn, Coordinator& coordinator)
    : AdaptorInterfaces(conn, "/org/mbl/Coordinator1"), coordinator_(coordinator)
{
    registerAdaptor();
}

CoordinatorBus::~CoordinatorBus()
{
    unregisterAdaptor();
}

std::string CoordinatorBus::InstallBundle(const sdbus::UnixFd&)
{
    dbus::notSupported("InstallBundle");
}

std::string CoordinatorBus::GetStatus()
{
    dbus::notSupported("GetStatus");
}

std::string CoordinatorBus::GetHistory(const uint32_t&)
{
    dbus::notSupported("GetHistory");
}

void CoordinatorBus::Cancel(const std::string&)
{
    dbus::notSupported("Cancel");
}

std::string CoordinatorBus::Version()
{
    return MBL_VERSION;
}

std::string CoordinatorBus::State()
{
    return coordinator_.state();
}

std::string CoordinatorBus::Operation()
{
    return "";
}

uint32_t CoordinatorBus::Progress()
{
    return 0;
}

std::string CoordinatorBus::Step()
{
    return "";
}

std::string CoordinatorBus::LastError()
{
    return "";
}

} // namespace mbl::coordinator
