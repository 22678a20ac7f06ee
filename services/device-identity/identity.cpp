// SPDX-License-Identifier: Apache-2.0
#include "identity.h"

#include "ca_trust.h"
#include "est_http.h"
#include "tpm_key.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <thread>
#include <unistd.h>

namespace mbl::identity {

namespace {
const char* const kStateFile = "identity.json";

// The device id is the hawkBit controllerId, and a reverse proxy passes the
// certificate's CN as the controller id: a certificate naming another device
// would install fine and then fail every request with 401.
Status checkNamesDevice(const std::string& chainPem, const std::string& deviceId, const std::string& field)
{
    auto certs = parsePemCertificates(chainPem, field);
    if (!certs || certs->empty()) {
        return {}; // verifyDeviceChain has refused it already
    }
    char cn[256] = {};
    const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(certs->front().get()), NID_commonName, cn, sizeof cn);
    const std::string name = n > 0 ? std::string(cn, static_cast<std::size_t>(n)) : std::string();
    if (name != deviceId) {
        return unexpected(ErrorCode::InvalidArgument,
                          field + ": the certificate's CN '" + str::quotable(name) + "' is not this device's id '" +
                              deviceId + "' (the server takes the CN as the controllerId)");
    }
    return {};
}
const char* const kResetMarker = "reset-pending";
// The fleet CAs trusted from EST /cacerts (RFC 7030 §4.1), besides fleet_ca.
const char* const kTrustFile = "fleet-cas.pem";

Status removeFile(const std::string& path)
{
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return unexpected(errnoError("remove " + path, errno));
    }
    return {};
}

// Temp files of an atomic write that a crash interrupted; never part of the state.
void removeStaleTemps(const std::string& dir)
{
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return;
    }
    std::vector<std::string> stale;
    while (struct dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name.find(".tmp.") != std::string::npos || str::endsWith(name, ".new")) {
            stale.push_back(name);
        }
    }
    ::closedir(d);
    for (const auto& name : stale) {
        log::notice("removing " + dir + "/" + name + ", left by an interrupted write");
        (void)removeFile(dir + "/" + name);
    }
}
} // namespace

void testPausePoint(const char* point)
{
    const char* env = std::getenv("MBL_TEST_PAUSE");
    if (env == nullptr) {
        return;
    }
    const std::string spec = env;
    const std::string name = spec.substr(0, spec.find(':'));
    if (name != point) {
        return;
    }
    int seconds = 60;
    if (auto colon = spec.find(':'); colon != std::string::npos) {
        seconds = std::atoi(spec.c_str() + colon + 1);
    }
    log::warning("test pause point '" + std::string(point) + "' reached; sleeping " + std::to_string(seconds) + " s");
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
}

Expected<std::unique_ptr<Identity>> Identity::open(const Paths& paths, const Config& config)
{
    // Every key read, typed and checked, and nothing else in the file, before anything is made.
    auto dir = config.getString("state_dir", paths.state("identity"));
    auto type = config.getString("key_type", "ec-p256");
    auto fleetCa = config.getString("fleet_ca", "");
    if (!dir || !type || !fleetCa) {
        return unexpected(!dir ? dir.error() : !type ? type.error() : fleetCa.error());
    }
    auto uri = config.getString("key_uri", *dir + "/device.key");
    if (!uri) {
        return unexpected(uri.error());
    }
    auto keyType = parseKeyType(*type);
    if (!keyType) {
        return unexpected(ErrorCode::InvalidArgument, config.origin() + ": " + keyType.error().message);
    }
    auto est = readEstConfig(config);
    if (!est) {
        return unexpected(est.error());
    }
    if (auto st = config.rejectUnreadKeys(); !st) {
        return unexpected(st.error());
    }
    if (*est && fleetCa->empty()) {
        return unexpected(ErrorCode::InvalidArgument,
                          config.origin() + ": key 'est' needs 'fleet_ca': an enrolled certificate is only installed "
                                            "when it leads to the fleet CA");
    }
    std::unique_ptr<Identity> id(new Identity());
    id->stateDir_ = *dir;
    id->keyType_ = *keyType;
    id->fleetCa_ = *fleetCa;
    id->keyUri_ = *uri;
    id->est_ = *est;
    if (id->est_) {
        RenewalPolicy policy;
        policy.configured = true;
        policy.renewAtPermille = id->est_->renewAtPermille;
        policy.retryMinSeconds = id->est_->retryMinSeconds;
        policy.retryMaxSeconds = id->est_->retryMaxSeconds;
        policy.enrollWithoutCertificate = id->est_->enrollAtStart;
        id->renewal_ = RenewalEngine(policy);
    }
    if (auto st = fs::makeDirs(id->stateDir_, 0700); !st) {
        return unexpected(st.error());
    }
    if (!id->fleetCa_.empty() && !fs::exists(id->fleetCa_)) {
        log::warning("fleet CA " + id->fleetCa_ + " (config key fleet_ca) does not exist; InstallCertificate will "
                     "refuse every chain until it does");
    }

    removeStaleTemps(id->stateDir_);
    if (fs::exists(id->stateDir_ + "/" + kResetMarker)) {
        log::notice("finishing a factory reset that was interrupted");
        if (auto st = id->finishReset(); !st) {
            return unexpected(st.error());
        }
    }
    std::lock_guard<std::mutex> lock(id->mu_);
    if (auto key = id->obtainKey(true)) {
        id->key_ = std::move(key).value();
    } else {
        id->keyError_ = key.error().message;
        log::error("the device key is unusable, the service stays in the error state and makes no new identity: " +
                   id->keyError_);
    }
    if (auto st = id->loadStored(); !st) {
        id->stateError_ = st.error().message;
        log::error("the identity state is unusable: " + id->stateError_);
    }
    id->recomputeLocked();
    id->noteCertificateLocked(std::time(nullptr));
    log::info("device id " + (id->deviceId_.empty() ? std::string("(none)") : id->deviceId_) + ", key " + id->keyUri_ +
              (id->key_ ? " (" + id->key_->typeName() + ")" : std::string()));
    return id;
}

std::string Identity::keyPath() const
{
    auto p = filePathOfKeyUri(keyUri_);
    return p ? *p : std::string();
}

// Written whole under a side name, then linked into place: link() never replaces
// an existing key, whoever made it.
Status Identity::storeNewKeyFile(const std::string& path, std::string& pem) const
{
    const std::string side = path + ".new";
    auto st = fs::writeFileAtomic(side, pem, 0600);
    OPENSSL_cleanse(pem.data(), pem.size());
    if (!st) {
        return unexpected(st.error().code, "cannot store the new device key: " + st.error().message);
    }
    if (::link(side.c_str(), path.c_str()) != 0 && errno != EEXIST) {
        int err = errno;
        (void)removeFile(side);
        return unexpected(errnoError("cannot store the new device key at " + path, err));
    }
    (void)removeFile(side);
    return fs::syncDir(fs::dirName(path));
}

// Touches no member state, so it runs without mu_: key generation and fsyncs
// never hold up the bus thread's reads.
Expected<DeviceKey> Identity::obtainKey(bool allowCreate) const
{
    const std::string path = keyPath();
    if (allowCreate && !path.empty() && !fs::exists(path)) {
        auto key = DeviceKey::generate(keyType_);
        if (!key) {
            return unexpected(key.error());
        }
        auto pem = key->privatePem();
        if (!pem) {
            return unexpected(pem.error());
        }
        if (auto st = storeNewKeyFile(path, *pem); !st) {
            return unexpected(st.error());
        }
        log::notice("made a new " + key->typeName() + " device key at " + path);
    }
    const std::string blob = tpmBlobPath(keyUri_).value_or("");
    if (allowCreate && !blob.empty() && !fs::exists(blob)) {
        // Made inside the TPM; only its wrapped blob, useless without this TPM, is stored.
        auto made = generateTpmKey(keyType_);
        if (!made) {
            return unexpected(made.error());
        }
        if (auto st = storeNewKeyFile(blob, made->blobPem); !st) {
            return unexpected(st.error());
        }
        log::notice("made a new " + made->key.typeName() + " device key in the TPM; its wrapped blob is " + blob);
    }
    return DeviceKey::load(keyUri_);
}

Status Identity::loadStored()
{
    stored_ = Stored{};
    const std::string path = stateDir_ + "/" + kStateFile;
    if (!fs::exists(path)) {
        return {};
    }
    auto text = fs::readFile(path, 4u << 20);
    if (!text) {
        return unexpected(text.error());
    }
    auto doc = nlohmann::json::parse(*text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
        return unexpected(ErrorCode::Io, path + " is not valid JSON");
    }
    if (auto chain = doc.find("certificate_chain_pem"); chain != doc.end() && chain->is_string()) {
        stored_.chainPem = chain->get<std::string>();
    }
    if (auto prov = doc.find("provisioning"); prov != doc.end() && !prov->is_null()) {
        auto p = provisioningFromStored(*prov);
        if (!p) {
            return unexpected(ErrorCode::Io, path + ": " + p.error().message);
        }
        stored_.provisioning = std::move(p).value();
    }
    if (!stored_.chainPem.empty()) {
        auto certs = parsePemCertificates(stored_.chainPem, path + ": certificate_chain_pem");
        if (!certs) {
            return unexpected(ErrorCode::Io, certs.error().message);
        }
        if (key_ && !key_->matches(X509_get0_pubkey(certs->front().get()))) {
            return unexpected(ErrorCode::Io, "the installed certificate in " + path + " is not for the device key " +
                                                 keyUri_);
        }
    }
    return {};
}

void Identity::recomputeLocked()
{
    notAfter_ = 0;
    if (!stored_.chainPem.empty()) {
        if (auto certs = parsePemCertificates(stored_.chainPem, "stored chain")) {
            notAfter_ = notAfterOf(certs->front().get());
        }
    }
    if (stored_.provisioning && !stored_.provisioning->deviceId.empty()) {
        deviceId_ = stored_.provisioning->deviceId;
    } else if (key_) {
        deviceId_ = key_->derivedDeviceId();
    } else {
        deviceId_.clear();
    }
}

Status Identity::writeStored(const Stored& next) const
{
    nlohmann::json doc = {{"format", 1}, {"certificate_chain_pem", next.chainPem}};
    if (next.provisioning) {
        Provisioning p = *next.provisioning;
        p.certificateChainPem.clear(); // kept once, at the top level
        doc["provisioning"] = p.toJson(true);
    } else {
        doc["provisioning"] = nullptr;
    }
    auto st = fs::writeFileAtomic(stateDir_ + "/" + kStateFile, doc.dump(2) + "\n", 0600);
    if (!st) {
        return unexpected(st.error().code, "cannot store the identity state: " + st.error().message);
    }
    return {};
}

Status Identity::finishReset()
{
    if (auto st = removeFile(stateDir_ + "/" + kStateFile); !st) {
        return st;
    }
    if (auto st = removeFile(stateDir_ + "/" + kTrustFile); !st) {
        return st;
    }
    if (auto st = fs::syncDir(stateDir_); !st) {
        return st;
    }
    testPausePoint("reset-after-state-removed");
    // A TPM blob goes like a key file: the key it wraps is gone with it.
    if (const std::string path = keyPath().empty() ? tpmBlobPath(keyUri_).value_or("") : keyPath(); !path.empty()) {
        if (auto st = removeFile(path); !st) {
            return st;
        }
        if (auto st = fs::syncDir(fs::dirName(path)); !st) {
            return st;
        }
    }
    if (auto st = removeFile(stateDir_ + "/" + kResetMarker); !st) {
        return st;
    }
    return fs::syncDir(stateDir_);
}

IdentityProperties Identity::properties() const
{
    std::lock_guard<std::mutex> lock(mu_);
    IdentityProperties p;
    p.deviceId = deviceId_;
    p.provisioned = stored_.provisioning.has_value();
    p.certificateNotAfter = notAfter_;
    p.keyStorage = keyUri_;
    if (!keyError_.empty()) {
        p.state = "error: " + keyError_;
    } else if (!stateError_.empty()) {
        p.state = "error: " + stateError_;
    } else {
        p.state = "ok";
    }
    return p;
}

std::string Identity::deviceId() const
{
    std::lock_guard<std::mutex> lock(mu_);
    return deviceId_;
}

Expected<DeviceKey> Identity::usableKey() const
{
    std::lock_guard<std::mutex> lock(mu_);
    if (!key_) {
        return unexpected(ErrorCode::Failed, "the device key is unusable (" + keyError_ +
                                                 "); the service does not make a new identity on its own: restore the "
                                                 "key or run a factory reset");
    }
    return *key_;
}

Status Identity::checkMutable() const
{
    std::lock_guard<std::mutex> lock(mu_);
    if (!stateError_.empty()) {
        return unexpected(ErrorCode::Failed, "the identity state is unusable (" + stateError_ +
                                                 "); only a factory reset changes it now");
    }
    return {};
}

Expected<std::string> Identity::createCertificateRequest(const CsrOptions& options) const
{
    auto key = usableKey();
    if (!key) {
        return unexpected(key.error());
    }
    auto use = key->lockUse();
    return createCsr(*key, deviceId(), options);
}

Status Identity::installCertificate(const std::string& chainPem)
{
    std::lock_guard<std::mutex> mutate(mutateMu_);
    auto key = usableKey();
    if (!key) {
        return unexpected(key.error());
    }
    if (auto st = checkMutable(); !st) {
        return st;
    }
    auto cas = trustedCas();
    if (!cas) {
        return unexpected(cas.error());
    }
    auto chain = verifyDeviceChainWithCas(chainPem, *key, *cas, trustedCasName(), std::time(nullptr));
    if (!chain) {
        return unexpected(chain.error());
    }
    if (auto st = checkNamesDevice(chain->pem, deviceId(), "certificate"); !st) {
        return st;
    }
    Stored next;
    {
        std::lock_guard<std::mutex> lock(mu_);
        next = stored_;
    }
    next.chainPem = chain->pem;
    testPausePoint("install-before-commit");
    if (auto st = writeStored(next); !st) {
        return st;
    }
    testPausePoint("install-after-commit");
    {
        std::lock_guard<std::mutex> lock(mu_);
        stored_ = std::move(next);
        recomputeLocked();
        noteCertificateLocked(std::time(nullptr));
    }
    renewalChanged();
    log::notice("installed certificate " + chain->leafSubject);
    return {};
}

Status Identity::provision(const std::string& documentJson)
{
    std::lock_guard<std::mutex> mutate(mutateMu_);
    auto key = usableKey();
    if (!key) {
        return unexpected(key.error());
    }
    if (auto st = checkMutable(); !st) {
        return st;
    }
    auto doc = parseProvisioningDocument(documentJson);
    if (!doc) {
        return unexpected(doc.error());
    }
    Stored next;
    {
        std::lock_guard<std::mutex> lock(mu_);
        next = stored_;
    }
    if (!doc->certificateChainPem.empty()) {
        auto cas = trustedCas();
        if (!cas) {
            return unexpected(cas.error());
        }
        auto chain = verifyDeviceChainWithCas(doc->certificateChainPem, *key, *cas, trustedCasName(),
                                              std::time(nullptr));
        if (!chain) {
            return unexpected(chain.error().code,
                              "provisioning document: field 'certificate_chain_pem': " + chain.error().message);
        }
        next.chainPem = chain->pem;
    }
    if (doc->authMode == "mtls" && next.chainPem.empty()) {
        return unexpected(ErrorCode::InvalidArgument,
                          "provisioning document: field 'certificate_chain_pem' is needed for auth_mode mtls while no "
                          "certificate is installed");
    }
    if (doc->authMode == "mtls") {
        const std::string id = !doc->deviceId.empty() ? doc->deviceId : key->derivedDeviceId();
        if (auto st = checkNamesDevice(next.chainPem, id, "provisioning document"); !st) {
            return st;
        }
    }
    doc->certificateChainPem.clear();
    next.provisioning = std::move(doc).value();
    testPausePoint("provision-before-commit");
    if (auto st = writeStored(next); !st) {
        return st;
    }
    testPausePoint("provision-after-commit");
    std::lock_guard<std::mutex> lock(mu_);
    stored_ = std::move(next);
    recomputeLocked();
    noteCertificateLocked(std::time(nullptr));
    renewalChanged();
    log::notice("provisioned for " + stored_.provisioning->serverUrl + " (tenant " + stored_.provisioning->tenant +
                ", " + stored_.provisioning->authMode + "), device id " + deviceId_);
    return {};
}

Status Identity::factoryReset()
{
    std::lock_guard<std::mutex> mutate(mutateMu_);
    // The marker makes the reset finish on the next start if it is cut short here.
    if (auto st = fs::writeFileAtomic(stateDir_ + "/" + kResetMarker, "factory reset in progress\n", 0600); !st) {
        return st;
    }
    if (auto st = finishReset(); !st) {
        return st;
    }
    if (keyPath().empty() && !tpmBlobPath(keyUri_)) {
        log::notice("factory reset: the key behind " + keyUri_ + " is not a file and stays; certificate and "
                    "provisioning were removed");
    }
    auto key = obtainKey(true);
    std::lock_guard<std::mutex> lock(mu_);
    stored_ = Stored{};
    renewal_.certificateRemoved(std::time(nullptr));
    stateError_.clear();
    keyError_.clear();
    key_.reset();
    if (key) {
        key_ = std::move(key).value();
    } else {
        keyError_ = key.error().message;
        recomputeLocked();
        return unexpected(ErrorCode::Failed, "factory reset removed the old identity but could not make a new key: " +
                                                 keyError_);
    }
    recomputeLocked();
    renewalChanged();
    log::notice("factory reset: new identity, device id " + deviceId_);
    return {};
}

Expected<std::string> Identity::provisioningJson(bool withSecrets) const
{
    std::lock_guard<std::mutex> lock(mu_);
    if (!stored_.provisioning) {
        return unexpected(ErrorCode::NotProvisioned,
                          "the device is not provisioned (Provision, or mblctl identity provision FILE)");
    }
    auto j = stored_.provisioning->toJson(withSecrets);
    j["device_id"] = deviceId_;
    if (!stored_.chainPem.empty()) {
        j["certificate_chain_pem"] = stored_.chainPem;
    }
    return j.dump();
}

Expected<std::string> Identity::signDigest(SignAlgorithm algorithm, const std::string& digest) const
{
    auto key = usableKey();
    if (!key) {
        return unexpected(key.error());
    }
    return identity::signDigest(*key, algorithm, digest);
}

std::vector<std::string> Identity::signingAlgorithms() const
{
    std::lock_guard<std::mutex> lock(mu_);
    return key_ ? algorithmsFor(*key_) : std::vector<std::string>{};
}

bool Identity::keyIsSlow() const
{
    std::lock_guard<std::mutex> lock(mu_);
    return key_ && key_->slow();
}

Expected<TlsCredentials> Identity::tlsCredentials() const
{
    // The chain is only worth having with a key that signs.
    if (auto key = usableKey(); !key) {
        return unexpected(key.error());
    }
    TlsCredentials out;
    {
        std::lock_guard<std::mutex> lock(mu_);
        out.chainPem = stored_.chainPem;
        if (stored_.provisioning) {
            out.caPem = stored_.provisioning->serverCaPem;
        }
    }
    if (out.chainPem.empty()) {
        return unexpected(ErrorCode::NotProvisioned, "no certificate is installed (InstallCertificate, or mblctl "
                                                     "identity install-cert FILE)");
    }
    return out;
}

void Identity::noteCertificateLocked(std::time_t now)
{
    if (stored_.chainPem.empty()) {
        renewal_.certificateRemoved(now);
        return;
    }
    auto certs = parsePemCertificates(stored_.chainPem, "stored chain");
    if (certs && !certs->empty()) {
        X509* leaf = certs->front().get();
        renewal_.certificateInstalled(static_cast<std::time_t>(notBeforeOf(leaf)),
                                      static_cast<std::time_t>(notAfterOf(leaf)), now);
    }
}

void Identity::renewalChanged() const
{
    if (renewalObserver_) {
        renewalObserver_();
    }
}

RenewalStatus Identity::renewalStatus() const
{
    std::lock_guard<std::mutex> lock(mu_);
    RenewalStatus out;
    out.state = renewalStateName(renewal_.state());
    out.notAfter = notAfter_;
    out.nextRenewal = static_cast<std::uint64_t>(renewal_.nextAttempt());
    out.lastError = renewal_.lastError();
    return out;
}

std::time_t Identity::renewalWakeup() const
{
    std::lock_guard<std::mutex> lock(mu_);
    return renewal_.nextWakeup();
}

Status Identity::enroll()
{
    return estExchange(false);
}

Status Identity::renew()
{
    return estExchange(true);
}

Expected<bool> Identity::runScheduledRenewal()
{
    const std::time_t now = std::time(nullptr);
    RenewalAction action = RenewalAction::None;
    bool expired = false;
    std::uint64_t notAfter = 0;
    {
        std::lock_guard<std::mutex> lock(mu_);
        notAfter = notAfter_;
        const RenewalState before = renewal_.state();
        renewal_.tick(now);
        expired = before != RenewalState::Expired && renewal_.state() == RenewalState::Expired;
        action = renewal_.due(now);
    }
    if (expired) {
        log::error("the device certificate expired (notAfter " + std::to_string(notAfter) +
                   ") before it was renewed; enrol again with the factory credential (mblctl identity enroll)");
        renewalChanged();
    }
    if (action == RenewalAction::None) {
        return false;
    }
    if (auto st = estExchange(action == RenewalAction::Reenroll); !st) {
        return unexpected(st.error());
    }
    return true;
}

Expected<std::string> Identity::trustedCas() const
{
    if (fleetCa_.empty()) {
        return std::string();
    }
    auto configured = fs::readFile(fleetCa_, 1u << 20);
    if (!configured) {
        return unexpected(ErrorCode::Io, "cannot read the fleet CA (config key fleet_ca): " +
                                             configured.error().message);
    }
    const std::string stored = stateDir_ + "/" + kTrustFile;
    if (!fs::exists(stored)) {
        return configured;
    }
    auto fromEst = fs::readFile(stored, 1u << 20);
    if (!fromEst) {
        return unexpected(ErrorCode::Io, "cannot read the fleet CAs trusted from EST: " + fromEst.error().message);
    }
    return *configured + *fromEst;
}

std::string Identity::trustedCasName() const
{
    return "fleet CA " + fleetCa_ + " (or one trusted from EST /cacerts, " + stateDir_ + "/" + kTrustFile + ")";
}

Expected<TrustedCas> Identity::fetchCaCertificates(const EstClientAuth& auth, const std::string& trusted) const
{
    // RFC 7030 §4.1: the CA certificates, authenticated as the enrolment is.
    auto reply = estGet(*est_, "cacerts", auth);
    if (!reply) {
        return unexpected(reply.error());
    }
    auto pem = certificatesFromReply(*reply, "cacerts");
    if (!pem) {
        return unexpected(pem.error());
    }
    return acceptCaCertificates(trusted, *pem, std::time(nullptr));
}

Expected<VerifiedChain> Identity::estRequest(bool reenroll, const DeviceKey& key, const std::string& currentChain,
                                             std::optional<std::int64_t>& retryAfter, std::string& trust) const
{
    const std::string operation = reenroll ? "simplereenroll" : "simpleenroll";
    EstClientAuth auth;
    Expected<std::string> csr = std::string();
    {
        auto use = key.lockUse();
        if (reenroll) {
            auto certs = parsePemCertificates(currentChain, "the certificate in force");
            if (!certs) {
                return unexpected(certs.error());
            }
            csr = createRenewalCsr(key, certs->front().get());
        } else {
            csr = createCsr(key, deviceId(), CsrOptions{});
        }
    }
    if (!csr) {
        return unexpected(csr.error());
    }
    auto body = csrRequestBody(*csr);
    if (!body) {
        return unexpected(body.error());
    }
    if (reenroll) {
        auth.chainPem = currentChain;
        auth.key = &key;
    } else if (est_->credential == EstCredential::BootstrapCertificate) {
        auth.certFile = est_->bootstrapCertificate;
        auth.keyFile = est_->bootstrapKey;
    } else {
        auto token = fs::readFile(est_->tokenFile, 64 * 1024);
        if (!token) {
            return unexpected(token.error().code, "cannot read the EST credential (config key est.token_file): " +
                                                      token.error().message);
        }
        std::string t = str::trim(*token);
        OPENSSL_cleanse(token->data(), token->size());
        if (est_->credential == EstCredential::Basic) {
            std::string b64(4 * ((t.size() + 2) / 3) + 1, '\0');
            const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                          reinterpret_cast<const unsigned char*>(t.data()), static_cast<int>(t.size()));
            b64.resize(static_cast<std::size_t>(n));
            auth.authorization = "Basic " + b64;
            OPENSSL_cleanse(b64.data(), b64.size());
        } else {
            auth.authorization = "Bearer " + t;
        }
        OPENSSL_cleanse(t.data(), t.size());
    }
    // The CAs first (RFC 7030 §4.1.1: "before ... any other EST operation"): a
    // new fleet CA is trusted only when a trusted one vouches for it.
    auto current = trustedCas();
    if (!current) {
        return unexpected(current.error());
    }
    auto cas = fetchCaCertificates(auth, *current);
    if (!cas) {
        OPENSSL_cleanse(auth.authorization.data(), auth.authorization.size());
        return unexpected(cas.error());
    }
    trust = cas->added > 0 ? cas->pem : std::string();
    // The TLS client signature of a renewal is made with the device key; a TPM
    // key's lock is taken around that signature only.
    auto reply = estPost(*est_, operation, *body, auth);
    OPENSSL_cleanse(auth.authorization.data(), auth.authorization.size());
    if (!reply) {
        return unexpected(reply.error());
    }
    if (reply->status == 202) {
        retryAfter = retryAfterSeconds(reply->retryAfter);
    }
    auto pem = certificatesFromReply(*reply, operation);
    if (!pem) {
        return unexpected(pem.error());
    }
    auto chain = verifyDeviceChainWithCas(*pem, key, cas->pem, trustedCasName(), std::time(nullptr));
    if (!chain) {
        return unexpected(chain.error().code, "the certificate from EST " + operation + " is refused: " +
                                                  chain.error().message);
    }
    if (auto st = checkNamesDevice(chain->pem, deviceId(), "the certificate from EST " + operation); !st) {
        return unexpected(st.error());
    }
    return chain;
}

Status Identity::estExchange(bool reenroll)
{
    std::lock_guard<std::mutex> mutate(mutateMu_);
    if (!est_) {
        return unexpected(ErrorCode::NotSupported, "no EST server is configured (identity.json has no 'est' section)");
    }
    auto key = usableKey();
    if (!key) {
        return unexpected(key.error());
    }
    if (auto st = checkMutable(); !st) {
        return st;
    }
    const std::time_t now = std::time(nullptr);
    std::string current;
    {
        std::lock_guard<std::mutex> lock(mu_);
        current = stored_.chainPem;
        renewal_.tick(now);
        if (reenroll && current.empty()) {
            return unexpected(ErrorCode::NotProvisioned, "there is no certificate to renew: enrol first (Enroll, or "
                                                         "mblctl identity enroll)");
        }
        if (reenroll && renewal_.state() == RenewalState::Expired) {
            return unexpected(ErrorCode::Failed,
                              "the certificate expired; an expired certificate cannot authenticate a renewal: enrol "
                              "again with the factory credential (Enroll, or mblctl identity enroll)");
        }
        if (auto st = renewal_.attemptStarted(now); !st) {
            return st;
        }
    }
    renewalChanged();
    const std::string operation = reenroll ? "simplereenroll" : "simpleenroll";
    log::info("EST " + operation + " at " + est_->url);
    std::optional<std::int64_t> retryAfter;
    std::string trust; // the new trusted CA set when /cacerts brought a new CA
    auto chain = estRequest(reenroll, *key, current, retryAfter, trust);
    Status written;
    Stored next;
    if (chain && !trust.empty()) {
        // Stored before the certificate it verifies: a crash in between leaves the
        // old certificate with a trust set that still holds its CA.
        written = fs::writeFileAtomic(stateDir_ + "/" + kTrustFile, trust, 0600);
        if (written) {
            log::notice("EST cacerts: a new fleet CA is trusted (RFC 7030 §4.1.3), " + std::to_string(countCertificates(trust)) +
                        " CAs kept in " + stateDir_ + "/" + kTrustFile);
        }
    }
    if (chain && written) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            next = stored_;
        }
        next.chainPem = chain->pem;
        testPausePoint("enroll-before-commit");
        written = writeStored(next);
    }
    if (!chain || !written) {
        const Error e = !chain ? chain.error() : written.error();
        {
            std::lock_guard<std::mutex> lock(mu_);
            renewal_.attemptFailed(e.name() + ": " + e.message, std::time(nullptr), retryAfter);
        }
        renewalChanged();
        log::error("EST " + operation + " failed, the certificate in force is unchanged: " + e.describe());
        return unexpected(e);
    }
    testPausePoint("enroll-after-commit");
    {
        std::lock_guard<std::mutex> lock(mu_);
        stored_ = std::move(next);
        recomputeLocked();
        noteCertificateLocked(std::time(nullptr));
    }
    renewalChanged();
    log::notice("EST " + operation + ": installed certificate " + chain->leafSubject);
    return {};
}

} // namespace mbl::identity
