// SPDX-License-Identifier: Apache-2.0
// Health: the grace period after a start and the probe run in the container.

#include "container_manager.h"
#include "manager_internal.h"

#include "mbl/fs.h"
#include "mbl/log.h"

#include <fcntl.h>

namespace mbl::containers {

void ContainerManager::notifyHealth(App& a, bool healthy, const std::string& why)
{
    if (shuttingDown_) {
        return; // its stop is the shutdown's, not the app's failure: the waiters wait for the next boot
    }
    auto waiters = std::move(a.healthWaiters);
    a.healthWaiters.clear();
    for (auto& w : waiters) {
        w(healthy, why);
    }
}

void ContainerManager::waitHealth(App& a, std::function<void(bool, std::string)> cb)
{
    if (shuttingDown_) {
        a.healthWaiters.push_back(std::move(cb)); // no verdict until the next boot (notifyHealth)
    } else if (a.pid > 0 && a.health == "healthy") {
        cb(true, "");
    } else if (a.pid > 0 && a.health == "unhealthy") {
        cb(false, "the health probe failed");
    } else if (a.pid <= 0 && !(a.state == AppState::Starting)) {
        cb(false, std::string("it is not running (") + appStateName(a.state) + (a.exitCode != 0 ? ", exit code " + std::to_string(a.exitCode) : "") +
                      ")");
    } else {
        a.healthWaiters.push_back(std::move(cb));
    }
}

void ContainerManager::onGraceOver(const std::string& name, std::uint64_t gen)
{
    App* a = find(name);
    if (a == nullptr || a->gen != gen || a->pid <= 0) {
        return;
    }
    a->graceTimer = 0;
    if (a->settings.health.probe.empty()) {
        setHealth(*a, "healthy");
        notifyHealth(*a, true, "");
        return;
    }
    runProbe(name, gen);
}

void ContainerManager::runProbe(const std::string& name, std::uint64_t gen)
{
    App* a = find(name);
    if (a == nullptr || a->gen != gen || a->pid <= 0) {
        return;
    }
    a->probeTimer = 0;
    Runtime rt = runtime_;
    auto probe = a->settings.health.probe;
    auto timeout = std::chrono::milliseconds(a->settings.health.timeoutMs);
    auto out = std::make_shared<Fd>(::open(logPath(name).c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    EventLoop* loop = &loop_;
    auto alive = alive_;
    probeQueue_.post([this, rt, name, gen, probe, timeout, out, loop, alive] {
        auto r = rt.exec(name, probe, timeout, out->get());
        loop->post([this, name, gen, r, alive] {
            if (!*alive) {
                return;
            }
            App* x = find(name);
            if (x == nullptr || x->gen != gen || x->pid <= 0) {
                return;
            }
            const bool ok = r && *r == 0;
            const std::string why = !r ? r.error().message : "the health probe exited with code " + std::to_string(*r);
            if (!ok) {
                appendLine(logPath(name), "[mbl " + nowStamp() + "] health probe failed: " + why);
            }
            setHealth(*x, ok ? "healthy" : "unhealthy");
            notifyHealth(*x, ok, why);
            if (x->settings.health.intervalMs > 0) {
                x->probeTimer = loop_.addTimer(std::chrono::milliseconds(x->settings.health.intervalMs),
                                               [this, name, gen] { runProbe(name, gen); });
            }
        });
    });
}

} // namespace mbl::containers
