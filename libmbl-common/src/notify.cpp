// SPDX-License-Identifier: Apache-2.0
#include "mbl/notify.h"

#include <systemd/sd-daemon.h>

namespace mbl::notify {

void ready()
{
    sd_notify(0, "READY=1");
}

void status(const std::string& text)
{
    sd_notifyf(0, "STATUS=%s", text.c_str());
}

void stopping()
{
    sd_notify(0, "STOPPING=1");
}

} // namespace mbl::notify
