// SPDX-License-Identifier: Apache-2.0
#pragma once
// A test double of systemd's manager on the stack's private bus, as much of it
// as the container manager reads, behaving as systemd defines it:
//   org.freedesktop.systemd1(5): bus name org.freedesktop.systemd1, object
//     /org/freedesktop/systemd1, interface org.freedesktop.systemd1.Manager,
//     read-only property SystemState (s) read with
//     org.freedesktop.DBus.Properties.Get;
//   systemd's src/core/manager.c (manager_state(), manager_state_table): the
//     values "initializing", "starting", "running", "degraded", "maintenance",
//     "stopping" ("stopping" as soon as shutdown.target is active or queued:
//     poweroff, reboot, halt, kexec), and systemctl is-system-running(1) adds
//     "offline" and "unknown";
//   src/core/dbus-manager.c declares SystemState with flags 0: no
//     PropertiesChanged is emitted for it (a client asks).
// Its bus policy is systemd's own file from the host
// (/usr/share/dbus-1/system.d/org.freedesktop.systemd1.conf, package systemd):
// root owns the name and may call anything, others may Get properties.

#include "harness.h"

#include <sdbus-c++/sdbus-c++.h>

#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>

namespace mbl::test::cm {

inline const char* systemdPolicyFile()
{
    return "/usr/share/dbus-1/system.d/org.freedesktop.systemd1.conf";
}

class SystemdDouble {
public:
    explicit SystemdDouble(std::string state = "running") : state_(checked(std::move(state)))
    {
        conn_ = sdbus::createSystemBusConnection("org.freedesktop.systemd1");
        object_ = sdbus::createObject(*conn_, "/org/freedesktop/systemd1");
        object_->registerProperty("SystemState")
            .onInterface("org.freedesktop.systemd1.Manager")
            .withGetter([this] {
                std::lock_guard<std::mutex> lock(m_);
                ++reads_;
                return state_;
            })
            .withUpdateBehavior(sdbus::Flags::EMITS_NO_SIGNAL);
        object_->finishRegistration();
        conn_->enterEventLoopAsync();
    }
    ~SystemdDouble()
    {
        conn_->leaveEventLoop();
        object_.reset();
    }
    SystemdDouble(const SystemdDouble&) = delete;
    SystemdDouble& operator=(const SystemdDouble&) = delete;

    // What `systemctl reboot` does to it: shutdown.target queued -> "stopping".
    void setState(std::string state)
    {
        std::lock_guard<std::mutex> lock(m_);
        state_ = checked(std::move(state));
    }
    // How many times a client read SystemState.
    int reads()
    {
        std::lock_guard<std::mutex> lock(m_);
        return reads_;
    }

private:
    static std::string checked(std::string s)
    {
        static const std::set<std::string> values = {"initializing", "starting", "running", "degraded",
                                                      "maintenance",  "stopping", "offline", "unknown"};
        if (values.count(s) == 0) {
            throw std::invalid_argument("systemd has no SystemState '" + s + "'");
        }
        return s;
    }
    std::mutex m_;
    std::string state_;
    int reads_ = 0;
    std::unique_ptr<sdbus::IConnection> conn_;
    std::unique_ptr<sdbus::IObject> object_;
};

} // namespace mbl::test::cm
