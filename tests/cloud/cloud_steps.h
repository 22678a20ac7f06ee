#pragma once
// Steps the cloud integration tests share: artifacts and deployments on the DDI
// test server, and the cloud client's methods as a caller uses them.

#include "cloud_env.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace mbl::test {

inline bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

// Creates an artifact of `size` pseudo-random bytes on the server; returns its sha256.
inline std::string makeArtifact(CloudEnv& env, const std::string& name, std::size_t size, std::uint32_t seed = 2463534242u)
{
    std::string data(size, '\0');
    std::uint32_t x = seed;
    for (auto& c : data) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c = static_cast<char>(x & 0xff);
    }
    const std::string path = env.cloud.dir() + "/artifacts/" + name;
    REQUIRE(fs::writeFileAtomic(path, data, 0644));
    auto r = env.cloud.admin("POST", "/admin/artifacts", {{"name", name}, {"path", path}});
    REQUIRE(r["_status"] == 200);
    return crypto::sha256Hex(data);
}

// One chunk ("os", rootfs 2.0) with these artifacts; `extra` is merged into the request.
inline std::string deploy(CloudEnv& env, const std::vector<std::string>& artifacts,
                          const nlohmann::json& extra = nlohmann::json::object())
{
    nlohmann::json body = {
        {"target", env.deviceId},
        {"download", "forced"},
        {"update", "forced"},
        {"chunks", nlohmann::json::array({{{"part", "os"}, {"name", "rootfs"}, {"version", "2.0"},
                                           {"artifacts", artifacts},
                                           {"metadata", nlohmann::json::array({{{"key", "slot"}, {"value", "b"}}})}}})}};
    body.merge_patch(extra);
    auto r = env.cloud.admin("POST", "/admin/deployments", body);
    REQUIRE(r["_status"] == 200);
    return r["id"];
}

inline sdbus::UnixFd download(CloudEnv& env, const std::string& actionId, const nlohmann::json& artifact)
{
    sdbus::UnixFd fd;
    env.proxy()
        .callMethod("Download")
        .onInterface("org.mbl.CloudClient1")
        .withArguments(actionId, artifact.dump())
        .storeResultsTo(fd);
    return fd;
}

inline void feedback(CloudEnv& env, const std::string& actionId, const std::string& execution,
                     const std::string& result, std::uint32_t cnt = 0, std::uint32_t of = 0,
                     const std::vector<std::string>& details = {})
{
    env.proxy()
        .callMethod("ReportFeedback")
        .onInterface("org.mbl.CloudClient1")
        .withArguments(actionId, execution, result, cnt, of, details);
}

inline nlohmann::json action(CloudEnv& env, const std::string& id)
{
    return env.cloud.state()["actions"][id];
}

inline bool actionStatus(CloudEnv& env, const std::string& id, const std::string& status)
{
    return action(env, id)["status"] == status;
}

inline void pollNow(CloudEnv& env)
{
    env.proxy().callMethod("PollNow").onInterface("org.mbl.CloudClient1");
}

inline nlohmann::json firstArtifact(const Signal& s)
{
    return nlohmann::json::parse(s.args[1])["chunks"][0]["artifacts"][0];
}

// How many polls the server has answered so far (GET of the controller base).
inline std::size_t pollCount(CloudEnv& env)
{
    std::size_t n = 0;
    for (const auto& r : env.requests("/controller/v1/" + env.deviceId)) {
        const std::string path = r["path"];
        n += r["method"] == "GET" && path.size() >= env.deviceId.size() &&
                     path.compare(path.size() - env.deviceId.size(), env.deviceId.size(), env.deviceId) == 0
                 ? 1
                 : 0;
    }
    return n;
}

// Waits until the client has gone through a whole poll cycle (poll, feedback,
// attributes, links) that began after this call, so a check that something did
// NOT happen sees what that cycle did. The worker runs one cycle at a time: once
// the server has the second poll after the call, the first one's cycle is over.
inline void pollAndWait(CloudEnv& env)
{
    const std::size_t polls = pollCount(env);
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return pollCount(env) > polls; }));
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return pollCount(env) > polls + 1; }));
}

} // namespace mbl::test
