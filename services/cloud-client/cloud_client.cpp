// SPDX-License-Identifier: Apache-2.0
#include "cloud_client.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"
#include "mbl_version.h"

#include <nlohmann/json.hpp>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <ctime>

namespace mbl::cloud {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

std::uint64_t nowEpoch()
{
    return static_cast<std::uint64_t>(std::time(nullptr));
}

std::int64_t nowMs()
{
    return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The CN of the first certificate of a PEM chain ("" when there is none).
std::string leafCommonName(const std::string& pem)
{
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (bio == nullptr) {
        return {};
    }
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (cert == nullptr) {
        return {};
    }
    char cn[256] = {};
    const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    X509_free(cert);
    return n > 0 ? std::string(cn, static_cast<std::size_t>(n)) : std::string();
}

std::string httpStatusText(const Expected<HttpResponse>& r)
{
    return r ? "HTTP " + std::to_string(r->status) : r.error().message;
}

} // namespace

Expected<std::unique_ptr<CloudClient>> CloudClient::open(const Paths& paths, const Config& config, Clock& clock)
{
    auto settings = CloudSettings::fromConfig(config);
    if (!settings) {
        return unexpected(settings.error());
    }
    std::unique_ptr<CloudClient> c(new CloudClient(clock));
    c->settings_ = *settings;
    if (!c->settings_.otherHostsCaFile.empty()) {
        auto pem = fs::readFile(c->settings_.otherHostsCaFile, 4u << 20);
        if (!pem) {
            return unexpected(ErrorCode::InvalidArgument, config.origin() + ": key 'download.other_hosts_ca_file': " +
                                                              pem.error().message);
        }
        c->otherHostsCaPem_ = *pem;
    }
    c->stateDir_ = paths.state("cloud");
    if (auto st = fs::makeDirs(c->stateDir_, 0700); !st) {
        return unexpected(st.error());
    }
    auto q = FeedbackQueue::open(c->stateDir_ + "/feedback-queue.json");
    if (!q) {
        return unexpected(q.error());
    }
    c->queue_ = std::move(q).value();
    c->attributes_ = std::make_unique<AttributeStore>(c->stateDir_ + "/attributes.json");
    c->attributes_->setFixed("mbl.client_version", MBL_VERSION);
    if (!c->settings_.deviceClass.empty()) {
        c->attributes_->setFixed("device_class", c->settings_.deviceClass);
    }
    // Actions this device closed: a deploymentBase for one of them is never announced again
    // (e.g. after a restart while its closing feedback was still queued).
    c->actions_ = std::make_unique<ActionBook>(c->stateDir_ + "/closed-actions.json");
    c->downloader_ = std::make_unique<Downloader>(
        c->settings_.download,
        std::make_unique<ArtifactCache>(c->stateDir_ + "/kept", c->settings_.keepDownloadOnlyBytes), *c);
    c->poller_ = std::make_unique<Poller>(c->settings_.poller);
    // The level the daemon started with (log::init read MBL_LOG_LEVEL) is what an
    // unset log_level reverts to.
    if (const char* lvl = std::getenv("MBL_LOG_LEVEL")) {
        log::Level parsed;
        if (log::parseLevel(lvl, parsed)) {
            c->startLogLevel_ = parsed;
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
            log::info("cloud: settings in effect: " + parsed->dump());
        } else {
            log::warning("cloud: ignoring " + settingsPath + ": " + parsed.error().message);
        }
    }
    c->snap_.pollInterval = c->effectivePollSecsLocked();
    return c;
}

CloudClient::~CloudClient()
{
    stop();
}

void CloudClient::start(DeviceSource& source, Listener& listener)
{
    {
        std::lock_guard<std::mutex> lk(mu_);
        snap_.connectionState = connStateName(poller_->state());
    }
    source_ = &source;
    listener_ = &listener;
    worker_ = std::thread([this] { run(); });
}

void CloudClient::stop()
{
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
        stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) {
        worker_.join();
    }
    if (downloader_) {
        downloader_->stop();
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

void CloudClient::listenerRestarted()
{
    log::info("cloud: the coordinator (re)started; open actions are announced again");
    {
        std::lock_guard<std::mutex> lk(mu_);
        actions_->forgetAnnouncements();
        wake_ = true;
    }
    cv_.notify_all();
}

void CloudClient::identityChanged()
{
    log::info("cloud: the identity service reports a change (IdentityChanged)");
    {
        std::lock_guard<std::mutex> lk(mu_);
        identityChanged_ = true;
        wake_ = true;
    }
    cv_.notify_all();
}

void CloudClient::notify(const std::vector<std::string>& names)
{
    if (listener_ != nullptr && !names.empty()) {
        listener_->propertiesChanged(names);
    }
}

void CloudClient::setLastError(const std::string& error)
{
    bool changed = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        changed = snap_.lastError != error;
        snap_.lastError = error;
    }
    if (changed && !error.empty()) {
        log::warning("cloud: " + error);
    }
    if (changed) {
        notify({"LastError"});
    }
}

// ConnectionState, PollInterval and NextPoll after a cycle.
void CloudClient::publishState(milliseconds wait)
{
    const std::string state = connStateName(poller_->state());
    std::vector<std::string> changed;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (snap_.connectionState != state) {
            snap_.connectionState = state;
            changed.push_back("ConnectionState");
        }
        const std::uint32_t interval = effectivePollSecsLocked();
        if (snap_.pollInterval != interval) {
            snap_.pollInterval = interval;
            changed.push_back("PollInterval");
        }
        const std::uint64_t next = nowEpoch() + static_cast<std::uint64_t>((wait.count() + 999) / 1000);
        if (snap_.nextPoll != next) {
            snap_.nextPoll = next;
            changed.push_back("NextPoll");
        }
    }
    if (!changed.empty() && changed.front() == "ConnectionState") {
        log::info("cloud: " + state);
    }
    notify(changed);
}

void CloudClient::run()
{
    std::unique_lock<std::mutex> lk(mu_);
    // A fleet that starts together (a power cut, a rollout) spreads its first polls out.
    milliseconds wait = poller_->firstWait();
    Clock::TimePoint cycleEnd = clock_.now();
    bool sleeping = false; // the wait is a regular poll sleep (new settings re-time it)
    while (!stop_) {
        intervalChanged_ = false;
        auto deadline = cycleEnd + wait;
        while (!stop_ && !wake_) {
            if (cv_.wait_until(lk, clock_.toReal(deadline), [&] { return stop_ || wake_ || intervalChanged_; })) {
                if (intervalChanged_) {
                    // A new poll interval counts from the end of the last poll, not from now.
                    intervalChanged_ = false;
                    if (sleeping) {
                        deadline = cycleEnd + seconds(effectivePollSecsLocked());
                    }
                }
                continue;
            }
            if (clock_.now() >= deadline) {
                break; // time for the next poll
            }
        }
        wake_ = false;
        if (stop_) {
            break;
        }
        lk.unlock();
        std::optional<seconds> retryAfter;
        pollSoon_ = false;
        const PollEvent event = cycle(retryAfter);
        lk.lock();
        const milliseconds sleep = seconds(effectivePollSecsLocked());
        lk.unlock();
        wait = poller_->on(event, sleep, retryAfter);
        if (pollSoon_) {
            wait = std::min<milliseconds>(wait, seconds(1)); // a confirmed action is offered at the next poll
        }
        if (session_) {
            session_->setKeepAliveIdle(std::chrono::duration_cast<seconds>(wait) + seconds(60));
        }
        sleeping = event == PollEvent::Answered && !pollSoon_;
        cycleEnd = clock_.now();
        publishState(wait);
        lk.lock();
    }
}

std::uint32_t CloudClient::effectivePollSecsLocked() const
{
    if (overrides_.pollIntervalSec) {
        return *overrides_.pollIntervalSec;
    }
    if (serverPollSecs_ != 0) {
        return serverPollSecs_;
    }
    return static_cast<std::uint32_t>(settings_.defaultSleep.count());
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
        return unexpected(ErrorCode::NotProvisioned,
                          "provisioned server_url '" + str::quotable(prov->serverUrl) + "' is not an https URL");
    }
    if (prov->deviceId.empty() || !str::isSafeName(prov->deviceId, 128)) {
        return unexpected(ErrorCode::NotProvisioned,
                          "the device id '" + str::quotable(prov->deviceId) + "' cannot be a controllerId");
    }
    if (prov->tenant.empty() || !str::isSafeName(prov->tenant, 128)) {
        return unexpected(ErrorCode::NotProvisioned, "provisioned tenant '" + str::quotable(prov->tenant) + "' is not valid");
    }
    if (prov->serverCaPem.empty()) {
        return unexpected(ErrorCode::NotProvisioned, "the provisioning has no server CA (server_ca_pem)");
    }
    TlsCredentials creds;
    if (prov->authMode == "mtls") {
        auto c = source_->tlsCredentials();
        if (!c) {
            return unexpected(c.error());
        }
        creds = std::move(c).value();
    } else if (prov->authMode != "target-token" && prov->authMode != "gateway-token") {
        return unexpected(ErrorCode::NotProvisioned, "provisioned auth_mode '" + str::quotable(prov->authMode) +
                                                         "' is not mtls, target-token or gateway-token");
    }
    if (session_ && *prov == provisioning_ && creds.keyPem == credentials_.keyPem &&
        creds.chainPem == credentials_.chainPem) {
        return {}; // nothing that matters changed: keep the connection
    }
    TlsSettings tls;
    tls.caPem = prov->serverCaPem;
    tls.otherHostsCaPem = otherHostsCaPem_;
    tls.connectTimeoutSec = settings_.connectTimeoutSec;
    tls.requestTimeoutSec = settings_.requestTimeoutSec;
    tls.lowSpeedLimit = settings_.lowSpeedLimit;
    tls.lowSpeedTimeSec = settings_.lowSpeedTimeSec;
    tls.maxRecvBytesPerSec = settings_.maxBytesPerSec;
    tls.verbose = settings_.verbose;
    tls.keyPem = creds.keyPem;
    tls.chainPem = creds.chainPem;
    tls.signer = creds.signer;
    if (prov->authMode == "target-token") {
        tls.authorization = "TargetToken " + prov->token;
    } else if (prov->authMode == "gateway-token") {
        tls.authorization = "GatewayToken " + prov->token;
    }
    std::string server = prov->serverUrl;
    while (!server.empty() && server.back() == '/') {
        server.pop_back();
    }
    auto shared = std::make_shared<const SessionConfig>(SessionConfig{tls, *origin, settings_.links});
    session_ = std::make_unique<HttpSession>(std::move(tls), *origin, settings_.links);
    session_->setAbortFlag(&stopping_);
    certificateCn_ = leafCommonName(creds.chainPem);
    const bool serverChanged = !provisioning_.serverUrl.empty() && provisioning_.serverUrl != prov->serverUrl;
    provisioning_ = *prov;
    credentials_ = std::move(creds);
    bool urlChanged = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        origin_ = *origin;
        sessionConfig_ = shared;
        baseUrl_ = server + "/" + prov->tenant + "/controller/v1/" + prov->deviceId;
        urlChanged = snap_.serverUrl != server;
        snap_.serverUrl = server;
        attributes_->setFixed("device_id", prov->deviceId);
        if (serverChanged) {
            attributes_->requestSend(); // a new server has not seen them
            serverPollSecs_ = 0;
        }
    }
    etag_.clear();
    lastPoll_ = PollResult{};
    configDataUrl_.clear();
    log::info("cloud: talking to " + server + " as " + prov->deviceId + " (" + prov->authMode + ")");
    if (urlChanged) {
        notify({"ServerUrl"});
    }
    return {};
}

void CloudClient::refreshIdentity()
{
    bool changed = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        changed = identityChanged_;
        identityChanged_ = false;
    }
    if (changed && session_) {
        // Read provisioning and credentials again; connect() keeps the session when nothing changed.
        log::info("cloud: the device identity changed; reading provisioning and credentials again");
        if (auto st = connect(); !st) {
            session_.reset();
        }
    }
}

std::string CloudClient::authFailureHint(long status) const
{
    const std::string code = "the server refused the device's credentials (HTTP " + std::to_string(status) + ")";
    if (status == 403) {
        return code + ": access is forbidden for this client (hawkBit answers 403 to a blocked address)";
    }
    const std::string& mode = provisioning_.authMode;
    if (mode == "mtls") {
        if (!certificateCn_.empty() && certificateCn_ != provisioning_.deviceId) {
            return code + ": the client certificate's CN '" + certificateCn_ + "' is not this device's controllerId '" +
                   provisioning_.deviceId + "' (the reverse proxy passes the CN as the controller id)";
        }
        return code + ": the client certificate (CN '" + certificateCn_ +
               "') was not accepted: is its issuer trusted by the server's reverse proxy and in hawkBit's "
               "authentication.header.authority, and is the certificate still valid?";
    }
    if (mode == "target-token") {
        return code + ": the target token is not the one the server holds for '" + provisioning_.deviceId +
               "', or target-token authentication is off for the tenant (authentication.targettoken.enabled)";
    }
    return code + ": the gateway token is not the tenant's, or gateway-token authentication is off for the tenant "
                  "(authentication.gatewaytoken.enabled)";
}

PollEvent CloudClient::cycle(std::optional<seconds>& retryAfter)
{
    refreshIdentity();
    if (!session_) {
        auto st = connect();
        if (!st) {
            setLastError(st.error().describe());
            return PollEvent::NotProvisioned;
        }
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
        attributes_->setSystem(system);
    }

    std::vector<std::string> hdrs;
    if (!etag_.empty()) {
        hdrs.push_back("If-None-Match: " + etag_);
    }
    auto r = session_->request("GET", base, "", hdrs, settings_.maxBodyBytes);
    if (!r) {
        // Transport failure, or an answer we refused (too large, redirect loop, bad redirect target).
        setLastError(r.error().message);
        return r.error().code == ErrorCode::InvalidArgument || str::startsWith(r.error().message, "too many redirects")
                   ? PollEvent::ServerTrouble
                   : PollEvent::Unreachable;
    }
    log::debug("cloud: poll answered HTTP " + std::to_string(r->status));
    if (r->status == 401 || r->status == 403) {
        // Credentials may have changed (new certificate, new token): read them again next time.
        setLastError(authFailureHint(r->status) + "; retrying in about " +
                     std::to_string(settings_.poller.authRetry.count()) + " s");
        session_.reset();
        provisioning_ = Provisioning{};
        return PollEvent::AuthRefused;
    }
    const auto ra = parseRetryAfter(r->retryAfter, static_cast<std::int64_t>(nowEpoch()));
    if (r->status == 429 || (r->status == 503 && ra)) {
        retryAfter = ra;
        setLastError("the server asks the device to slow down (HTTP " + std::to_string(r->status) +
                     (ra ? ", Retry-After " + std::to_string(ra->count()) + " s" : std::string()) + ")");
        return PollEvent::Throttled;
    }
    if (r->status >= 500) {
        setLastError("server answered HTTP " + std::to_string(r->status));
        return PollEvent::ServerTrouble;
    }
    PollResult poll;
    if (r->status == 304) {
        poll = lastPoll_;
    } else if (r->status == 200) {
        auto parsed = parsePoll(r->body);
        if (!parsed) {
            etag_.clear();
            setLastError("unusable controller base: " + parsed.error().message);
            return PollEvent::ServerTrouble;
        }
        poll = *parsed;
        lastPoll_ = poll;
        etag_ = r->etag;
    } else {
        setLastError("server answered HTTP " + std::to_string(r->status) + " to the poll of " + base);
        return PollEvent::ServerTrouble;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        snap_.lastContact = nowEpoch();
        const milliseconds sleep = poll.sleep.value_or(seconds(0));
        serverPollSecs_ = static_cast<std::uint32_t>(std::chrono::duration_cast<seconds>(sleep).count());
    }
    notify({"LastContact"});
    setLastError("");

    // Feedback first, in order: it may close the action the links talk about.
    if (auto st = deliverFeedback(); !st) {
        if (st.error().code == ErrorCode::AccessDenied) {
            session_.reset();
            setLastError(st.error().message);
            return PollEvent::AuthRefused;
        }
        setLastError("feedback not delivered: " + st.error().message);
        return PollEvent::ServerTrouble;
    }
    if (!poll.configData.empty()) {
        {
            std::lock_guard<std::mutex> lk(mu_);
            attributes_->requestSend();
        }
        pushAttributes(poll.configData);
    } else {
        pushAttributes(configDataUrl_.empty() ? base + "/configData" : configDataUrl_);
    }
    std::set<std::string> cancels;
    if (!poll.cancelAction.empty()) {
        cancels.insert(actionIdFromHref(poll.cancelAction));
        handleCancel(poll.cancelAction);
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        actions_->cancelsOffered(cancels);
    }
    const bool confirmed = !poll.confirmationBase.empty() && handleConfirmation(poll.confirmationBase);
    if (!poll.deploymentBase.empty()) {
        handleDeployment(poll.deploymentBase);
    }
    if (!poll.installedBase.empty() && poll.installedBase != installedBaseHref_) {
        handleInstalledBase(poll.installedBase);
    }
    pollSoon_ = confirmed;
    return PollEvent::Answered;
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
            return unexpected(ErrorCode::AccessDenied, "feedback refused: " + authFailureHint(r->status));
        }
        if (r->status == 429 || r->status >= 500) {
            return unexpected(ErrorCode::Io, "server answered HTTP " + std::to_string(r->status) + " to feedback");
        }
        // 400/404/405/409: the message can never succeed; log it and go on in order.
        log::warning("cloud: feedback for action " + f->actionId + " refused with HTTP " + std::to_string(r->status) +
                     ": " + str::quotable(r->body, 200));
        (void)queue_->pop();
    }
    return {};
}

std::map<std::string, std::string> CloudClient::attributes() const
{
    std::lock_guard<std::mutex> lk(mu_);
    return attributes_->merged();
}

void CloudClient::pushAttributes(const std::string& url)
{
    if (auto st = checkLink(url, origin_); !st) {
        log::warning("cloud: configData: " + st.error().message);
        return;
    }
    std::map<std::string, std::string> attrs;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!attributes_->needsSending()) {
            return;
        }
        attrs = attributes_->merged();
    }
    configDataUrl_ = url;
    // mode replace: the server's view becomes the device's (removed attributes disappear).
    auto r = session_->request("PUT", url, configDataBody(attrs, "replace"), {"Content-Type: application/json"},
                               64 * 1024);
    if (!r) {
        log::warning("cloud: configData not sent: " + r.error().message);
        return;
    }
    if (r->status == 200 || r->status == 201 || r->status == 204) {
        std::lock_guard<std::mutex> lk(mu_);
        attributes_->acknowledged(attrs);
        log::info("cloud: sent " + std::to_string(attrs.size()) + " attributes");
        return;
    }
    if (r->status >= 400 && r->status < 500 && r->status != 429) {
        // It cannot succeed as it is: not again until the attributes change.
        std::lock_guard<std::mutex> lk(mu_);
        attributes_->acknowledged(attrs);
    }
    setLastError("the server refused configData with HTTP " + std::to_string(r->status) + ": " +
                 str::quotable(r->body, 200));
}

Status CloudClient::setAttributes(const std::string& ns, const std::map<std::string, std::string>& attrs)
{
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (auto st = attributes_->setNamespace(ns, attrs); !st) {
            return st;
        }
        wake_ = true;
    }
    cv_.notify_all();
    return {};
}

void CloudClient::refuseDeployment(const std::string& actionId, const std::string& why)
{
    setLastError("deployment " + actionId + " refused: " + why);
    Feedback f{"closed", "failure", 0, 0, {str::sanitizeUtf8("refused by the device: " + why).substr(0, 4000)}};
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (auto st = actions_->rememberClosed(actionId); !st) {
            log::warning("cloud: cannot record closed action " + actionId + ": " + st.error().message);
        }
    }
    if (auto st = queue_->push({actionId, "deploymentBase", feedbackBody(f, nowMs())}); !st) {
        log::warning("cloud: cannot queue the refusal of action " + actionId + ": " + st.error().message);
        return;
    }
    (void)deliverFeedback(); // what is not delivered now goes with the next poll
}

void CloudClient::handleDeployment(const std::string& hrefText)
{
    const std::string id = actionIdFromHref(hrefText);
    {
        std::lock_guard<std::mutex> lk(mu_);
        const bool known = actions_->fetchedHref(id) == hrefText;
        if (actions_->closed(id)) {
            // Closed by this device (its closing feedback may still be on its way): never again.
            if (!known) {
                log::info("cloud: deployment " + id + " is already closed on this device; not announced again");
                actions_->setFetchedHref(id, hrefText);
            }
            return;
        }
        if (known) {
            return; // the same version of the action as last time
        }
    }
    if (auto st = checkLink(hrefText, origin_); !st) {
        setLastError("deploymentBase " + id + ": " + st.error().message);
        return;
    }
    auto r = session_->request("GET", hrefText, "", {}, settings_.maxBodyBytes);
    if (!r || r->status != 200) {
        // Read again at the next poll: the server or the link may be better then.
        setLastError("cannot read deploymentBase " + id + ": " + httpStatusText(r));
        return;
    }
    if (!json::accept(r->body)) {
        // Not a document at all (a proxy's HTML error page, a cut answer): nothing to
        // refuse yet; read again at the next poll.
        auto why = normaliseDeployment(r->body, origin_, settings_.links);
        setLastError("cannot read deploymentBase " + id + ": " + (why ? std::string("not JSON") : why.error().message));
        return;
    }
    auto dep = normaliseDeployment(r->body, origin_, settings_.links);
    {
        std::lock_guard<std::mutex> lk(mu_);
        actions_->setFetchedHref(id, hrefText);
    }
    if (dep && (*dep)["action_id"] != id) {
        dep = unexpected(ErrorCode::InvalidArgument, "the document is for action '" +
                                                         str::quotable((*dep)["action_id"].get<std::string>()) +
                                                         "', not " + id);
    }
    if (!dep) {
        // A document the device will never carry out: the server hears why, the action is closed.
        refuseDeployment(id, dep.error().message);
        return;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!actions_->changed(id, *dep)) {
            return; // the same deployment (the server's href changes for other reasons too)
        }
        actions_->announced(id, *dep);
    }
    log::info("cloud: deployment requested, action " + id + " (download " + (*dep)["download"].get<std::string>() +
              ", update " + (*dep)["update"].get<std::string>() +
              ((*dep)["maintenance_window"].is_null() ? std::string()
                                                      : ", window " + (*dep)["maintenance_window"].get<std::string>()) +
              ")");
    if (listener_ != nullptr) {
        listener_->deploymentRequested(id, busJson(*dep));
    }
}

void CloudClient::deploymentNotAnnounced(const std::string& actionId, const std::string& text, const std::string& why)
{
    const json doc = json::parse(text, nullptr, false);
    bool forgotten = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        forgotten = actions_->notAnnounced(actionId, doc);
    }
    if (forgotten) {
        setLastError("deployment " + actionId + " could not be announced on the bus (" + str::quotable(why, 200) +
                     "); it is announced again at the next poll");
    }
}

Expected<Fd> CloudClient::download(const std::string& actionId, const std::string& artifactJson)
{
    if (!str::isSafeName(actionId, 64)) {
        return unexpected(ErrorCode::InvalidArgument, "action id '" + str::quotable(actionId) + "' is not valid");
    }
    json a = json::parse(artifactJson, nullptr, false);
    if (!a.is_object() || !a.contains("url") || !a["url"].is_string() || !a.contains("size") ||
        !a["size"].is_number_unsigned() || !a.contains("sha256") || !a["sha256"].is_string() ||
        a["sha256"].get<std::string>().size() != 64) {
        return unexpected(ErrorCode::InvalidArgument,
                          "artifact must be a JSON object with url, size and sha256 (as in the deployment's "
                          "chunks[].artifacts[])");
    }
    DownloadRequest req;
    req.actionId = actionId;
    req.url = a["url"];
    req.size = a["size"];
    req.sha256 = a["sha256"];
    std::transform(req.sha256.begin(), req.sha256.end(), req.sha256.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    req.filename = a.contains("filename") && a["filename"].is_string() ? a["filename"].get<std::string>() : "artifact";
    req.filename = str::sanitizeUtf8(req.filename);
    std::shared_ptr<const SessionConfig> session;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!sessionConfig_) {
            // NotProvisioned: what callers wait out and retry. The reason is
            // the last failed connect (not provisioned, identity service
            // away, ...), or none yet when the first poll has not run.
            return unexpected(ErrorCode::NotProvisioned,
                              "no session with the server yet: " +
                                  (snap_.lastError.empty() ? std::string("the cloud client has not polled yet")
                                                           : snap_.lastError));
        }
        if (stop_) {
            return unexpected(ErrorCode::Cancelled, "the cloud client is stopping");
        }
        session = sessionConfig_;
        const json dep = actions_->deployment(actionId);
        if (dep.is_object()) {
            if (!dep.value("download_allowed", true)) {
                return unexpected(ErrorCode::AccessDenied,
                                  "the server says download 'skip' for action " + actionId +
                                      ": nothing is downloaded until it allows it");
            }
            req.keep = dep.value("download_only", false);
        }
    }
    return downloader_->start(req, session);
}

void CloudClient::downloadProgress(std::uint32_t percent, std::uint32_t running)
{
    std::vector<std::string> changed;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (snap_.downloadProgress != percent) {
            snap_.downloadProgress = percent;
            changed.push_back("DownloadProgress");
        }
        if (snap_.activeDownloads != running) {
            snap_.activeDownloads = running;
            changed.push_back("ActiveDownloads");
        }
    }
    notify(changed);
}

void CloudClient::downloadFinished(const std::string& actionId, const std::string& filename, const std::string& result,
                                   const std::string& message)
{
    if (listener_ != nullptr) {
        listener_->downloadFinished(actionId, filename, result, message);
    }
}

Status CloudClient::reportFeedback(const std::string& actionId, const Feedback& given)
{
    if (!str::isSafeName(actionId, 64)) {
        return unexpected(ErrorCode::InvalidArgument, "action id '" + str::quotable(actionId) + "' is not valid");
    }
    if (auto st = validateFeedback(given); !st) {
        return st;
    }
    Feedback feedback = given;
    std::string endpoint = "deploymentBase";
    bool cancelAccepted = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        const bool cancelling = actions_->cancelPending(actionId);
        if (cancelling) {
            // The server asked to cancel: the answer goes to the cancel feedback endpoint,
            // in the form hawkBit reads (DdiRootController generateActionCancelStatus).
            endpoint = "cancelAction";
            feedback = cancelAnswer(feedback);
            cancelAccepted = feedback.execution == "closed" && feedback.result != "failure";
        }
        const json dep = actions_->deployment(actionId);
        // After these the action is over for this device: it must not be announced again.
        // "downloaded" closes only a download-only action (update skip WITHOUT a
        // maintenance window); with a closed window the action stays open.
        const bool closes = (!cancelling && feedback.execution == "closed") || cancelAccepted ||
                            (!cancelling && feedback.execution == "downloaded" && dep.is_object() &&
                             dep.value("download_only", false));
        if (closes) {
            if (auto st = actions_->rememberClosed(actionId); !st) {
                return st;
            }
        }
        if (cancelling && (feedback.execution == "closed" || feedback.execution == "rejected")) {
            actions_->cancelAnswered(actionId);
        }
    }
    if (cancelAccepted) {
        downloader_->cancelAction(actionId);
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
    if (auto st = checkLink(hrefText, origin_); !st) {
        setLastError("confirmationBase " + id + ": " + st.error().message);
        return false;
    }
    auto r = session_->request("GET", hrefText, "", {}, settings_.maxBodyBytes);
    if (!r || r->status != 200) {
        setLastError("cannot read confirmationBase " + id + ": " + httpStatusText(r));
        return false;
    }
    confirmationsSeen_[id] = hrefText; // a broken document is not fetched again every poll either
    auto dep = normaliseConfirmation(r->body, origin_, settings_.links);
    if (!dep) {
        setLastError("confirmation request " + id + " refused: " + dep.error().message);
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
        pendingConfirmations_[actionId] = busJson(*dep);
    }
    log::info("cloud: action " + actionId + " waits for confirmation (Confirm)");
    if (listener_ != nullptr) {
        listener_->confirmationRequested(actionId, busJson(*dep));
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
    if (auto st = checkLink(hrefText, origin_); !st) {
        setLastError("cancelAction: " + st.error().message);
        return;
    }
    {
        // A cancel already asked for, or answered (the answer may still be on its way
        // while this poll was made), is not asked again: one answer per cancel.
        std::lock_guard<std::mutex> lk(mu_);
        if (actions_->cancelKnown(actionIdFromHref(hrefText))) {
            return;
        }
    }
    auto r = session_->request("GET", hrefText, "", {}, settings_.maxBodyBytes);
    if (!r || r->status != 200) {
        log::warning("cloud: cannot read cancelAction: " + httpStatusText(r));
        return;
    }
    auto stopId = parseCancelAction(r->body);
    if (!stopId) {
        setLastError(stopId.error().message);
        return;
    }
    if (!str::isSafeName(*stopId, 64)) {
        setLastError("cancelAction: stopId '" + str::quotable(*stopId, 40) + "' is not valid");
        return;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (!actions_->askCancel(*stopId)) {
            return;
        }
    }
    log::info("cloud: server cancels action " + *stopId);
    if (listener_ != nullptr) {
        listener_->cancelRequested(*stopId);
    }
}

std::string CloudClient::installedDeployment() const
{
    std::lock_guard<std::mutex> lk(mu_);
    return installedJson_;
}

void CloudClient::handleInstalledBase(const std::string& hrefText)
{
    if (auto st = checkLink(hrefText, origin_); !st) {
        setLastError("installedBase refused: " + st.error().message);
        installedBaseHref_ = hrefText; // do not try the same refused link every poll
        return;
    }
    auto r = session_->request("GET", hrefText, "", {}, settings_.maxBodyBytes);
    if (!r || r->status != 200) {
        log::warning("cloud: cannot read installedBase: " + httpStatusText(r));
        return; // tried again next poll
    }
    installedBaseHref_ = hrefText;
    auto dep = normaliseDeployment(r->body, origin_, settings_.links);
    if (!dep) {
        setLastError("installedBase refused: " + dep.error().message);
        return;
    }
    const std::string id = (*dep)["action_id"].get<std::string>();
    bool changed = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        installedJson_ = busJson(*dep);
        changed = snap_.installedActionId != id;
        snap_.installedActionId = id;
        // The server says this action is finished: it is closed for this device too.
        if (auto st = actions_->rememberClosed(id); !st) {
            log::warning("cloud: cannot record closed action " + id + ": " + st.error().message);
        }
    }
    log::info("cloud: server reports installed action " + id);
    if (changed) {
        notify({"InstalledActionId"});
    }
}

} // namespace mbl::cloud
