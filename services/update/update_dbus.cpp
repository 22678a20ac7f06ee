#include "update_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl_version.h"

namespace mbl::update {

UpdateBus::UpdateBus(sdbus::IConnection& conn, UpdateEngine& engine)
    : AdaptorInterfaces(conn, "/org/mbl/Update1"), engine_(engine)
{
    registerAdaptor();
}

UpdateBus::~UpdateBus()
{
    unregisterAdaptor();
}

std::string UpdateBus::Inspect(const sdbus::UnixFd&)
{
    dbus::notSupported("Inspect");
}

std::string UpdateBus::Install(const sdbus::UnixFd&, const std::map<std::string, sdbus::Variant>&)
{
    dbus::notSupported("Install");
}

sdbus::UnixFd UpdateBus::OpenPayload(const std::string&, const std::string&)
{
    dbus::notSupported("OpenPayload");
}

void UpdateBus::Commit()
{
    dbus::notSupported("Commit");
}

void UpdateBus::MarkBad()
{
    dbus::notSupported("MarkBad");
}

std::string UpdateBus::Version()
{
    return MBL_VERSION;
}

std::string UpdateBus::Operation()
{
    return "";
}

uint32_t UpdateBus::Progress()
{
    return 0;
}

std::string UpdateBus::LastError()
{
    return "";
}

std::string UpdateBus::BootedSlot()
{
    return "";
}

std::string UpdateBus::ActiveSlot()
{
    return "";
}

std::vector<sdbus::Struct<std::string, std::string, std::string, uint64_t>> UpdateBus::SlotStates()
{
    return {};
}

std::string UpdateBus::FirmwareVersion()
{
    return "";
}

uint64_t UpdateBus::SecurityVersionFloor()
{
    return 0;
}

std::string UpdateBus::Compatible()
{
    return engine_.compatible();
}

} // namespace mbl::update
