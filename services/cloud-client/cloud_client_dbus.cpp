#include "cloud_client_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl_version.h"

namespace mbl::cloud {

CloudClientBus::CloudClientBus(sdbus::IConnection& conn, CloudClient& client)
    : AdaptorInterfaces(conn, "/org/mbl/CloudClient1"), client_(client)
{
    registerAdaptor();
}

CloudClientBus::~CloudClientBus()
{
    unregisterAdaptor();
}

void CloudClientBus::PollNow()
{
    dbus::notSupported("PollNow");
}

sdbus::UnixFd CloudClientBus::Download(const std::string&, const std::string&)
{
    dbus::notSupported("Download");
}

void CloudClientBus::ReportFeedback(const std::string&, const std::string&, const std::string&, const uint32_t&,
                                    const uint32_t&, const std::vector<std::string>&)
{
    dbus::notSupported("ReportFeedback");
}

void CloudClientBus::SetAttributes(const std::string&, const std::map<std::string, std::string>&)
{
    dbus::notSupported("SetAttributes");
}

std::map<std::string, std::string> CloudClientBus::GetAttributes()
{
    dbus::notSupported("GetAttributes");
}

std::string CloudClientBus::Version()
{
    return MBL_VERSION;
}

std::string CloudClientBus::ConnectionState()
{
    return client_.connectionState();
}

uint64_t CloudClientBus::LastContact()
{
    return 0;
}

uint32_t CloudClientBus::PollInterval()
{
    return 0;
}

std::string CloudClientBus::ServerUrl()
{
    return "";
}

uint32_t CloudClientBus::DownloadProgress()
{
    return 0;
}

} // namespace mbl::cloud
