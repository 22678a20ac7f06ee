// SPDX-License-Identifier: Apache-2.0
#include "operation.h"

#include <algorithm>
#include <iterator>

namespace mbl::coordinator {

namespace {

struct StateName {
    State state;
    const char* name;
};

// The one name table (the bus property State and the journal use these names).
constexpr StateName kStateNames[] = {
    {State::Received, "received"},
    {State::Storing, "storing"},
    {State::Waiting, "waiting"},
    {State::WaitingNetwork, "waiting-network"},
    {State::Downloading, "downloading"},
    {State::StagingApps, "staging-apps"},
    {State::Arming, "arming"},
    {State::Rebooting, "rebooting"},
    {State::Verifying, "verifying"},
    {State::Configuring, "configuring"},
    {State::ActivatingApps, "activating-apps"},
    {State::CheckingHealth, "checking-health"},
    {State::Committing, "committing"},
    {State::RollingBackApps, "rolling-back-apps"},
    {State::RollingBackConfig, "rolling-back-config"},
    {State::Releasing, "releasing"},
    {State::RollingBackFirmware, "rolling-back-firmware"},
    {State::Succeeded, "succeeded"},
    {State::Failed, "failed"},
    {State::Cancelled, "cancelled"},
};

using S = State;

// Every transition the coordinator may take. Forward steps skip what a
// deployment does not carry (no apps: no staging-apps; no firmware: no arming);
// a failure enters the rollback chain at its first step that has work to do.
const std::vector<std::pair<State, State>> kTransitions = {
    {S::Received, S::Downloading},
    {S::Received, S::Storing},
    {S::Received, S::Waiting}, // the server does not allow the download yet
    {S::Received, S::Failed},

    {S::Storing, S::Storing}, // again, after a restart
    {S::Storing, S::Waiting},
    {S::Storing, S::Downloading}, // the window opened while storing
    {S::Storing, S::Succeeded}, // download-only
    {S::Storing, S::WaitingNetwork},
    {S::Storing, S::Failed},
    {S::Storing, S::Cancelled},

    {S::Waiting, S::Downloading},
    {S::Waiting, S::Storing}, // the download is allowed now, the installation not yet
    {S::Waiting, S::Failed},
    {S::Waiting, S::Cancelled},

    {S::WaitingNetwork, S::Downloading},
    {S::WaitingNetwork, S::Storing},
    {S::WaitingNetwork, S::Releasing},
    {S::WaitingNetwork, S::Failed},
    {S::WaitingNetwork, S::Cancelled},

    {S::Downloading, S::Downloading}, // the next bundle, or the same one again
    {S::Downloading, S::WaitingNetwork},
    {S::Downloading, S::StagingApps},
    {S::Downloading, S::Arming},
    {S::Downloading, S::Configuring},
    {S::Downloading, S::CheckingHealth},
    {S::Downloading, S::Releasing},
    {S::Downloading, S::Failed},
    {S::Downloading, S::Cancelled},

    {S::StagingApps, S::StagingApps}, // the next app
    {S::StagingApps, S::Arming},
    {S::StagingApps, S::Configuring},
    {S::StagingApps, S::ActivatingApps},
    {S::StagingApps, S::CheckingHealth}, // every app already at its version
    {S::StagingApps, S::RollingBackApps},

    {S::Arming, S::Arming},    // again, after a restart
    {S::Arming, S::Verifying}, // a power loss after arming booted the new slot
    {S::Arming, S::Rebooting},
    {S::Arming, S::RollingBackApps},
    {S::Arming, S::Releasing},

    {S::Rebooting, S::Rebooting}, // the coordinator restarted before the reboot happened
    {S::Rebooting, S::Verifying},
    {S::Rebooting, S::RollingBackApps},
    {S::Rebooting, S::Releasing},

    {S::Verifying, S::Rebooting},
    {S::Verifying, S::Configuring},
    {S::Verifying, S::ActivatingApps},
    {S::Verifying, S::CheckingHealth},
    {S::Verifying, S::Committing}, // committed before a restart
    {S::Verifying, S::RollingBackApps},
    {S::Verifying, S::Releasing},

    {S::Configuring, S::Configuring}, // again, after a restart
    {S::Configuring, S::ActivatingApps},
    {S::Configuring, S::CheckingHealth},
    {S::Configuring, S::RollingBackApps},
    {S::Configuring, S::RollingBackConfig},
    {S::Configuring, S::Releasing},
    {S::Configuring, S::RollingBackFirmware},

    {S::ActivatingApps, S::ActivatingApps}, // again, after a restart
    {S::ActivatingApps, S::CheckingHealth},
    {S::ActivatingApps, S::RollingBackApps},

    {S::CheckingHealth, S::CheckingHealth}, // again, after a restart
    {S::CheckingHealth, S::Committing},
    {S::CheckingHealth, S::RollingBackApps},
    {S::CheckingHealth, S::RollingBackConfig},
    {S::CheckingHealth, S::Releasing},
    {S::CheckingHealth, S::RollingBackFirmware},

    {S::Committing, S::Committing}, // again, after a restart
    {S::Committing, S::Succeeded},
    {S::Committing, S::RollingBackApps}, // Update1.Commit refused: nothing was made permanent
    {S::Committing, S::RollingBackConfig},
    {S::Committing, S::Releasing},
    {S::Committing, S::RollingBackFirmware},

    {S::RollingBackApps, S::RollingBackConfig},
    {S::RollingBackApps, S::Releasing},
    {S::RollingBackApps, S::RollingBackFirmware},
    {S::RollingBackApps, S::Failed},
    {S::RollingBackApps, S::Cancelled},

    {S::RollingBackConfig, S::Releasing},
    {S::RollingBackConfig, S::RollingBackFirmware},
    {S::RollingBackConfig, S::Failed},
    {S::RollingBackConfig, S::Cancelled},

    {S::Releasing, S::RollingBackFirmware},
    {S::Releasing, S::Failed},
    {S::Releasing, S::Cancelled},

    {S::RollingBackFirmware, S::Failed},
};

const char* sourceName(Source s)
{
    return s == Source::Cloud ? "cloud" : "local";
}

template <typename T>
T get(const nlohmann::json& j, const char* key, T fallback)
{
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
        return fallback;
    }
    return it->get<T>();
}

} // namespace

const char* stateName(State s)
{
    for (const auto& n : kStateNames) {
        if (n.state == s) {
            return n.name;
        }
    }
    return "unknown";
}

std::optional<State> stateFromName(const std::string& name)
{
    for (const auto& n : kStateNames) {
        if (name == n.name) {
            return n.state;
        }
    }
    return std::nullopt;
}

bool isFinal(State s)
{
    return s == State::Succeeded || s == State::Failed || s == State::Cancelled;
}

bool transitionAllowed(State from, State to)
{
    return std::find(kTransitions.begin(), kTransitions.end(), std::make_pair(from, to)) != kTransitions.end();
}

const std::vector<std::pair<State, State>>& transitions()
{
    return kTransitions;
}

std::string transitionDiagram()
{
    std::string out;
    for (const auto& n : kStateNames) {
        std::string line;
        for (const auto& [from, to] : kTransitions) {
            if (from == n.state) {
                line += std::string(line.empty() ? "" : ", ") + "`" + stateName(to) + "`";
            }
        }
        out += "- `" + std::string(n.name) + "` → " + (line.empty() ? "(final)" : line) + "\n";
    }
    return out;
}

namespace {

bool flag(const nlohmann::json& d, const char* key, bool fallback)
{
    auto it = d.find(key);
    return it != d.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

std::string text(const nlohmann::json& d, const char* key)
{
    auto it = d.find(key);
    return it != d.end() && it->is_string() ? it->get<std::string>() : std::string();
}

} // namespace

Allowed allowedBy(const nlohmann::json& d)
{
    Allowed a;
    if (!d.is_object()) {
        return a;
    }
    const std::string download = text(d, "download");
    const std::string update = text(d, "update");
    const std::string window = text(d, "maintenance_window");
    a.download = flag(d, "download_allowed", download != "skip");
    a.install = flag(d, "install_allowed", update != "skip" && window != "unavailable");
    // hawkBit says "update": "skip" both for a download-only action and for a closed
    // maintenance window; only the first is download-only (C1). A window that is
    // named means the action installs once the window opens, whatever the flag says.
    a.downloadOnly = flag(d, "download_only", false) && window.empty();
    bool marked = false;
    if (auto chunks = d.find("chunks"); chunks != d.end() && chunks->is_array()) {
        for (const auto& c : *chunks) {
            if (!c.is_object()) {
                continue;
            }
            auto m = c.find("metadata");
            if (m != c.end() && m->is_object()) {
                auto v = m->find("mbl.complete-app-set");
                marked = marked || (v != m->end() && ((v->is_string() && *v == "true") || (v->is_boolean() && *v == true)));
            }
        }
    }
    a.completeAppSet = flag(d, "complete_app_set", marked);
    return a;
}

std::vector<nlohmann::json> artifactsOf(const nlohmann::json& deployment)
{
    std::vector<nlohmann::json> out;
    if (!deployment.is_object() || !deployment.contains("chunks") || !deployment["chunks"].is_array()) {
        return out;
    }
    for (const auto& c : deployment["chunks"]) {
        if (!c.is_object() || !c.contains("artifacts") || !c["artifacts"].is_array()) {
            continue;
        }
        for (const auto& a : c["artifacts"]) {
            out.push_back(a);
        }
    }
    return out;
}

const StagedBundle* Operation::firmwareBundle() const
{
    for (const auto& b : bundles) {
        if (b.rootfs) {
            return &b;
        }
    }
    return nullptr;
}

std::size_t Operation::artifactCount() const
{
    return std::max<std::size_t>(1, artifactsOf(deployment).size());
}

std::string Operation::version() const
{
    std::string out;
    for (const auto& b : bundles) {
        if (out.find(b.version) == std::string::npos) {
            out += (out.empty() ? "" : ", ") + b.version;
        }
    }
    return out;
}

std::string Operation::failureMessage() const
{
    std::string message = failure ? failure->message : "failed";
    for (const auto& u : undone) {
        message += "; " + u;
    }
    for (const auto& f : undoFailures) {
        message += "; but " + f;
    }
    return message;
}

nlohmann::json Operation::toJson() const
{
    using json = nlohmann::json;
    json j;
    j["id"] = id;
    j["source"] = sourceName(source);
    if (!actionId.empty()) {
        j["action_id"] = actionId;
    }
    j["deployment"] = deployment;
    j["state"] = stateName(state);
    j["step"] = step;
    j["steps"] = json::array();
    for (const auto& s : steps) {
        j["steps"].push_back({{"time", s.time}, {"state", s.state}, {"step", s.step}});
    }
    j["created"] = created;
    if (finished != 0) {
        j["finished"] = finished;
    }
    j["attempts"] = attempts;
    j["progress"] = progress;
    j["replace_apps"] = replaceApps;
    j["artifact"] = artifact;
    j["pending_update_op"] = pendingUpdateOp;
    j["stored_dir"] = storedDir;
    j["download_retries"] = downloadRetries;
    j["retry_store"] = retryStore;
    j["bundles"] = json::array();
    for (const auto& b : bundles) {
        j["bundles"].push_back({{"artifact", b.artifact},
                                {"update_op", b.updateOp},
                                {"version", b.version},
                                {"rootfs", b.rootfs},
                                {"payload_types", b.payloadTypes}});
    }
    j["apps"] = json::array();
    for (const auto& a : apps) {
        j["apps"].push_back({{"update_op", a.updateOp},
                             {"payload", a.payload},
                             {"name", a.name},
                             {"version", a.version},
                             {"settings", a.settings},
                             {"staged", a.staged},
                             {"unchanged", a.unchanged},
                             {"should_run", a.shouldRun}});
    }
    j["app_index"] = appIndex;
    j["app_install_op"] = appInstallOp;
    j["busy_retries"] = busyRetries;
    j["apps_handed_over"] = appsHandedOver;
    j["apps_activated"] = appsActivated;
    j["running_before"] = runningBefore;
    j["cloud_connected_before"] = cloudConnectedBefore;
    j["drop_apps"] = dropApps;
    if (configUpdateOp) {
        j["config_update_op"] = *configUpdateOp;
        j["config_payload"] = configPayload;
        j["config"] = config;
    }
    if (configPrevious) {
        j["config_previous"] = *configPrevious;
    }
    j["config_attempted"] = configAttempted;
    j["config_applied"] = configApplied;
    j["config_restored"] = configRestored;
    j["booted_before"] = bootedBefore;
    j["target_slot"] = targetSlot;
    j["boot_id_before"] = bootIdBefore;
    j["armed"] = armed;
    j["booted_new"] = bootedNew;
    j["marked_bad"] = markedBad;
    j["health"] = {{"deadline_boottime_ms", health.deadlineBoottimeMs},
                   {"boot_id", health.bootId},
                   {"status", health.status}};
    if (failure) {
        j["failure"] = {{"error", failure->name()}, {"message", failure->message}};
    }
    j["cancelled"] = cancelled;
    j["undone"] = undone;
    j["undo_failures"] = undoFailures;
    j["warnings"] = warnings;
    if (result) {
        j["result"] = {{"success", result->success}, {"error", result->error}, {"message", result->message}};
    }
    return j;
}

Expected<Operation> Operation::fromJson(const nlohmann::json& j)
{
    if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) {
        return unexpected(ErrorCode::InvalidArgument, "the journal record has no operation id");
    }
    try {
        Operation op;
        op.id = j["id"].get<std::string>();
        op.source = get<std::string>(j, "source", "cloud") == "local" ? Source::Local : Source::Cloud;
        op.actionId = get<std::string>(j, "action_id", "");
        op.deployment = j.value("deployment", nlohmann::json::object());
        const std::string stateText = get<std::string>(j, "state", "");
        auto state = stateFromName(stateText);
        // A journal of the coordinator before transactions (the firmware that armed
        // this slot may have run it): the states that can follow its reboot.
        const bool legacy = !j.contains("bundles");
        if (!state && legacy && stateText == "rolling-back") {
            state = State::RollingBackFirmware;
        } else if (!state && legacy && stateText == "checking-apps") {
            state = State::CheckingHealth;
        }
        if (!state) {
            return unexpected(ErrorCode::InvalidArgument, "the journal record has an unknown state '" + stateText + "'");
        }
        op.state = *state;
        op.step = get<std::string>(j, "step", "");
        for (const auto& s : j.value("steps", nlohmann::json::array())) {
            op.steps.push_back({get<std::int64_t>(s, "time", 0), get<std::string>(s, "state", ""),
                                get<std::string>(s, "step", "")});
        }
        op.created = get<std::int64_t>(j, "created", 0);
        op.finished = get<std::int64_t>(j, "finished", 0);
        op.attempts = get<unsigned>(j, "attempts", 1);
        op.progress = get<std::uint32_t>(j, "progress", 0);
        op.replaceApps = get<bool>(j, "replace_apps", false);
        op.artifact = get<std::size_t>(j, "artifact", 0);
        op.pendingUpdateOp = get<std::string>(j, "pending_update_op", "");
        op.storedDir = get<std::string>(j, "stored_dir", "");
        op.downloadRetries = get<unsigned>(j, "download_retries", 0);
        op.retryStore = get<bool>(j, "retry_store", false);
        for (const auto& b : j.value("bundles", nlohmann::json::array())) {
            op.bundles.push_back({get<std::string>(b, "artifact", ""), get<std::string>(b, "update_op", ""),
                                  get<std::string>(b, "version", ""), get<bool>(b, "rootfs", false),
                                  b.value("payload_types", std::vector<std::string>{})});
        }
        if (legacy && j.contains("update_op")) {
            op.bundles.push_back({"bundle", get<std::string>(j, "update_op", ""),
                                  get<std::string>(j, "manifest_version", ""), get<bool>(j, "firmware", false),
                                  {}});
        }
        for (const auto& a : j.value("apps", nlohmann::json::array())) {
            AppStep s;
            s.updateOp = get<std::string>(a, "update_op", "");
            s.payload = get<std::string>(a, "payload", "");
            s.name = get<std::string>(a, "name", "");
            s.version = get<std::string>(a, "version", "");
            s.settings = a.value("settings", nlohmann::json::object());
            s.staged = get<bool>(a, "staged", false);
            s.unchanged = get<bool>(a, "unchanged", false);
            s.shouldRun = get<bool>(a, "should_run", true);
            // Before transactions apps were installed and switched one by one.
            s.unchanged = s.unchanged || legacy;
            op.apps.push_back(std::move(s));
        }
        op.appIndex = get<std::size_t>(j, "app_index", 0);
        op.appInstallOp = get<std::string>(j, "app_install_op", "");
        op.busyRetries = get<unsigned>(j, "busy_retries", 0);
        op.appsHandedOver = get<bool>(j, "apps_handed_over", false);
        op.appsActivated = get<bool>(j, "apps_activated", false);
        op.runningBefore = j.value("running_before", std::map<std::string, std::string>{});
        op.cloudConnectedBefore = get<bool>(j, "cloud_connected_before", false);
        op.dropApps = j.value("drop_apps", std::vector<std::string>{});
        if (j.contains("config_update_op")) {
            op.configUpdateOp = j["config_update_op"].get<std::string>();
            op.configPayload = get<std::string>(j, "config_payload", "");
            op.config = j.value("config", nlohmann::json::object());
        }
        if (j.contains("config_previous") && j["config_previous"].is_object()) {
            op.configPrevious = j["config_previous"].get<std::map<std::string, std::string>>();
        }
        op.configAttempted = get<std::size_t>(j, "config_attempted", 0);
        op.configApplied = get<bool>(j, "config_applied", false);
        op.configRestored = get<std::size_t>(j, "config_restored", 0);
        op.bootedBefore = get<std::string>(j, "booted_before", "");
        op.targetSlot = get<std::string>(j, "target_slot", "");
        op.bootIdBefore = get<std::string>(j, "boot_id_before", "");
        op.armed = get<bool>(j, "armed", legacy && get<bool>(j, "firmware", false));
        op.markedBad = get<bool>(j, "marked_bad", false);
        op.bootedNew = get<bool>(j, "booted_new", false);
        if (j.contains("health") && j["health"].is_object()) {
            const auto& h = j["health"];
            op.health.deadlineBoottimeMs = get<std::int64_t>(h, "deadline_boottime_ms", 0);
            op.health.bootId = get<std::string>(h, "boot_id", "");
            op.health.status = get<std::string>(h, "status", "");
        }
        if (j.contains("failure") && j["failure"].is_object()) {
            op.failure = Error{errorCodeFromName(get<std::string>(j["failure"], "error", "")),
                               get<std::string>(j["failure"], "message", "")};
        }
        op.cancelled = get<bool>(j, "cancelled", false);
        op.undone = j.value("undone", std::vector<std::string>{});
        op.undoFailures = j.value("undo_failures", std::vector<std::string>{});
        op.warnings = j.value("warnings", std::vector<std::string>{});
        if (j.contains("result") && j["result"].is_object()) {
            const auto& r = j["result"];
            op.result = Outcome{get<bool>(r, "success", false), get<std::string>(r, "error", ""),
                                get<std::string>(r, "message", "")};
        }
        return op;
    } catch (const nlohmann::json::exception& e) {
        return unexpected(ErrorCode::InvalidArgument, std::string("the journal record is malformed: ") + e.what());
    }
}

} // namespace mbl::coordinator
