// SPDX-License-Identifier: Apache-2.0
// The cloud client against the DDI test server behind real nginx doing mutual
// TLS, on a private system bus with the real identity service: the scenarios of
// issue 6, seen from outside (the server's records, the bus, the bytes of the fd).

#include "cloud_env.h"
#include "cloud_steps.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <pwd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <set>
#include <thread>

using namespace mbl;
using namespace mbl::test;
using nlohmann::json;
using namespace std::chrono_literals;

TEST_CASE("a device registers over mutual TLS and appears on the server with its attributes")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    CHECK(env.uintProp("LastContact") > 0);
    CHECK(env.uintProp("PollInterval") == 2);
    CHECK(env.stringProp("ServerUrl") == env.cloud.serverUrl());
    REQUIRE(CloudEnv::waitUntil([&] { return env.cloud.state()["targets"][env.deviceId]["config_puts"] >= 1; }));
    auto target = env.cloud.state()["targets"][env.deviceId];
    CHECK(target["attributes"]["device_id"] == env.deviceId);
    CHECK(target["attributes"]["device_class"] == "mbl-test-board");
    CHECK(target["attributes"]["mbl.client_version"] == "0.1.0");
    // nginx saw the client certificate and passed its CN; the server matched it to the controllerId.
    auto polls = env.requests("/DEFAULT/controller/v1/dev-01");
    REQUIRE_FALSE(polls.empty());
    CHECK(polls[0]["cn"] == env.deviceId);
    CHECK(polls[0]["auth"] == "");
}

TEST_CASE("polls reuse one keep-alive TLS connection")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.requests("/controller/v1/dev-01").size() >= 6; }, 30s));
    // nginx logs the connection serial of every request: all polls came over one connection.
    auto log = fs::readFile(env.cloud.dir() + "/nginx/logs/access.log");
    REQUIRE(log);
    std::set<std::string> connections;
    int polls = 0;
    for (const auto& line : str::split(*log, '\n')) {
        if (contains(line, "GET /DEFAULT/controller/v1/dev-01 ")) {
            connections.insert(line.substr(0, line.find(' ')));
            ++polls;
        }
    }
    CHECK(polls >= 4);
    CHECK(connections.size() == 1);
}

TEST_CASE("an unchanged poll is answered 304: the device sends back hawkBit's ETag, Spring's \"0<md5 hex>\", as it came")
{
    // hawkBit's ETag is Spring's ShallowEtagHeaderFilter's: a 0, then the body's MD5
    // in hex, in quotes (35 characters). Its length is in every idle poll's bytes.
    CloudEnv env;
    auto notModified = [&] {
        std::vector<json> out;
        const std::string poll = "/DEFAULT/controller/v1/" + env.deviceId;
        for (const auto& r : env.requests(poll)) {
            if (r["method"] == "GET" && r["path"] == poll && r["status"] == 304) {
                out.push_back(r);
            }
        }
        return out;
    };
    REQUIRE(CloudEnv::waitUntil([&] { return notModified().size() >= 2; }, 30s));
    for (const auto& r : notModified()) {
        const std::string tag = r["if_none_match"].get<std::string>();
        INFO("If-None-Match: " << tag);
        REQUIRE(tag.size() == 35);
        CHECK(str::startsWith(tag, "\"0"));
        CHECK(str::endsWith(tag, "\""));
        CHECK(std::all_of(tag.begin() + 2, tag.end() - 1,
                          [](char c) { return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f'); }));
    }
}

TEST_CASE("where the server offers HTTP/2, polls go over it on one kept connection; artifacts stay on HTTP/1.1")
{
    // Issue 18: HPACK makes a repeated poll's headers a few bytes; downloads keep
    // HTTP/1.1 (no flow-control windows on a bulk stream, and a CDN may not offer h2).
    CloudEnvOptions o;
    o.http2 = true;
    CloudEnv env(o);
    SignalRecorder sig;
    const std::string sha = makeArtifact(env, "h2.bundle", 256 * 1024 + 3);
    const std::string id = deploy(env, {"h2.bundle"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    auto art = json::parse(dep->args[1])["chunks"][0]["artifacts"][0];
    auto fd = download(env, id, art);
    CHECK(crypto::sha256Hex(readFd(fd.get())) == sha);
    REQUIRE(sig.waitFor("DownloadFinished"));
    REQUIRE(CloudEnv::waitUntil([&] { return pollCount(env) >= 3; }, 30s));
    auto log = fs::readFile(env.cloud.dir() + "/nginx/logs/access.log");
    REQUIRE(log);
    std::set<std::string> pollConnections;
    int polls = 0;
    int artifactGets = 0;
    for (const auto& line : str::split(*log, '\n')) {
        if (contains(line, "GET /DEFAULT/controller/v1/dev-01 ")) {
            INFO(line);
            CHECK(contains(line, " HTTP/2.0\""));
            pollConnections.insert(line.substr(0, line.find(' ')));
            ++polls;
        } else if (contains(line, "/artifacts/h2.bundle")) {
            INFO(line);
            CHECK(contains(line, " HTTP/1.1\""));
            ++artifactGets;
        }
    }
    CHECK(polls >= 3);
    CHECK(pollConnections.size() == 1);
    CHECK(artifactGets >= 1);
}

TEST_CASE("a kept connection sends no TCP keep-alive probe before its next poll")
{
    // Issue 18: with keep-alive idle at 120 s, a 5-minute sleep cost two probes and
    // their ACKs (208 B) per poll. The kernel's keep-alive timer of the daemon's
    // connection (ss -o: "timer:(keepalive,<left>,0)") must outlast the sleep.
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    env.cloud.admin("POST", "/admin/config", {{"sleep", "00:05:00"}});
    const std::size_t polls = pollCount(env);
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return pollCount(env) > polls; }));
    const std::string url = env.cloud.serverUrl();
    const std::string port = url.substr(url.rfind(':') + 1);
    // Seconds left on the keep-alive timer of the daemon's connection to nginx.
    auto keepAliveLeft = [&]() -> long {
        auto r = run({"ss", "-tnoH", "state", "established", "( dport = :" + port + " )"});
        if (!r || r->status.code != 0) {
            return -1;
        }
        const auto at = r->out.find("timer:(keepalive,");
        if (at == std::string::npos) {
            return -1;
        }
        const std::string t = r->out.substr(at + 17, r->out.find(',', at + 17) - at - 17); // "5min59sec", "58sec"
        long left = 0;
        if (str::endsWith(t, "ms")) {
            return 0;
        }
        if (const auto m = t.find("min"); m != std::string::npos) {
            left = std::stol(t.substr(0, m)) * 60;
            if (t.size() > m + 3 && std::isdigit(static_cast<unsigned char>(t[m + 3]))) {
                left += std::stol(t.substr(m + 3));
            }
        } else {
            left = std::stol(t);
        }
        return left;
    };
    long left = -1;
    CHECK(CloudEnv::waitUntil([&] { return (left = keepAliveLeft()) > 300; }));
    INFO("keep-alive timer left: " << left << " s");
    CHECK(left > 300);
}

TEST_CASE("an invalid target token makes the state auth-failed, retried slowly")
{
    CloudEnvOptions o;
    o.authMode = "target-token";
    o.token = "wrong";
    CloudEnv env(o);
    REQUIRE(env.cloud.admin("POST", "/admin/targets", {{"id", env.deviceId}, {"token", "right"}})["_status"] == 200);
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "auth-failed"; }));
    CHECK(contains(env.stringProp("LastError"), "401"));
    // auth_retry_sec is 1: in 3 s at most a handful of attempts, never a tight loop.
    env.cloud.admin("POST", "/admin/reset-log");
    std::this_thread::sleep_for(3s);
    CHECK(env.requests("/controller/v1/dev-01").size() <= 4);
    // A corrected token (the identity service was re-provisioned) is picked up.
    env.writeSpec(env.provisioning("target-token", "right", env.cloud.serverUrl()));
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    auto polls = env.requests("/controller/v1/dev-01");
    CHECK(polls.back()["auth"] == "TargetToken");
}

TEST_CASE("target and gateway tokens authenticate without a client certificate")
{
    SECTION("target token")
    {
        CloudEnvOptions o;
        o.authMode = "target-token";
        o.token = "t0ken";
        o.startClient = false;
        CloudEnv env(o);
        env.cloud.admin("POST", "/admin/config", {{"mtls", false}});
        env.cloud.admin("POST", "/admin/targets", {{"id", env.deviceId}, {"token", "t0ken"}});
        env.startClient();
        REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
        CHECK(env.requests("/controller/v1/dev-01")[0]["auth"] == "TargetToken");
    }
    SECTION("gateway token")
    {
        CloudEnvOptions o;
        o.authMode = "gateway-token";
        o.token = "gw-secret";
        o.startClient = false;
        CloudEnv env(o);
        env.cloud.admin("POST", "/admin/config", {{"mtls", false}, {"gateway_token", "gw-secret"}});
        env.startClient();
        REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
        CHECK(env.requests("/controller/v1/dev-01")[0]["auth"] == "GatewayToken");
    }
}

TEST_CASE("configData is sent when the server asks and when an app changes its attributes")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.cloud.state()["targets"][env.deviceId]["config_puts"] == 1; }));
    env.proxy()
        .callMethod("SetAttributes")
        .onInterface("org.mbl.CloudClient1")
        .withArguments(std::string("sensor"), std::map<std::string, std::string>{{"model", "bme280"}, {"fw", "1.2"}});
    REQUIRE(CloudEnv::waitUntil(
        [&] { return env.cloud.state()["targets"][env.deviceId]["attributes"].value("sensor.model", "") == "bme280"; }));
    std::map<std::string, std::string> attrs;
    env.proxy().callMethod("GetAttributes").onInterface("org.mbl.CloudClient1").storeResultsTo(attrs);
    CHECK(attrs["sensor.fw"] == "1.2");
    CHECK(attrs["device_id"] == env.deviceId);
    // No change, no PUT.
    int puts = env.cloud.state()["targets"][env.deviceId]["config_puts"];
    pollAndWait(env);
    CHECK(env.cloud.state()["targets"][env.deviceId]["config_puts"] == puts);
    // The server asks again (e.g. the operator cleared them): sent on the next poll.
    env.cloud.admin("POST", "/admin/request-config", {{"target", env.deviceId}});
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return env.cloud.state()["targets"][env.deviceId]["config_puts"] > puts; }));
}

TEST_CASE("attributes over the server's limits are refused with InvalidArgument and change nothing")
{
    CloudEnv env;
    auto call = [&](const std::string& ns, const std::map<std::string, std::string>& a) -> std::string {
        try {
            env.proxy().callMethod("SetAttributes").onInterface("org.mbl.CloudClient1").withArguments(ns, a);
            return "";
        } catch (const sdbus::Error& e) {
            return e.getName() + ": " + e.getMessage();
        }
    };
    std::map<std::string, std::string> many;
    for (int i = 0; i < 120; ++i) {
        many["k" + std::to_string(i)] = "v";
    }
    CHECK(contains(call("app1", many), "org.mbl.Error.InvalidArgument"));
    CHECK(contains(call("app1", many), "100"));
    CHECK(contains(call("app1", {{"k", std::string(200, 'v')}}), "128"));
    CHECK(contains(call("../x", {{"k", "v"}}), "InvalidArgument"));
    CHECK(contains(call("mbl", {{"k", "v"}}), "reserved"));
    std::map<std::string, std::string> attrs;
    env.proxy().callMethod("GetAttributes").onInterface("org.mbl.CloudClient1").storeResultsTo(attrs);
    CHECK(attrs.count("app1.k0") == 0);
    CHECK(attrs.count("app1.k") == 0);
}

TEST_CASE("a deployment is announced, downloaded through the fd and closed with success")
{
    CloudEnv env;
    SignalRecorder sig;
    const std::string sha = makeArtifact(env, "fw.bundle", 3 * 1024 * 1024 + 17);
    const std::string id = deploy(env, {"fw.bundle"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    CHECK(dep->args[0] == id);
    json d = json::parse(dep->args[1]);
    CHECK(d["update"] == "forced");
    CHECK(d["install_allowed"] == true);
    CHECK(d["chunks"][0]["metadata"]["slot"] == "b");
    auto art = d["chunks"][0]["artifacts"][0];
    CHECK(art["sha256"] == sha);
    CHECK(art["size"] == 3 * 1024 * 1024 + 17);
    CHECK(contains(art["url"], env.cloud.serverUrl() + "/DEFAULT/controller/v1/dev-01/softwaremodules/"));

    feedback(env, id, "proceeding", "none", 1, 3, {"downloading"});
    auto fd = download(env, id, art);
    std::string data = readFd(fd.get());
    CHECK(data.size() == art["size"].get<std::size_t>());
    CHECK(crypto::sha256Hex(data) == sha);
    auto done = sig.waitFor("DownloadFinished");
    REQUIRE(done);
    CHECK(done->args[2] == "success");
    // Nothing runs any more: no stale progress.
    REQUIRE(CloudEnv::waitUntil([&] { return env.uintProp("ActiveDownloads") == 0; }));
    CHECK(env.uintProp("DownloadProgress") == 0);
    feedback(env, id, "proceeding", "none", 2, 3, {"installing"});
    feedback(env, id, "closed", "success", 3, 3, {"installed"});
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "FINISHED"); }));
    auto fb = action(env, id)["feedback"];
    REQUIRE(fb.size() == 3);
    CHECK(fb[0]["details"][0] == "downloading");
    CHECK(fb[1]["progress"]["cnt"] == 2);
    CHECK(fb[2]["execution"] == "closed");
    CHECK(fb[2]["finished"] == "success");
    // The next polls no longer offer it; the server reports it as installed.
    pollAndWait(env);
    CHECK(sig.count("DeploymentRequested") == 1);
}

TEST_CASE("a download interrupted twice resumes with Range and ends with the right hash")
{
    CloudEnv env;
    SignalRecorder sig;
    const std::string sha = makeArtifact(env, "big.bin", 4 * 1024 * 1024);
    const std::string id = deploy(env, {"big.bin"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    env.cloud.admin("POST", "/admin/faults", {{"cut_after", 1000000}, {"cut_count", 2}});
    auto fd = download(env, id, firstArtifact(*dep));
    std::string data = readFd(fd.get());
    CHECK(data.size() == 4u * 1024 * 1024);
    CHECK(crypto::sha256Hex(data) == sha);
    auto done = sig.waitFor("DownloadFinished");
    REQUIRE(done);
    CHECK(done->args[2] == "success");
    int partial = 0;
    for (const auto& r : env.requests("/artifacts/big.bin")) {
        partial += r["status"] == 206 ? 1 : 0;
    }
    CHECK(partial == 2);
}

TEST_CASE("an artifact that nginx serves itself (X-Accel-Redirect, as a web server or CDN would) arrives whole")
{
    CloudEnv env;
    SignalRecorder sig;
    const std::string sha = makeArtifact(env, "static.bin", 2 * 1024 * 1024 + 5);
    env.cloud.admin("POST", "/admin/config", {{"accel_redirect", "/_mbl_artifact"}});
    const std::string id = deploy(env, {"static.bin"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    auto fd = download(env, id, firstArtifact(*dep));
    std::string data = readFd(fd.get());
    CHECK(data.size() == 2u * 1024 * 1024 + 5);
    CHECK(crypto::sha256Hex(data) == sha);
    auto done = sig.waitFor("DownloadFinished");
    REQUIRE(done);
    CHECK(done->args[2] == "success");
    // The test server only authorised the request; the bytes came from nginx.
    auto reqs = env.requests("/artifacts/static.bin");
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0]["status"] == "accel");
    auto log = fs::readFile(env.cloud.dir() + "/nginx/logs/access.log");
    REQUIRE(log);
    CHECK(contains(*log, "/artifacts/static.bin HTTP/1.1\" 200 "));
}

TEST_CASE("a download that is too slow is aborted and retried")
{
    CloudEnvOptions o;
    o.config = {{"download", {{"low_speed_limit", 50000}, {"low_speed_time_sec", 1}, {"max_retries", 2}}}};
    CloudEnv env(o);
    SignalRecorder sig;
    makeArtifact(env, "slow.bin", 512 * 1024);
    const std::string id = deploy(env, {"slow.bin"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    env.cloud.admin("POST", "/admin/faults", {{"throttle_bps", 5000}});
    auto fd = download(env, id, firstArtifact(*dep));
    std::string data = readFd(fd.get());
    auto done = sig.waitFor("DownloadFinished", 1, 30s);
    REQUIRE(done);
    CHECK(done->args[2] == "interrupted"); // the link failed, not the artifact: worth fetching again later
    CHECK(contains(done->args[3], "gave up after 3 attempts"));
    CHECK(data.size() < 512u * 1024);
    CHECK(env.requests("/artifacts/slow.bin").size() == 3);
}

TEST_CASE("a hash mismatch ends the stream short, and the action closes with failure")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "bad.bin", 100000);
    const std::string id = deploy(env, {"bad.bin"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    env.cloud.admin("POST", "/admin/faults", {{"corrupt", true}});
    auto fd = download(env, id, firstArtifact(*dep));
    std::string data = readFd(fd.get());
    CHECK(data.size() == 99999u); // the reader sees a short stream
    auto done = sig.waitFor("DownloadFinished");
    REQUIRE(done);
    CHECK(done->args[2] == "failure");
    CHECK(contains(done->args[3], "SHA-256 mismatch"));
    feedback(env, id, "closed", "failure", 0, 0, {done->args[3]});
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "ERROR"); }));
}

TEST_CASE("cancel before the download is accepted")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "a.bin", 1000);
    const std::string id = deploy(env, {"a.bin"});
    REQUIRE(sig.waitFor("DeploymentRequested"));
    env.cloud.admin("POST", "/admin/actions/" + id, {{"cancel", true}});
    auto c = sig.waitFor("CancelRequested");
    REQUIRE(c);
    CHECK(c->args[0] == id);
    feedback(env, id, "closed", "success", 0, 0, {"cancelled before download"});
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "CANCELED"); }));
    CHECK(action(env, id)["feedback"][0]["kind"] == "cancelAction");
}

TEST_CASE("cancel during the download is accepted and aborts the download")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "c.bin", 2 * 1024 * 1024);
    const std::string id = deploy(env, {"c.bin"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    env.cloud.admin("POST", "/admin/faults", {{"throttle_bps", 200000}});
    auto fd = download(env, id, firstArtifact(*dep));
    // During the download: bytes flow (hawkBit serves no artifact of an action being cancelled).
    REQUIRE(CloudEnv::waitUntil([&] { return env.uintProp("DownloadProgress") > 0; }));
    env.cloud.admin("POST", "/admin/actions/" + id, {{"cancel", true}});
    REQUIRE(sig.waitFor("CancelRequested"));
    feedback(env, id, "canceled", "success");
    auto done = sig.waitFor("DownloadFinished");
    REQUIRE(done);
    CHECK(done->args[2] == "cancelled");
    std::string data = readFd(fd.get(), 10s);
    CHECK(data.size() < 2u * 1024 * 1024);
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "CANCELED"); }));
}

TEST_CASE("cancel during the install is rejected and the action goes on to success")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "i.bin", 1000);
    const std::string id = deploy(env, {"i.bin"});
    REQUIRE(sig.waitFor("DeploymentRequested"));
    feedback(env, id, "proceeding", "none", 2, 3, {"installing"});
    REQUIRE(CloudEnv::waitUntil([&] { return action(env, id)["feedback"].size() == 1; }));
    env.cloud.admin("POST", "/admin/actions/" + id, {{"cancel", true}});
    REQUIRE(sig.waitFor("CancelRequested"));
    feedback(env, id, "rejected", "none", 0, 0, {"installing, cannot cancel"});
    REQUIRE(CloudEnv::waitUntil([&] { return action(env, id).value("cancel_rejected", false); }));
    CHECK(actionStatus(env, id, "RUNNING"));
    feedback(env, id, "closed", "success");
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "FINISHED"); }));
}

TEST_CASE("a download-only action is reported downloaded and not installed")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "d.bin", 5000);
    const std::string id = deploy(env, {"d.bin"}, {{"update", "skip"}, {"download", "forced"}});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    json d = json::parse(dep->args[1]);
    CHECK(d["download_only"] == true);
    CHECK(d["install_allowed"] == false);
    auto fd = download(env, id, firstArtifact(*dep));
    CHECK(readFd(fd.get()).size() == 5000u);
    feedback(env, id, "downloaded", "success");
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "DOWNLOADED"); }));
}

TEST_CASE("an unavailable maintenance window allows the download but not the install until it opens")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "m.bin", 5000);
    const std::string id = deploy(env, {"m.bin"}, {{"maintenanceWindow", "unavailable"}, {"update", "forced"}});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    json d = json::parse(dep->args[1]);
    CHECK(d["maintenance_window"] == "unavailable");
    CHECK(d["install_allowed"] == false);
    auto fd = download(env, id, firstArtifact(*dep));
    CHECK(readFd(fd.get()).size() == 5000u);
    feedback(env, id, "downloaded", "none");
    pollAndWait(env);
    CHECK(sig.count("DeploymentRequested") == 1); // unchanged deployment: not announced again
    env.cloud.admin("POST", "/admin/actions/" + id, {{"maintenanceWindow", "available"}});
    auto again = sig.waitFor("DeploymentRequested", 2);
    REQUIRE(again);
    json d2 = json::parse(again->args[1]);
    CHECK(d2["maintenance_window"] == "available");
    CHECK(d2["install_allowed"] == true);
}

TEST_CASE("429 and 503 answers back off with jitter, honour Retry-After, and cause no request storm")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    env.cloud.admin("POST", "/admin/faults", {{"status", 503}, {"status_count", 1000}});
    env.cloud.admin("POST", "/admin/reset-log");
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "disconnected"; }));
    std::this_thread::sleep_for(4s);
    auto reqs = env.requests("/controller/v1/dev-01");
    // base 200 ms, cap 2 s: 200, 400, 800, 1600, 2000 … at most about 6 in 4 s.
    CHECK(reqs.size() >= 3);
    CHECK(reqs.size() <= 8);
    CHECK(contains(env.stringProp("LastError"), "503"));

    env.cloud.admin("POST", "/admin/faults", {{"status", 429}, {"status_count", 1000}, {"retry_after", 2}});
    env.cloud.admin("POST", "/admin/reset-log");
    std::this_thread::sleep_for(4100ms);
    reqs = env.requests("/controller/v1/dev-01");
    // Retry-After: 2 → at most one request per 2 s.
    CHECK(reqs.size() <= 3);
    for (std::size_t i = 1; i < reqs.size(); ++i) {
        CHECK(reqs[i]["time"].get<double>() - reqs[i - 1]["time"].get<double>() >= 1.9);
    }
    env.cloud.admin("POST", "/admin/faults", json::object());
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
}

TEST_CASE("feedback for a closed action gets 410 and ends that action's queue, others are delivered")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "x.bin", 100);
    const std::string id = deploy(env, {"x.bin"});
    REQUIRE(sig.waitFor("DeploymentRequested"));
    feedback(env, id, "closed", "success");
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "FINISHED"); }));
    feedback(env, id, "proceeding", "none", 0, 0, {"late"});
    feedback(env, id, "closed", "failure", 0, 0, {"late too"});
    REQUIRE(CloudEnv::waitUntil([&] {
        int gone = 0;
        for (const auto& r : env.requests("/deploymentBase/" + id + "/feedback")) {
            gone += r["status"] == 410 ? 1 : 0;
        }
        return gone == 1; // the second message was dropped with the first 410
    }));
    const std::string id2 = deploy(env, {"x.bin"});
    REQUIRE(sig.waitFor("DeploymentRequested", 2));
    feedback(env, id2, "closed", "success");
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id2, "FINISHED"); }));
    CHECK(action(env, id)["feedback"].size() == 1);
    CHECK(contains(env.clientLog(), "410"));
}

TEST_CASE("feedback given while the server is unreachable is delivered in order after reconnecting")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "q.bin", 100);
    const std::string id = deploy(env, {"q.bin"});
    REQUIRE(sig.waitFor("DeploymentRequested"));
    env.cloud.admin("POST", "/admin/faults", {{"drop_count", 100000}});
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "disconnected"; }));
    for (int i = 1; i <= 5; ++i) {
        feedback(env, id, "proceeding", "none", static_cast<std::uint32_t>(i), 6, {"step " + std::to_string(i)});
    }
    feedback(env, id, "closed", "success", 6, 6, {"done"});
    CHECK(fs::exists(env.stack.root() + "/var/lib/mbl/cloud/feedback-queue.json"));
    // Another attempt of the device fails after the feedback was queued: nothing got through.
    auto dropped = [&] {
        std::size_t n = 0;
        for (const auto& r : env.requests("/controller/v1/dev-01")) {
            n += r["status"] == 0 ? 1 : 0;
        }
        return n;
    };
    const std::size_t drops = dropped();
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return dropped() > drops; }));
    CHECK(action(env, id)["feedback"].empty());
    env.cloud.admin("POST", "/admin/faults", json::object());
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "FINISHED"); }, 30s));
    auto fb = action(env, id)["feedback"];
    REQUIRE(fb.size() == 6);
    for (int i = 0; i < 5; ++i) {
        CHECK(fb[i]["progress"]["cnt"] == i + 1);
    }
    CHECK(fb[5]["execution"] == "closed");
}

TEST_CASE("queued feedback survives a restart of the cloud client")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "r.bin", 100);
    const std::string id = deploy(env, {"r.bin"});
    REQUIRE(sig.waitFor("DeploymentRequested"));
    env.cloud.admin("POST", "/admin/faults", {{"drop_count", 100000}});
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "disconnected"; }));
    feedback(env, id, "closed", "success", 0, 0, {"before restart"});
    env.stack.kill("cloud-client");
    env.cloud.admin("POST", "/admin/faults", json::object());
    env.startClient();
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "FINISHED"); }, 30s));
}

TEST_CASE("an ISO-8601 poll sleep is honoured")
{
    CloudEnv env;
    env.cloud.admin("POST", "/admin/config", {{"sleep", "PT3S"}});
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return env.uintProp("PollInterval") == 3; }));
    env.cloud.admin("POST", "/admin/config", {{"sleep", "PT36H"}});
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return env.uintProp("PollInterval") == 36 * 3600; }));
}

TEST_CASE("bad server documents are refused with a clear error and the client keeps running")
{
    CloudEnvOptions o;
    o.config = {{"http", {{"max_body_bytes", 4096}}}};
    CloudEnv env(o);
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    struct Case {
        json fault;
        std::string expect;
    };
    const std::vector<Case> cases = {
        {{{"poll_body", "{\"config\": {\"polling\": "}}, "malformed JSON"},
        {{{"poll_body", "{\"config\": {\"polling\": {\"sleep\": 30}}}"}}, "not a string"},
        {{{"poll_body", "{\"config\": {\"polling\": {\"sleep\": \"25:99:00\"}}}"}}, "above 59"},
        {{{"poll_body", "{\"config\": {}, \"_links\": \"x\"}"}}, "_links"},
        {{{"poll_body", "{\"pad\": \"" + std::string(10000, 'x') + "\"}"}}, "larger than 4096"},
        {{{"redirect_loop", true}}, "too many redirects"},
    };
    for (const auto& c : cases) {
        INFO(c.fault.dump().substr(0, 100));
        env.cloud.admin("POST", "/admin/faults", c.fault);
        pollNow(env);
        CHECK(CloudEnv::waitUntil([&] { return contains(env.stringProp("LastError"), c.expect); }, 10s));
        CHECK(env.stack.running("cloud-client"));
    }
    env.cloud.admin("POST", "/admin/faults", json::object());
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
}

TEST_CASE("an http:// link or a link to another host is refused and no credentials are sent there")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "l.bin", 100);
    env.cloud.admin("POST", "/admin/config", {{"link_base", "http://localhost:1"}});
    deploy(env, {"l.bin"});
    pollNow(env);
    CHECK(CloudEnv::waitUntil([&] { return contains(env.stringProp("LastError"), "not https"); }, 10s));
    env.cloud.admin("POST", "/admin/config", {{"link_base", env.cloud.wrongHostUrl()}});
    pollNow(env);
    CHECK(CloudEnv::waitUntil([&] { return contains(env.stringProp("LastError"), "another host"); }, 10s));
    CHECK(sig.count("DeploymentRequested") == 0);
    // Nothing but polls reached the server (the other-host link is the same nginx on another port).
    for (const auto& r : env.requests("/deploymentBase")) {
        FAIL("followed a refused link: " << r.dump());
    }
}

TEST_CASE("a server certificate from the wrong CA or for the wrong host name is refused")
{
    SECTION("wrong CA")
    {
        CloudEnvOptions o;
        o.startClient = false;
        CloudEnv env(o);
        env.writeSpec(env.provisioning("mtls", "", env.cloud.wrongCaUrl()));
        env.startClient();
        REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "disconnected"; }));
        CHECK(contains(env.stringProp("LastError"), "certificate"));
        CHECK(env.requests("/controller").empty());
    }
    SECTION("wrong host name")
    {
        CloudEnvOptions o;
        o.startClient = false;
        CloudEnv env(o);
        env.writeSpec(env.provisioning("mtls", "", env.cloud.wrongHostUrl()));
        env.startClient();
        REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "disconnected"; }));
        CHECK(contains(env.stringProp("LastError"), "certificate"));
        CHECK(env.requests("/controller").empty());
    }
}

TEST_CASE("without provisioning the state is unprovisioned, and provisioning later connects")
{
    CloudEnvOptions o;
    o.startClient = false;
    CloudEnv env(o);
    env.writeSpec(nullptr);
    env.startClient();
    REQUIRE(CloudEnv::waitUntil([&] { return contains(env.stringProp("LastError"), "NotProvisioned"); }));
    CHECK(env.stringProp("ConnectionState") == "unprovisioned");
    env.writeSpec(env.provisioning("mtls", "", env.cloud.serverUrl()));
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
}

TEST_CASE("a download asked for before the client has a session says why, not that the device is unprovisioned")
{
    // Seen on the QEMU device: the coordinator, resuming after a power cut,
    // asked before the cloud client had connected, and heard "(no
    // provisioning)" from a provisioned device. Here the session cannot be
    // made because the identity service is gone.
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    env.stack.stop("cloud-client");
    env.stack.stop("device-identity");
    env.startClient();
    REQUIRE(CloudEnv::waitUntil([&] { return contains(env.stringProp("LastError"), "DeviceIdentity1"); }));
    std::string err;
    try {
        download(env, "1", json{{"url", env.cloud.serverUrl() + "/artifact"}, {"size", 1}, {"sha256", std::string(64, 'a')}});
    } catch (const sdbus::Error& e) {
        err = e.getName() + ": " + e.getMessage();
    }
    INFO(err);
    CHECK(contains(err, "org.mbl.Error.NotProvisioned")); // what the coordinator waits out and retries
    CHECK(contains(err, "no session with the server yet"));
    CHECK(contains(err, "DeviceIdentity1"));
    CHECK_FALSE(contains(err, "no provisioning"));
}

TEST_CASE("bad method arguments are refused with InvalidArgument")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    auto err = [&](const std::function<void()>& f) -> std::string {
        try {
            f();
            return "";
        } catch (const sdbus::Error& e) {
            return e.getName() + ": " + e.getMessage();
        }
    };
    CHECK(contains(err([&] { feedback(env, "1", "finished", "success"); }), "InvalidArgument"));
    CHECK(contains(err([&] { feedback(env, "1", "closed", "great"); }), "InvalidArgument"));
    CHECK(contains(err([&] { feedback(env, "../1", "closed", "success"); }), "InvalidArgument"));
    CHECK(contains(err([&] { feedback(env, "1", "closed", "success", 0, 0, std::vector<std::string>(49, "d")); }),
                   "48"));
    CHECK(contains(err([&] { download(env, "1", json{{"url", "x"}}); }), "InvalidArgument"));
    CHECK(contains(err([&] { download(env, "1", json::parse("[1]")); }), "InvalidArgument"));
    CHECK(contains(err([&] {
                       download(env, "1", json{{"url", "https://evil.example.com/a"}, {"size", 1},
                                               {"sha256", std::string(64, 'a')}});
                   }),
                   "another host"));
}

TEST_CASE("mblctl cloud shows status, polls and lists attributes")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    const std::string mblctl = buildRoot() + "/services/mblctl/mblctl";
    auto st = env.stack.runTool({mblctl, "cloud", "status"});
    INFO(st.out << st.err);
    CHECK(st.status.code == 0);
    CHECK(contains(st.out, "connected"));
    CHECK(contains(st.out, env.cloud.serverUrl()));
    auto js = env.stack.runTool({mblctl, "--json", "cloud", "status"});
    auto j = json::parse(js.out, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j["ConnectionState"] == "connected");
    CHECK(j["PollInterval"] == 2);
    auto poll = env.stack.runTool({mblctl, "cloud", "poll"}, std::string("mbl-test-admin"));
    CHECK(poll.status.code == 0);
    auto denied = env.stack.runTool({mblctl, "cloud", "poll"}, std::string("mbl-test-user"));
    CHECK(denied.status.code != 0);
    CHECK(contains(denied.err, "ccess"));
    auto attrs = env.stack.runTool({mblctl, "cloud", "attributes"});
    CHECK(contains(attrs.out, "device_id"));
    CHECK(contains(attrs.out, env.deviceId));
}

TEST_CASE("with hawkBit's confirmation flow on, the device confirms an action at once and the deployment follows")
{
    CloudEnv env; // cloud.json "confirmation" defaults to "auto"
    SignalRecorder sig;
    makeArtifact(env, "c.bin", 1000);
    env.cloud.admin("POST", "/admin/config", {{"confirmation_required", true}, {"sleep", "00:01:00"}});
    const std::string id = deploy(env, {"c.bin"});
    REQUIRE(action(env, id)["status"] == "WAIT_FOR_CONFIRMATION");
    pollNow(env);
    // Announced without waiting out the one-minute poll sleep.
    auto dep = sig.waitFor("DeploymentRequested", 1, 10s);
    REQUIRE(dep);
    CHECK(dep->args[0] == id);
    CHECK(firstArtifact(*dep)["filename"] == "c.bin");
    auto a = action(env, id);
    CHECK(a["status"] == "RUNNING");
    REQUIRE(a["feedback"].size() == 1);
    CHECK(a["feedback"][0]["kind"] == "confirmationBase");
    CHECK(a["feedback"][0]["execution"] == "confirmed");
    CHECK(sig.count("ConfirmationRequested") == 0);
}

TEST_CASE("with confirmation manual, an action waits for Confirm: denied leaves it waiting, confirmed brings it")
{
    CloudEnvOptions o;
    o.config = {{"confirmation", "manual"}};
    CloudEnv env(o);
    SignalRecorder sig;
    makeArtifact(env, "m.bin", 1000);
    env.cloud.admin("POST", "/admin/config", {{"confirmation_required", true}});
    const std::string id = deploy(env, {"m.bin"});
    pollNow(env);
    auto ask = sig.waitFor("ConfirmationRequested");
    REQUIRE(ask);
    CHECK(ask->args[0] == id);
    CHECK(json::parse(ask->args[1])["chunks"][0]["artifacts"][0]["filename"] == "m.bin");
    const std::string mblctl = buildRoot() + "/services/mblctl/mblctl";
    auto list = env.stack.runTool({mblctl, "cloud", "confirmations"});
    CHECK(contains(list.out, "action " + id + ":"));

    // Nobody but root, mbl-admin and the coordinator may answer; an unknown action is NotFound.
    auto user = env.stack.runTool({mblctl, "cloud", "confirm", id}, std::string("mbl-test-user"));
    CHECK(user.status.code != 0);
    CHECK(contains(user.err, "ccess"));
    auto unknown = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                     "Confirm", "sbas", "999", "true", "0"});
    CHECK_FALSE(unknown.status.success());
    CHECK(contains(unknown.err, "not waiting for confirmation"));

    auto deny = env.stack.runTool({mblctl, "cloud", "deny", id, "not now: the line is running"},
                                  std::string("mbl-test-admin"));
    INFO(deny.out << deny.err);
    REQUIRE(deny.status.code == 0);
    REQUIRE(CloudEnv::waitUntil([&] { return action(env, id)["feedback"].size() == 1; }));
    auto fb = action(env, id)["feedback"][0];
    CHECK(fb["execution"] == "denied");
    CHECK(fb["details"][0] == "not now: the line is running");
    CHECK(action(env, id)["status"] == "WAIT_FOR_CONFIRMATION");
    pollAndWait(env);
    CHECK(sig.count("DeploymentRequested") == 0);
    CHECK(sig.count("ConfirmationRequested") == 1); // asked once, not at every poll

    // The operator asks again (a new hash of the action) and this time it is confirmed.
    env.cloud.admin("POST", "/admin/actions/" + id, {{"maintenanceWindow", "available"}});
    auto again = sig.waitFor("ConfirmationRequested", 2);
    REQUIRE(again);
    auto ok = env.stack.runTool({mblctl, "cloud", "confirm", id});
    REQUIRE(ok.status.code == 0);
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    CHECK(dep->args[0] == id);
    CHECK(action(env, id)["status"] == "RUNNING");
}

TEST_CASE("a user that is neither privileged nor an app may not write attributes, report feedback or download; the "
          "admin group may write attributes")
{
    CloudEnv env;
    // The client adds the fixed attribute device_id once it has a session: wait for it,
    // or `before` may miss it and differ from `after` for that reason alone.
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    auto before = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                    "GetAttributes"});
    REQUIRE(before.status.success());
    // The bus lets anyone call SetAttributes (apps publish their own); the service
    // asks who the caller is: not an app (no container manager knows the uid).
    auto set = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                 "SetAttributes", "sa{ss}", "app2", "1", "k", "v"},
                                std::string("mbl-test-user"));
    INFO(set.err);
    CHECK_FALSE(set.status.success());
    // No container manager runs here: nobody can say the uid is an app's.
    CHECK(contains(set.err, "cannot tell which app uid " + std::to_string(::getpwnam("mbl-test-user")->pw_uid)));
    auto after = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                   "GetAttributes"});
    CHECK(after.out == before.out);

    auto admin = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                   "SetAttributes", "sa{ss}", "app2", "1", "k", "v"},
                                  std::string("mbl-test-admin"));
    INFO(admin.err);
    CHECK(admin.status.success());
    auto attrs = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                   "GetAttributes"});
    CHECK(contains(attrs.out, "app2.k"));

    auto fb = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                "ReportFeedback", "sssuuas", "1", "closed", "success", "0", "0", "0"},
                               std::string("mbl-test-user"));
    CHECK_FALSE(fb.status.success());
    CHECK(contains(fb.err, "ccess denied"));
}

TEST_CASE("the cloud client stops cleanly and quickly on SIGTERM in the middle of a download")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "t.bin", 2 * 1024 * 1024);
    const std::string id = deploy(env, {"t.bin"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    env.cloud.admin("POST", "/admin/faults", {{"throttle_bps", 100000}});
    auto fd = download(env, id, firstArtifact(*dep));
    // In the middle of it: bytes are flowing.
    REQUIRE(CloudEnv::waitUntil([&] { return env.uintProp("DownloadProgress") > 0; }));
    auto [status, took] = env.stack.stop("cloud-client");
    INFO(env.clientLog());
    CHECK(status.success()); // also: no sanitizer report at exit
    CHECK(took < 3s);
    CHECK(readFd(fd.get(), 5s).size() < 2u * 1024 * 1024);
}

namespace {

std::string getSettings(CloudEnv& env)
{
    std::string s;
    env.proxy().callMethod("GetSettings").onInterface("org.mbl.CloudClient1").storeResultsTo(s);
    return s;
}

void applySettings(CloudEnv& env, const std::string& s)
{
    env.proxy().callMethod("ApplySettings").onInterface("org.mbl.CloudClient1").withArguments(s);
}

std::size_t countLines(const std::string& text, const std::string& needle)
{
    std::size_t n = 0;
    for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
        ++n;
    }
    return n;
}

} // namespace

TEST_CASE("over-the-air settings override the server's poll sleep at once, persist, and revert when left out")
{
    CloudEnv env;
    SignalRecorder sig;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    env.cloud.admin("POST", "/admin/config", {{"sleep", "01:00:00"}});
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return env.uintProp("PollInterval") == 3600; }));
    CHECK(getSettings(env) == "{}");

    // The worker is now asleep for an hour; the override takes effect on that very wait.
    const std::size_t before = env.requests("/controller/v1/dev-01").size();
    const std::size_t changesBefore = sig.count("PropertiesChanged");
    applySettings(env, R"({"poll_interval_sec": 1, "log_level": "debug"})");
    CHECK(env.uintProp("PollInterval") == 1);
    REQUIRE(sig.waitFor("PropertiesChanged", changesBefore + 1, 5s));
    bool announced = false;
    std::size_t seen = 0;
    for (const auto& s : sig.all()) {
        if (s.name == "PropertiesChanged" && ++seen > changesBefore) {
            announced = announced || std::find(s.args.begin(), s.args.end(), "PollInterval") != s.args.end();
        }
    }
    CHECK(announced);
    REQUIRE(CloudEnv::waitUntil([&] { return env.requests("/controller/v1/dev-01").size() >= before + 3; }, 10s));
    // The server's sleep does not replace the override.
    CHECK(env.uintProp("PollInterval") == 1);
    // log_level debug: each poll is logged.
    REQUIRE(CloudEnv::waitUntil([&] { return countLines(env.clientLog(), "poll answered HTTP") >= 2; }, 10s));

    const json saved = json::parse(getSettings(env));
    CHECK(saved == json{{"poll_interval_sec", 1}, {"log_level", "debug"}});
    auto onDisk = fs::readFile(env.stack.root() + "/var/lib/mbl/cloud/settings.json");
    REQUIRE(onDisk);
    CHECK(json::parse(*onDisk) == saved);

    // ApplySettings(GetSettings()) changes nothing.
    applySettings(env, getSettings(env));
    CHECK(json::parse(getSettings(env)) == saved);
    CHECK(env.uintProp("PollInterval") == 1);

    // Survives a restart, in effect before the first poll.
    env.stack.stop("cloud-client");
    env.startClient();
    CHECK(json::parse(getSettings(env)) == saved);
    CHECK(env.uintProp("PollInterval") == 1);
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));

    // Replace semantics: the poll interval is left out, so the server's sleep rules again;
    // log_level info: polls are no longer logged.
    applySettings(env, R"({"log_level": "info"})");
    CHECK(getSettings(env) == R"({"log_level":"info"})");
    CHECK(env.uintProp("PollInterval") == 3600);
    const std::size_t logged = countLines(env.clientLog(), "poll answered HTTP");
    // The poll count is read before asking for the poll (read after, the poll may
    // already be in it, and the wait would be for one that never comes), and the
    // check follows a whole cycle of the client, not a guessed time.
    pollAndWait(env);
    CHECK(countLines(env.clientLog(), "poll answered HTTP") == logged);

    applySettings(env, "{}");
    CHECK(getSettings(env) == "{}");
    // The restored state keeps the hour-long sleep: the next poll is planned that far away.
    CHECK(env.uintProp("NextPoll") >= static_cast<std::uint64_t>(std::time(nullptr)) + 3000);
}

TEST_CASE("bad over-the-air settings are refused with InvalidArgument and change nothing")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    applySettings(env, R"({"poll_interval_sec": 5})");
    REQUIRE(env.uintProp("PollInterval") == 5);
    const std::string path = env.stack.root() + "/var/lib/mbl/cloud/settings.json";
    const auto fileBefore = fs::readFile(path);
    REQUIRE(fileBefore);
    const std::vector<std::pair<std::string, std::string>> bad = {
        {R"({"poll_interval_sec": 0})", "between 1 and 2592000"},
        {R"({"poll_interval_sec": 2592001})", "between 1 and 2592000"},
        {R"({"poll_interval_sec": -1})", "between 1 and 2592000"},
        {R"({"poll_interval_sec": "60"})", "integer"},
        {R"({"poll_interval_sec": 1.5})", "integer"},
        {R"({"log_level": "verbose"})", "log_level"},
        {R"({"log_level": null})", "log_level"},
        {R"({"poll_interval_sec": 60, "colour": "blue"})", "unknown key 'colour'"},
        {R"(["poll_interval_sec", 60])", "object"},
        {R"({"poll_interval_sec": 6)", "JSON"},
    };
    for (const auto& [text, why] : bad) {
        INFO(text);
        try {
            applySettings(env, text);
            FAIL("accepted");
        } catch (const sdbus::Error& e) {
            CHECK(e.getName() == "org.mbl.Error.InvalidArgument");
            CHECK(contains(e.getMessage(), why));
        }
        CHECK(getSettings(env) == R"({"poll_interval_sec":5})");
        CHECK(env.uintProp("PollInterval") == 5);
    }
    CHECK(fs::readFile(path).value() == *fileBefore);
    CHECK(env.stack.running("cloud-client"));
}

TEST_CASE("settings may be read by anyone and changed by root, mbl-admin and the coordinator user only")
{
    CloudEnv env;
    const std::vector<std::string> apply = {"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1",
                                            "org.mbl.CloudClient1", "ApplySettings", "s"};
    auto as = [&](const std::string& user, const std::string& doc) {
        auto args = apply;
        args.push_back(doc);
        return env.stack.busctl(args, user);
    };
    auto denied = as("mbl-test-user", R"({"poll_interval_sec": 7})");
    CHECK_FALSE(denied.status.success());
    CHECK(contains(denied.err, "ccess denied"));
    CHECK(getSettings(env) == "{}");
    auto read = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                  "GetSettings"},
                                 std::string("mbl-test-user"));
    CHECK(read.status.success());
    CHECK(as("mbl-test-admin", R"({"poll_interval_sec": 8})").status.success());
    CHECK(getSettings(env) == R"({"poll_interval_sec":8})");
    CHECK(as("mbl-coordinator", R"({"poll_interval_sec": 9})").status.success());
    CHECK(getSettings(env) == R"({"poll_interval_sec":9})");

    // mblctl cloud settings [JSON]
    const std::string mblctl = buildRoot() + "/services/mblctl/mblctl";
    auto set = env.stack.runTool({mblctl, "--json", "cloud", "settings", R"({"log_level":"notice"})"},
                                 std::string("mbl-test-admin"));
    INFO(set.out << set.err);
    CHECK(set.status.code == 0);
    CHECK(json::parse(set.out, nullptr, false) == json{{"log_level", "notice"}});
    auto show = env.stack.runTool({mblctl, "cloud", "settings"}, std::string("mbl-test-user"));
    CHECK(show.status.code == 0);
    CHECK(contains(show.out, "\"log_level\": \"notice\""));
    auto refused = env.stack.runTool({mblctl, "cloud", "settings", R"({"poll_interval_sec":0})"});
    CHECK(refused.status.code != 0);
    CHECK(contains(refused.err, "poll_interval_sec"));
}

TEST_CASE("the installed action comes from installedBase: exposed as InstalledActionId and its deployment")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "inst.bin", 1000);
    const std::string id = deploy(env, {"inst.bin"});
    REQUIRE(sig.waitFor("DeploymentRequested"));
    CHECK(env.stringProp("InstalledActionId").empty());
    feedback(env, id, "closed", "success", 1, 1, {"installed"});
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "FINISHED"); }));
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("InstalledActionId") == id; }));
    CHECK_FALSE(env.requests("/installedBase/" + id).empty());
    std::string installed;
    env.proxy().callMethod("GetInstalledDeployment").onInterface("org.mbl.CloudClient1").storeResultsTo(installed);
    const json dep = json::parse(installed, nullptr, false);
    REQUIRE(dep.is_object());
    CHECK(dep["action_id"] == id);
    CHECK(dep["chunks"][0]["artifacts"][0]["filename"] == "inst.bin");
    // Anyone may read it (as the properties).
    auto asUser = env.stack.busctl({"call", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
                                    "GetInstalledDeployment"},
                                   std::string("mbl-test-user"));
    CHECK(asUser.status.success());
    // Polls go on; the closed action is not announced again.
    const std::size_t polls = env.requests("/controller/v1/dev-01").size();
    REQUIRE(CloudEnv::waitUntil([&] { return env.requests("/controller/v1/dev-01").size() >= polls + 2; }, 10s));
    CHECK(sig.count("DeploymentRequested") == 1);
}

TEST_CASE("an action closed while offline is not announced again after a restart")
{
    CloudEnv env;
    makeArtifact(env, "off.bin", 100);
    std::string id;
    {
        SignalRecorder sig;
        id = deploy(env, {"off.bin"});
        REQUIRE(sig.waitFor("DeploymentRequested"));
    }
    env.cloud.admin("POST", "/admin/faults", {{"drop_count", 100000}});
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "disconnected"; }));
    feedback(env, id, "closed", "success", 0, 0, {"installed while offline"});
    env.stack.kill("cloud-client");
    env.cloud.admin("POST", "/admin/faults", json::object());
    SignalRecorder after;
    env.startClient();
    // The first poll after the restart still carries the deploymentBase (the closing
    // feedback is delivered right after it): it must not reach the coordinator again.
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "FINISHED"); }, 30s));
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("InstalledActionId") == id; }));
    pollAndWait(env);
    CHECK(after.count("DeploymentRequested") == 0);
    CHECK(contains(env.clientLog(), "already closed on this device"));
}

TEST_CASE("a coordinator that starts after a deployment was announced hears it again; an unchanged document is not "
          "re-announced otherwise")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "fw.bundle", 1024);
    const std::string id = deploy(env, {"fw.bundle"});
    // Announced while nobody owns org.mbl.Coordinator1: the signal reached no coordinator.
    auto first = sig.waitFor("DeploymentRequested");
    REQUIRE(first);
    CHECK(first->args[0] == id);
    pollAndWait(env);
    CHECK(sig.count("DeploymentRequested") == 1);

    // The coordinator starts (after a crash, an upgrade, a slow boot): it is told at once.
    REQUIRE(env.stack.start("coordinator"));
    auto again = sig.waitFor("DeploymentRequested", 2);
    REQUIRE(again);
    CHECK(again->args[0] == id);
    CHECK(json::parse(again->args[1]) == json::parse(first->args[1]));
    CHECK(contains(env.clientLog(), "the coordinator (re)started; open actions are announced again"));
}
