// SPDX-License-Identifier: Apache-2.0
// What a stop of the daemon does to the apps. The unit has KillMode=process so
// that apps outlive a restart of the manager; at system shutdown that leaves
// nobody to stop them with their grace period (systemd-shutdown would wait its
// 90 s for each container init that ignores SIGTERM), so then, and only then,
// the manager stops them before it exits.

#include "container_manager.h"
#include "manager_internal.h"

#include "mbl/log.h"

#include <memory>

namespace mbl::containers {

namespace {
// After stop_grace_ms and the SIGKILL, how long the runtime's kills and
// deletes may take before the manager exits anyway. The unit's TimeoutStopSec
// (60 s) must stay above stop_grace_ms + this margin.
constexpr std::uint32_t kShutdownMarginMs = 20000;
} // namespace

void ContainerManager::terminate(const Expected<std::string>& systemState, std::function<void()> proceed)
{
    if (!systemState) {
        log::info("leaving the apps running: cannot ask systemd whether the system is shutting down (" +
                  systemState.error().message + "); the next start re-adopts them");
        proceed();
        return;
    }
    if (*systemState != "stopping") {
        log::info("leaving the apps running (systemd SystemState \"" + *systemState +
                  "\": not a system shutdown); the next start re-adopts them");
        proceed();
        return;
    }
    shuttingDown_ = true;
    std::vector<std::string> names;
    for (auto& [name, a] : apps_) {
        if (a->restartTimer != 0) {
            loop_.cancelTimer(a->restartTimer);
            a->restartTimer = 0;
        }
        if (a->pid > 0 || a->state == AppState::Starting || a->state == AppState::Stopping) {
            names.push_back(name);
        }
    }
    log::notice("the system is shutting down (systemd SystemState \"stopping\"): stopping " +
                std::to_string(names.size()) + " running app(s) before exiting (SIGTERM, " +
                std::to_string(config_.stopGraceMs) + " ms, then SIGKILL); what each app should do after the "
                "boot is kept");

    struct Pending {
        std::size_t left = 0;
        bool done = false;
        EventLoop::TimerId deadline = 0;
        Clock::time_point since = Clock::now();
        std::function<void()> proceed;
    };
    auto p = std::make_shared<Pending>();
    p->left = names.size();
    p->proceed = std::move(proceed);
    auto finish = [this, p] {
        if (p->done) {
            return;
        }
        p->done = true;
        if (p->deadline != 0) {
            loop_.cancelTimer(p->deadline);
        }
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - p->since).count();
        log::notice("apps stopped for the shutdown in " + std::to_string(ms) + " ms");
        p->proceed();
    };
    if (names.empty()) {
        finish();
        return;
    }
    p->deadline = loop_.addTimer(std::chrono::milliseconds(config_.stopGraceMs + kShutdownMarginMs), [this, p, finish] {
        p->deadline = 0;
        std::vector<std::string> left;
        for (const auto& [name, a] : apps_) {
            if (a->pid > 0 || a->state == AppState::Stopping) {
                left.push_back(name);
            }
        }
        log::warning("apps not stopped " + std::to_string(kShutdownMarginMs) + " ms after their SIGKILL: " +
                     joined(left) + "; exiting anyway");
        finish();
    });
    // All at once: each app's grace period runs beside the others'.
    for (const auto& name : names) {
        App* a = find(name);
        log::info("app " + name + ": stopping it, the system is shutting down");
        appendLine(logPath(name), "[mbl " + nowStamp() + "] stopping: the system is shutting down");
        stopApp(*a, [p, finish](Status) {
            if (--p->left == 0) {
                finish();
            }
        });
    }
}

} // namespace mbl::containers
