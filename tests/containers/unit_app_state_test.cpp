// SPDX-License-Identifier: Apache-2.0
// An app's lifecycle table (app_state.h) without a bus: the steps a container
// goes through, and the combinations that cannot happen.

#include "app_state.h"

#include <catch2/catch.hpp>

using namespace mbl::containers;

TEST_CASE("app lifecycle: a start, a run, an exit or a stop, each by the table")
{
    CHECK(appNext(AppState::Installed, AppEvent::Start) == AppState::Starting);
    CHECK(appNext(AppState::Starting, AppEvent::Started) == AppState::Running);
    CHECK(appNext(AppState::Starting, AppEvent::StartFailed) == AppState::Failed);
    CHECK(appNext(AppState::Running, AppEvent::ExitedOk) == AppState::Exited);
    CHECK(appNext(AppState::Running, AppEvent::ExitedBad) == AppState::Failed);
    CHECK(appNext(AppState::Running, AppEvent::Stop) == AppState::Stopping);
    // A stopped app's exit code does not make it failed: it was asked to stop.
    CHECK(appNext(AppState::Stopping, AppEvent::ExitedBad) == AppState::Stopped);
    CHECK(appNext(AppState::Stopping, AppEvent::ExitedOk) == AppState::Stopped);
    CHECK(appNext(AppState::Failed, AppEvent::Settle) == AppState::Stopped);
    CHECK(appNext(AppState::Exited, AppEvent::Settle) == AppState::Stopped);
    CHECK(appNext(AppState::Installed, AppEvent::Settle) == AppState::Installed);
    for (auto s : {AppState::Stopped, AppState::Exited, AppState::Failed}) {
        CHECK(appNext(s, AppEvent::Start) == AppState::Starting);
    }
}

TEST_CASE("app lifecycle: impossible steps are not in the table")
{
    // No exit without a process, no second start while one runs, no stop of a
    // start in progress (it waits for the start), no way out of Stopping but an exit.
    for (auto e : {AppEvent::ExitedOk, AppEvent::ExitedBad, AppEvent::Started, AppEvent::Stop}) {
        INFO(appEventName(e));
        CHECK_FALSE(appNext(AppState::Installed, e));
        CHECK_FALSE(appNext(AppState::Stopped, e));
    }
    CHECK_FALSE(appNext(AppState::Running, AppEvent::Start));
    CHECK_FALSE(appNext(AppState::Starting, AppEvent::Start));
    CHECK_FALSE(appNext(AppState::Starting, AppEvent::Stop));
    CHECK_FALSE(appNext(AppState::Stopping, AppEvent::Start));
    CHECK_FALSE(appNext(AppState::Stopping, AppEvent::Stop));
    CHECK_FALSE(appNext(AppState::Running, AppEvent::Settle));
    for (auto s : {AppState::Installed, AppState::Starting, AppState::Running, AppState::Stopping, AppState::Stopped,
                   AppState::Exited, AppState::Failed}) {
        CHECK(appStateFromName(appStateName(s)) == s);
        CHECK(appActive(s) == (s == AppState::Starting || s == AppState::Running || s == AppState::Stopping));
    }
}
