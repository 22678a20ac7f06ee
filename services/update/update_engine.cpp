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
#include <sys/mman.h>
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
constexpr std::size_t kBufferSize = 512u << 10;
constexpr std::size_t kDirectAlign = 4096;

// One anonymous mapping for the pipeline's buffers: page aligned (as O_DIRECT
// needs) and returned to the system as a whole when the install ends.
class PageBuffers {
public:
    PageBuffers(std::size_t count, std::size_t size) : len_(count * size), size_(size)
    {
        void* p = ::mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        base_ = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    }
    ~PageBuffers()
    {
        if (base_ != nullptr) {
            ::munmap(base_, len_);
        }
    }
    PageBuffers(const PageBuffers&) = delete;
    PageBuffers& operator=(const PageBuffers&) = delete;
    bool ok() const { return base_ != nullptr; }
    char* at(std::size_t i) const { return base_ + i * size_; }

private:
    char* base_ = nullptr;
    std::size_t len_;
    std::size_t size_;
};

// 0 or the errno of the failed write.
int pwriteAll(int fd, const char* p, std::size_t len, std::uint64_t off)
{
    while (len > 0) {
        ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? errno : EIO;
        }
        p += n;
        len -= static_cast<std::size_t>(n);
        off += static_cast<std::uint64_t>(n);
    }
    return 0;
}

// Drops O_DIRECT from an fd (for an unaligned tail, or where the file system refuses it).
void dropDirect(int fd)
{
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) {
        (void)::fcntl(fd, F_SETFL, fl & ~O_DIRECT);
    }
}

// The rootfs pipeline. The install thread copies the stream into a ring of
// page-aligned buffers and hashes the copy (EVP SHA-256); a writer thread writes
// each buffer to the slot with O_DIRECT (no page-cache copy, nothing to drop);
// a verifier thread then reads that range back from the medium with O_DIRECT and
// compares it byte for byte with the buffer before the buffer is reused. So the
// slot is proven to return exactly the bytes whose hash matched the signed
// manifest, at the cost of a memcmp instead of a second SHA-256 pass, and the
// read-back overlaps the stream. Memory: (kRingBuffers + 1) x kBufferSize.
// Where the medium refuses O_DIRECT the writes are buffered and the read-back
// runs after the fsync from a dropped page cache, hashed again (readBackHash).
class SlotPipeline {
public:
    // direct: wfd (and rfd) are O_DIRECT; verify: read every range back and compare.
    SlotPipeline(int wfd, int rfd, bool direct, bool verify)
        : wfd_(wfd), rfd_(rfd), direct_(direct), verify_(direct && verify), mem_(kRingBuffers + 1, kBufferSize)
    {
        for (std::size_t i = 0; i < kRingBuffers; ++i) {
            free_.push_back(i);
        }
        if (!mem_.ok()) {
            failed_ = true;
            error_ = Error{ErrorCode::Io, "cannot map the install buffers"};
            return;
        }
        cur_ = take();
        writer_ = std::thread([this] { writeLoop(); });
        if (verify_) {
            verifier_ = std::thread([this] { verifyLoop(); });
        }
    }
    ~SlotPipeline()
    {
        {
            std::lock_guard<std::mutex> l(m_);
            closed_ = true;
            abort_ = true;
        }
        cv_.notify_all();
        join();
    }
    SlotPipeline(const SlotPipeline&) = delete;
    SlotPipeline& operator=(const SlotPipeline&) = delete;

    // Copies into the ring and hashes the copy (what is written is what was hashed).
    Status append(const void* data, std::size_t len, crypto::Sha256& hash)
    {
        const char* p = static_cast<const char*>(data);
        while (len > 0) {
            if (cur_ == kNone) {
                return result();
            }
            const std::size_t n = std::min(len, kBufferSize - fill_);
            char* dst = mem_.at(cur_) + fill_;
            std::memcpy(dst, p, n);
            hash.update(dst, n);
            fill_ += n;
            p += n;
            len -= n;
            if (fill_ == kBufferSize) {
                if (auto st = flushCurrent(); !st) {
                    return st;
                }
            }
        }
        return {};
    }

    // Every byte written and (with O_DIRECT) read back and compared; not yet synced.
    Status finish()
    {
        if (fill_ > 0 && cur_ != kNone) {
            (void)flushCurrent();
        }
        {
            std::lock_guard<std::mutex> l(m_);
            closed_ = true;
        }
        cv_.notify_all();
        join();
        return result();
    }
    bool verified() const { return verify_; }

    // The buffered case: SHA-256 (hex) of what the medium returns for [0, size).
    Expected<std::string> readBackHash(int rfd, std::uint64_t size)
    {
        crypto::Sha256 check;
        char* buf = mem_.at(kRingBuffers);
        std::uint64_t off = 0;
        while (off < size) {
            const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(size - off, kBufferSize));
            ssize_t n = ::pread(rfd, buf, want, static_cast<off_t>(off));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0) {
                return unexpected(errnoError("read back", errno));
            }
            if (n == 0) {
                return unexpected(ErrorCode::Io, "the slot is shorter than what was written");
            }
            check.update(buf, static_cast<std::size_t>(n));
            off += static_cast<std::uint64_t>(n);
        }
        return check.finishHex();
    }

private:
    struct Job {
        std::size_t buf;
        std::size_t len;
        std::uint64_t off;
    };
    std::size_t take()
    {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [&] { return !free_.empty() || failed_; });
        if (failed_) {
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
            toWrite_.push_back(Job{cur_, fill_, queued_});
            queued_ += fill_;
        }
        cv_.notify_all();
        fill_ = 0;
        cur_ = take();
        if (cur_ == kNone) {
            return result();
        }
        return {};
    }
    void failLocked(Error e)
    {
        if (!failed_) {
            failed_ = true;
            error_ = std::move(e);
        }
    }
    void writeLoop()
    {
        for (;;) {
            Job job{};
            {
                std::unique_lock<std::mutex> l(m_);
                cv_.wait(l, [&] { return !toWrite_.empty() || closed_ || failed_; });
                if (failed_ || abort_ || toWrite_.empty()) {
                    writerDone_ = true;
                    cv_.notify_all();
                    return;
                }
                job = toWrite_.front();
                toWrite_.pop_front();
            }
            const char* p = mem_.at(job.buf);
            // O_DIRECT wants aligned lengths: only the very last buffer may be short,
            // its unaligned tail goes through the page cache (the fsync flushes it).
            const std::size_t aligned = job.len - job.len % kDirectAlign;
            int err = pwriteAll(wfd_, p, aligned, job.off);
            if (err == EINVAL) {
                // A file system that accepts O_DIRECT at open but not for writes: go
                // through the page cache (direct reads still flush and read the medium).
                dropDirect(wfd_);
                err = pwriteAll(wfd_, p, aligned, job.off);
            }
            if (err == 0 && aligned < job.len) {
                dropDirect(wfd_);
                err = pwriteAll(wfd_, p + aligned, job.len - aligned, job.off + aligned);
            }
            {
                std::lock_guard<std::mutex> l(m_);
                if (err != 0) {
                    failLocked(errnoError("write at offset " + std::to_string(job.off), err));
                } else if (verify_) {
                    toVerify_.push_back(job);
                } else {
                    free_.push_back(job.buf);
                }
            }
            cv_.notify_all();
        }
    }
    void verifyLoop()
    {
        char* back = mem_.at(kRingBuffers);
        for (;;) {
            Job job{};
            {
                std::unique_lock<std::mutex> l(m_);
                cv_.wait(l, [&] { return !toVerify_.empty() || failed_ || abort_ || writerDone_; });
                if (failed_ || abort_ || toVerify_.empty()) {
                    return; // writerDone_ with nothing left, or stopped
                }
                job = toVerify_.front();
                toVerify_.pop_front();
            }
            Status st = compareRange(back, mem_.at(job.buf), job.len, job.off);
            {
                std::lock_guard<std::mutex> l(m_);
                if (!st) {
                    failLocked(st.error());
                }
                free_.push_back(job.buf);
            }
            cv_.notify_all();
        }
    }
    // Reads [off, off+len) back from the medium and compares it with what was written.
    Status compareRange(char* back, const char* want, std::size_t len, std::uint64_t off)
    {
        // Aligned length for O_DIRECT; a short read at the end of an image file is fine.
        const std::size_t ask = (len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
        std::size_t got = 0;
        while (got < len) {
            ssize_t n = ::pread(rfd_, back + got, ask - got, static_cast<off_t>(off + got));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0 && errno == EINVAL) {
                // Only the unaligned remainder of a short read can get here.
                dropDirect(rfd_);
                continue;
            }
            if (n < 0) {
                return unexpected(errnoError("read back at offset " + std::to_string(off + got), errno));
            }
            if (n == 0) {
                return unexpected(ErrorCode::Io, "the slot ends at offset " + std::to_string(off + got) +
                                                     ", before what was written");
            }
            got += static_cast<std::size_t>(n);
        }
        if (std::memcmp(back, want, len) != 0) {
            std::size_t i = 0;
            while (i < len && back[i] == want[i]) {
                ++i;
            }
            return unexpected(ErrorCode::Io, "reads back different bytes than were written at offset " +
                                                 std::to_string(off + i) + ": the medium may be failing");
        }
        return {};
    }
    Status result()
    {
        std::lock_guard<std::mutex> l(m_);
        if (failed_) {
            return unexpected(error_);
        }
        return {};
    }
    void join()
    {
        if (writer_.joinable()) {
            writer_.join();
        }
        if (verifier_.joinable()) {
            verifier_.join();
        }
    }

    static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
    int wfd_;
    int rfd_;
    bool direct_;
    bool verify_;
    PageBuffers mem_;
    std::vector<std::size_t> free_;
    std::deque<Job> toWrite_;
    std::deque<Job> toVerify_;
    std::size_t cur_ = kNone;
    std::size_t fill_ = 0;
    std::uint64_t queued_ = 0;
    std::mutex m_;
    std::condition_variable cv_;
    bool closed_ = false;
    bool abort_ = false;
    bool failed_ = false;
    bool writerDone_ = false;
    Error error_;
    std::thread writer_;
    std::thread verifier_;
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
    auto readBack = config.getBool("readBack", true);
    if (!readBack) {
        return unexpected(readBack.error());
    }
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
                                            "trialAttempts", "goodAttempts", "slots", "readBack"});
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
    e->readBack_ = *readBack;

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
    // Test hook: the path for media that refuse O_DIRECT (tmpfs refuses it only before Linux 6.6).
    e->noDirect_ = std::getenv("MBL_UPDATE_TEST_BUFFERED") != nullptr;
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
            SlotState st;
            if (j.contains("slots") && j["slots"].contains(s.name)) {
                const auto& sj = j["slots"][s.name];
                st.state = sj.value("state", std::string("empty"));
                st.version = sj.value("version", std::string());
                st.installed = sj.value("installed", std::uint64_t{0});
                st.securityVersion = sj.value("security_version", std::uint64_t{0});
                st.operation = sj.value("operation", std::string());
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
    j["operations"] = nlohmann::json::object();
    for (const auto& [id, h] : operations_) {
        j["operations"][id] = {{"hold", h.hold}, {"slot", h.slot}};
    }
    j["slots"] = nlohmann::json::object();
    for (const auto& [name, s] : slotStates_) {
        j["slots"][name] = {{"state", s.state},
                            {"version", s.version},
                            {"installed", s.installed},
                            {"security_version", s.securityVersion},
                            {"operation", s.operation}};
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

Status UpdateEngine::wipeHead(const SlotConfig& s)
{
    constexpr std::size_t kWipe = 1u << 20;
    auto cap = slotCapacity(s);
    if (!cap) {
        return unexpected(cap.error());
    }
    Fd fd(::open(s.device.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) {
        return unexpected(errnoError("open slot " + s.name + " to wipe it", errno));
    }
    const std::vector<char> zeros(64u << 10, 0);
    const std::uint64_t end = std::min<std::uint64_t>(*cap, kWipe);
    for (std::uint64_t off = 0; off < end; off += zeros.size()) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(end - off, zeros.size()));
        if (int err = pwriteAll(fd.get(), zeros.data(), n, off); err != 0) {
            return unexpected(errnoError("wipe slot " + s.name, err));
        }
    }
    if (::fsync(fd.get()) != 0) {
        return unexpected(errnoError("fsync slot " + s.name, errno));
    }
    return {};
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
                if (auto st = wipeHead(*t); !st) {
                    log::warning("slot " + t->name + " could not be wiped: " + st.error().message);
                }
            }
            // The interrupted install had claimed the target: no trial of it is pending.
            if (pending_ && (pending_->operation == id || pending_->slot == target)) {
                pending_.reset();
            }
        }
        lastError_ = std::string(errors::kFailed) + ": install " + id +
                     " was interrupted (the service stopped or the device lost power); nothing was activated";
        (void)fs::removeTree(stagingDir_ + "/" + id);
        operations_.erase(id);
        dirty = true;
        log::warning(lastError_);
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
    // A held operation whose staging is gone holds nothing any more (nor its unarmed slot).
    for (auto it = operations_.begin(); it != operations_.end();) {
        if (fs::exists(stagingDir_ + "/" + it->first + "/" + kManifestFile)) {
            ++it;
            continue;
        }
        log::warning("the staging of operation " + it->first + " is gone; it holds nothing any more");
        for (auto& [name, st] : slotStates_) {
            if (st.state == "staged" && st.operation == it->first) {
                st = SlotState{};
            }
        }
        (void)fs::removeTree(stagingDir_ + "/" + it->first);
        it = operations_.erase(it);
        dirty = true;
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
    if (!st) {
        (void)fs::removeTree(dir);
        std::lock_guard<std::mutex> lock(mutex_);
        runningOperation_.clear();
        lastError_ = st.error().name() + ": " + st.error().message;
        (void)saveStateLocked();
    } else {
        // installLocked recorded the cleared error with the rest of its state.
        std::lock_guard<std::mutex> lock(mutex_);
        runningOperation_.clear();
        if (!lastError_.empty()) {
            lastError_.clear();
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
            if (pending_ && pending_->slot == booted_) {
                return unexpected(ErrorCode::Busy, "slot " + booted_ +
                                                       " is on trial: Commit or MarkBad it before installing firmware");
            }
            const SlotState& ts = slotStates_[target->name];
            if (ts.state == "staged" && operations_.count(ts.operation) != 0) {
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

    // The inactive slot is about to be overwritten (only now: a bundle refused
    // before its rootfs leaves that slot as it was): make sure the bootloader
    // cannot pick it until it is fully written and verified.
    auto claimSlot = [&]() -> Status {
        mj["target"] = target->name;
        if (auto s = fs::writeFileAtomic(marker, mj.dump() + "\n", 0600); !s) {
            return s;
        }
        if (auto s = disarm(*target); !s) {
            return s;
        }
        // Not written to state.json here: a crash from now on is recovered through the
        // marker (target disarmed, state empty), a failure is saved by install().
        std::lock_guard<std::mutex> lock(mutex_);
        slotStates_[target->name] = SlotState{};
        if (pending_ && pending_->slot == target->name) {
            pending_.reset();
        }
        auto env = bootloader_->read();
        if (env) {
            active_ = activeSlotFrom(*env);
        }
        return {};
    };

    const auto tStream = std::chrono::steady_clock::now();
    // From here on the inactive slot may hold part of a refused image: a failure
    // leaves it disarmed, "empty" (no version) and its head wiped.
    bool slotTouched = false;
    auto abandon = [&](Status s) -> Status {
        if (target != nullptr && slotTouched) {
            if (auto w = wipeHead(*target); !w) {
                log::warning("slot " + target->name + " could not be wiped: " + w.error().message);
            }
        }
        return s;
    };
    for (const auto& p : manifest->payloads) {
        if (auto s = r.beginPayload(p); !s) {
            return abandon(s);
        }
        if (p.type == bundle::PayloadType::Rootfs) {
            if (auto s = claimSlot(); !s) {
                return s;
            }
            slotTouched = true;
        }
        Status s = p.type == bundle::PayloadType::Rootfs ? writeRootfs(r, p, *target, advanced)
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

    // The verified manifest stays beside the staged payloads (operationManifest);
    // it is written first so that one state write records the staged operation,
    // the cleared error and the pending trial before the bootloader is armed.
    if (auto s = fs::makeDirs(dir, 0700); !s) {
        return s;
    }
    if (auto s = fs::writeFileAtomic(dir + "/" + kManifestFile, manifest->toJson().dump(), 0600); !s) {
        return s;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        operations_[operationId] = HeldOperation{!options.arm, target != nullptr ? target->name : std::string()};
        lastError_.clear();
        if (target != nullptr) {
            SlotState ns;
            ns.state = options.arm ? "trial" : "staged";
            ns.version = manifest->version;
            ns.installed = nowSeconds();
            ns.securityVersion = manifest->securityVersion;
            if (options.arm) {
                pending_ = Pending{target->name, manifest->version, manifest->securityVersion, readBootId(), operationId};
            } else {
                ns.operation = operationId;
            }
            slotStates_[target->name] = ns;
        }
        if (auto s = saveStateLocked(); !s) {
            operations_.erase(operationId);
            return s;
        }
        if (target != nullptr && !options.arm) {
            log::notice("slot " + target->name + " holds " + manifest->version + ", verified and not armed (operation " +
                        operationId + "): Arm it to try it, Release it to drop it");
        }
        if (target != nullptr && options.arm) {
            const SlotConfig* b = slot(booted_);
            std::string order = target->bootname;
            if (b != nullptr && slotStates_[b->name].state == "good") {
                order += " " + b->bootname;
            }
            if (auto s = bootloader_->write(
                    {{"BOOT_ORDER", order}, {leftVar(target->bootname), std::to_string(trialAttempts_)}});
                !s) {
                // Not armed after all: the record must not claim a trial or staged payloads.
                slotStates_[target->name] = SlotState{};
                pending_.reset();
                operations_.erase(operationId);
                (void)saveStateLocked();
                (void)disarm(*target);
                return s;
            }
            auto env = bootloader_->read();
            if (env) {
                active_ = activeSlotFrom(*env);
            }
            log::notice("slot " + target->name + " holds " + manifest->version +
                        " and is armed for one trial boot; reboot to try it");
        }
    }
    pausePoint("after-arm");
    auto ms = [](auto a, auto b) { return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count()); };
    log::info("install timing " + operationId + ": head verified at " + ms(tStart, tVerified) + " ms, payloads from " +
              ms(tStart, tStream) + " to " + ms(tStart, tArm) + " ms, armed and recorded at " +
              ms(tStart, std::chrono::steady_clock::now()) + " ms");
    return {};
}

Status UpdateEngine::writeRootfs(bundle::Reader& r, const bundle::Payload& p, const SlotConfig& target,
                                 const std::function<void(std::uint64_t)>& advanced)
{
    const std::string what = "slot " + target.name + " (" + target.device + ")";
    // O_DIRECT where the medium allows it (block devices, most file systems);
    // otherwise buffered writes and a read-back after the cache was dropped.
    Fd out(noDirect_ ? -1 : ::open(target.device.c_str(), O_WRONLY | O_CLOEXEC | O_DIRECT));
    Fd in;
    if (out) {
        in = Fd(::open(target.device.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT));
    }
    const bool direct = out && in;
    if (!direct) {
        in.reset();
        out = Fd(::open(target.device.c_str(), O_WRONLY | O_CLOEXEC));
    }
    if (!out) {
        return unexpected(errnoError("open " + what, errno));
    }
    const auto t0 = std::chrono::steady_clock::now();
    crypto::Sha256 hash;
    std::uint64_t written = 0;
    bool paused = false;
    SlotPipeline pipe(out.get(), in.get(), direct, readBack_);
    for (;;) {
        auto c = r.read();
        if (!c) {
            return unexpected(c.error());
        }
        if (c->size == 0) {
            break;
        }
        if (auto s = pipe.append(c->data, c->size, hash); !s) {
            return unexpected(s.error().code, what + ": " + s.error().message);
        }
        written += c->size;
        advanced(c->size);
        if (!paused && written * 2 >= p.size) {
            paused = true;
            pausePoint("rootfs-half");
        }
    }
    if (auto s = pipe.finish(); !s) {
        return unexpected(s.error().code, what + ": " + s.error().message);
    }
    if (hash.finishHex() != p.sha256 || written != p.size) {
        return unexpected(ErrorCode::SignatureInvalid, "payload '" + p.name +
                                                           "' does not match the SHA-256 of the signed manifest; "
                                                           "slot " + target.name + " was left unbootable");
    }
    if (::fsync(out.get()) != 0) {
        return unexpected(errnoError("fsync " + what, errno));
    }
    const auto t1 = std::chrono::steady_clock::now();
    pausePoint("rootfs-written");
    if (readBack_ && !pipe.verified()) {
        // Drop the cached pages so the check reads back what the medium holds.
        (void)::posix_fadvise(out.get(), 0, 0, POSIX_FADV_DONTNEED);
        in = Fd(::open(target.device.c_str(), O_RDONLY | O_CLOEXEC));
        if (!in) {
            return unexpected(errnoError("reopen " + what, errno));
        }
        auto check = pipe.readBackHash(in.get(), p.size);
        if (!check) {
            return unexpected(check.error().code, what + ": " + check.error().message);
        }
        if (*check != p.sha256) {
            return unexpected(ErrorCode::Io, what + " reads back different bytes than were written: the medium may be failing");
        }
    }
    const auto t2 = std::chrono::steady_clock::now();
    auto ms = [](auto d) { return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()); };
    std::string how = direct ? "written (O_DIRECT)" : "written";
    if (!readBack_) {
        how += ", synced in " + ms(t1 - t0) + " ms, not read back (readBack is off)";
    } else if (pipe.verified()) {
        how += ", read back and compared, synced in " + ms(t1 - t0) + " ms";
    } else {
        how += ", synced in " + ms(t1 - t0) + " ms, read back and verified in " + ms(t2 - t1) + " ms";
    }
    log::info(what + ": " + std::to_string(p.size) + " bytes streamed, hashed, " + how);
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
    SlotState& ss = slotStates_[t->name];
    const bool armedByIt = pending_ && pending_->operation == operationId && pending_->slot == t->name;
    if (armedByIt && pending_->slot == booted_ && pending_->bootId != readBootId()) {
        return {}; // armed and booted: on trial already
    }
    if (!armedByIt) {
        if (ss.state != "staged" || ss.operation != operationId) {
            return unexpected(ErrorCode::NotFound, "the firmware operation " + operationId + " wrote to slot " +
                                                       t->name + " is gone (the slot is " + ss.state + " now)");
        }
        if (pending_ && pending_->slot == booted_) {
            return unexpected(ErrorCode::Busy, "slot " + booted_ + " is on trial: Commit or MarkBad it first");
        }
        if (ss.securityVersion < floor_) {
            return unexpected(ErrorCode::Downgrade, "firmware " + ss.version + " has security_version " +
                                                        std::to_string(ss.securityVersion) +
                                                        ", below the anti-rollback floor " + std::to_string(floor_));
        }
        // Recorded before the bootloader is armed, like an install with arm=true.
        pending_ = Pending{t->name, ss.version, ss.securityVersion, readBootId(), operationId};
        ss.state = "trial";
        ss.operation.clear();
        if (auto s = saveStateLocked(); !s) {
            ss.state = "staged";
            ss.operation = operationId;
            pending_.reset();
            return s;
        }
    }
    // (Again, when already armed: a crash may have come between the state and the environment write.)
    const SlotConfig* b = slot(booted_);
    std::string order = t->bootname;
    if (b != nullptr && b != t && slotStates_[b->name].state == "good") {
        order += " " + b->bootname;
    }
    if (auto s = bootloader_->write({{"BOOT_ORDER", order}, {leftVar(t->bootname), std::to_string(trialAttempts_)}});
        !s) {
        ss.state = "staged";
        ss.operation = operationId;
        pending_.reset();
        (void)saveStateLocked();
        (void)disarm(*t);
        return s;
    }
    if (auto env = bootloader_->read()) {
        active_ = activeSlotFrom(*env);
    }
    log::notice("slot " + t->name + " holds " + ss.version + " and is armed for one trial boot (operation " +
                operationId + "); reboot to try it");
    return {};
}

Status UpdateEngine::release(const std::string& operationId)
{
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
        if (t == nullptr || slotStates_[t->name].state != "staged" || slotStates_[t->name].operation != operationId) {
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
        SlotState& ss = slotStates_[staged->name];
        const bool still = ss.state == "staged" && ss.operation == operationId;
        dropOperationLocked(operationId);
        if (still) {
            ss = SlotState{};
        }
        if (auto s = saveStateLocked(); !s) {
            return s;
        }
        if (!still) {
            return {};
        }
    }
    if (auto w = wipeHead(*staged); !w) {
        log::warning("slot " + staged->name + " could not be wiped: " + w.error().message);
    }
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
