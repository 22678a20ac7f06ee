// SPDX-License-Identifier: Apache-2.0
#pragma once
// An app's lifecycle as a typed state machine: the states its container goes
// through (what the App object's State property shows), the events that move
// it, and the one table of transitions. Which operation holds the app (a
// removal, an update or a transaction step) is a second, separate value: the
// lifecycle continues under a hold, but only the holder may start or stop it.

#include <optional>
#include <string>

namespace mbl::containers {

enum class AppState {
    Installed, // never started since it was installed (or the manager started)
    Starting,  // the runtime is creating and starting its container
    Running,   // its init runs
    Stopping,  // SIGTERM sent, waiting for the exit (SIGKILL after the grace)
    Stopped,   // ended because it was asked to
    Exited,    // ended on its own with code 0
    Failed,    // ended on its own with another code, a signal or OOM, or did not start
};

enum class AppEvent {
    Start,       // a start was asked (StartApp, autostart, restart policy, transaction)
    Started,     // the runtime reports the init running
    StartFailed, // the runtime could not start it
    Stop,        // a stop was asked of a running app
    ExitedOk,    // the init ended with 0
    ExitedBad,   // the init ended otherwise
    Settle,      // a stop asked of an app that is not running: it is stopped now
};

// Who holds the app: while held, StartApp/StopApp/RemoveApp/InstallApp answer Busy.
enum class AppHold {
    None,
    Removing, // RemoveApp
    Updating, // an update (InstallApp of another version) or a transaction step
};

const char* appStateName(AppState s);
const char* appEventName(AppEvent e);
const char* appHoldName(AppHold h);
std::optional<AppState> appStateFromName(const std::string& name);

// The next state, or nullopt when the event does not apply in that state.
std::optional<AppState> appNext(AppState from, AppEvent event);

// Has a process (or is about to): Starting, Running, Stopping.
bool appActive(AppState s);

} // namespace mbl::containers
