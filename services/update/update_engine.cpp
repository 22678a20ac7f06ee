#include "update_engine.h"

#include "mbl/crypto.h"
#include "mbl/error_names.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <cstdlib>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <random>
#include <sys/ioctl.h>
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

std::string leftVar(const std::string& bootname)
{
    return "BOOT_" + bootname + "_LEFT";
}

int toInt(const std::string& s, int fallback)
{
    try {
        return std::stoi(s);
    } catch (...) {
        return fallback;
    }
}

std::vector<std::string> words(const std::string& s)
{
    std::vector<std::string> out;
    for (const auto& w : str::split(s, ' ')) {
        if (!w.empty()) {
            out.push_back(w);
        }
    }
    return out;
}

std::string join(const std::vector<std::string>& v)
{
    std::string out;
    for (const auto& s : v) {
        out += (out.empty() ? "" : " ") + s;
    }
    return out;
}

constexpr std::size_t kRingBuffers = 4;
constexpr std::size_t kRingBufferSize = 512u << 10;

// Writes a stream to an fd from a writer thread through a ring of fixed buffers.
class SlotWriter {
public:
    SlotWriter(int fd, std::size_t count, std::size_t size) : fd_(fd), size_(size)
    {
        for (std::size_t i = 0; i < count; ++i) {
            bufs_.emplace_back(size);
            free_.push_back(i);
        }
        cur_ = take();
        thread_ = std::thread([this] { loop(); });
    }
    ~SlotWriter() { (void)finish(); }
    SlotWriter(const SlotWriter&) = delete;
    SlotWriter& operator=(const SlotWriter&) = delete;

    Status append(const void* data, std::size_t len)
    {
        const char* p = static_cast<const char*>(data);
        while (len > 0) {
            const std::size_t n = std::min(len, size_ - fill_);
            std::memcpy(bufs_[cur_].data() + fill_, p, n);
            fill_ += n;
            p += n;
            len -= n;
            if (fill_ == size_) {
                if (auto st = flushCurrent(); !st) {
                    return st;
                }
            }
        }
        return {};
    }

    Status finish()
    {
        if (!thread_.joinable()) {
            return result();
        }
        if (fill_ > 0) {
            (void)flushCurrent();
        }
        {
            std::lock_guard<std::mutex> l(m_);
            closed_ = true;
        }
        cv_.notify_all();
        thread_.join();
        return result();
    }

private:
    std::size_t take()
    {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [&] { return !free_.empty() || failed_; });
        if (free_.empty()) {
            return kNone;
        }
        std::size_t i = free_.back();
        free_.pop_back();
        return i;
    }
    Status flushCurrent()
    {
        {
            std::lock_guard<std::mutex> l(m_);
            if (failed_) {
                return unexpected(error_);
            }
            queue_.emplace_back(cur_, fill_);
        }
        cv_.notify_all();
        fill_ = 0;
        cur_ = take();
        if (cur_ == kNone) {
            return result();
        }
        return {};
    }
    void loop()
    {
        for (;;) {
            std::pair<std::size_t, std::size_t> job;
            {
                std::unique_lock<std::mutex> l(m_);
                cv_.wait(l, [&] { return !queue_.empty() || closed_; });
                if (queue_.empty()) {
                    return;
                }
                job = queue_.front();
                queue_.pop_front();
            }
            Status st = failed() ? Status{} : fs::writeAll(fd_, bufs_[job.first].data(), job.second);
            {
                std::lock_guard<std::mutex> l(m_);
                if (!st && !failed_) {
                    failed_ = true;
                    error_ = st.error();
                }
                free_.push_back(job.first);
            }
            cv_.notify_all();
        }
    }
    bool failed()
    {
        std::lock_guard<std::mutex> l(m_);
        return failed_;
    }
    Status result()
    {
        std::lock_guard<std::mutex> l(m_);
        if (failed_) {
            return unexpected(error_);
        }
        return {};
    }

    static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
    int fd_;
    std::size_t size_;
    std::vector<std::vector<char>> bufs_;
    std::vector<std::size_t> free_;
    std::deque<std::pair<std::size_t, std::size_t>> queue_;
    std::size_t cur_ = 0;
    std::size_t fill_ = 0;
    std::mutex m_;
    std::condition_variable cv_;
    bool closed_ = false;
    bool failed_ = false;
    Error error_;
    std::thread thread_;
};

} // namespace

// ---------------------------------------------------------------------------
// Start-up

Expected<std::unique_ptr<UpdateEngine>> UpdateEngine::open(const Paths& paths, const Config& config)
{
    std::unique_ptr<UpdateEngine> e(new UpdateEngine());
    auto str = [&](const char* key, const std::string& fallback) -> Expected<std::string> {
        return config.getString(key, fallback);
    };
    auto compatible = str("compatible", "");
    auto trust = str("trustDir", paths.config("trust"));
    auto staging = str("stagingDir", paths.state("update") + "/staging");
    auto factory = str("factoryVersion", "0.0.0");
    auto cmdline = str("cmdlinePath", "/proc/cmdline");
    auto bootId = str("bootIdPath", "/proc/sys/kernel/random/boot_id");
    auto booted = str("bootedSlot", "");
    auto slotClass = str("slotClass", "rootfs");
    auto blType = str("bootloader.type", "file");
    auto blPath = str("bootloader.path", paths.state("update") + "/bootenv");
    auto blDefaults = str("bootloader.defaults", "");
    auto maxManifest = config.getInt("maxManifestBytes", bundle::kDefaultMaxManifestBytes, 1024, 64 << 20);
    auto trial = config.getInt("trialAttempts", 1, 1, 100);
    auto good = config.getInt("goodAttempts", 3, 1, 100);
    for (const auto* r : {&compatible, &trust, &staging, &factory, &cmdline, &bootId, &booted, &slotClass, &blType, &blPath,
                          &blDefaults}) {
        if (!*r) {
            return unexpected(r->error());
        }
    }
    for (const auto* r : {&maxManifest, &trial, &good}) {
        if (!*r) {
            return unexpected(r->error());
        }
    }
    if (auto st = config.rejectUnknownKeys({"compatible", "trustDir", "stagingDir", "factoryVersion", "cmdlinePath",
                                            "bootIdPath", "bootedSlot", "slotClass", "bootloader", "maxManifestBytes",
                                            "trialAttempts", "goodAttempts", "slots"});
        !st) {
        return unexpected(st.error());
    }
    e->stateDir_ = paths.state("update");
    e->compatible_ = *compatible;
    e->trustDir_ = *trust;
    e->stagingDir_ = *staging;
    e->factoryVersion_ = *factory;
    e->cmdlinePath_ = *cmdline;
    e->bootIdPath_ = *bootId;
    e->bootedOverride_ = *booted;
    e->slotClass_ = *slotClass;
    e->maxManifestBytes_ = static_cast<std::uint64_t>(*maxManifest);
    e->trialAttempts_ = static_cast<int>(*trial);
    e->goodAttempts_ = static_cast<int>(*good);

    const auto& doc = config.json();
    if (doc.contains("slots")) {
        const auto& sj = doc["slots"];
        if (!sj.is_array()) {
            return unexpected(ErrorCode::InvalidArgument, config.origin() + ": key 'slots' must be a list");
        }
        for (const auto& s : sj) {
            SlotConfig c;
            if (!s.is_object() || !s.contains("name") || !s["name"].is_string() || !s.contains("device") ||
                !s["device"].is_string() || !str::isSafeName(s["name"].get<std::string>(), 16)) {
                return unexpected(ErrorCode::InvalidArgument,
                                  config.origin() + ": each of 'slots' needs a 'name' ([a-z0-9]) and a 'device'");
            }
            c.name = s["name"].get<std::string>();
            c.device = s["device"].get<std::string>();
            c.bootname = s.value("bootname", std::string());
            if (c.bootname.empty()) {
                for (char ch : c.name) {
                    c.bootname += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
                }
            }
            if (s.contains("size") && s["size"].is_number_unsigned()) {
                c.size = s["size"].get<std::uint64_t>();
            }
            e->slots_.push_back(std::move(c));
        }
        if (e->slots_.size() != 2) {
            return unexpected(ErrorCode::InvalidArgument, config.origin() + ": 'slots' must list exactly two slots (A/B)");
        }
    }
    BootloaderConfig bl;
    bl.type = *blType;
    bl.path = *blPath;
    bl.defaults = *blDefaults;
    auto b = makeBootloader(bl);
    if (!b) {
        return unexpected(ErrorCode::InvalidArgument, config.origin() + ": " + b.error().message);
    }
    e->bootloader_ = std::move(b).value();
    if (const char* p = std::getenv("MBL_UPDATE_TEST_PAUSE")) {
        e->pause_ = p;
    }
    if (auto st = fs::makeDirs(e->stateDir_, 0700); !st) {
        return unexpected(st.error());
    }
    if (auto st = fs::makeDirs(e->stagingDir_, 0700); !st) {
        return unexpected(st.error());
    }
    if (auto st = e->loadState(); !st) {
        return unexpected(st.error());
    }
    if (auto st = e->recover(); !st) {
        return unexpected(st.error());
    }
    return e;
}

Status UpdateEngine::loadState()
{
    booted_ = detectBootedSlot();
    const std::string path = stateDir_ + "/state.json";
    if (!fs::exists(path)) {
        for (const auto& s : slots_) {
            SlotState st;
            if (s.name == booted_) {
                st.state = "good";
                st.version = factoryVersion_;
            }
            slotStates_[s.name] = st;
        }
        return {};
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
        floor_ = j.value("floor", std::uint64_t{0});
        lastError_ = j.value("lastError", std::string());
        stagedOperation_ = j.value("stagedOperation", std::string());
        for (const auto& s : slots_) {
            SlotState st;
            if (j.contains("slots") && j["slots"].contains(s.name)) {
                const auto& sj = j["slots"][s.name];
                st.state = sj.value("state", std::string("empty"));
                st.version = sj.value("version", std::string());
                st.installed = sj.value("installed", std::uint64_t{0});
                st.securityVersion = sj.value("security_version", std::uint64_t{0});
            }
            slotStates_[s.name] = st;
        }
        if (j.contains("pending") && j["pending"].is_object()) {
            const auto& pj = j["pending"];
            Pending p;
            p.slot = pj.value("slot", std::string());
            p.version = pj.value("version", std::string());
            p.securityVersion = pj.value("security_version", std::uint64_t{0});
            p.bootId = pj.value("boot_id", std::string());
            p.operation = pj.value("operation", std::string());
            pending_ = p;
        }
    } catch (const std::exception& ex) {
        return unexpected(ErrorCode::Io, path + " is damaged: " + ex.what());
    }
    return {};
}

Status UpdateEngine::saveStateLocked()
{
    nlohmann::json j;
    j["floor"] = floor_;
    j["lastError"] = lastError_;
    j["stagedOperation"] = stagedOperation_;
    j["slots"] = nlohmann::json::object();
    for (const auto& [name, s] : slotStates_) {
        j["slots"][name] = {{"state", s.state},
                            {"version", s.version},
                            {"installed", s.installed},
                            {"security_version", s.securityVersion}};
    }
    if (pending_) {
        j["pending"] = {{"slot", pending_->slot},
                        {"version", pending_->version},
                        {"security_version", pending_->securityVersion},
                        {"boot_id", pending_->bootId},
                        {"operation", pending_->operation}};
    } else {
        j["pending"] = nullptr;
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
    for (const auto& w : words(str::trim(*text))) {
        if (str::startsWith(w, "mbl.slot=")) {
            const std::string v = w.substr(9);
            for (const auto& s : slots_) {
                if (s.name == v || s.bootname == v) {
                    return s.name;
                }
            }
        }
    }
    for (const auto& w : words(str::trim(*text))) {
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

std::string UpdateEngine::readBootId() const
{
    auto t = fs::readFile(bootIdPath_, 4096);
    return t ? str::trim(*t) : std::string();
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

std::string UpdateEngine::activeSlotFrom(const std::map<std::string, std::string>& env) const
{
    auto it = env.find("BOOT_ORDER");
    if (it == env.end()) {
        return "";
    }
    for (const auto& bn : words(it->second)) {
        auto left = env.find(leftVar(bn));
        if (left != env.end() && toInt(left->second, 0) > 0) {
            for (const auto& s : slots_) {
                if (s.bootname == bn) {
                    return s.name;
                }
            }
        }
    }
    return "";
}

Status UpdateEngine::disarm(const SlotConfig& s)
{
    auto env = bootloader_->read();
    if (!env) {
        return unexpected(env.error());
    }
    std::vector<std::string> order;
    auto it = env->find("BOOT_ORDER");
    if (it != env->end()) {
        for (const auto& bn : words(it->second)) {
            if (bn != s.bootname) {
                order.push_back(bn);
            }
        }
    }
    return bootloader_->write({{"BOOT_ORDER", join(order)}, {leftVar(s.bootname), std::string("0")}});
}

// Runs once at start, like after a reboot: finishes or rolls back what the
// last run left, and tells a trial boot from a fallback.
Status UpdateEngine::recover()
{
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string bootId = readBootId();
    const std::string marker = stateDir_ + "/operation.json";
    bool dirty = false;
    if (fs::exists(marker)) {
        auto text = fs::readFile(marker);
        nlohmann::json mj = text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
        const std::string id = mj.is_object() ? mj.value("id", std::string("?")) : std::string("?");
        const std::string target = mj.is_object() ? mj.value("target", std::string()) : std::string();
        const bool rebootedIntoIt = pending_ && pending_->operation == id && pending_->slot == booted_ &&
                                    pending_->bootId != bootId;
        if (!target.empty() && !rebootedIntoIt) {
            if (const SlotConfig* t = slot(target)) {
                if (auto st = disarm(*t); !st) {
                    return st;
                }
                slotStates_[target] = SlotState{};
            }
            if (pending_ && pending_->operation == id) {
                pending_.reset();
            }
        }
        lastError_ = std::string(errors::kFailed) + ": install " + id +
                     " was interrupted (the service stopped or the device lost power); nothing was activated";
        (void)fs::removeTree(stagingDir_ + "/" + id);
        if (stagedOperation_ == id) {
            stagedOperation_.clear();
        }
        dirty = true;
        log::warning(lastError_);
    }
    // Staging holds only the payloads of the last completed install.
    if (std::unique_ptr<DIR, DirClose> dir{::opendir(stagingDir_.c_str())}) {
        DIR* d = dir.get();
        std::vector<std::string> stale;
        while (struct dirent* e = ::readdir(d)) {
            const std::string n = e->d_name;
            if (n != "." && n != ".." && n != stagedOperation_) {
                stale.push_back(n);
            }
        }
        for (const auto& n : stale) {
            (void)fs::removeTree(stagingDir_ + "/" + n);
        }
    }
    auto env = bootloader_->read();
    if (!env) {
        return unexpected(env.error());
    }
    if (pending_ && pending_->bootId != bootId) {
        // The device rebooted since the install armed the bootloader.
        if (pending_->slot == booted_) {
            log::notice("booted slot " + booted_ + " (version " + pending_->version + ") is on trial; Commit or MarkBad");
        } else {
            lastError_ = std::string(errors::kFailed) + ": rollback: slot " + pending_->slot + " (version " +
                         pending_->version + ") did not boot or was not committed; running slot " + booted_ +
                         " (version " + slotStates_[booted_].version + ") again";
            log::warning(lastError_);
            if (const SlotConfig* t = slot(pending_->slot)) {
                if (auto st = disarm(*t); !st) {
                    return st;
                }
                slotStates_[t->name].state = "bad";
            }
            pending_.reset();
        }
        dirty = true;
    }
    if (!booted_.empty() && !pending_ && slotStates_[booted_].state == "good") {
        // Mark-good on every boot of a committed slot: its attempts are refilled
        // and it heads the boot order (the boot script decrements on each boot).
        env = bootloader_->read();
        if (!env) {
            return unexpected(env.error());
        }
        const SlotConfig* b = slot(booted_);
        std::vector<std::string> order{b->bootname};
        for (const auto& s : slots_) {
            if (s.name != booted_ && slotStates_[s.name].state == "good") {
                order.push_back(s.bootname);
            }
        }
        std::map<std::string, std::optional<std::string>> changes;
        if ((*env)["BOOT_ORDER"] != join(order)) {
            changes["BOOT_ORDER"] = join(order);
        }
        for (const auto& s : slots_) {
            const std::string want =
                std::to_string(slotStates_[s.name].state == "good" ? goodAttempts_ : 0);
            if ((*env)[leftVar(s.bootname)] != want) {
                changes[leftVar(s.bootname)] = want;
            }
        }
        if (!changes.empty()) {
            if (auto st = bootloader_->write(changes); !st) {
                return st;
            }
        }
    }
    env = bootloader_->read();
    if (!env) {
        return unexpected(env.error());
    }
    active_ = activeSlotFrom(*env);
    if (dirty) {
        if (auto st = saveStateLocked(); !st) {
            return st;
        }
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
    std::uint64_t floor = 0;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        floor = floor_;
    }
    if (auto st = bundle::checkPolicy(*m, compatible_, floor); !st) {
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

Expected<std::uint64_t> UpdateEngine::slotCapacity(const SlotConfig& s) const
{
    struct stat st{};
    if (::stat(s.device.c_str(), &st) != 0) {
        return unexpected(errnoError("slot " + s.name + " device " + s.device, errno));
    }
    if (S_ISBLK(st.st_mode)) {
        Fd fd(::open(s.device.c_str(), O_RDONLY | O_CLOEXEC));
        std::uint64_t size = 0;
        if (!fd || ::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) {
            return unexpected(errnoError("size of slot device " + s.device, errno));
        }
        return s.size > 0 ? std::min(size, s.size) : size;
    }
    if (!S_ISREG(st.st_mode)) {
        return unexpected(ErrorCode::InvalidArgument, "slot " + s.name + " device " + s.device +
                                                          " is neither a block device nor an image file");
    }
    return s.size > 0 ? s.size : static_cast<std::uint64_t>(st.st_size);
}

Status UpdateEngine::install(int fd, const std::string& operationId, const std::atomic<bool>* cancel,
                             const ProgressFn& progress)
{
    const std::string marker = stateDir_ + "/operation.json";
    const std::string dir = stagingDir_ + "/" + operationId;
    Status st = installLocked(fd, operationId, cancel, progress);
    if (!st) {
        (void)fs::removeTree(dir);
        std::lock_guard<std::mutex> lock(mutex_);
        lastError_ = st.error().name() + ": " + st.error().message;
        (void)saveStateLocked();
    } else {
        std::lock_guard<std::mutex> lock(mutex_);
        lastError_.clear();
        (void)saveStateLocked();
    }
    (void)fs::removeTree(marker);
    (void)fs::syncDir(stateDir_);
    return st;
}

Status UpdateEngine::installLocked(int fd, const std::string& operationId, const std::atomic<bool>* cancel,
                                   const ProgressFn& progress)
{
    const std::string marker = stateDir_ + "/operation.json";
    const std::string dir = stagingDir_ + "/" + operationId;
    // A new install replaces what the previous one staged.
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!stagedOperation_.empty()) {
            (void)fs::removeTree(stagingDir_ + "/" + stagedOperation_);
            stagedOperation_.clear();
            (void)saveStateLocked();
        }
    }
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

    // Preflight: everything that can be known before a byte is written.
    const bundle::Payload* rootfs = manifest->rootfs();
    const SlotConfig* target = nullptr;
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
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (pending_ && pending_->slot == booted_) {
                return unexpected(ErrorCode::Busy, "slot " + booted_ +
                                                       " is on trial: Commit or MarkBad it before installing firmware");
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

    if (target != nullptr) {
        // The inactive slot is about to be overwritten: make sure the bootloader
        // cannot pick it until it is fully written and verified.
        mj["target"] = target->name;
        if (auto s = fs::writeFileAtomic(marker, mj.dump() + "\n", 0600); !s) {
            return s;
        }
        if (auto s = disarm(*target); !s) {
            return s;
        }
        std::lock_guard<std::mutex> lock(mutex_);
        slotStates_[target->name] = SlotState{};
        if (pending_ && pending_->slot == target->name) {
            pending_.reset();
        }
        if (auto s = saveStateLocked(); !s) {
            return s;
        }
        auto env = bootloader_->read();
        if (env) {
            active_ = activeSlotFrom(*env);
        }
    }

    for (const auto& p : manifest->payloads) {
        if (auto s = r.beginPayload(p); !s) {
            return s;
        }
        Status s = p.type == bundle::PayloadType::Rootfs ? writeRootfs(r, p, *target, advanced)
                                                          : stagePayload(r, p, dir, advanced);
        if (!s) {
            return s;
        }
    }
    if (auto s = r.expectEnd(); !s) {
        return s;
    }
    pausePoint("before-arm");

    if (target != nullptr) {
        std::lock_guard<std::mutex> lock(mutex_);
        SlotState ns;
        ns.state = "trial";
        ns.version = manifest->version;
        ns.installed = nowSeconds();
        ns.securityVersion = manifest->securityVersion;
        slotStates_[target->name] = ns;
        pending_ = Pending{target->name, manifest->version, manifest->securityVersion, readBootId(), operationId};
        if (auto s = saveStateLocked(); !s) {
            return s;
        }
        const SlotConfig* b = slot(booted_);
        std::string order = target->bootname;
        if (b != nullptr && slotStates_[b->name].state == "good") {
            order += " " + b->bootname;
        }
        if (auto s = bootloader_->write({{"BOOT_ORDER", order}, {leftVar(target->bootname), std::to_string(trialAttempts_)}});
            !s) {
            return s;
        }
        auto env = bootloader_->read();
        if (env) {
            active_ = activeSlotFrom(*env);
        }
        log::notice("slot " + target->name + " holds " + manifest->version +
                    " and is armed for one trial boot; reboot to try it");
    }
    pausePoint("after-arm");
    // The verified manifest stays beside the staged payloads for GetOperationManifest.
    if (auto s = fs::makeDirs(dir, 0700); !s) {
        return s;
    }
    if (auto s = fs::writeFileAtomic(dir + "/" + kManifestFile, manifest->toJson().dump(), 0600); !s) {
        return s;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (stagedBytes > 0 || fs::exists(dir)) {
        stagedOperation_ = operationId;
    }
    return saveStateLocked();
}

Status UpdateEngine::writeRootfs(bundle::Reader& r, const bundle::Payload& p, const SlotConfig& target,
                                 const std::function<void(std::uint64_t)>& advanced)
{
    Fd out(::open(target.device.c_str(), O_WRONLY | O_CLOEXEC));
    if (!out) {
        return unexpected(errnoError("open slot " + target.name + " (" + target.device + ")", errno));
    }
    const auto t0 = std::chrono::steady_clock::now();
    crypto::Sha256 hash;
    std::uint64_t written = 0;
    bool paused = false;
    // Hashing (this thread) and writing (a writer thread) overlap through a small
    // ring of fixed buffers: memory stays bounded, throughput nears the slower of the two.
    SlotWriter writer(out.get(), kRingBuffers, kRingBufferSize);
    for (;;) {
        auto c = r.read();
        if (!c) {
            (void)writer.finish();
            return unexpected(c.error());
        }
        if (c->size == 0) {
            break;
        }
        hash.update(c->data, c->size);
        if (auto s = writer.append(c->data, c->size); !s) {
            return unexpected(s.error().code, "write slot " + target.name + " (" + target.device +
                                                  "): " + s.error().message);
        }
        written += c->size;
        advanced(c->size);
        if (!paused && written * 2 >= p.size) {
            paused = true;
            pausePoint("rootfs-half");
        }
    }
    if (auto s = writer.finish(); !s) {
        return unexpected(s.error().code, "write slot " + target.name + " (" + target.device + "): " +
                                              s.error().message);
    }
    if (hash.finishHex() != p.sha256 || written != p.size) {
        return unexpected(ErrorCode::SignatureInvalid, "payload '" + p.name +
                                                           "' does not match the SHA-256 of the signed manifest; "
                                                           "slot " + target.name + " was left unbootable");
    }
    if (::fsync(out.get()) != 0) {
        return unexpected(errnoError("fsync slot " + target.name, errno));
    }
    // Drop the cached pages so the check reads back what the medium holds.
    (void)::posix_fadvise(out.get(), 0, 0, POSIX_FADV_DONTNEED);
    out.reset();
    pausePoint("rootfs-written");
    Fd in(::open(target.device.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) {
        return unexpected(errnoError("reopen slot " + target.name, errno));
    }
    const auto t1 = std::chrono::steady_clock::now();
    crypto::Sha256 check;
    std::vector<char> buf(256u << 10);
    std::uint64_t left = p.size;
    while (left > 0) {
        ssize_t n = ::read(in.get(), buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size())));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return unexpected(n < 0 ? errnoError("read back slot " + target.name, errno)
                                    : Error{ErrorCode::Io, "slot " + target.name + " is shorter than what was written"});
        }
        check.update(buf.data(), static_cast<std::size_t>(n));
        left -= static_cast<std::uint64_t>(n);
    }
    if (check.finishHex() != p.sha256) {
        return unexpected(ErrorCode::Io, "slot " + target.name + " (" + target.device +
                                             ") reads back different bytes than were written: the medium may be failing");
    }
    const auto t2 = std::chrono::steady_clock::now();
    auto ms = [](auto d) { return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()); };
    log::info("slot " + target.name + ": " + std::to_string(p.size) + " bytes streamed, hashed, written and synced in " +
              ms(t1 - t0) + " ms, read back and verified in " + ms(t2 - t1) + " ms");
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
    if (booted_.empty()) {
        return unexpected(ErrorCode::Failed, "cannot tell which slot is booted, so there is nothing to commit");
    }
    const bool onTrial = pending_ && pending_->slot == booted_ && pending_->bootId != readBootId();
    if (!onTrial) {
        if (pending_ && pending_->slot != booted_) {
            return unexpected(ErrorCode::InvalidArgument, "slot " + pending_->slot +
                                                              " is armed but not booted yet: reboot first, then Commit");
        }
        if (slotStates_[booted_].state == "good") {
            return {}; // already committed: Commit is idempotent
        }
        return unexpected(ErrorCode::InvalidArgument, "booted slot " + booted_ + " is not on trial (state " +
                                                          slotStates_[booted_].state + ")");
    }
    const SlotConfig* b = slot(booted_);
    std::string order = b->bootname;
    for (const auto& s : slots_) {
        if (s.name != booted_ && slotStates_[s.name].state == "good") {
            order += " " + s.bootname;
        }
    }
    if (auto s = bootloader_->write({{"BOOT_ORDER", order}, {leftVar(b->bootname), std::to_string(goodAttempts_)}}); !s) {
        return s;
    }
    slotStates_[booted_].state = "good";
    floor_ = std::max(floor_, pending_->securityVersion);
    pending_.reset();
    lastError_.clear();
    if (auto s = saveStateLocked(); !s) {
        return s;
    }
    auto env = bootloader_->read();
    if (env) {
        active_ = activeSlotFrom(*env);
    }
    log::notice("slot " + booted_ + " committed; anti-rollback floor is " + std::to_string(floor_));
    return {};
}

Status UpdateEngine::markBad()
{
    std::lock_guard<std::mutex> lock(mutex_);
    if (!pending_) {
        return unexpected(ErrorCode::InvalidArgument, "no slot is on trial or armed: MarkBad abandons a trial");
    }
    const SlotConfig* t = slot(pending_->slot);
    if (t == nullptr) {
        return unexpected(ErrorCode::Failed, "the pending slot '" + pending_->slot + "' is not configured");
    }
    if (auto s = disarm(*t); !s) {
        return s;
    }
    slotStates_[t->name].state = "bad";
    pending_.reset();
    if (auto s = saveStateLocked(); !s) {
        return s;
    }
    auto env = bootloader_->read();
    if (env) {
        active_ = activeSlotFrom(*env);
    }
    log::notice("slot " + t->name + " marked bad; the bootloader falls back on the next boot");
    return {};
}

Expected<Fd> UpdateEngine::openPayload(const std::string& operationId, const std::string& name)
{
    std::lock_guard<std::mutex> lock(mutex_);
    if (operationId.empty() || operationId != stagedOperation_) {
        return unexpected(ErrorCode::NotFound, "no staged payloads for operation '" + operationId +
                                                   "' (only the last completed install keeps its payloads)");
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
    if (operationId.empty() || operationId != stagedOperation_) {
        return unexpected(ErrorCode::NotFound, "no manifest for operation '" + operationId +
                                                   "' (only the last completed install keeps it)");
    }
    return fs::readFile(stagingDir_ + "/" + operationId + "/" + kManifestFile, 1u << 20);
}

Snapshot UpdateEngine::snapshot() const
{
    std::lock_guard<std::mutex> lock(mutex_);
    Snapshot s;
    s.bootedSlot = booted_;
    s.activeSlot = active_;
    s.floor = floor_;
    s.lastError = lastError_;
    auto it = slotStates_.find(booted_);
    s.firmwareVersion = it != slotStates_.end() && !it->second.version.empty() ? it->second.version : factoryVersion_;
    for (const auto& c : slots_) {
        auto st = slotStates_.find(c.name);
        s.slots.emplace_back(c.name, st != slotStates_.end() ? st->second : SlotState{});
    }
    return s;
}

void UpdateEngine::setLastError(const std::string& text)
{
    std::lock_guard<std::mutex> lock(mutex_);
    lastError_ = text;
}

} // namespace mbl::update
