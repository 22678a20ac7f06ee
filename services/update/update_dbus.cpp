#include "update_dbus.h"

#include "mbl/dbus/bus.h"
#include "mbl/log.h"
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
        if (!options.empty()) {
            throw dbus::toBusError(Error{ErrorCode::InvalidArgument,
                                         "unknown install option '" + options.begin()->first + "'"});
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
        startWorker([this, id, fd] {
            auto onProgress = [this](unsigned pct) {
                postToLoop([this, pct] {
                    progress_ = pct;
                    emitState({"Progress"});
                });
            };
            Status st = engine_.install(fd->get(), id, &stopping_, onProgress);
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

sdbus::UnixFd UpdateBus::OpenPayload(const std::string& operationId, const std::string& payloadName)
{
    return dbus::guard([&] {
        auto fd = dbus::unwrap(engine_.openPayload(operationId, payloadName));
        return sdbus::UnixFd{fd.release(), sdbus::adopt_fd};
    });
}

void UpdateBus::Commit()
{
    dbus::guard([&] {
        if (!engine_.tryBegin()) {
            throw dbus::toBusError(Error{ErrorCode::Busy, "an install is running; Commit after it completes"});
        }
        Status st = engine_.commit();
        engine_.end();
        dbus::unwrap(std::move(st));
        emitState({"ActiveSlot", "SlotStates", "SecurityVersionFloor", "LastError", "FirmwareVersion"});
    });
}

void UpdateBus::MarkBad()
{
    dbus::guard([&] {
        if (!engine_.tryBegin()) {
            throw dbus::toBusError(Error{ErrorCode::Busy, "an install is running; MarkBad after it completes"});
        }
        Status st = engine_.markBad();
        engine_.end();
        dbus::unwrap(std::move(st));
        emitState({"ActiveSlot", "SlotStates"});
    });
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
