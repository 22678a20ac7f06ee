#pragma once
// One integration-test world for the cloud client: the private bus (TestStack),
// the identity test double, the DDI test server behind real nginx with mutual
// TLS, and mbl-cloud-client itself running as mbl-cloud. Plus a signal recorder.

#include "cloud_fixture.h"
#include "harness.h"

#include <nlohmann/json.hpp>
#include <sdbus-c++/sdbus-c++.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace mbl::test {

struct Signal {
    std::string name;
    std::vector<std::string> args;
};

// Records the cloud client's signals on a connection of its own.
class SignalRecorder {
public:
    SignalRecorder();
    ~SignalRecorder();
    std::vector<Signal> all();
    // Waits for the n-th (1-based) signal called `name`; nullopt on timeout.
    std::optional<Signal> waitFor(const std::string& name, std::size_t n = 1,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(20));
    std::size_t count(const std::string& name);

private:
    void add(Signal s);
    std::unique_ptr<sdbus::IConnection> conn_;
    std::unique_ptr<sdbus::IProxy> proxy_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<Signal> signals_;
};

struct CloudEnvOptions {
    std::string authMode = "mtls"; // mtls, target-token, gateway-token
    std::string token;
    std::string serverUrl;          // default: the fixture's mTLS URL
    nlohmann::json config = nlohmann::json::object(); // merged into cloud.json
    bool startClient = true;
};

class CloudEnv {
public:
    explicit CloudEnv(const CloudEnvOptions& opts = {});
    ~CloudEnv();

    TestStack stack;
    CloudFixture cloud;
    const std::string deviceId = "dev-01";
    CloudFixture::DeviceCreds creds;

    void writeSpec(const nlohmann::json& provisioning);
    nlohmann::json provisioning(const std::string& authMode, const std::string& token, const std::string& url);
    void startClient();

    std::string stringProp(const std::string& name);
    std::uint64_t uintProp(const std::string& name);
    sdbus::IProxy& proxy();

    // Polls `pred` every 20 ms until true or timeout; returns its last value.
    static bool waitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(20));

    // DDI requests the server saw (method, path, status).
    std::vector<nlohmann::json> requests(const std::string& pathContains = "");

    std::string clientLog() { return stack.log("cloud-client"); }

private:
    std::string specPath_;
    Child identity_;
    std::unique_ptr<sdbus::IProxy> proxy_;
};

// Reads everything from fd (waiting up to timeout); returns the bytes read.
std::string readFd(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(60));

} // namespace mbl::test
