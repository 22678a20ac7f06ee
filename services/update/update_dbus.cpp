#include "update_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/log.h"
#include "mbl/strings.h"
#include "mbl_version.h"

#include <fcntl.h>

namespace mbl::update {

namespace {
constexpr std::size_t kMaxConcurrentInspects = 4;
}

UpdateBus::UpdateBus(sdbus::IConnection& conn, EventLoop& loop, UpdateEngine& engine)
    : AdaptorInterfaces(conn, "/org/mbl/Update1"), loop_(loop), engine_(engine)
{
    registerAdaptor();
}

UpdateBus::~UpdateBus()
{
    stopping_.store(true);
    for (auto& w : workers_) {
        if (w.thread.joinable()) {
            w.thread.join();
        }
    }
    alive_.reset();
    pendingInspects_.clear();
    unregisterAdaptor();
}

void UpdateBus::postToLoop(std::function<void()> fn)
{
    std::weak_ptr<bool> alive = alive_;
    loop_.post([alive, fn = std::move(fn)] {
        if (alive.lock()) {
            fn();
        }
    });
}

void UpdateBus::reapWorkers()
{
    for (auto it = workers_.begin(); it != workers_.end();) {
        if (it->done->load()) {
            it->thread.join();
            it = workers_.erase(it);
        } else {
            ++it;
        }
    }
}

void UpdateBus::startWorker(std::function<void()> fn)
{
    reapWorkers();
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread t([fn = std::move(fn), done] {
        fn();
        done->store(true);
    });
    workers_.push_back(Worker{std::move(t), done});
}

void UpdateBus::emitState(const std::vector<std::string>& props)
{
    try {
        std::vector<std::string> names(props.begin(), props.end());
        emitPropertiesChangedSignal(org::mbl::Update1_adaptor::INTERFACE_NAME, names);
    } catch (const sdbus::Error& e) {
        log::warning("cannot emit PropertiesChanged: " + e.getMessage());
    }
}

void UpdateBus::Inspect(sdbus::Result<std::string>&& result, sdbus::UnixFd bundle)
{
    dbus::guard([&] {
        reapWorkers();
        if (workers_.size() >= kMaxConcurrentInspects + 1) {
            throw dbus::toBusError(Error{ErrorCode::Busy, "too many bundle checks at once; retry shortly"});
        }
        const std::uint64_t id = nextInspect_++;
        pendingInspects_.emplace(id, std::move(result));
        auto fd = std::make_shared<sdbus::UnixFd>(std::move(bundle));
        startWorker([this, id, fd] {
            auto r = engine_.inspect(fd->get(), &stopping_);
            postToLoop([this, id, r = std::move(r)]() mutable {
                auto it = pendingInspects_.find(id);
                if (it == pendingInspects_.end()) {
                    return;
                }
                auto res = std::move(it->second);
                pendingInspects_.erase(it);
                try {
                    if (r) {
                        res.returnResults(*r);
                    } else {
                        res.returnError(dbus::toBusError(r.error()));
                    }
                } catch (const sdbus::Error& e) {
                    log::warning("cannot answer Inspect: " + e.getMessage());
                }
            });
        });
    });
}

std::string UpdateBus::Install(const sdbus::UnixFd& bundle, const std::map<std::string, sdbus::Variant>& options)
{
    return dbus::guard([&]() -> std::string {
        InstallOptions opts;
        for (const auto& [key, value] : options) {
            if (key == "arm") {
                if (!value.containsValueOfType<bool>()) {
                    throw dbus::toBusError(Error{ErrorCode::InvalidArgument, "install option 'arm' must be a boolean "
                                                                             "(b), not of type '" +
                                                                                 value.peekValueType() + "'"});
                }
                opts.arm = value.get<bool>();
            } else {
                throw dbus::toBusError(
                    Error{ErrorCode::InvalidArgument, "unknown install option '" + str::quotable(key) + "' (known: arm)"});
            }
        }
        if (!bundle.isValid()) {
            throw dbus::toBusError(Error{ErrorCode::InvalidArgument, "no bundle file descriptor"});
        }
        if (!engine_.tryBegin()) {
            throw dbus::toBusError(Error{ErrorCode::Busy, "an install (or commit) is already running (operation " +
                                                              operation_ + "); wait for its Completed signal"});
        }
        const std::string id = UpdateEngine::newOperationId();
        operation_ = id;
        progress_ = 0;
        emitState({"Operation", "Progress"});
        auto fd = std::make_shared<sdbus::UnixFd>(bundle);
        startWorker([this, id, fd, opts] {
            auto onProgress = [this](unsigned pct) {
                postToLoop([this, pct] {
                    progress_ = pct;
                    emitState({"Progress"});
                });
            };
            Status st = engine_.install(fd->get(), id, &stopping_, onProgress, opts);
            engine_.end();
            postToLoop([this, id, st] {
                operation_.clear();
                if (st) {
                    progress_ = 100;
                    log::notice("install " + id + " completed");
                } else {
                    log::warning("install " + id + " failed: " + st.error().describe());
                }
                emitState({"Operation", "Progress", "LastError", "ActiveSlot", "SlotStates"});
                try {
                    emitCompleted(id, st.ok(), st ? std::string() : st.error().name(),
                                  st ? std::string("installed") : st.error().message);
                } catch (const sdbus::Error& e) {
                    log::warning("cannot emit Completed: " + e.getMessage());
                }
            });
        });
        return id;
    });
}

void UpdateBus::mutate(sdbus::Result<>&& result, bool exclusive, const char* what, std::function<Status()> work,
                       std::vector<std::string> props)
{
    if (exclusive && !engine_.tryBegin()) {
        const std::string running = operation_.empty() ? std::string("a commit, mark-bad or arm")
                                                        : "install " + operation_;
        result.returnError(dbus::toBusError(
            Error{ErrorCode::Busy, std::string(what) + " refused: " + running + " is running; retry once it ends"}));
        return;
    }
    auto res = std::make_shared<sdbus::Result<>>(std::move(result));
    startWorker([this, exclusive, what, work = std::move(work), props = std::move(props), res] {
        Status st;
        try {
            st = work();
        } catch (const std::exception& e) {
            st = unexpected(ErrorCode::Failed, std::string(what) + ": " + e.what());
        }
        if (exclusive) {
            engine_.end();
        }
        postToLoop([this, st, props, res] {
            if (st) {
                emitState(props);
            }
            try {
                if (st) {
                    res->returnResults();
                } else {
                    res->returnError(dbus::toBusError(st.error()));
                }
            } catch (const sdbus::Error& e) {
                log::warning("cannot reply: " + e.getMessage());
            }
        });
    });
}

sdbus::UnixFd UpdateBus::OpenPayload(const std::string& operationId, const std::string& payloadName)
{
    return dbus::guard([&] {
        auto fd = dbus::unwrap(engine_.openPayload(operationId, payloadName));
        return sdbus::UnixFd{fd.release(), sdbus::adopt_fd};
    });
}

std::string UpdateBus::GetOperationManifest(const std::string& operationId)
{
    return dbus::guard([&] { return dbus::unwrap(engine_.operationManifest(operationId)); });
}

void UpdateBus::Arm(sdbus::Result<>&& result, std::string operationId)
{
    mutate(std::move(result), true, "Arm", [this, operationId] { return engine_.arm(operationId); },
           {"ActiveSlot", "SlotStates"});
}

void UpdateBus::Release(sdbus::Result<>&& result, std::string operationId)
{
    mutate(std::move(result), false, "Release", [this, operationId] { return engine_.release(operationId); },
           {"SlotStates"});
}

void UpdateBus::Commit(sdbus::Result<>&& result)
{
    mutate(std::move(result), true, "Commit", [this] { return engine_.commit(); },
           {"ActiveSlot", "SlotStates", "SecurityVersionFloor", "LastError", "FirmwareVersion"});
}

void UpdateBus::MarkBad(sdbus::Result<>&& result)
{
    mutate(std::move(result), true, "MarkBad", [this] { return engine_.markBad(); }, {"ActiveSlot", "SlotStates"});
}

std::string UpdateBus::Version()
{
    return MBL_VERSION;
}

std::string UpdateBus::Operation()
{
    return operation_;
}

uint32_t UpdateBus::Progress()
{
    return progress_;
}

std::string UpdateBus::LastError()
{
    return dbus::guard([&] { return engine_.snapshot().lastError; });
}

std::string UpdateBus::BootedSlot()
{
    return dbus::guard([&] { return engine_.snapshot().bootedSlot; });
}

std::string UpdateBus::ActiveSlot()
{
    return dbus::guard([&] { return engine_.snapshot().activeSlot; });
}

std::vector<sdbus::Struct<std::string, std::string, std::string, uint64_t>> UpdateBus::SlotStates()
{
    return dbus::guard([&] {
        std::vector<sdbus::Struct<std::string, std::string, std::string, uint64_t>> out;
        for (const auto& [name, s] : engine_.snapshot().slots) {
            out.emplace_back(name, s.state, s.version, s.installed);
        }
        return out;
    });
}

std::string UpdateBus::FirmwareVersion()
{
    return dbus::guard([&] { return engine_.snapshot().firmwareVersion; });
}

uint64_t UpdateBus::SecurityVersionFloor()
{
    return dbus::guard([&] { return engine_.snapshot().floor; });
}

std::string UpdateBus::Compatible()
{
    return engine_.compatible();
}

} // namespace mbl::update
