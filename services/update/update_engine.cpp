// SPDX-License-Identifier: Apache-2.0
#include "update_engine.h"

#include "slot_writer.h"
#include "update_settings.h"

#include "mbl/crypto.h"
#include "mbl/error_names.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <thread>
#include <unistd.h>

namespace mbl::update {

namespace {

struct DirClose {
    void operator()(DIR* d) const { ::closedir(d); }
};

std::uint64_t nowSeconds()
{
    return static_cast<std::uint64_t>(std::time(nullptr));
}

// SlotStates' name of a status: an armed slot is "trial" there (its trial is
// under way: armed for the next boot, or booted).
const char* publicName(SlotStatus s)
{
    return s == SlotStatus::Armed ? "trial" : slotStatusName(s);
}

} // namespace

// ---------------------------------------------------------------------------
// Start-up

Expected<std::unique_ptr<UpdateEngine>> UpdateEngine::open(const Paths& paths, const Config& config)
{
    // Every key checked (type, range, unknown or misspelled at any depth) before anything is touched.
    auto cfg = UpdateSettings::fromConfig(paths, config);
    if (!cfg) {
        return unexpected(cfg.error());
    }
    std::unique_ptr<UpdateEngine> e(new UpdateEngine());
    e->stateDir_ = cfg->stateDir;
    e->compatible_ = cfg->compatible;
    e->trustDir_ = cfg->trustDir;
    e->stagingDir_ = cfg->stagingDir;
    e->factoryVersion_ = cfg->factoryVersion;
    e->cmdlinePath_ = cfg->cmdlinePath;
    e->bootedOverride_ = cfg->bootedOverride;
    e->slotClass_ = cfg->slotClass;
    e->maxManifestBytes_ = cfg->maxManifestBytes;
    e->trialAttempts_ = cfg->trialAttempts;
    e->goodAttempts_ = cfg->goodAttempts;
    e->readBack_ = cfg->readBack;
    e->slots_ = cfg->slots;
    const BootloaderConfig& bl = cfg->bootloader;
    auto b = makeBootloader(bl);
    if (!b) {
        return unexpected(ErrorCode::InvalidArgument, config.origin() + ": " + b.error().message);
    }
    BootPolicy::Settings ps;
    ps.slots = e->slots_;
    ps.trialAttempts = e->trialAttempts_;
    ps.goodAttempts = e->goodAttempts_;
    ps.factoryVersion = e->factoryVersion_;
    e->policy_ = std::make_unique<BootPolicy>(std::move(b).value(), std::move(ps));
    if (const char* p = std::getenv("MBL_UPDATE_TEST_PAUSE")) {
        e->pause_ = p;
    }
    // Test hook: the path for media that refuse O_DIRECT (tmpfs refuses it only before Linux 6.6).
    e->noDirect_ = std::getenv("MBL_UPDATE_TEST_BUFFERED") != nullptr;
    if (auto st = fs::makeDirs(e->stateDir_, 0700); !st) {
        return unexpected(st.error());
    }
    if (auto st = fs::makeDirs(e->stagingDir_, 0700); !st) {
        return unexpected(st.error());
    }
    BootPolicy::Copy copy;
    if (auto st = e->loadState(copy); !st) {
        return unexpected(st.error());
    }
    if (auto st = e->recover(copy); !st) {
        return unexpected(st.error());
    }
    return e;
}

Status UpdateEngine::loadState(BootPolicy::Copy& copy)
{
    const std::string path = stateDir_ + "/state.json";
    if (!fs::exists(path)) {
        return {}; // first start, or the data partition was wiped: the environment knows the slots
    }
    auto text = fs::readFile(path);
    if (!text) {
        return unexpected(text.error());
    }
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return unexpected(ErrorCode::Io, path + " is damaged (not JSON); move it away to start from factory state");
    }
    try {
        copy.floor = j.value("floor", std::uint64_t{0});
        lastError_ = j.value("lastError", std::string());
        if (j.contains("operations") && j["operations"].is_object()) {
            for (const auto& [id, oj] : j["operations"].items()) {
                if (!oj.is_object() || !str::isSafeName(id, 128)) {
                    continue;
                }
                operations_[id] = HeldOperation{oj.value("hold", false), oj.value("slot", std::string())};
            }
        } else if (auto legacy = j.value("stagedOperation", std::string()); !legacy.empty()) {
            // Written before C2: one staged operation, replaced by the next install.
            operations_[legacy] = HeldOperation{};
        }
        for (const auto& s : slots_) {
            if (!j.contains("slots") || !j["slots"].contains(s.name)) {
                continue;
            }
            const auto& sj = j["slots"][s.name];
            SlotRecord rec;
            rec.status = slotStatusFromName(sj.value("state", std::string("empty"))).value_or(SlotStatus::Empty);
            rec.version = sj.value("version", std::string());
            rec.installed = sj.value("installed", std::uint64_t{0});
            rec.securityVersion = sj.value("security_version", std::uint64_t{0});
            rec.operation = sj.value("operation", std::string());
            copy.slots[s.name] = rec;
        }
        // Written before the environment held the record: the pending trial's operation.
        if (j.contains("pending") && j["pending"].is_object()) {
            const std::string slot = j["pending"].value("slot", std::string());
            if (copy.slots.count(slot) != 0) {
                copy.slots[slot].operation = j["pending"].value("operation", std::string());
            }
        }
    } catch (const std::exception& ex) {
        return unexpected(ErrorCode::Io, path + " is damaged: " + ex.what());
    }
    return {};
}

Status UpdateEngine::saveStateLocked()
{
    // The slot records and the floor are a copy: the bootloader environment is the authority.
    const auto v = policy_->view();
    nlohmann::json j;
    j["floor"] = v.floor;
    {
        std::lock_guard<std::mutex> l(errorMutex_);
        j["lastError"] = lastError_;
    }
    j["operations"] = nlohmann::json::object();
    for (const auto& [id, h] : operations_) {
        j["operations"][id] = {{"hold", h.hold}, {"slot", h.slot}};
    }
    j["slots"] = nlohmann::json::object();
    for (const auto& [name, r] : v.slots) {
        if (!r.onRecord) {
            continue;
        }
        j["slots"][name] = {{"state", slotStatusName(r.status)},
                            {"version", r.version},
                            {"installed", r.installed},
                            {"security_version", r.securityVersion},
                            {"operation", r.operation}};
    }
    return fs::writeFileAtomic(stateDir_ + "/state.json", j.dump(2) + "\n", 0600);
}

std::string UpdateEngine::detectBootedSlot() const
{
    if (!bootedOverride_.empty()) {
        return bootedOverride_;
    }
    auto text = fs::readFile(cmdlinePath_, 65536);
    if (!text) {
        return "";
    }
    for (const auto& w : str::words(str::trim(*text))) {
        if (str::startsWith(w, "mbl.slot=")) {
            const std::string v = w.substr(9);
            for (const auto& s : slots_) {
                if (s.name == v || s.bootname == v) {
                    return s.name;
                }
            }
        }
    }
    for (const auto& w : str::words(str::trim(*text))) {
        if (str::startsWith(w, "root=")) {
            const std::string v = w.substr(5);
            for (const auto& s : slots_) {
                if (s.device == v) {
                    return s.name;
                }
            }
        }
    }
    return "";
}

const SlotConfig* UpdateEngine::slot(const std::string& name) const
{
    for (const auto& s : slots_) {
        if (s.name == name) {
            return &s;
        }
    }
    return nullptr;
}

const SlotConfig* UpdateEngine::inactiveSlot() const
{
    if (booted_.empty()) {
        return nullptr;
    }
    for (const auto& s : slots_) {
        if (s.name != booted_) {
            return &s;
        }
    }
    return nullptr;
}

void UpdateEngine::wipeHead(const SlotConfig& s) const
{
    if (auto st = wipeSlotHead(s); !st) {
        log::warning("slot " + s.name + " could not be wiped: " + st.error().message);
    }
}

// Runs once at start, like after a reboot: the boot policy reads the slots from
// the environment and tells a trial boot from a fallback; then what the last run
// left (an interrupted install, staging) is finished or rolled back.
Status UpdateEngine::recover(const BootPolicy::Copy& copy)
{
    std::lock_guard<std::mutex> lock(mutex_);
    booted_ = detectBootedSlot();
    auto started = policy_->start(booted_, copy);
    if (!started) {
        return unexpected(started.error());
    }
    bool dirty = false;
    if (!started->fellBack.empty()) {
        const auto v = policy_->view();
        auto b = v.slots.find(booted_);
        const std::string running = b != v.slots.end() && !b->second.version.empty() ? b->second.version : factoryVersion_;
        std::lock_guard<std::mutex> l(errorMutex_);
        lastError_ = std::string(errors::kFailed) + ": rollback: slot " + started->fellBack + " (version " +
                     started->fellBackVersion + ") did not boot or was not committed; running slot " + booted_ +
                     " (version " + running + ") again";
        log::warning(lastError_);
        dirty = true;
    }
    const std::string marker = stateDir_ + "/operation.json";
    if (fs::exists(marker)) {
        auto text = fs::readFile(marker);
        nlohmann::json mj = text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
        const std::string id = mj.is_object() ? mj.value("id", std::string("?")) : std::string("?");
        const std::string target = mj.is_object() ? mj.value("target", std::string()) : std::string();
        const SlotConfig* t = slot(target);
        // Unless the device already rebooted into what the install armed, the
        // claimed slot holds a partial image: empty, out of the boot order, wiped.
        const bool rebootedIntoIt = t != nullptr && t->name == booted_ &&
                                    policy_->view().slots[t->name].status == SlotStatus::Trial;
        if (t != nullptr && !rebootedIntoIt) {
            if (auto st = policy_->claim(t->name); !st) {
                return st;
            }
            wipeHead(*t);
        }
        {
            std::lock_guard<std::mutex> l(errorMutex_);
            lastError_ = std::string(errors::kFailed) + ": install " + id +
                         " was interrupted (the service stopped or the device lost power); nothing was activated";
            log::warning(lastError_);
        }
        (void)fs::removeTree(stagingDir_ + "/" + id);
        operations_.erase(id);
        dirty = true;
    }
    // Staging holds only the payloads of the held operations.
    if (std::unique_ptr<DIR, DirClose> dir{::opendir(stagingDir_.c_str())}) {
        DIR* d = dir.get();
        std::vector<std::string> stale;
        while (struct dirent* e = ::readdir(d)) {
            const std::string n = e->d_name;
            if (n != "." && n != ".." && operations_.count(n) == 0) {
                stale.push_back(n);
            }
        }
        for (const auto& n : stale) {
            (void)fs::removeTree(stagingDir_ + "/" + n);
        }
    }
    // A held operation whose staging is gone holds nothing any more.
    for (auto it = operations_.begin(); it != operations_.end();) {
        if (fs::exists(stagingDir_ + "/" + it->first + "/" + kManifestFile)) {
            ++it;
            continue;
        }
        log::warning("the staging of operation " + it->first + " is gone; it holds nothing any more");
        (void)fs::removeTree(stagingDir_ + "/" + it->first);
        it = operations_.erase(it);
        dirty = true;
    }
    // A staged slot no held operation names is not kept: empty, wiped.
    for (const auto& [name, rec] : policy_->view().slots) {
        if (rec.status == SlotStatus::Staged && operations_.count(rec.operation) == 0) {
            if (auto st = policy_->release(name); !st) {
                return st;
            }
            if (const SlotConfig* t = slot(name)) {
                wipeHead(*t);
            }
            dirty = true;
        }
    }
    (void)dirty; // the copy is written at every start: the environment may have changed it
    if (auto st = saveStateLocked(); !st) {
        return st;
    }
    (void)fs::removeTree(marker);
    return fs::syncDir(stateDir_);
}

// ---------------------------------------------------------------------------
// Verification

Expected<std::string> UpdateEngine::inspect(int fd, const std::atomic<bool>* cancel)
{
    bundle::Reader::Options ro;
    ro.maxManifestBytes = maxManifestBytes_;
    ro.cancel = cancel;
    ro.blockSize = 64u << 10;
    auto reader = bundle::Reader::open(fd, ro);
    if (!reader) {
        return unexpected(reader.error());
    }
    auto verified = verifyHead(**reader);
    if (!verified) {
        return unexpected(verified.error());
    }
    auto j = verified->manifest.toJson();
    j["signer"] = verified->signer.subject;
    return j.dump();
}

Expected<UpdateEngine::VerifiedHead> UpdateEngine::verifyHead(bundle::Reader& r)
{
    // The verification order of ARCHITECTURE §5, in one place for Inspect and Install:
    // bounded manifest (the reader) -> signature and chain -> manifest rules ->
    // compatibility and downgrade floor.
    auto head = r.readHead();
    if (!head) {
        return unexpected(head.error());
    }
    auto signer = bundle::verifySignature(head->manifest, head->signature, trustDir_);
    if (!signer) {
        return unexpected(signer.error());
    }
    auto m = bundle::Manifest::parse(head->manifest);
    if (!m) {
        return unexpected(m.error());
    }
    if (auto st = bundle::checkPolicy(*m, compatible_, policy_->view().floor); !st) {
        return unexpected(st.error());
    }
    return VerifiedHead{std::move(m).value(), std::move(signer).value()};
}

// ---------------------------------------------------------------------------
// Install

bool UpdateEngine::tryBegin()
{
    bool expected = false;
    return busy_.compare_exchange_strong(expected, true);
}

void UpdateEngine::end()
{
    busy_.store(false);
}

std::string UpdateEngine::newOperationId()
{
    std::random_device rd;
    unsigned char b[6];
    for (auto& c : b) {
        c = static_cast<unsigned char>(rd());
    }
    return "op-" + std::to_string(nowSeconds()) + "-" + str::toHex(b, sizeof b);
}

void UpdateEngine::pausePoint(const char* name) const
{
    if (pause_ != name) {
        return;
    }
    // Test hook only: announce the point, then wait for the test's SIGKILL.
    (void)fs::writeFileAtomic(stateDir_ + "/paused", std::string(name) + "\n");
    for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
    }
}


Status UpdateEngine::install(int fd, const std::string& operationId, const std::atomic<bool>* cancel,
                             const ProgressFn& progress, const InstallOptions& options)
{
    const std::string marker = stateDir_ + "/operation.json";
    const std::string dir = stagingDir_ + "/" + operationId;
    const auto t0 = std::chrono::steady_clock::now();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        runningOperation_ = operationId;
    }
    Status st = installLocked(fd, operationId, cancel, progress, options);
    const auto t1 = std::chrono::steady_clock::now();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        runningOperation_.clear();
        if (!st) {
            (void)fs::removeTree(dir);
            {
                std::lock_guard<std::mutex> l(errorMutex_);
                lastError_ = st.error().name() + ": " + st.error().message;
            }
            (void)saveStateLocked();
        }
    }
    (void)fs::removeTree(marker);
    (void)fs::syncDir(stateDir_);
    auto ms = [](auto d) { return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()); };
    log::info("install timing " + operationId + ": " + ms(t1 - t0) + " ms, closing " +
              ms(std::chrono::steady_clock::now() - t1) + " ms");
    return st;
}

Status UpdateEngine::installLocked(int fd, const std::string& operationId, const std::atomic<bool>* cancel,
                                   const ProgressFn& progress, const InstallOptions& options)
{
    const std::string marker = stateDir_ + "/operation.json";
    const std::string dir = stagingDir_ + "/" + operationId;
    // A new install replaces what earlier arm=true installs staged (their lifetime
    // before C2); operations installed with arm=false are held until Released.
    {
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<std::string> replaced;
        for (const auto& [id, h] : operations_) {
            if (!h.hold) {
                replaced.push_back(id);
            }
        }
        for (const auto& id : replaced) {
            dropOperationLocked(id);
        }
        if (!replaced.empty()) {
            (void)saveStateLocked();
        }
    }
    const auto tStart = std::chrono::steady_clock::now();
    nlohmann::json mj = {{"id", operationId}, {"started", nowSeconds()}, {"target", ""}};
    if (auto s = fs::writeFileAtomic(marker, mj.dump() + "\n", 0600); !s) {
        return s;
    }

    bundle::Reader::Options ro;
    ro.maxManifestBytes = maxManifestBytes_;
    ro.cancel = cancel;
    ro.blockSize = 256u << 10;
    auto reader = bundle::Reader::open(fd, ro);
    if (!reader) {
        return unexpected(reader.error());
    }
    bundle::Reader& r = **reader;
    auto verified = verifyHead(r);
    if (!verified) {
        return unexpected(verified.error());
    }
    const bundle::Manifest* manifest = &verified->manifest;
    const bundle::SignerInfo* signer = &verified->signer;
    log::info("installing bundle " + manifest->version + " (security_version " +
              std::to_string(manifest->securityVersion) + ") signed by " + signer->subject);
    pausePoint("verified");
    const auto tVerified = std::chrono::steady_clock::now();

    // Preflight: everything that can be known before a byte is written.
    const bundle::Payload* rootfs = manifest->rootfs();
    const SlotConfig* target = nullptr;
    // Held from the preflight of the slot to the end: Arm and Release of the
    // slot's previous operation wait, and cannot act on it meanwhile.
    std::unique_lock<std::mutex> slotLock(slotMutex_, std::defer_lock);
    std::uint64_t total = 0;
    std::uint64_t stagedBytes = 0;
    for (const auto& p : manifest->payloads) {
        total += p.size;
        if (p.type != bundle::PayloadType::Rootfs) {
            stagedBytes += p.size;
        }
    }
    if (rootfs != nullptr) {
        if (slots_.empty()) {
            return unexpected(ErrorCode::NotSupported, "the bundle carries a rootfs but no A/B slots are configured "
                                                       "('slots' in update.json)");
        }
        if (rootfs->slotClass != slotClass_) {
            return unexpected(ErrorCode::Incompatible, "the rootfs payload is for slot class '" + rootfs->slotClass +
                                                           "', this device's A/B slots are '" + slotClass_ + "'");
        }
        target = inactiveSlot();
        if (target == nullptr) {
            return unexpected(ErrorCode::Failed, "cannot tell which slot is booted (no mbl.slot= or matching root= on " +
                                                     cmdlinePath_ + "), so the inactive slot is unknown");
        }
        slotLock.lock();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto v = policy_->view();
            if (v.slots[booted_].status == SlotStatus::Trial) {
                return unexpected(ErrorCode::Busy, "slot " + booted_ +
                                                       " is on trial: Commit or MarkBad it before installing firmware");
            }
            const SlotRecord& ts = v.slots[target->name];
            if (ts.status == SlotStatus::Staged && operations_.count(ts.operation) != 0) {
                return unexpected(ErrorCode::Busy, "slot " + target->name + " holds firmware " + ts.version +
                                                       " staged (not armed) by operation " + ts.operation +
                                                       ": Release that operation before installing other firmware");
            }
        }
        auto cap = slotCapacity(*target);
        if (!cap) {
            return unexpected(cap.error());
        }
        if (rootfs->size > *cap) {
            return unexpected(ErrorCode::NoSpace, "rootfs payload of " + std::to_string(rootfs->size) +
                                                      " bytes does not fit slot " + target->name + " (" +
                                                      std::to_string(*cap) + " bytes)");
        }
    }
    if (stagedBytes > 0) {
        struct statvfs vfs{};
        if (::statvfs(stagingDir_.c_str(), &vfs) == 0) {
            const std::uint64_t avail = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
            if (stagedBytes > avail) {
                return unexpected(ErrorCode::NoSpace, "staging " + stagingDir_ + " has " + std::to_string(avail) +
                                                          " bytes free, the bundle's app/config payloads need " +
                                                          std::to_string(stagedBytes));
            }
        }
        if (auto s = fs::makeDirs(dir, 0700); !s) {
            return s;
        }
    }

    std::uint64_t done = 0;
    unsigned lastPercent = 0;
    auto advanced = [&](std::uint64_t n) {
        done += n;
        const unsigned pct = total == 0 ? 99 : static_cast<unsigned>(done * 99 / total);
        if (pct != lastPercent) {
            lastPercent = pct;
            if (progress) {
                progress(pct);
            }
        }
    };

    // From the claim on, the inactive slot may hold part of a refused image: a
    // failure leaves it out of the boot order, "empty" (no version) and its head wiped.
    bool slotTouched = false;
    SlotWriteOptions wo;
    wo.readBack = readBack_;
    wo.noDirect = noDirect_;
    wo.advanced = advanced;
    wo.pause = [this](const char* point) { pausePoint(point); };
    // The inactive slot is about to be overwritten (only now: a bundle refused
    // before its rootfs leaves that slot as it was): the marker names it for a
    // restart, and the boot policy makes sure the bootloader cannot pick it until
    // it is fully written and verified.
    wo.beforeFirstWrite = [&](const std::string&) -> Status {
        mj["target"] = target->name;
        if (auto s = fs::writeFileAtomic(marker, mj.dump() + "\n", 0600); !s) {
            return s;
        }
        if (auto s = policy_->claim(target->name); !s) {
            return s;
        }
        slotTouched = true;
        return {};
    };

    const auto tStream = std::chrono::steady_clock::now();
    auto abandon = [&](Status s) -> Status {
        if (target != nullptr && slotTouched) {
            wipeHead(*target);
        }
        return s;
    };
    for (const auto& p : manifest->payloads) {
        if (auto s = r.beginPayload(p); !s) {
            return abandon(s);
        }
        Status s = p.type == bundle::PayloadType::Rootfs ? writeRootfs(r, p, *target, wo)
                                                          : stagePayload(r, p, dir, advanced);
        if (!s) {
            return abandon(s);
        }
    }
    if (auto s = r.expectEnd(); !s) {
        return abandon(s);
    }
    pausePoint("before-arm");
    const auto tArm = std::chrono::steady_clock::now();

    // The verified manifest stays beside the staged payloads (operationManifest).
    if (auto s = fs::makeDirs(dir, 0700); !s) {
        return abandon(s);
    }
    if (auto s = fs::writeFileAtomic(dir + "/" + kManifestFile, manifest->toJson().dump(), 0600); !s) {
        return abandon(s);
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (target != nullptr) {
            SlotRecord rec;
            rec.version = manifest->version;
            rec.installed = nowSeconds();
            rec.securityVersion = manifest->securityVersion;
            rec.operation = operationId;
            // Armed in one environment write (the authority), or staged (state only:
            // the slot stays out of the boot order, and a crash before the state
            // write below is rolled back through the marker).
            Status s = options.arm ? policy_->arm(target->name, rec) : policy_->stage(target->name, rec);
            if (!s) {
                return abandon(s);
            }
        }
        operations_[operationId] = HeldOperation{!options.arm, target != nullptr ? target->name : std::string()};
        {
            std::lock_guard<std::mutex> l(errorMutex_);
            lastError_.clear();
        }
        if (auto s = saveStateLocked(); !s) {
            operations_.erase(operationId);
            return s;
        }
        if (target != nullptr) {
            log::notice("slot " + target->name + " holds " + manifest->version +
                        (options.arm ? " and is armed for one trial boot; reboot to try it"
                                     : ", verified and not armed (operation " + operationId +
                                           "): Arm it to try it, Release it to drop it"));
        }
    }
    pausePoint("after-arm");
    auto ms = [](auto a, auto b) { return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count()); };
    log::info("install timing " + operationId + ": head verified at " + ms(tStart, tVerified) + " ms, payloads from " +
              ms(tStart, tStream) + " to " + ms(tStart, tArm) + " ms, armed and recorded at " +
              ms(tStart, std::chrono::steady_clock::now()) + " ms");
    return {};
}


Status UpdateEngine::stagePayload(bundle::Reader& r, const bundle::Payload& p, const std::string& dir,
                                  const std::function<void(std::uint64_t)>& advanced)
{
    const std::string part = dir + "/" + p.name + ".part";
    Fd out(::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) {
        return unexpected(errnoError("create " + part, errno));
    }
    crypto::Sha256 hash;
    std::string configText;
    for (;;) {
        auto c = r.read();
        if (!c) {
            return unexpected(c.error());
        }
        if (c->size == 0) {
            break;
        }
        hash.update(c->data, c->size);
        if (p.type == bundle::PayloadType::Config && configText.size() + c->size <= (4u << 20)) {
            configText.append(static_cast<const char*>(c->data), c->size);
        }
        if (auto s = fs::writeAll(out.get(), c->data, c->size); !s) {
            if (s.error().code == ErrorCode::NoSpace) {
                return unexpected(ErrorCode::NoSpace, "staging " + stagingDir_ + " is full while writing payload '" +
                                                          p.name + "'; staging was cleaned");
            }
            return s;
        }
        advanced(c->size);
    }
    if (hash.finishHex() != p.sha256) {
        return unexpected(ErrorCode::SignatureInvalid,
                          "payload '" + p.name + "' does not match the SHA-256 of the signed manifest");
    }
    if (p.type == bundle::PayloadType::Config) {
        auto j = nlohmann::json::parse(configText, nullptr, false);
        if (j.is_discarded() || !j.is_object() || configText.size() != p.size) {
            return unexpected(ErrorCode::InvalidArgument,
                              "config payload '" + p.name + "' is not a JSON object of device settings (max 4 MiB)");
        }
    }
    if (::fsync(out.get()) != 0) {
        return unexpected(errnoError("fsync " + part, errno));
    }
    out.reset();
    const std::string final = dir + "/" + p.name;
    if (::rename(part.c_str(), final.c_str()) != 0) {
        return unexpected(errnoError("rename " + part, errno));
    }
    pausePoint("staged");
    return fs::syncDir(dir);
}

// ---------------------------------------------------------------------------
// Trial, commit, rollback

Status UpdateEngine::commit()
{
    std::lock_guard<std::mutex> lock(mutex_);
    const bool onTrial = policy_->view().slots[booted_].status == SlotStatus::Trial;
    auto floor = policy_->commit();
    if (!floor) {
        return unexpected(floor.error());
    }
    if (!onTrial) {
        return {}; // committed already: Commit is idempotent
    }
    // Test hook: the environment says committed, the state copy does not yet
    // (reached once: a repeated Commit returns above).
    pausePoint("committed");
    {
        std::lock_guard<std::mutex> l(errorMutex_);
        lastError_.clear();
    }
    // The environment holds the commit and the floor: a failed copy is only logged.
    if (auto st = saveStateLocked(); !st) {
        log::warning("the state copy could not be written after the commit: " + st.error().message);
    }
    log::notice("slot " + booted_ + " committed; anti-rollback floor is " + std::to_string(*floor));
    return {};
}

Status UpdateEngine::markBad()
{
    std::lock_guard<std::mutex> lock(mutex_);
    auto bad = policy_->markBad();
    if (!bad) {
        return unexpected(bad.error());
    }
    if (auto st = saveStateLocked(); !st) {
        log::warning("the state copy could not be written after MarkBad: " + st.error().message);
    }
    log::notice("slot " + *bad + " marked bad; the bootloader falls back on the next boot");
    return {};
}

void UpdateEngine::dropOperationLocked(const std::string& operationId)
{
    if (str::isSafeName(operationId, 128)) {
        (void)fs::removeTree(stagingDir_ + "/" + operationId);
    }
    operations_.erase(operationId);
}

Status UpdateEngine::arm(const std::string& operationId)
{
    std::lock_guard<std::mutex> slotLock(slotMutex_);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = operationId.empty() ? operations_.end() : operations_.find(operationId);
    if (it == operations_.end()) {
        return unexpected(ErrorCode::NotFound, "operation '" + str::quotable(operationId) +
                                                   "' holds nothing to arm (not installed, interrupted or released)");
    }
    const SlotConfig* t = slot(it->second.slot);
    if (t == nullptr) {
        return unexpected(ErrorCode::NotFound, "operation " + operationId + " wrote no firmware slot (its bundle has "
                                                                            "no rootfs payload)");
    }
    auto v = policy_->view();
    const SlotRecord& rec = v.slots[t->name];
    if ((rec.status == SlotStatus::Armed || rec.status == SlotStatus::Trial) && rec.operation == operationId) {
        return {}; // armed already (or booted on its trial)
    }
    if (rec.status != SlotStatus::Staged || rec.operation != operationId) {
        return unexpected(ErrorCode::NotFound, "the firmware operation " + operationId + " wrote to slot " + t->name +
                                                   " is gone (the slot is " + publicName(rec.status) + " now)");
    }
    if (v.slots[booted_].status == SlotStatus::Trial) {
        return unexpected(ErrorCode::Busy, "slot " + booted_ + " is on trial: Commit or MarkBad it first");
    }
    if (rec.securityVersion < v.floor) {
        return unexpected(ErrorCode::Downgrade, "firmware " + rec.version + " has security_version " +
                                                    std::to_string(rec.securityVersion) +
                                                    ", below the anti-rollback floor " + std::to_string(v.floor));
    }
    if (auto st = policy_->arm(t->name, rec); !st) {
        return st;
    }
    if (auto st = saveStateLocked(); !st) {
        log::warning("the state copy could not be written after Arm: " + st.error().message);
    }
    log::notice("slot " + t->name + " holds " + rec.version + " and is armed for one trial boot (operation " +
                operationId + "); reboot to try it");
    return {};
}

Status UpdateEngine::release(const std::string& operationId)
{
    auto stagedBy = [&](const std::string& name) {
        auto v = policy_->view();
        auto r = v.slots.find(name);
        return r != v.slots.end() && r->second.status == SlotStatus::Staged && r->second.operation == operationId;
    };
    const SlotConfig* staged = nullptr;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!operationId.empty() && operationId == runningOperation_) {
            return unexpected(ErrorCode::Busy, "operation " + operationId +
                                                   " is being installed: wait for its Completed signal, then Release it");
        }
        auto it = operations_.find(operationId);
        if (it == operations_.end()) {
            return {}; // released already, or never held: nothing to do
        }
        const SlotConfig* t = slot(it->second.slot);
        if (t == nullptr || !stagedBy(t->name)) {
            dropOperationLocked(operationId);
            return saveStateLocked();
        }
        staged = t;
    }
    // The operation's slot holds its unarmed firmware: the slot becomes empty and
    // its head is wiped, with installs of that slot kept out meanwhile.
    std::lock_guard<std::mutex> slotLock(slotMutex_);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        const bool still = stagedBy(staged->name);
        dropOperationLocked(operationId);
        if (still) {
            if (auto st = policy_->release(staged->name); !st) {
                return st;
            }
        }
        if (auto st = saveStateLocked(); !st) {
            return st;
        }
        if (!still) {
            return {};
        }
    }
    wipeHead(*staged);
    log::notice("operation " + operationId + " released: slot " + staged->name + " is empty again");
    return {};
}

Expected<Fd> UpdateEngine::openPayload(const std::string& operationId, const std::string& name)
{
    std::lock_guard<std::mutex> lock(mutex_);
    if (operationId.empty() || operations_.count(operationId) == 0) {
        return unexpected(ErrorCode::NotFound, "no staged payloads for operation '" + str::quotable(operationId) +
                                                   "' (not installed, interrupted, released, or an arm=true install "
                                                   "replaced by a later one)");
    }
    if (!str::isSafeName(name, 128)) {
        return unexpected(ErrorCode::InvalidArgument, "bad payload name '" + name + "'");
    }
    const std::string path = stagingDir_ + "/" + operationId + "/" + name;
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) {
        return unexpected(ErrorCode::NotFound, "operation " + operationId + " staged no payload '" + name + "'");
    }
    return fd;
}

Expected<std::string> UpdateEngine::operationManifest(const std::string& operationId)
{
    std::lock_guard<std::mutex> lock(mutex_);
    if (operationId.empty() || operations_.count(operationId) == 0) {
        return unexpected(ErrorCode::NotFound, "no manifest for operation '" + str::quotable(operationId) +
                                                   "' (not installed, interrupted, released, or an arm=true install "
                                                   "replaced by a later one)");
    }
    return fs::readFile(stagingDir_ + "/" + operationId + "/" + kManifestFile, 1u << 20);
}

Snapshot UpdateEngine::snapshot() const
{
    const auto v = policy_->view();
    Snapshot s;
    s.bootedSlot = v.booted;
    s.activeSlot = v.active;
    s.floor = v.floor;
    {
        std::lock_guard<std::mutex> l(errorMutex_);
        s.lastError = lastError_;
    }
    auto it = v.slots.find(v.booted);
    s.firmwareVersion = it != v.slots.end() && !it->second.version.empty() ? it->second.version : factoryVersion_;
    for (const auto& c : slots_) {
        SlotState st;
        auto r = v.slots.find(c.name);
        if (r != v.slots.end()) {
            st.state = publicName(r->second.status);
            st.version = r->second.version;
            st.installed = r->second.installed;
            st.securityVersion = r->second.securityVersion;
            st.operation = r->second.status == SlotStatus::Staged ? r->second.operation : std::string();
        }
        s.slots.emplace_back(c.name, st);
    }
    return s;
}

void UpdateEngine::setLastError(const std::string& text)
{
    std::lock_guard<std::mutex> l(errorMutex_);
    lastError_ = text;
}

} // namespace mbl::update
