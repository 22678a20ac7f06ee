#pragma once
// A test client of org.mbl.ContainerManager1 on the stack's private bus: its own
// connection with an event-loop thread, so InstallCompleted is caught while the
// test makes calls.

#include "harness.h"

#include "mbl/dbus/bus.h"
#include "mbl/fd.h"

#include <sdbus-c++/sdbus-c++.h>

#include <chrono>
#include <condition_variable>
#include <fcntl.h>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>

namespace mbl::test {

struct InstallResult {
    std::string op;
    std::string name;
    bool success = false;
    std::string errorName;
    std::string message;
};

class CmClient {
public:
    static constexpr const char* kBus = "org.mbl.ContainerManager1";
    static constexpr const char* kPath = "/org/mbl/ContainerManager1";
    static constexpr const char* kIface = "org.mbl.ContainerManager1";
    static constexpr const char* kAppIface = "org.mbl.ContainerManager1.App";

    CmClient()
    {
        conn_ = dbus::connectSystemBus();
        proxy_ = sdbus::createProxy(*conn_, kBus, kPath);
        proxy_->uponSignal("InstallCompleted")
            .onInterface(kIface)
            .call([this](const std::string& op, const std::string& name, bool ok, const std::string& err,
                         const std::string& msg) {
                std::lock_guard<std::mutex> lock(m_);
                done_[op] = InstallResult{op, name, ok, err, msg};
                cv_.notify_all();
            });
        proxy_->uponSignal("AppStateChanged").onInterface(kIface).call([this](const std::string& name, const std::string& state) {
            std::lock_guard<std::mutex> lock(m_);
            states_.push_back(name + "=" + state);
        });
        proxy_->finishRegistration();
        conn_->enterEventLoopAsync();
    }
    ~CmClient()
    {
        proxy_.reset();
        conn_->leaveEventLoop();
    }

    std::string installAsync(const std::string& archive, const std::string& options)
    {
        Fd fd{::open(archive.c_str(), O_RDONLY | O_CLOEXEC)};
        if (!fd) {
            throw std::runtime_error("cannot open " + archive);
        }
        std::string op;
        proxy_->callMethod("InstallApp")
            .onInterface(kIface)
            .withArguments(sdbus::UnixFd{fd.get()}, options)
            .storeResultsTo(op);
        return op;
    }

    InstallResult install(const std::string& archive, const std::string& options,
                          std::chrono::seconds timeout = std::chrono::seconds(120))
    {
        const std::string op = installAsync(archive, options);
        std::unique_lock<std::mutex> lock(m_);
        if (!cv_.wait_for(lock, timeout, [&] { return done_.count(op) != 0; })) {
            throw std::runtime_error("no InstallCompleted for " + op);
        }
        return done_[op];
    }

    void call(const std::string& method, const std::string& name)
    {
        proxy_->callMethod(method).onInterface(kIface).withTimeout(std::chrono::seconds(90)).withArguments(name);
    }
    void remove(const std::string& name, bool removeData)
    {
        proxy_->callMethod("RemoveApp").onInterface(kIface).withTimeout(std::chrono::seconds(90)).withArguments(name, removeData);
    }
    std::vector<sdbus::Struct<std::string, std::string, std::string>> list()
    {
        std::vector<sdbus::Struct<std::string, std::string, std::string>> out;
        proxy_->callMethod("ListApps").onInterface(kIface).storeResultsTo(out);
        return out;
    }
    std::string logs(const std::string& name, std::uint32_t lines = 0)
    {
        std::string out;
        proxy_->callMethod("GetLogs").onInterface(kIface).withArguments(name, lines).storeResultsTo(out);
        return out;
    }
    // Transactions (C3): ActivateTransaction, CommitTransaction, RollbackTransaction.
    void txn(const std::string& method, const std::string& id)
    {
        proxy_->callMethod(method).onInterface(kIface).withTimeout(std::chrono::seconds(120)).withArguments(id);
    }
    // The same without waiting for the reply (for a manager killed mid-way).
    void txnAsync(const std::string& method, const std::string& id)
    {
        (void)proxy_->callMethodAsync(method)
            .onInterface(kIface)
            .withTimeout(std::chrono::seconds(120))
            .withArguments(id)
            .uponReplyInvoke([](const sdbus::Error*) {});
    }
    std::string getTransaction(const std::string& id)
    {
        std::string out;
        proxy_->callMethod("GetTransaction").onInterface(kIface).withArguments(id).storeResultsTo(out);
        return out;
    }
    std::string getSettings()
    {
        std::string out;
        proxy_->callMethod("GetSettings").onInterface(kIface).storeResultsTo(out);
        return out;
    }
    void applySettings(const std::string& doc)
    {
        proxy_->callMethod("ApplySettings").onInterface(kIface).withTimeout(std::chrono::seconds(30)).withArguments(doc);
    }
    sdbus::Variant prop(const std::string& app, const std::string& property)
    {
        auto p = sdbus::createProxy(*conn_, kBus, std::string(kPath) + "/apps/" + app);
        return p->getProperty(property).onInterface(kAppIface);
    }
    std::string state(const std::string& app) { return prop(app, "State").get<std::string>(); }
    std::uint32_t pid(const std::string& app) { return prop(app, "Pid").get<std::uint32_t>(); }
    std::uint32_t appCount()
    {
        return proxy_->getProperty("AppCount").onInterface(kIface).get<std::uint32_t>();
    }

    // Polls `pred` until true or the timeout; returns its last value.
    static bool waitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(30))
    {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            try {
                if (pred()) {
                    return true;
                }
            } catch (const sdbus::Error&) {
                // the object may not exist yet
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        try {
            return pred();
        } catch (const sdbus::Error&) {
            return false;
        }
    }
    bool waitState(const std::string& app, const std::string& state,
                   std::chrono::milliseconds timeout = std::chrono::seconds(30))
    {
        return waitFor([&] { return this->state(app) == state; }, timeout);
    }
    bool waitLog(const std::string& app, const std::string& text,
                 std::chrono::milliseconds timeout = std::chrono::seconds(30))
    {
        return waitFor([&] { return logs(app).find(text) != std::string::npos; }, timeout);
    }
    std::vector<std::string> stateChanges()
    {
        std::lock_guard<std::mutex> lock(m_);
        return states_;
    }

private:
    std::unique_ptr<sdbus::IConnection> conn_;
    std::unique_ptr<sdbus::IProxy> proxy_;
    std::mutex m_;
    std::condition_variable cv_;
    std::map<std::string, InstallResult> done_;
    std::vector<std::string> states_;
};

} // namespace mbl::test
