#include "transaction.h"

#include "mbl/strings.h"

#include <array>
#include <utility>

namespace mbl::containers {

using nlohmann::json;

namespace {

const std::array<std::pair<TxnState, const char*>, 7> kStateNames = {{
    {TxnState::Staged, "staged"},
    {TxnState::Activating, "activating"},
    {TxnState::Active, "active"},
    {TxnState::Committing, "committing"},
    {TxnState::Committed, "committed"},
    {TxnState::RollingBack, "rolling-back"},
    {TxnState::RolledBack, "rolled-back"},
}};

const std::array<std::pair<TxnEvent, const char*>, 7> kEventNames = {{
    {TxnEvent::Stage, "stage"},
    {TxnEvent::Activate, "activate"},
    {TxnEvent::Switched, "switched"},
    {TxnEvent::Commit, "commit"},
    {TxnEvent::Deleted, "deleted"},
    {TxnEvent::Rollback, "rollback"},
    {TxnEvent::RolledBack, "rolled-back"},
}};

const std::array<std::pair<TxnAppStep, const char*>, 4> kStepNames = {{
    {TxnAppStep::Staged, "staged"},
    {TxnAppStep::Active, "active"},
    {TxnAppStep::Committed, "committed"},
    {TxnAppStep::RolledBack, "rolled-back"},
}};

struct Transition {
    TxnState from;
    TxnEvent event;
    TxnState to;
};

// Every allowed transition; anything else is refused.
const Transition kTransitions[] = {
    {TxnState::Staged, TxnEvent::Stage, TxnState::Staged},
    {TxnState::Staged, TxnEvent::Activate, TxnState::Activating},
    {TxnState::Activating, TxnEvent::Activate, TxnState::Activating}, // resumed after a restart
    {TxnState::Activating, TxnEvent::Switched, TxnState::Active},
    {TxnState::Active, TxnEvent::Commit, TxnState::Committing},
    {TxnState::Committing, TxnEvent::Commit, TxnState::Committing}, // resumed after a restart
    {TxnState::Committing, TxnEvent::Deleted, TxnState::Committed},
    {TxnState::Staged, TxnEvent::Rollback, TxnState::RollingBack},
    {TxnState::Activating, TxnEvent::Rollback, TxnState::RollingBack},
    {TxnState::Active, TxnEvent::Rollback, TxnState::RollingBack},
    {TxnState::RollingBack, TxnEvent::Rollback, TxnState::RollingBack}, // resumed after a restart
    {TxnState::RollingBack, TxnEvent::RolledBack, TxnState::RolledBack},
};

template <typename E, std::size_t N>
const char* nameOf(const std::array<std::pair<E, const char*>, N>& table, E v)
{
    for (const auto& [e, n] : table) {
        if (e == v) {
            return n;
        }
    }
    return "?";
}

template <typename E, std::size_t N>
std::optional<E> fromName(const std::array<std::pair<E, const char*>, N>& table, const std::string& name)
{
    for (const auto& [e, n] : table) {
        if (name == n) {
            return e;
        }
    }
    return std::nullopt;
}

} // namespace

const char* txnStateName(TxnState s)
{
    return nameOf(kStateNames, s);
}
const char* txnEventName(TxnEvent e)
{
    return nameOf(kEventNames, e);
}
const char* txnAppStepName(TxnAppStep s)
{
    return nameOf(kStepNames, s);
}
std::optional<TxnState> txnStateFromName(const std::string& name)
{
    return fromName(kStateNames, name);
}
std::optional<TxnAppStep> txnAppStepFromName(const std::string& name)
{
    return fromName(kStepNames, name);
}

std::optional<TxnState> txnNext(TxnState from, TxnEvent event)
{
    for (const auto& t : kTransitions) {
        if (t.from == from && t.event == event) {
            return t.to;
        }
    }
    return std::nullopt;
}

TxnApp* Transaction::app(const std::string& name)
{
    for (auto& a : apps) {
        if (a.name == name) {
            return &a;
        }
    }
    return nullptr;
}

const TxnApp* Transaction::app(const std::string& name) const
{
    for (const auto& a : apps) {
        if (a.name == name) {
            return &a;
        }
    }
    return nullptr;
}

json Transaction::toJson() const
{
    json list = json::array();
    for (const auto& a : apps) {
        list.push_back({{"name", a.name},
                        {"from_version", a.fromVersion},
                        {"from_dir", a.fromDir},
                        {"to_version", a.toVersion},
                        {"to_dir", a.toDir},
                        {"was_running", a.wasRunning},
                        {"data_existed", a.dataExisted},
                        {"step", txnAppStepName(a.step)}});
    }
    return json{{"id", id}, {"state", txnStateName(state)}, {"created", created}, {"apps", list}};
}

Expected<Transaction> Transaction::fromJson(const json& j)
{
    try {
        Transaction t;
        t.id = j.at("id").get<std::string>();
        auto st = txnStateFromName(j.at("state").get<std::string>());
        if (!st) {
            return unexpected(ErrorCode::Io, "unknown transaction state '" + j.at("state").get<std::string>() + "'");
        }
        t.state = *st;
        t.created = j.value("created", "");
        for (const auto& a : j.at("apps")) {
            TxnApp x;
            x.name = a.at("name").get<std::string>();
            x.fromVersion = a.at("from_version").get<std::string>();
            x.fromDir = a.at("from_dir").get<std::string>();
            x.toVersion = a.at("to_version").get<std::string>();
            x.toDir = a.at("to_dir").get<std::string>();
            x.wasRunning = a.at("was_running").get<bool>();
            x.dataExisted = a.value("data_existed", true);
            auto step = txnAppStepFromName(a.at("step").get<std::string>());
            if (!step || !str::isSafeName(x.name, 48) || !isVersionDirName(x.toDir) ||
                (!x.fromDir.empty() && !isVersionDirName(x.fromDir))) {
                return unexpected(ErrorCode::Io, "a transaction record names an unsafe app or an unknown step");
            }
            x.step = *step;
            t.apps.push_back(std::move(x));
        }
        if (auto ok = checkTxnId(t.id); !ok) {
            return unexpected(ok.error());
        }
        return t;
    } catch (const std::exception& e) {
        return unexpected(ErrorCode::Io, std::string("unreadable transaction record: ") + e.what());
    }
}

json Transaction::publicJson() const
{
    json list = json::array();
    for (const auto& a : apps) {
        list.push_back({{"name", a.name},
                        {"from_version", a.fromVersion},
                        {"to_version", a.toVersion},
                        {"state", txnAppStepName(a.step)}});
    }
    return json{{"id", id}, {"state", txnStateName(state)}, {"apps", list}};
}

std::string stagedDirName(const std::string& fromDir, const std::string& toVersion, const std::string& txnId)
{
    return toVersion == fromDir ? toVersion + "+" + txnId : toVersion;
}

bool isVersionDirName(const std::string& dir)
{
    const auto plus = dir.find('+');
    if (plus == std::string::npos) {
        return str::isSafeName(dir, 64);
    }
    return str::isSafeName(dir.substr(0, plus), 64) && str::isSafeName(dir.substr(plus + 1), 64);
}

Status checkTxnId(const std::string& id)
{
    if (!str::isSafeName(id, 64)) {
        return unexpected(ErrorCode::InvalidArgument,
                          "transaction id " + str::quotable(id) +
                              " is not a safe name ([A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters)");
    }
    return {};
}

} // namespace mbl::containers
