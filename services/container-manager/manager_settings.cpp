// SPDX-License-Identifier: Apache-2.0
// Over-the-air settings (GetSettings / ApplySettings): the overrides layered
// over each app's install settings, persisted, and the restarts they cause.

#include "container_manager.h"
#include "manager_internal.h"

#include "mbl/fs.h"
#include "mbl/log.h"

#include <cstdlib>

namespace mbl::containers {

AppSettings ContainerManager::effective(const App& a) const
{
    return applyOverride(a.settings, overrides_.forApp(a.settings.name));
}

void ContainerManager::loadOverrides()
{
    if (const char* lvl = std::getenv("MBL_LOG_LEVEL")) {
        (void)log::parseLevel(lvl, baseLogLevel_);
    }
    if (!fs::exists(settingsPath_)) {
        return;
    }
    auto text = fs::readFile(settingsPath_, 1u << 20);
    auto parsed = text ? parseOverrides(*text, config_.policy) : Expected<Overrides>(unexpected(text.error()));
    if (!parsed) {
        // E.g. the device policy was tightened since they were applied: run on the defaults.
        log::error(settingsPath_ + " is not applied: " + parsed.error().message);
        return;
    }
    overrides_ = std::move(parsed).value();
    if (overrides_.logLevel) {
        log::Level l;
        if (log::parseLevel(*overrides_.logLevel, l)) {
            log::setLevel(l);
        }
    }
}

void ContainerManager::restartForSettings(App& app)
{
    const std::string n = app.settings.name;
    appendLine(logPath(n), "[mbl " + nowStamp() + "] restarting to apply new settings");
    app.suppressRestart = true;
    stopApp(app, [this, n](Status) {
        App* x = find(n);
        if (x == nullptr) {
            return;
        }
        x->suppressRestart = false;
        if (x->desiredRunning && !(x->hold == AppHold::Removing) && !(x->hold == AppHold::Updating)) {
            x->backoffAttempt = 0;
            startApp(*x, [n](Status st) {
                if (!st) {
                    log::warning("app " + n + " did not start with its new settings: " + st.error().message);
                }
            });
        }
    });
}

Status ContainerManager::applySettings(const std::string& text)
{
    auto parsed = parseOverrides(text, config_.policy);
    if (!parsed) {
        return unexpected(parsed.error());
    }
    Overrides next = std::move(parsed).value();
    const std::string doc = next.toJson().dump(2) + "\n";
    if (auto st = fs::writeFileAtomic(settingsPath_, doc, 0600); !st) {
        return st;
    }
    Overrides previous = std::move(overrides_);
    overrides_ = std::move(next);
    log::Level level = baseLogLevel_;
    if (overrides_.logLevel) {
        (void)log::parseLevel(*overrides_.logLevel, level);
    }
    log::setLevel(level);

    // Running apps whose effective settings changed restart to take them.
    std::vector<std::string> restarted;
    std::vector<std::string> later;
    for (auto& [name, a] : apps_) {
        if (previous.forApp(name) == overrides_.forApp(name)) {
            continue;
        }
        if (a->pid <= 0 && !(a->state == AppState::Starting)) {
            continue; // the next start takes them
        }
        if ((a->hold == AppHold::Removing) || (a->hold == AppHold::Updating) || (a->state == AppState::Stopping)) {
            later.push_back(name); // its next start takes them
            continue;
        }
        restarted.push_back(name);
        restartForSettings(*a);
    }
    log::notice("settings applied (" + std::to_string(overrides_.apps.size()) + " app override(s)" +
                (overrides_.logLevel ? ", log level " + *overrides_.logLevel : std::string()) + "); restarted: " +
                (restarted.empty() ? std::string("none") : joined(restarted)) +
                (later.empty() ? std::string() : "; at their next start: " + joined(later)));
    return {};
}

} // namespace mbl::containers
