// SPDX-License-Identifier: Apache-2.0
#include "app_state.h"

#include <array>
#include <utility>

namespace mbl::containers {

namespace {

const std::array<std::pair<AppState, const char*>, 7> kStateNames = {{
    {AppState::Installed, "installed"},
    {AppState::Starting, "starting"},
    {AppState::Running, "running"},
    {AppState::Stopping, "stopping"},
    {AppState::Stopped, "stopped"},
    {AppState::Exited, "exited"},
    {AppState::Failed, "failed"},
}};

const std::array<std::pair<AppEvent, const char*>, 7> kEventNames = {{
    {AppEvent::Start, "start"},
    {AppEvent::Started, "started"},
    {AppEvent::StartFailed, "start-failed"},
    {AppEvent::Stop, "stop"},
    {AppEvent::ExitedOk, "exited-ok"},
    {AppEvent::ExitedBad, "exited-bad"},
    {AppEvent::Settle, "settle"},
}};

struct Transition {
    AppState from;
    AppEvent event;
    AppState to;
};

// Every allowed transition. A Start of a Starting or Running app, or a Stop of
// a Stopping one, joins what is under way and is answered before the table.
const Transition kTransitions[] = {
    {AppState::Installed, AppEvent::Start, AppState::Starting},
    {AppState::Stopped, AppEvent::Start, AppState::Starting},
    {AppState::Exited, AppEvent::Start, AppState::Starting},
    {AppState::Failed, AppEvent::Start, AppState::Starting},
    {AppState::Starting, AppEvent::Started, AppState::Running},
    {AppState::Starting, AppEvent::StartFailed, AppState::Failed},
    {AppState::Running, AppEvent::Stop, AppState::Stopping},
    {AppState::Running, AppEvent::ExitedOk, AppState::Exited},
    {AppState::Running, AppEvent::ExitedBad, AppState::Failed},
    {AppState::Stopping, AppEvent::ExitedOk, AppState::Stopped},
    {AppState::Stopping, AppEvent::ExitedBad, AppState::Stopped},
    {AppState::Exited, AppEvent::Settle, AppState::Stopped},
    {AppState::Failed, AppEvent::Settle, AppState::Stopped},
    {AppState::Installed, AppEvent::Settle, AppState::Installed},
    {AppState::Stopped, AppEvent::Settle, AppState::Stopped},
};

} // namespace

const char* appStateName(AppState s)
{
    for (const auto& [v, n] : kStateNames) {
        if (v == s) {
            return n;
        }
    }
    return "?";
}

const char* appEventName(AppEvent e)
{
    for (const auto& [v, n] : kEventNames) {
        if (v == e) {
            return n;
        }
    }
    return "?";
}

const char* appHoldName(AppHold h)
{
    switch (h) {
    case AppHold::None:
        return "none";
    case AppHold::Removing:
        return "removing";
    case AppHold::Updating:
        return "updating";
    }
    return "?";
}

std::optional<AppState> appStateFromName(const std::string& name)
{
    for (const auto& [v, n] : kStateNames) {
        if (name == n) {
            return v;
        }
    }
    return std::nullopt;
}

std::optional<AppState> appNext(AppState from, AppEvent event)
{
    for (const auto& t : kTransitions) {
        if (t.from == from && t.event == event) {
            return t.to;
        }
    }
    return std::nullopt;
}

bool appActive(AppState s)
{
    return s == AppState::Starting || s == AppState::Running || s == AppState::Stopping;
}

} // namespace mbl::containers
