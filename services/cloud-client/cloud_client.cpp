#include "cloud_client.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"
#include "mbl_version.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <ctime>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

namespace mbl::cloud {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

struct CloudClient::DownloadJob {
    std::string actionId;
    std::string filename;
    std::string url;
    std::uint64_t size = 0;
    std::string sha256;
    Fd writeEnd;
    std::atomic<bool> cancel{false};
    std::thread thread;
    std::shared_ptr<const TlsSettings> tls;
    Origin origin;
};

namespace {

// Writes to the (non-blocking) pipe, waiting for the reader but giving up on cancel
// or when the reader has closed its end.
bool pipeWrite(int fd, const std::atomic<bool>& cancel, const char* data, std::size_t len)
{
    while (len > 0) {
        ssize_t w = ::write(fd, data, len);
        if (w > 0) {
            data += w;
            len -= static_cast<std::size_t>(w);
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno == EAGAIN) {
            if (cancel) {
                return false;
            }
            struct pollfd p = {fd, POLLOUT, 0};
            ::poll(&p, 1, 200);
            continue;
        }
        return false; // EPIPE: the reader is gone
    }
    return true;
}

// SHA-256 and the pipe writes of a download on a thread of their own, so that
// libcurl's TLS decryption (the download thread) and hashing + copying into the
// pipe run in parallel, on two cores where there are. Chunks are hashed and
// written strictly in order; at most kMaxQueued wait (back-pressure on the
// download), and their buffers are reused.
class PipeFeeder {
public:
    static constexpr std::size_t kChunk = 256 * 1024;
    static constexpr std::size_t kMaxQueued = 4;

    PipeFeeder(int fd, const std::atomic<bool>& cancel) : fd_(fd), cancel_(cancel), thread_([this] { run(); }) {}
    ~PipeFeeder() { stop(); }
    // Lets the thread finish what is queued and joins it: after this nothing touches the fd.
    void stop()
    {
        {
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) {
            thread_.join();
        }
    }
    PipeFeeder(const PipeFeeder&) = delete;
    PipeFeeder& operator=(const PipeFeeder&) = delete;

    // An empty buffer with kChunk capacity (a used one when there is one).
    std::vector<char> buffer()
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!spare_.empty()) {
            std::vector<char> b = std::move(spare_.back());
            spare_.pop_back();
            return b;
        }
        std::vector<char> b;
        b.reserve(kChunk);
        return b;
    }
    // Queues a chunk; waits while kMaxQueued are queued. False once the pipe is gone.
    bool push(std::vector<char>&& chunk)
    {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return queue_.size() < kMaxQueued || failed_; });
        if (failed_) {
            return false;
        }
        queue_.push_back(std::move(chunk));
        cv_.notify_all();
        return true;
    }
    // Waits until every queued chunk is hashed and written; false if the pipe went away.
    bool drain()
    {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return (queue_.empty() && !busy_) || failed_; });
        return !failed_;
    }
    // Only between drain() and the next push().
    crypto::Sha256& hash() { return hash_; }

private:
    void run()
    {
        std::unique_lock<std::mutex> lk(mu_);
        while (true) {
            cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) {
                return; // stop_
            }
            std::vector<char> chunk = std::move(queue_.front());
            queue_.pop_front();
            busy_ = true;
            const bool skip = failed_;
            lk.unlock();
            cv_.notify_all(); // room in the queue
            bool ok = !skip;
            if (ok) {
                hash_.update(chunk.data(), chunk.size());
                ok = pipeWrite(fd_, cancel_, chunk.data(), chunk.size());
            }
            chunk.clear();
            lk.lock();
            busy_ = false;
            failed_ = failed_ || !ok;
            spare_.push_back(std::move(chunk));
            cv_.notify_all();
        }
    }

    int fd_;
    const std::atomic<bool>& cancel_;
    crypto::Sha256 hash_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::vector<char>> queue_;
    std::vector<std::vector<char>> spare_;
    bool busy_ = false;
    bool stop_ = false;
    bool failed_ = false;
    std::thread thread_; // last: starts when everything above exists
};

std::uint64_t nowEpoch()
{
    return static_cast<std::uint64_t>(std::time(nullptr));
}

constexpr std::size_t kClosedActionsKept = 64;

std::int64_t nowMs()
{
    return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

} // namespace

Expected<CloudSettings> CloudSettings::fromConfig(const Config& c)
{
    CloudSettings s;
    if (auto st = c.rejectUnknownKeys({"poll", "http", "download", "device_class", "allow_other_hosts", "verbose",
                                       "confirmation"});
        !st) {
        return unexpected(st.error());
    }
    auto sleepText = c.getString("poll.default_sleep", "00:05:00");
    if (!sleepText) {
        return unexpected(sleepText.error());
    }
    auto sleep = parseSleep(*sleepText);
    if (!sleep) {
        return unexpected(ErrorCode::InvalidArgument, c.origin() + ": key 'poll.default_sleep': " + sleep.error().message);
    }
    s.defaultSleep = *sleep;
    struct IntKey {
        const char* key;
        std::int64_t fallback, min, max;
        std::function<void(std::int64_t)> set;
    };
    const std::vector<IntKey> keys = {
        {"poll.backoff_base_ms", 2000, 10, 3600000, [&](std::int64_t v) { s.backoffBase = milliseconds(v); }},
        {"poll.backoff_cap_ms", 600000, 10, 86400000, [&](std::int64_t v) { s.backoffCap = milliseconds(v); }},
        {"poll.auth_retry_sec", 300, 1, 86400, [&](std::int64_t v) { s.authRetry = seconds(v); }},
        {"poll.unprovisioned_retry_sec", 60, 1, 86400, [&](std::int64_t v) { s.unprovisionedRetry = seconds(v); }},
        {"http.connect_timeout_sec", 30, 1, 600, [&](std::int64_t v) { s.connectTimeoutSec = static_cast<long>(v); }},
        {"http.request_timeout_sec", 120, 1, 3600, [&](std::int64_t v) { s.requestTimeoutSec = static_cast<long>(v); }},
        {"http.max_body_bytes", 1 << 20, 1024, 64 << 20,
         [&](std::int64_t v) { s.maxBodyBytes = static_cast<std::size_t>(v); }},
        {"download.low_speed_limit", 1024, 1, 1LL << 30, [&](std::int64_t v) { s.lowSpeedLimit = static_cast<long>(v); }},
        {"download.low_speed_time_sec", 60, 1, 3600,
         [&](std::int64_t v) { s.lowSpeedTimeSec = static_cast<long>(v); }},
        {"download.max_retries", 5, 0, 100, [&](std::int64_t v) { s.downloadRetries = static_cast<int>(v); }},
        {"download.retry_base_ms", 1000, 1, 3600000, [&](std::int64_t v) { s.downloadRetryBase = milliseconds(v); }},
        {"download.max_bytes_per_sec", 0, 0, 1LL << 40, [&](std::int64_t v) { s.maxBytesPerSec = v; }},
    };
    for (const auto& k : keys) {
        auto v = c.getInt(k.key, k.fallback, k.min, k.max);
        if (!v) {
            return unexpected(v.error());
        }
        k.set(*v);
    }
    auto dc = c.getString("device_class", "");
    auto other = c.getBool("allow_other_hosts", false);
    auto verbose = c.getBool("verbose", false);
    auto confirmation = c.getString("confirmation", "auto");
    if (!dc || !other || !verbose || !confirmation) {
        return unexpected(!dc ? dc.error() : !other ? other.error() : !verbose ? verbose.error() : confirmation.error());
    }
    if (*confirmation != "auto" && *confirmation != "manual") {
        return unexpected(ErrorCode::InvalidArgument,
                          c.origin() + ": key 'confirmation' must be \"auto\" or \"manual\", not \"" + *confirmation + "\"");
    }
    s.confirmManually = *confirmation == "manual";
    s.deviceClass = *dc;
    s.allowOtherHosts = *other;
    s.verbose = *verbose;
    return s;
}

Expected<std::unique_ptr<CloudClient>> CloudClient::open(const Paths& paths, const Config& config)
{
    auto settings = CloudSettings::fromConfig(config);
    if (!settings) {
        return unexpected(settings.error());
    }
    std::unique_ptr<CloudClient> c(new CloudClient());
    c->settings_ = *settings;
    c->stateDir_ = paths.state("cloud");
    if (auto st = fs::makeDirs(c->stateDir_, 0700); !st) {
        return unexpected(st.error());
    }
    auto q = FeedbackQueue::open(c->stateDir_ + "/feedback-queue.json");
    if (!q) {
        return unexpected(q.error());
    }
    c->queue_ = std::move(q).value();
    // Attributes apps published survive restarts.
    if (auto text = fs::readFile(c->stateDir_ + "/attributes.json", 1u << 20)) {
        json j = json::parse(*text, nullptr, false);
        if (j.is_object()) {
            for (auto& [ns, kv] : j.items()) {
                if (!kv.is_object()) {
                    continue;
                }
                for (auto& [k, v] : kv.items()) {
                    if (v.is_string()) {
                        c->appAttributes_[ns][k] = v.get<std::string>();
                    }
                }
            }
        }
    }
    c->backoff_ = std::make_unique<Backoff>(c->settings_.backoffBase, c->settings_.backoffCap);
    // The level the daemon started with (log::init read MBL_LOG_LEVEL) is what an
    // unset log_level reverts to.
    if (const char* lvl = std::getenv("MBL_LOG_LEVEL")) {
        log::Level parsed;
        if (log::parseLevel(lvl, parsed)) {
            c->startLogLevel_ = parsed;
        }
    }
    // Actions this device closed: a deploymentBase for one of them is never announced again
    // (e.g. after a restart while its closing feedback was still queued).
    if (auto text = fs::readFile(c->stateDir_ + "/closed-actions.json", 1u << 16)) {
        json j = json::parse(*text, nullptr, false);
        if (j.is_array()) {
            for (const auto& v : j) {
                if (v.is_string()) {
                    c->closedActions_.push_back(v.get<std::string>());
                }
            }
        }
    }
    // Over-the-air settings survive restarts; a damaged file is ignored (defaults), never fatal.
    const std::string settingsPath = c->stateDir_ + "/settings.json";
    if (fs::exists(settingsPath)) {
        auto text = fs::readFile(settingsPath, RuntimeSettings::kMaxJsonBytes + 1);
        auto parsed = text ? RuntimeSettings::parse(*text) : Expected<RuntimeSettings>(unexpected(text.error()));
        if (parsed) {
            c->overrides_ = *parsed;
            if (parsed->logLevel) {
                log::Level lvl;
                (void)log::parseLevel(*parsed->logLevel, lvl);
                log::setLevel(lvl);
            }
            c->snap_.pollInterval = c->effectivePollSecsLocked();
            log::info("cloud: settings in effect: " + parsed->dump());
        } else {
            log::warning("cloud: ignoring " + settingsPath + ": " + parsed.error().message);
        }
    }
    return c;
}

CloudClient::~CloudClient()
{
    stop();
}

void CloudClient::start(DeviceSource& source, Listener& listener)
{
    source_ = &source;
    listener_ = &listener;
    worker_ = std::thread([this] { run(); });
}

void CloudClient::stop()
{
    std::vector<std::shared_ptr<DownloadJob>> jobs;
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
        stopping_ = true;
        jobs = downloads_;
        for (auto& j : jobs) {
            j->cancel = true;
        }
    }
    cv_.notify_all();
    if (worker_.joinable()) {
        worker_.join();
    }
    for (auto& j : jobs) {
        if (j->thread.joinable()) {
            j->thread.join();
        }
    }
}

Snapshot CloudClient::snapshot() const
{
    std::lock_guard<std::mutex> lk(mu_);
    return snap_;
}

void CloudClient::pollNow()
{
    {
        std::lock_guard<std::mutex> lk(mu_);
        wake_ = true;
    }
    cv_.notify_all();
}

void CloudClient::notify(const std::vector<std::string>& names)
{
    if (listener_ != nullptr) {
        listener_->propertiesChanged(names);
    }
}

void CloudClient::setState(const std::string& state, const std::string& error)
{
    std::vector<std::string> changed;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (snap_.connectionState != state) {
            snap_.connectionState = state;
            changed.push_back("ConnectionState");
        }
        if (snap_.lastError != error && !(error.empty() && state == "connecting")) {
            snap_.lastError = error;
            changed.push_back("LastError");
        }
    }
    if (!error.empty()) {
        log::warning("cloud: " + state + ": " + error);
    } else if (!changed.empty() && changed.front() == "ConnectionState") {
        log::info("cloud: " + state);
    }
    if (!changed.empty()) {
        notify(changed);
    }
}

void CloudClient::run()
{
    using Clock = std::chrono::steady_clock;
    std::unique_lock<std::mutex> lk(mu_);
    while (!stop_) {
        lk.unlock();
        pollSleep_ = false;
        milliseconds wait = cycle();
        const auto cycleEnd = Clock::now();
        lk.lock();
        if (pollSleep_) {
            wait = seconds(effectivePollSecsLocked()); // settings may have changed during the cycle
        }
        intervalChanged_ = false;
        auto deadline = cycleEnd + wait;
        while (!stop_ && !wake_) {
            if (!cv_.wait_until(lk, deadline, [&] { return stop_ || wake_ || intervalChanged_; })) {
                break; // time for the next poll
            }
            if (intervalChanged_) {
                // A new poll interval counts from the end of the last poll, not from now.
                intervalChanged_ = false;
                if (pollSleep_) {
                    deadline = cycleEnd + seconds(effectivePollSecsLocked());
                }
            }
        }
        wake_ = false;
    }
}

std::uint32_t CloudClient::effectivePollSecsLocked() const
{
    return overrides_.pollIntervalSec ? *overrides_.pollIntervalSec : serverPollSecs_;
}

std::string CloudClient::settingsJson() const
{
    std::lock_guard<std::mutex> lk(mu_);
    return overrides_.dump();
}

Status CloudClient::applySettings(const std::string& text)
{
    auto parsed = RuntimeSettings::parse(text);
    if (!parsed) {
        return unexpected(parsed.error());
    }
    bool intervalChanged = false;
    // One apply at a time; the file write (with its fsyncs) happens outside mu_ so
    // the worker and the downloads never wait for the disk.
    std::lock_guard<std::mutex> applying(settingsMu_);
    // Persist first: if the write fails, nothing changes.
    if (auto st = fs::writeFileAtomic(stateDir_ + "/settings.json", parsed->dump() + "\n", 0600); !st) {
        return st;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        overrides_ = *parsed;
        log::Level lvl = startLogLevel_;
        if (overrides_.logLevel) {
            (void)log::parseLevel(*overrides_.logLevel, lvl);
        }
        log::setLevel(lvl);
        const std::uint32_t eff = effectivePollSecsLocked();
        if (eff != snap_.pollInterval) {
            snap_.pollInterval = eff;
            intervalChanged = true;
            intervalChanged_ = true;
        }
    }
    log::notice("cloud: settings applied: " + parsed->dump());
    if (intervalChanged) {
        cv_.notify_all();
        notify({"PollInterval"});
    }
    return {};
}

Status CloudClient::connect()
{
    auto prov = source_->provisioning();
    if (!prov) {
        return unexpected(prov.error());
    }
    auto origin = originOf(prov->serverUrl);
    if (!origin || origin->scheme != "https") {
        return unexpected(ErrorCode::InvalidArgument,
                          "provisioned server_url '" + prov->serverUrl + "' is not an https URL");
    }
    if (prov->deviceId.empty() || !str::isSafeName(prov->deviceId, 128)) {
        return unexpected(ErrorCode::InvalidArgument, "the device id '" + prov->deviceId + "' cannot be a controllerId");
    }
    if (prov->tenant.empty() || !str::isSafeName(prov->tenant, 128)) {
        return unexpected(ErrorCode::InvalidArgument, "provisioned tenant '" + prov->tenant + "' is not valid");
    }
    if (prov->serverCaPem.empty()) {
        return unexpected(ErrorCode::NotProvisioned, "the provisioning has no server CA (server_ca_pem)");
    }
    TlsSettings tls;
    tls.caPem = prov->serverCaPem;
    tls.connectTimeoutSec = settings_.connectTimeoutSec;
    tls.requestTimeoutSec = settings_.requestTimeoutSec;
    tls.lowSpeedLimit = settings_.lowSpeedLimit;
    tls.lowSpeedTimeSec = settings_.lowSpeedTimeSec;
    tls.maxRecvBytesPerSec = settings_.maxBytesPerSec;
    tls.verbose = settings_.verbose;
    if (prov->authMode == "mtls") {
        auto creds = source_->tlsCredentials();
        if (!creds) {
            return unexpected(creds.error());
        }
        tls.keyPem = std::move(creds->keyPem);
        tls.chainPem = std::move(creds->chainPem);
    } else if (prov->authMode == "target-token") {
        tls.authorization = "TargetToken " + prov->token;
    } else if (prov->authMode == "gateway-token") {
        tls.authorization = "GatewayToken " + prov->token;
    } else {
        return unexpected(ErrorCode::InvalidArgument,
                          "provisioned auth_mode '" + prov->authMode + "' is not mtls, target-token or gateway-token");
    }
    std::string server = prov->serverUrl;
    while (!server.empty() && server.back() == '/') {
        server.pop_back();
    }
    auto shared = std::make_shared<const TlsSettings>(tls);
    session_ = std::make_unique<HttpSession>(std::move(tls), *origin);
    session_->setAbortFlag(&stopping_);
    bool urlChanged = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        origin_ = *origin;
        tls_ = shared;
        baseUrl_ = server + "/" + prov->tenant + "/controller/v1/" + prov->deviceId;
        urlChanged = snap_.serverUrl != server;
        snap_.serverUrl = server;
        systemAttributes_["device_id"] = prov->deviceId;
    }
    etag_.clear();
    if (urlChanged) {
        notify({"ServerUrl"});
    }
    return {};
}

milliseconds CloudClient::serverTrouble(const std::string& why, const HttpResponse* resp)
{
    milliseconds delay = backoff_->next();
    if (resp != nullptr) {
        if (auto ra = parseRetryAfter(resp->retryAfter, static_cast<std::int64_t>(nowEpoch()))) {
            // Honour the server's wish, but never beyond the cap (a broken header must not park us for days).
            delay = std::max(delay, std::min<milliseconds>(settings_.backoffCap, *ra));
        }
    }
    setState("disconnected", why + "; retrying in " + std::to_string(delay.count()) + " ms");
    return delay;
}

milliseconds CloudClient::cycle()
{
    if (!session_) {
        auto st = connect();
        if (!st) {
            setState("unprovisioned", st.error().describe());
            return settings_.unprovisionedRetry;
        }
        setState("connecting");
    }
    std::string base;
    {
        std::lock_guard<std::mutex> lk(mu_);
        base = baseUrl_;
    }
    // Device facts (firmware version, apps) may change under us: refresh each cycle.
    auto system = source_->systemAttributes();
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto& [k, v] : system) {
            systemAttributes_[k] = v;
        }
    }

    std::vector<std::string> hdrs;
    if (!etag_.empty()) {
        hdrs.push_back("If-None-Match: " + etag_);
    }
    auto r = session_->request("GET", base, "", hdrs, settings_.maxBodyBytes);
    if (!r) {
        // Transport failure, or an answer we refused (too large, redirect loop, bad redirect target).
        return serverTrouble(r.error().message, nullptr);
    }
    log::debug("cloud: poll answered HTTP " + std::to_string(r->status));
    if (r->status == 401 || r->status == 403) {
        // Credentials may have changed (new certificate, new token): fetch them again next time.
        session_.reset();
        setState("auth-failed", "the server refused the device's credentials (HTTP " + std::to_string(r->status) +
                                    "); retrying in " + std::to_string(settings_.authRetry.count()) + " s");
        return settings_.authRetry;
    }
    if (r->status == 429 || r->status >= 500) {
        return serverTrouble("server answered HTTP " + std::to_string(r->status), &*r);
    }
    PollResult poll;
    if (r->status == 304) {
        poll = lastPoll_;
    } else if (r->status == 200) {
        auto parsed = parsePoll(r->body);
        if (!parsed) {
            etag_.clear();
            return serverTrouble("unusable controller base: " + parsed.error().message, nullptr);
        }
        poll = *parsed;
        lastPoll_ = poll;
        etag_ = r->etag;
    } else {
        return serverTrouble("server answered HTTP " + std::to_string(r->status) + " to the poll of " + base, nullptr);
    }
    backoff_->reset();
    const milliseconds serverSleep = poll.sleep.value_or(settings_.defaultSleep);
    milliseconds sleep = serverSleep;
    std::vector<std::string> changed;
    {
        std::lock_guard<std::mutex> lk(mu_);
        snap_.lastContact = nowEpoch();
        changed.push_back("LastContact");
        serverPollSecs_ = static_cast<std::uint32_t>(std::chrono::duration_cast<seconds>(serverSleep).count());
        // An over-the-air poll_interval_sec overrides the server's sleep.
        const std::uint32_t secs = effectivePollSecsLocked();
        if (overrides_.pollIntervalSec) {
            sleep = seconds(secs);
        }
        if (snap_.pollInterval != secs) {
            snap_.pollInterval = secs;
            changed.push_back("PollInterval");
        }
    }
    setState("connected");
    notify(changed);

    // Feedback first, in order: it may close the action the links talk about.
    if (auto st = deliverFeedback(); !st) {
        if (st.error().code == ErrorCode::AccessDenied) {
            session_.reset();
            setState("auth-failed", st.error().message);
            return settings_.authRetry;
        }
        return serverTrouble("feedback not delivered: " + st.error().message, nullptr);
    }

    if (!poll.configData.empty()) {
        if (auto st = pushAttributes(poll.configData, true); !st) {
            log::warning("cloud: configData: " + st.error().message);
        }
    } else if (!configDataUrl_.empty()) {
        (void)pushAttributes(configDataUrl_, false);
    }
    if (!poll.cancelAction.empty()) {
        handleCancel(poll.cancelAction);
    }
    const bool confirmed = !poll.confirmationBase.empty() && handleConfirmation(poll.confirmationBase);
    if (!poll.deploymentBase.empty()) {
        handleDeployment(poll.deploymentBase);
    }
    if (!poll.installedBase.empty() && poll.installedBase != installedBaseHref_) {
        handleInstalledBase(poll.installedBase);
    }
    if (confirmed) {
        return seconds(1); // the confirmed action is offered as a deployment at the next poll
    }
    pollSleep_ = true;
    return sleep;
}

Status CloudClient::deliverFeedback()
{
    std::string base;
    {
        std::lock_guard<std::mutex> lk(mu_);
        base = baseUrl_;
    }
    while (auto f = queue_->front()) {
        const std::string url = base + "/" + f->endpoint + "/" + f->actionId + "/feedback";
        auto r = session_->request("POST", url, f->body, {"Content-Type: application/json"}, 64 * 1024);
        if (!r) {
            return unexpected(r.error());
        }
        if (r->status == 200 || r->status == 201 || r->status == 204) {
            (void)queue_->pop();
            continue;
        }
        if (r->status == 410) {
            log::warning("cloud: action " + f->actionId + " is closed on the server (410); its queued feedback is dropped");
            (void)queue_->dropAction(f->actionId);
            continue;
        }
        if (r->status == 401 || r->status == 403) {
            return unexpected(ErrorCode::AccessDenied, "the server refused feedback (HTTP " + std::to_string(r->status) + ")");
        }
        if (r->status == 429 || r->status >= 500) {
            return unexpected(ErrorCode::Io, "server answered HTTP " + std::to_string(r->status) + " to feedback");
        }
        // 400/404/405/409: the message can never succeed; log it and go on in order.
        log::warning("cloud: feedback for action " + f->actionId + " refused with HTTP " + std::to_string(r->status) +
                     ": " + r->body.substr(0, 200));
        (void)queue_->pop();
    }
    return {};
}

std::map<std::string, std::string> CloudClient::mergedAttributes(const std::map<std::string, std::string>& system) const
{
    std::map<std::string, std::string> out = system;
    out["mbl.client_version"] = MBL_VERSION;
    if (!settings_.deviceClass.empty()) {
        out["device_class"] = settings_.deviceClass;
    }
    for (const auto& [ns, kv] : appAttributes_) {
        for (const auto& [k, v] : kv) {
            out[ns + "." + k] = v;
        }
    }
    return out;
}

std::map<std::string, std::string> CloudClient::attributes() const
{
    std::lock_guard<std::mutex> lk(mu_);
    return mergedAttributes(systemAttributes_);
}

Status CloudClient::pushAttributes(const std::string& url, bool force)
{
    if (auto st = checkLink(url, origin_, settings_.allowOtherHosts); !st) {
        return st;
    }
    configDataUrl_ = url;
    std::map<std::string, std::string> attrs;
    {
        std::lock_guard<std::mutex> lk(mu_);
        attrs = mergedAttributes(systemAttributes_);
        if (!force && !attributesDirty_ && attrs == lastSent_) {
            return {};
        }
        attributesDirty_ = false;
    }
    if (!force && attrs == lastSent_) {
        return {};
    }
    if (auto st = validateAttributes(attrs); !st) {
        return st;
    }
    auto r = session_->request("PUT", url, configDataBody(attrs), {"Content-Type: application/json"}, 64 * 1024);
    if (!r) {
        std::lock_guard<std::mutex> lk(mu_);
        attributesDirty_ = true;
        return unexpected(r.error());
    }
    if (r->status != 200 && r->status != 201 && r->status != 204) {
        std::lock_guard<std::mutex> lk(mu_);
        attributesDirty_ = true;
        return unexpected(ErrorCode::Failed, "server refused configData with HTTP " + std::to_string(r->status) + ": " +
                                                 r->body.substr(0, 200));
    }
    lastSent_ = attrs;
    log::info("cloud: sent " + std::to_string(attrs.size()) + " attributes");
    return {};
}

Status CloudClient::setAttributes(const std::string& ns, const std::map<std::string, std::string>& attrs)
{
    if (!str::isSafeName(ns, 64) || ns == "mbl" || ns == "device_id" || ns == "device_class" ||
        ns == "firmware_version" || ns == "app") {
        return unexpected(ErrorCode::InvalidArgument,
                          "namespace '" + ns + "' is not allowed: use [A-Za-z0-9._-], at most 64 characters, and "
                                               "not a reserved name (mbl, app, device_id, device_class, firmware_version)");
    }
    for (const auto& [k, v] : attrs) {
        if (k.empty() || k.find_first_of("\n\r\t") != std::string::npos) {
            return unexpected(ErrorCode::InvalidArgument, "attribute key '" + k + "' is empty or has control characters");
        }
    }
    std::lock_guard<std::mutex> lk(mu_);
    auto next = appAttributes_;
    if (attrs.empty()) {
        next.erase(ns);
    } else {
        next[ns] = attrs;
    }
    auto saved = appAttributes_;
    appAttributes_ = next;
    auto merged = mergedAttributes(systemAttributes_);
    if (auto st = validateAttributes(merged); !st) {
        appAttributes_ = saved;
        return unexpected(ErrorCode::InvalidArgument, "SetAttributes(" + ns + "): " + st.error().message);
    }
    json j = json::object();
    for (const auto& [n, kv] : appAttributes_) {
        j[n] = kv;
    }
    if (auto st = fs::writeFileAtomic(stateDir_ + "/attributes.json", j.dump(), 0600); !st) {
        appAttributes_ = saved;
        return st;
    }
    attributesDirty_ = true;
    wake_ = true;
    cv_.notify_all();
    return {};
}

Status CloudClient::reportFeedback(const std::string& actionId, const Feedback& feedback)
{
    if (!str::isSafeName(actionId, 64)) {
        return unexpected(ErrorCode::InvalidArgument, "action id '" + actionId + "' is not valid");
    }
    if (auto st = validateFeedback(feedback); !st) {
        return st;
    }
    std::vector<std::shared_ptr<DownloadJob>> toCancel;
    std::string endpoint = "deploymentBase";
    {
        std::lock_guard<std::mutex> lk(mu_);
        // After these the action is over for this device: it must not be announced again.
        const bool closes = feedback.execution == "closed" ||
                            (feedback.execution == "downloaded" && downloadOnly_.count(actionId) != 0) ||
                            (cancelPending_.count(actionId) != 0 &&
                             (feedback.execution == "closed" || feedback.execution == "canceled") &&
                             feedback.result == "success");
        if (closes) {
            if (auto st = rememberClosedLocked(actionId); !st) {
                return st;
            }
        }
        if (cancelPending_.count(actionId) != 0) {
            // The server asked to cancel: the answer goes to the cancel feedback endpoint.
            endpoint = "cancelAction";
            if (feedback.execution == "rejected" || feedback.result == "failure") {
                cancelPending_.erase(actionId);
            } else if ((feedback.execution == "closed" || feedback.execution == "canceled") &&
                       feedback.result == "success") {
                cancelPending_.erase(actionId);
                for (auto& j : downloads_) {
                    if (j->actionId == actionId) {
                        toCancel.push_back(j);
                    }
                }
            }
        }
    }
    for (auto& j : toCancel) {
        j->cancel = true;
    }
    auto st = queue_->push({actionId, endpoint, feedbackBody(feedback, nowMs())});
    if (!st) {
        return st;
    }
    pollNow();
    return {};
}

bool CloudClient::handleConfirmation(const std::string& hrefText)
{
    const std::string id = actionIdFromHref(hrefText);
    auto it = confirmationsSeen_.find(id);
    if (it != confirmationsSeen_.end() && it->second == hrefText) {
        return false; // answered (auto) or announced (manual) already
    }
    if (auto st = checkLink(hrefText, origin_, settings_.allowOtherHosts); !st) {
        setState("connected", st.error().message);
        return false;
    }
    auto r = session_->request("GET", hrefText, "", {}, settings_.maxBodyBytes);
    if (!r || r->status != 200) {
        setState("connected", "cannot read confirmationBase " + id + ": " +
                                  (r ? "HTTP " + std::to_string(r->status) : r.error().message));
        return false;
    }
    confirmationsSeen_[id] = hrefText; // a broken document is not fetched again every poll either
    auto dep = normaliseConfirmation(r->body, origin_);
    if (!dep) {
        setState("connected", "confirmation request " + id + " refused: " + dep.error().message);
        return false;
    }
    const std::string actionId = (*dep)["action_id"].get<std::string>();
    if (!settings_.confirmManually) {
        // The device takes what its fleet operator assigns: consent is given here, so
        // a server with the confirmation flow on does not leave the action waiting.
        auto st = queue_->push({actionId, "confirmationBase",
                                confirmationBody(true, {"confirmed by the device (cloud.json: confirmation auto)"})});
        if (!st) {
            log::warning("cloud: cannot queue the confirmation of action " + actionId + ": " + st.error().message);
            confirmationsSeen_.erase(id);
            return false;
        }
        log::info("cloud: action " + actionId + " confirmed (confirmation: auto)");
        (void)deliverFeedback(); // what is not delivered now goes with the next poll
        return true;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        pendingConfirmations_[actionId] = dep->dump();
    }
    log::info("cloud: action " + actionId + " waits for confirmation (Confirm)");
    if (listener_ != nullptr) {
        listener_->confirmationRequested(actionId, dep->dump());
    }
    return false;
}

Status CloudClient::confirm(const std::string& actionId, bool confirmed, const std::vector<std::string>& details)
{
    if (details.size() > kMaxFeedbackDetails) {
        return unexpected(ErrorCode::InvalidArgument,
                          "at most 48 details per message (got " + std::to_string(details.size()) + ")");
    }
    for (const auto& d : details) {
        if (d.size() > 4096) {
            return unexpected(ErrorCode::InvalidArgument, "a detail is longer than 4096 characters");
        }
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (pendingConfirmations_.count(actionId) == 0) {
            return unexpected(ErrorCode::NotFound, "action '" + str::quotable(actionId) +
                                                       "' is not waiting for confirmation");
        }
    }
    if (auto st = queue_->push({actionId, "confirmationBase", confirmationBody(confirmed, details)}); !st) {
        return st;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        pendingConfirmations_.erase(actionId);
    }
    log::info("cloud: action " + actionId + (confirmed ? " confirmed" : " denied"));
    pollNow();
    return {};
}

std::map<std::string, std::string> CloudClient::pendingConfirmations() const
{
    std::lock_guard<std::mutex> lk(mu_);
    return pendingConfirmations_;
}

void CloudClient::handleCancel(const std::string& hrefText)
{
    if (auto st = checkLink(hrefText, origin_, settings_.allowOtherHosts); !st) {
        setState("connected", st.error().message);
        return;
    }
    auto r = session_->request("GET", hrefText, "", {}, settings_.maxBodyBytes);
    if (!r || r->status != 200) {
        log::warning("cloud: cannot read cancelAction: " + (r ? "HTTP " + std::to_string(r->status) : r.error().message));
        return;
    }
    auto stopId = parseCancelAction(r->body);
    if (!stopId) {
        setState("connected", stopId.error().message);
        return;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!cancelPending_.insert(*stopId).second) {
            return; // already asked the coordinator
        }
    }
    log::info("cloud: server cancels action " + *stopId);
    if (listener_ != nullptr) {
        listener_->cancelRequested(*stopId);
    }
}

bool CloudClient::closedLocked(const std::string& actionId) const
{
    return std::find(closedActions_.begin(), closedActions_.end(), actionId) != closedActions_.end();
}

Status CloudClient::rememberClosedLocked(const std::string& actionId)
{
    if (closedLocked(actionId)) {
        return {};
    }
    auto next = closedActions_;
    next.push_back(actionId);
    if (next.size() > kClosedActionsKept) {
        next.erase(next.begin(), next.begin() + static_cast<std::ptrdiff_t>(next.size() - kClosedActionsKept));
    }
    if (auto st = fs::writeFileAtomic(stateDir_ + "/closed-actions.json", json(next).dump(), 0600); !st) {
        return st;
    }
    closedActions_ = std::move(next);
    return {};
}

std::string CloudClient::installedDeployment() const
{
    std::lock_guard<std::mutex> lk(mu_);
    return installedJson_;
}

void CloudClient::handleInstalledBase(const std::string& hrefText)
{
    if (auto st = checkLink(hrefText, origin_, settings_.allowOtherHosts); !st) {
        setState("connected", "installedBase refused: " + st.error().message);
        installedBaseHref_ = hrefText; // do not try the same refused link every poll
        return;
    }
    auto r = session_->request("GET", hrefText, "", {}, settings_.maxBodyBytes);
    if (!r || r->status != 200) {
        log::warning("cloud: cannot read installedBase: " + (r ? "HTTP " + std::to_string(r->status) : r.error().message));
        return; // tried again next poll
    }
    installedBaseHref_ = hrefText;
    auto dep = normaliseDeployment(r->body, origin_);
    if (!dep) {
        setState("connected", "installedBase refused: " + dep.error().message);
        return;
    }
    const std::string id = (*dep)["action_id"].get<std::string>();
    bool changed = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        installedJson_ = dep->dump();
        changed = snap_.installedActionId != id;
        snap_.installedActionId = id;
        // The server says this action is finished: it is closed for this device too.
        if (auto st = rememberClosedLocked(id); !st) {
            log::warning("cloud: cannot record closed action " + id + ": " + st.error().message);
        }
    }
    log::info("cloud: server reports installed action " + id);
    if (changed) {
        notify({"InstalledActionId"});
    }
}

void CloudClient::handleDeployment(const std::string& hrefText)
{
    const std::string id = actionIdFromHref(hrefText);
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (closedLocked(id)) {
            // Closed by this device (its closing feedback may still be on its way): never again.
            if (emittedDeployments_[id] != hrefText) {
                log::info("cloud: deployment " + id + " is already closed on this device; not announced again");
                emittedDeployments_[id] = hrefText;
            }
            return;
        }
    }
    auto it = emittedDeployments_.find(id);
    if (it != emittedDeployments_.end() && it->second == hrefText) {
        return; // unchanged since we told the coordinator
    }
    if (auto st = checkLink(hrefText, origin_, settings_.allowOtherHosts); !st) {
        setState("connected", st.error().message);
        return;
    }
    auto r = session_->request("GET", hrefText, "", {}, settings_.maxBodyBytes);
    if (!r || r->status != 200) {
        setState("connected", "cannot read deploymentBase " + id + ": " +
                                  (r ? "HTTP " + std::to_string(r->status) : r.error().message));
        return;
    }
    auto dep = normaliseDeployment(r->body, origin_);
    if (!dep) {
        setState("connected", "deployment " + id + " refused: " + dep.error().message);
        emittedDeployments_[id] = hrefText; // do not fetch the same broken document every poll
        return;
    }
    emittedDeployments_[id] = hrefText;
    const std::string actionId = (*dep)["action_id"].get<std::string>();
    if (dep->value("download_only", false)) {
        std::lock_guard<std::mutex> lk(mu_);
        downloadOnly_.insert(actionId);
    }
    log::info("cloud: deployment requested, action " + actionId);
    if (listener_ != nullptr) {
        listener_->deploymentRequested(actionId, dep->dump());
    }
}

Expected<Fd> CloudClient::download(const std::string& actionId, const std::string& artifactJson)
{
    if (!str::isSafeName(actionId, 64)) {
        return unexpected(ErrorCode::InvalidArgument, "action id '" + actionId + "' is not valid");
    }
    json a = json::parse(artifactJson, nullptr, false);
    if (!a.is_object() || !a.contains("url") || !a["url"].is_string() || !a.contains("size") ||
        !a["size"].is_number_integer() || a["size"].get<std::int64_t>() < 0 || !a.contains("sha256") || !a["sha256"].is_string() ||
        a["sha256"].get<std::string>().size() != 64) {
        return unexpected(ErrorCode::InvalidArgument,
                          "artifact must be a JSON object with url, size and sha256 (as in the deployment's "
                          "chunks[].artifacts[])");
    }
    auto job = std::make_shared<DownloadJob>();
    job->actionId = actionId;
    job->url = a["url"];
    job->size = a["size"];
    job->sha256 = a["sha256"];
    job->filename = a.value("filename", std::string("artifact"));
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!tls_) {
            return unexpected(ErrorCode::NotProvisioned, "not connected to a server yet (no provisioning)");
        }
        job->tls = tls_;
        job->origin = origin_;
        if (stop_) {
            return unexpected(ErrorCode::Cancelled, "the cloud client is stopping");
        }
    }
    if (auto st = checkLink(job->url, job->origin, settings_.allowOtherHosts); !st) {
        return unexpected(st.error());
    }
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
        return unexpected(errnoError("pipe", errno));
    }
    Fd readEnd{p[0]};
    job->writeEnd = Fd{p[1]};
    // Bigger pipe buffer: fewer wake-ups of the reader (best effort).
    ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    ::fcntl(p[1], F_SETFL, O_NONBLOCK);
    {
        std::lock_guard<std::mutex> lk(mu_);
        // Forget finished jobs.
        std::vector<std::shared_ptr<DownloadJob>> live;
        for (auto& j : downloads_) {
            if (j->writeEnd.valid()) {
                live.push_back(j);
            } else if (j->thread.joinable()) {
                j->thread.join();
            }
        }
        downloads_ = std::move(live);
        downloads_.push_back(job);
        job->thread = std::thread([this, job] { downloadWorker(job); });
    }
    return readEnd;
}

void CloudClient::downloadWorker(std::shared_ptr<DownloadJob> job)
{
    HttpSession session(*job->tls, job->origin);
    session.setAbortFlag(&job->cancel);
    PipeFeeder feeder(job->writeEnd.get(), job->cancel);
    std::uint64_t received = 0; // bytes hashed (and written, except the held-back last byte)
    std::uint64_t skip = 0;     // bytes to drop when a server ignores Range
    bool held = false;
    char last = 0;
    bool pipeGone = false;
    bool tooLong = false;
    std::uint32_t lastPct = 0;
    auto progress = [&](std::uint64_t n) {
        std::uint32_t pct = job->size == 0 ? 100 : static_cast<std::uint32_t>(n * 100 / job->size);
        if (pct != lastPct) {
            lastPct = pct;
            {
                std::lock_guard<std::mutex> lk(mu_);
                snap_.downloadProgress = pct;
            }
            notify({"DownloadProgress"});
        }
    };
    // The bytes go to the feeder (SHA-256 + pipe) in large chunks: libcurl hands
    // over one TLS record (<= 16 KiB) at a time, and a pipe write per record meant a
    // syscall and a wake-up of the reader per record.
    std::vector<char> pending = feeder.buffer();
    auto flush = [&]() -> bool {
        if (pending.empty()) {
            return true;
        }
        const bool ok = feeder.push(std::move(pending));
        pending = feeder.buffer();
        return ok;
    };
    bool firstPiece = true;
    auto sink = [&](long status, const char* data, std::size_t len) -> bool {
        if (job->cancel) {
            return false;
        }
        if (firstPiece) {
            firstPiece = false;
            // A server that ignores Range sends everything again: drop what was delivered.
            skip = status == 200 ? received : 0;
        }
        if (skip > 0) {
            std::size_t drop = static_cast<std::size_t>(std::min<std::uint64_t>(skip, len));
            skip -= drop;
            data += drop;
            len -= drop;
        }
        if (len == 0) {
            return true;
        }
        if (received + len > job->size) {
            tooLong = true;
            return false;
        }
        received += len;
        // Hold back the very last byte until the hash is checked, so a reader
        // of a bad artifact always sees a short stream.
        std::size_t out = len;
        if (received == job->size) {
            out = len - 1;
            last = data[len - 1];
            held = true;
        }
        if (out > 0) {
            pending.insert(pending.end(), data, data + out);
            if (pending.size() >= PipeFeeder::kChunk && !flush()) {
                pipeGone = true;
                return false;
            }
        }
        progress(received);
        return true;
    };

    std::string result = "failure";
    std::string message;
    Backoff backoff(settings_.downloadRetryBase, std::max(settings_.downloadRetryBase, milliseconds(60000)));
    int attempt = 0;
    while (true) {
        if (job->cancel) {
            result = "cancelled";
            message = "download cancelled";
            break;
        }
        // A reader that went away during the back-off (it gave up on this stream)
        // gets no more attempts.
        struct pollfd readerGone = {job->writeEnd.get(), 0, 0};
        if (::poll(&readerGone, 1, 0) > 0 && (readerGone.revents & POLLERR) != 0) {
            pipeGone = true;
            result = "cancelled";
            message = "the reader closed the stream";
            break;
        }
        const std::uint64_t from = received;
        firstPiece = true;
        auto r = session.stream(job->url, from, sink);
        // What this attempt received goes to the reader before any retry wait.
        if (!pipeGone && (!flush() || !feeder.drain())) {
            pipeGone = true;
        }
        bool retry = false;
        if (pipeGone) {
            result = "cancelled";
            message = "the reader closed the stream";
            break;
        }
        if (tooLong) {
            message = "the server sent more than the announced " + std::to_string(job->size) + " bytes";
            break;
        }
        if (!r) {
            if (r.error().code == ErrorCode::Cancelled) {
                result = "cancelled";
                message = "download cancelled";
                break;
            }
            message = r.error().message;
            retry = true;
        } else if (r->status == 200 || r->status == 206) {
            if (r->status == 206 && from > 0 && !str::startsWith(r->contentRange, "bytes " + std::to_string(from) + "-")) {
                message = "the server resumed at the wrong offset (" + r->contentRange + ")";
                break;
            }
            if (received == job->size) {
                break; // complete; checked below
            }
            message = "the transfer ended after " + std::to_string(received) + " of " + std::to_string(job->size) +
                      " bytes";
            retry = true;
        } else if (r->status == 416) {
            if (received == job->size) {
                break;
            }
            message = "the server cannot serve the rest of the artifact (HTTP 416 at byte " + std::to_string(from) +
                      " of " + std::to_string(job->size) + ")";
            break;
        } else if (r->status == 429 || r->status >= 500) {
            message = "server answered HTTP " + std::to_string(r->status);
            retry = true;
        } else {
            message = "server answered HTTP " + std::to_string(r->status) + " for " + job->filename;
            break;
        }
        if (!retry) {
            break;
        }
        if (attempt >= settings_.downloadRetries) {
            // The artifact may well be fine: the link or the server failed. Say so,
            // so the reader can try again later instead of giving up on it.
            result = "interrupted";
            message = "gave up after " + std::to_string(attempt + 1) + " attempts: " + message;
            break;
        }
        ++attempt;
        const milliseconds wait = backoff.next();
        log::warning("cloud: download of " + job->filename + " interrupted at " + std::to_string(received) +
                     " bytes (" + message + "); resuming in " + std::to_string(wait.count()) + " ms");
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait_for(lk, wait, [&] { return stop_ || job->cancel.load(); });
    }
    if (stopping_ && result == "cancelled") {
        // Not the reader's or the server's doing: the artifact can be fetched again.
        result = "interrupted";
        message = "the cloud client stopped during the download";
    }
    // The feeder is idle here (drained after the last attempt): its hash covers every
    // byte but the held-back last one.
    if (received == job->size && held && result != "cancelled") {
        feeder.hash().update(&last, 1);
        const std::string got = feeder.hash().finishHex();
        if (got == job->sha256) {
            if (pipeWrite(job->writeEnd.get(), job->cancel, &last, 1)) {
                result = "success";
                message = "";
                progress(job->size);
            } else {
                result = "cancelled";
                message = "the reader closed the stream";
            }
        } else {
            result = "failure";
            message = "SHA-256 mismatch for " + job->filename + ": expected " + job->sha256 + ", got " + got;
        }
    } else if (job->size == 0 && result != "cancelled" && message.empty()) {
        result = feeder.hash().finishHex() == job->sha256 ? "success" : "failure";
    }
    if (result != "success") {
        log::warning("cloud: download of " + job->filename + " failed: " + message);
    } else {
        log::info("cloud: downloaded " + job->filename + " (" + std::to_string(job->size) + " bytes, SHA-256 ok)");
    }
    feeder.stop(); // before the fd goes
    {
        std::lock_guard<std::mutex> lk(mu_);
        job->writeEnd.reset(); // EOF for the reader (short on failure)
    }
    if (listener_ != nullptr) {
        listener_->downloadFinished(job->actionId, job->filename, result, message);
    }
}

} // namespace mbl::cloud
