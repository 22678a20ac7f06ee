// SPDX-License-Identifier: Apache-2.0
// Step "checking-health": the gate before anything is committed. What it
// checks is configured per device (health_checks): after a firmware update the
// four peers answer, the cloud is connected (for a cloud deployment, or if it
// was before a local one) and every app that should run — the deployment's and
// those that ran before — runs at its version and is healthy (the container
// manager's per-app Health, which includes the app's own probe); after an apps
// or config update, the apps. Probed until all hold or the deadline passes,
// then again after the grace period. The deadline is journaled as an absolute
// CLOCK_BOOTTIME value with the boot id: a restart of the coordinator keeps it,
// a reboot (new boot id) starts a new window.

#include "coordinator.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <algorithm>
#include <memory>

namespace mbl::coordinator {

namespace {
const char* const kPeerNames[] = {"org.mbl.DeviceIdentity1", "org.mbl.Update1", "org.mbl.ContainerManager1",
                                  "org.mbl.CloudClient1"};
} // namespace

std::string Coordinator::readBootId() const
{
    auto text = fs::readFile(settings_.bootIdPath, 4096);
    return text ? str::trim(*text) : std::string();
}

std::int64_t Coordinator::boottimeMs() const
{
    return settings_.boottimeMs();
}

void Coordinator::checkHealth()
{
    const bool firmware = op_->firmwareBundle() != nullptr;
    const std::string bootId = readBootId();
    if (op_->health.bootId != bootId || op_->health.deadlineBoottimeMs == 0) {
        if (!op_->health.bootId.empty()) {
            log::notice(op_->id + ": the device rebooted during the health check: a new window starts");
        }
        op_->health = {boottimeMs() + settings_.healthTimeout.count(), bootId, ""};
    }
    // Journaled with the deadline (a restart in the same boot keeps it).
    if (!enter(State::CheckingHealth, firmware ? "checking the new firmware: services, cloud and apps"
                                               : "checking that the apps run")) {
        return;
    }
    bumpProgress(85);
    healthAttempt();
}

void Coordinator::healthAttempt()
{
    healthProbe(guarded([this](Status st) {
        if (st) {
            op_->health.status = "up; holding for the grace period";
            after(settings_.healthGrace, [this] {
                healthProbe(guarded([this](Status again) {
                    if (!again && boottimeMs() < op_->health.deadlineBoottimeMs) {
                        // Went down within the grace period (a crash, or a restart to take new
                        // settings): it must come up and stay up for a whole period again.
                        log::info(op_->id + ": health: " + again.error().message +
                                  " within the grace period; waiting again");
                        healthAttempt();
                        return;
                    }
                    if (!again) {
                        const std::string prefix = op_->firmwareBundle() != nullptr
                                                       ? "rolled back: the new firmware failed its health check: "
                                                       : "rolled back: the apps did not come up: ";
                        rollBack(Error{ErrorCode::Failed, prefix + again.error().message + " after the grace period"});
                        return;
                    }
                    feedbackProgress("health check passed");
                    commitAll();
                }));
            });
            return;
        }
        if (boottimeMs() >= op_->health.deadlineBoottimeMs) {
            const std::string prefix = op_->firmwareBundle() != nullptr
                                           ? "rolled back: the new firmware failed its health check: "
                                           : "rolled back: the apps did not come up: ";
            rollBack(Error{ErrorCode::Failed, prefix + st.error().message});
            return;
        }
        if (op_->health.status != st.error().message) {
            op_->health.status = st.error().message;
            log::info(op_->id + ": health: waiting: " + st.error().message);
        }
        after(settings_.healthProbeInterval, [this] { healthAttempt(); });
    }));
}

void Coordinator::healthProbe(std::function<void(Status)> done)
{
    const bool firmware = op_->firmwareBundle() != nullptr;
    const auto& checks = settings_.healthChecks;
    const bool services = firmware && checks.count("services") != 0;
    const bool cloud = firmware && checks.count("cloud") != 0 &&
                       (op_->source == Source::Cloud || op_->cloudConnectedBefore);
    const bool apps = checks.count("apps") != 0;

    // What should run, at which version: what ran before (unless the deployment
    // removes it), and the deployment's apps (unless their settings say not to start).
    std::map<std::string, std::string> required;
    for (const auto& [name, version] : op_->runningBefore) {
        if (std::find(op_->dropApps.begin(), op_->dropApps.end(), name) == op_->dropApps.end()) {
            required[name] = version;
        }
    }
    for (const auto& a : op_->apps) {
        if (a.shouldRun) {
            required[a.name] = a.version;
        } else {
            required.erase(a.name);
        }
    }

    auto checkApps = [this, apps, required, done]() {
        if (!apps || required.empty()) {
            done({});
            return;
        }
        peers_.listApps(guarded([required, done](Expected<std::vector<AppInfo>> list) {
            if (!list) {
                done(unexpected(ErrorCode::Failed, "the container manager cannot list apps: " + list.error().message));
                return;
            }
            for (const auto& [name, version] : required) {
                const AppInfo* found = nullptr;
                for (const auto& a : *list) {
                    found = a.name == name ? &a : found;
                }
                if (found == nullptr) {
                    done(unexpected(ErrorCode::Failed, "app " + name + " is not installed"));
                    return;
                }
                if (found->state != "running") {
                    done(unexpected(ErrorCode::Failed, "app " + name + " is " + found->state + " (version " +
                                                           found->version + ")"));
                    return;
                }
                if (found->version != version) {
                    done(unexpected(ErrorCode::Failed, "app " + name + " runs version " + found->version + ", not " +
                                                           version));
                    return;
                }
                // "" when the manager does not publish Health: running is all it says.
                if (!found->health.empty() && found->health != "healthy") {
                    done(unexpected(ErrorCode::Failed, "app " + name + " is running but " +
                                                           (found->health == "starting" ? "not healthy yet"
                                                                                        : "not healthy (" +
                                                                                              found->health + ")") +
                                                           " (version " + found->version + ")"));
                    return;
                }
            }
            done({});
        }));
    };
    auto checkCloud = [this, cloud, done, checkApps]() {
        if (!cloud) {
            checkApps();
            return;
        }
        peers_.cloudConnectionState(guarded([done, checkApps](Expected<std::string> cs) {
            if (!cs || *cs != "connected") {
                done(unexpected(ErrorCode::Failed, "the cloud is not reachable (" + (cs ? *cs : cs.error().message) +
                                                       ")"));
                return;
            }
            checkApps();
        }));
    };
    if (!services) {
        checkCloud();
        return;
    }
    auto remaining = std::make_shared<std::size_t>(std::size(kPeerNames));
    auto firstError = std::make_shared<std::optional<Error>>();
    for (const char* name : kPeerNames) {
        peers_.ping(name, guarded([remaining, firstError, done, checkCloud, name = std::string(name)](Status st) {
            if (!st && !*firstError) {
                *firstError = Error{ErrorCode::Failed, name + " does not answer: " + st.error().message};
            }
            if (--*remaining == 0) {
                if (*firstError) {
                    done(unexpected(**firstError));
                } else {
                    checkCloud();
                }
            }
        }));
    }
}

} // namespace mbl::coordinator
