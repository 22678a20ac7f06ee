#include "container_manager_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl_version.h"

namespace mbl::containers {

ContainerManagerBus::ContainerManagerBus(sdbus::IConnection& conn, ContainerManager& manager)
    : AdaptorInterfaces(conn, "/org/mbl/ContainerManager1"), manager_(manager)
{
    registerAdaptor();
}

ContainerManagerBus::~ContainerManagerBus()
{
    unregisterAdaptor();
}

std::string ContainerManagerBus::InstallApp(const sdbus::UnixFd&, const std::string&)
{
    dbus::notSupported("InstallApp");
}

void ContainerManagerBus::RemoveApp(const std::string&, const bool&)
{
    dbus::notSupported("RemoveApp");
}

void ContainerManagerBus::StartApp(const std::string&)
{
    dbus::notSupported("StartApp");
}

void ContainerManagerBus::StopApp(const std::string&)
{
    dbus::notSupported("StopApp");
}

void ContainerManagerBus::RestartApp(const std::string&)
{
    dbus::notSupported("RestartApp");
}

std::vector<sdbus::Struct<std::string, std::string, std::string>> ContainerManagerBus::ListApps()
{
    dbus::notSupported("ListApps");
}

std::string ContainerManagerBus::GetLogs(const std::string&, const uint32_t&)
{
    dbus::notSupported("GetLogs");
}

std::string ContainerManagerBus::Version()
{
    return MBL_VERSION;
}

std::string ContainerManagerBus::Operation()
{
    return "";
}

uint32_t ContainerManagerBus::AppCount()
{
    return 0;
}

} // namespace mbl::containers
