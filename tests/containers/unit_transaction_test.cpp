// The transaction record (C3) without a bus: its state machine's table, its
// record's round trip, and the folder names that keep two versions apart.

#include "transaction.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace mbl::containers;
using nlohmann::json;

TEST_CASE("transaction states: only the table's transitions are allowed")
{
    CHECK(txnNext(TxnState::Staged, TxnEvent::Stage) == TxnState::Staged);
    CHECK(txnNext(TxnState::Staged, TxnEvent::Activate) == TxnState::Activating);
    CHECK(txnNext(TxnState::Activating, TxnEvent::Switched) == TxnState::Active);
    CHECK(txnNext(TxnState::Active, TxnEvent::Commit) == TxnState::Committing);
    CHECK(txnNext(TxnState::Committing, TxnEvent::Deleted) == TxnState::Committed);
    CHECK(txnNext(TxnState::Active, TxnEvent::Rollback) == TxnState::RollingBack);
    CHECK(txnNext(TxnState::Activating, TxnEvent::Rollback) == TxnState::RollingBack);
    CHECK(txnNext(TxnState::RollingBack, TxnEvent::RolledBack) == TxnState::RolledBack);
    // Refused: a staged transaction cannot be committed, a committed one not rolled
    // back, a finished one takes no apps, nothing leaves a final state.
    CHECK_FALSE(txnNext(TxnState::Staged, TxnEvent::Commit));
    CHECK_FALSE(txnNext(TxnState::Committed, TxnEvent::Rollback));
    CHECK_FALSE(txnNext(TxnState::Committing, TxnEvent::Rollback));
    CHECK_FALSE(txnNext(TxnState::Active, TxnEvent::Stage));
    for (auto e : {TxnEvent::Stage, TxnEvent::Activate, TxnEvent::Switched, TxnEvent::Commit, TxnEvent::Deleted,
                   TxnEvent::Rollback, TxnEvent::RolledBack}) {
        INFO(txnEventName(e));
        CHECK_FALSE(txnNext(TxnState::Committed, e));
        CHECK_FALSE(txnNext(TxnState::RolledBack, e));
    }
    for (auto s : {TxnState::Staged, TxnState::Activating, TxnState::Active, TxnState::Committing, TxnState::Committed,
                   TxnState::RollingBack, TxnState::RolledBack}) {
        CHECK(txnStateFromName(txnStateName(s)) == s);
    }
    CHECK_FALSE(txnStateFromName("unknown"));
}

TEST_CASE("a transaction record survives its round trip; a damaged or hostile one is refused")
{
    Transaction t;
    t.id = "deploy-42";
    t.state = TxnState::RollingBack;
    t.created = "2026-11-24T10:00:00Z";
    TxnApp a;
    a.name = "web";
    a.fromVersion = "1";
    a.fromDir = "1";
    a.toVersion = "2";
    a.toDir = "2";
    a.wasRunning = true;
    a.step = TxnAppStep::Active;
    TxnApp b;
    b.name = "side";
    b.toVersion = "1";
    b.toDir = "1";
    b.dataExisted = false;
    t.apps = {a, b};
    auto back = Transaction::fromJson(json::parse(t.toJson().dump()));
    REQUIRE(back);
    CHECK(back->toJson() == t.toJson());
    CHECK(back->publicJson() == json::parse(R"({"id": "deploy-42", "state": "rolling-back", "apps": [
        {"name": "web", "from_version": "1", "to_version": "2", "state": "active"},
        {"name": "side", "from_version": "", "to_version": "1", "state": "staged"}]})"));

    json bad = t.toJson();
    bad["apps"][0]["to_dir"] = "../../etc";
    CHECK_FALSE(Transaction::fromJson(bad));
    bad = t.toJson();
    bad["apps"][1]["name"] = "/root";
    CHECK_FALSE(Transaction::fromJson(bad));
    bad = t.toJson();
    bad["state"] = "half-done";
    CHECK_FALSE(Transaction::fromJson(bad));
    bad = t.toJson();
    bad["id"] = "../x";
    CHECK_FALSE(Transaction::fromJson(bad));
    bad = t.toJson();
    bad["apps"][0].erase("to_dir");
    CHECK_FALSE(Transaction::fromJson(bad));
}

TEST_CASE("a transaction's new version never shares a folder with the installed one")
{
    CHECK(stagedDirName("1", "2", "t") == "2");
    CHECK(stagedDirName("1", "1", "t") == "1+t");
    CHECK(stagedDirName("1+t", "1", "u") == "1");
    CHECK(stagedDirName("", "1", "t") == "1");
    CHECK(isVersionDirName("1+t"));
    CHECK(isVersionDirName("1.2.3"));
    CHECK_FALSE(isVersionDirName("1+"));
    CHECK_FALSE(isVersionDirName("../1"));
    CHECK_FALSE(isVersionDirName("1+t+u"));
    CHECK(checkTxnId("deploy-42"));
    CHECK_FALSE(checkTxnId(""));
    CHECK_FALSE(checkTxnId("a/b"));
    CHECK_FALSE(checkTxnId(std::string(65, 'a')));
}
