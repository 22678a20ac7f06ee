// SPDX-License-Identifier: Apache-2.0
#include "bundle.h"

#include "mbl/archive_ptr.h"
#include "mbl/crypto.h"
#include "mbl/strings.h"

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <poll.h>
#include <cctype>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace mbl::bundle {

namespace {

struct DirClose {
    void operator()(DIR* d) const { ::closedir(d); }
};

// OpenSSL handle types only the bundle code uses.
struct CmsFree {
    void operator()(CMS_ContentInfo* p) const { CMS_ContentInfo_free(p); }
};
struct X509StackFree {
    void operator()(STACK_OF(X509) * p) const { sk_X509_pop_free(p, X509_free); }
};
struct X509StackShallowFree {
    void operator()(STACK_OF(X509) * p) const { sk_X509_free(p); }
};
using Cms = std::unique_ptr<CMS_ContentInfo, CmsFree>;
using X509Stack = std::unique_ptr<STACK_OF(X509), X509StackFree>;
using X509StackView = std::unique_ptr<STACK_OF(X509), X509StackShallowFree>;

Unexpected sigError(const std::string& what)
{
    return unexpected(ErrorCode::SignatureInvalid, what);
}

std::string nameOf(const X509_NAME* n)
{
    if (n == nullptr) {
        return "";
    }
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    X509_NAME_print_ex(bio.get(), n, 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(len));
}

bool isHex64(const std::string& s)
{
    if (s.size() != 64) {
        return false;
    }
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

} // namespace

const char* payloadTypeName(PayloadType t)
{
    switch (t) {
    case PayloadType::Rootfs:
        return "rootfs";
    case PayloadType::App:
        return "app";
    case PayloadType::Config:
        return "config";
    }
    return "?";
}

Status checkAppSettings(const nlohmann::json& settings, const std::string& what)
{
    if (!settings.is_object()) {
        return unexpected(ErrorCode::InvalidArgument, what + " must be a JSON object (the app's settings), not " +
                                                          std::string(settings.type_name()));
    }
    const std::size_t size = settings.dump().size();
    if (size > kMaxAppSettingsBytes) {
        return unexpected(ErrorCode::InvalidArgument, what + " is larger than " + std::to_string(kMaxAppSettingsBytes) +
                                                          " bytes serialised (" + std::to_string(size) + ")");
    }
    return {};
}

bool isSemver(const std::string& v)
{
    // MAJOR.MINOR.PATCH, numbers without leading zeros, optional -pre and +build
    // of [0-9A-Za-z.-]. (std::regex trips GCC 12's -Wmaybe-uninitialized under ASan.)
    if (v.empty() || v.size() > 128) {
        return false;
    }
    std::size_t i = 0;
    for (int part = 0; part < 3; ++part) {
        const std::size_t start = i;
        while (i < v.size() && v[i] >= '0' && v[i] <= '9') {
            ++i;
        }
        if (i == start || (v[start] == '0' && i - start > 1)) {
            return false;
        }
        if (part < 2) {
            if (i >= v.size() || v[i] != '.') {
                return false;
            }
            ++i;
        }
    }
    if (i == v.size()) {
        return true;
    }
    if (v[i] != '-' && v[i] != '+') {
        return false;
    }
    for (std::size_t k = i + 1; k < v.size(); ++k) {
        const char c = v[k];
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+')) {
            return false;
        }
    }
    return i + 1 < v.size();
}

nlohmann::json Manifest::toJson() const
{
    nlohmann::json j;
    j["format"] = format;
    j["version"] = version;
    j["security_version"] = securityVersion;
    j["compatible"] = compatible;
    j["created"] = created;
    j["payloads"] = nlohmann::json::array();
    for (const auto& p : payloads) {
        nlohmann::json pj;
        pj["name"] = p.name;
        pj["type"] = payloadTypeName(p.type);
        pj["size"] = p.size;
        pj["sha256"] = p.sha256;
        if (p.type == PayloadType::Rootfs) {
            pj["slot_class"] = p.slotClass;
        } else if (p.type == PayloadType::App) {
            pj["app"] = {{"name", p.appName}, {"version", p.appVersion}};
            if (!p.settings.is_null()) {
                pj["settings"] = p.settings;
            }
        }
        j["payloads"].push_back(std::move(pj));
    }
    return j;
}

const Payload* Manifest::rootfs() const
{
    for (const auto& p : payloads) {
        if (p.type == PayloadType::Rootfs) {
            return &p;
        }
    }
    return nullptr;
}

Expected<Manifest> Manifest::parse(const std::string& text)
{
    auto bad = [](const std::string& what) { return unexpected(ErrorCode::InvalidArgument, "manifest: " + what); };
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return bad("not a JSON object");
    }
    Manifest m;
    if (!j.contains("format") || !j["format"].is_number_integer()) {
        return bad("'format' missing or not an integer");
    }
    if (j["format"].get<std::int64_t>() != kFormatVersion) {
        return bad("format " + j["format"].dump() + " is not supported (this device reads format " +
                   std::to_string(kFormatVersion) + ")");
    }
    if (!j.contains("version") || !j["version"].is_string() || !isSemver(j["version"].get<std::string>())) {
        return bad("'version' missing or not a semantic version (e.g. 1.2.3)");
    }
    m.version = j["version"].get<std::string>();
    if (!j.contains("security_version") || !j["security_version"].is_number_unsigned()) {
        return bad("'security_version' missing or not a non-negative integer");
    }
    m.securityVersion = j["security_version"].get<std::uint64_t>();
    if (!j.contains("compatible") || !j["compatible"].is_array() || j["compatible"].empty()) {
        return bad("'compatible' missing or not a non-empty list of device classes");
    }
    for (const auto& c : j["compatible"]) {
        if (!c.is_string() || c.get<std::string>().empty()) {
            return bad("'compatible' entries must be non-empty strings");
        }
        m.compatible.push_back(c.get<std::string>());
    }
    if (j.contains("created")) {
        if (!j["created"].is_string()) {
            return bad("'created' must be a string (RFC 3339 time)");
        }
        m.created = j["created"].get<std::string>();
    }
    if (!j.contains("payloads") || !j["payloads"].is_array()) {
        return bad("'payloads' missing or not a list");
    }
    std::set<std::string> names{kManifestName, kSignatureName};
    int rootfsCount = 0;
    for (const auto& pj : j["payloads"]) {
        if (!pj.is_object()) {
            return bad("each payload must be an object");
        }
        Payload p;
        if (!pj.contains("name") || !pj["name"].is_string() || !str::isSafeName(pj["name"].get<std::string>(), 128)) {
            return bad("payload 'name' missing or not a safe file name ([A-Za-z0-9._-])");
        }
        p.name = pj["name"].get<std::string>();
        if (!names.insert(p.name).second) {
            return bad("payload name '" + p.name + "' is used twice (or is a reserved member name)");
        }
        const std::string where = "payload '" + p.name + "': ";
        if (!pj.contains("type") || !pj["type"].is_string()) {
            return bad(where + "'type' missing");
        }
        const std::string type = pj["type"].get<std::string>();
        if (type == "rootfs") {
            p.type = PayloadType::Rootfs;
        } else if (type == "app") {
            p.type = PayloadType::App;
        } else if (type == "config") {
            p.type = PayloadType::Config;
        } else if (type == "file") {
            return bad(where + "type 'file' is not supported: nothing on the device installs files (put them in the "
                               "rootfs, an app or a config payload)");
        } else {
            return bad(where + "unknown type '" + str::quotable(type) + "' (rootfs, app, config)");
        }
        if (!pj.contains("size") || !pj["size"].is_number_unsigned()) {
            return bad(where + "'size' missing or not a non-negative integer");
        }
        p.size = pj["size"].get<std::uint64_t>();
        if (!pj.contains("sha256") || !pj["sha256"].is_string() || !isHex64(pj["sha256"].get<std::string>())) {
            return bad(where + "'sha256' missing or not 64 lowercase hex digits");
        }
        p.sha256 = pj["sha256"].get<std::string>();
        if (p.type == PayloadType::Rootfs) {
            if (++rootfsCount > 1) {
                return bad("more than one rootfs payload");
            }
            if (!pj.contains("slot_class") || !pj["slot_class"].is_string() ||
                pj["slot_class"].get<std::string>().empty()) {
                return bad(where + "'slot_class' missing");
            }
            p.slotClass = pj["slot_class"].get<std::string>();
        } else if (p.type == PayloadType::App) {
            const auto it = pj.find("app");
            if (it == pj.end() || !it->is_object() || !it->contains("name") || !(*it)["name"].is_string() ||
                !str::isSafeName((*it)["name"].get<std::string>()) || !it->contains("version") ||
                !(*it)["version"].is_string() || (*it)["version"].get<std::string>().empty()) {
                return bad(where + "'app' must name the app ({\"name\": ..., \"version\": ...})");
            }
            p.appName = (*it)["name"].get<std::string>();
            p.appVersion = (*it)["version"].get<std::string>();
        }
        if (const auto s = pj.find("settings"); s != pj.end()) {
            if (p.type != PayloadType::App) {
                return bad(where + "'settings' belongs to app payloads only");
            }
            if (auto st = checkAppSettings(*s, where + "'settings'"); !st) {
                return unexpected(ErrorCode::InvalidArgument, "manifest: " + st.error().message);
            }
            p.settings = *s;
        }
        m.payloads.push_back(std::move(p));
    }
    if (m.payloads.empty()) {
        return bad("no payloads");
    }
    return m;
}

Status checkPolicy(const Manifest& m, const std::string& deviceClass, std::uint64_t floor)
{
    bool found = false;
    for (const auto& c : m.compatible) {
        found = found || c == deviceClass;
    }
    if (!found) {
        std::string list;
        for (const auto& c : m.compatible) {
            list += (list.empty() ? "" : ", ") + c;
        }
        return unexpected(ErrorCode::Incompatible, "bundle " + m.version + " is for [" + list +
                                                       "], this device is '" + deviceClass + "'");
    }
    if (m.securityVersion < floor) {
        return unexpected(ErrorCode::Downgrade, "bundle " + m.version + " has security_version " +
                                                    std::to_string(m.securityVersion) +
                                                    ", below this device's anti-rollback floor " +
                                                    std::to_string(floor));
    }
    return {};
}

Expected<SignerInfo> verifySignature(const std::string& manifest, const std::string& signatureDer,
                                     const std::string& trustDir)
{
    ERR_clear_error();
    if (signatureDer.empty()) {
        return sigError("the bundle is not signed (manifest.json.sig is empty)");
    }
    crypto::X509Store store(X509_STORE_new());
    int cas = 0;
    if (std::unique_ptr<DIR, DirClose> dir{::opendir(trustDir.c_str())}) {
        DIR* d = dir.get();
        std::vector<std::string> files;
        while (struct dirent* e = ::readdir(d)) {
            const std::string n = e->d_name;
            if (str::endsWith(n, ".pem") || str::endsWith(n, ".crt")) {
                files.push_back(trustDir + "/" + n);
            }
        }
        for (const auto& f : files) {
            if (X509_STORE_load_file(store.get(), f.c_str()) == 1) {
                ++cas;
            }
        }
    }
    ERR_clear_error();
    if (cas == 0) {
        return sigError("no CA certificate in the trust store " + trustDir + " (*.pem or *.crt)");
    }
    X509_STORE_set_purpose(store.get(), X509_PURPOSE_ANY);

    crypto::Bio sigBio(BIO_new_mem_buf(signatureDer.data(), static_cast<int>(signatureDer.size())));
    Cms cms(d2i_CMS_bio(sigBio.get(), nullptr));
    if (!cms) {
        return sigError("manifest.json.sig is not a DER CMS signature: " + crypto::lastOpenSslError());
    }
    // The detached content goes in through a null filter, not as a bare memory
    // BIO: for a memory BIO, CMS_verify (OpenSSL 3.0.19 and earlier) makes a copy
    // of its own and leaks it when the SignedData names no digest it can compute
    // (openssl/openssl#30535). Found by tests/fuzz/fuzz_bundle.
    crypto::Bio content(BIO_new(BIO_f_null()));
    if (!content) {
        return sigError("cannot check the signature: " + crypto::lastOpenSslError());
    }
    BIO_push(content.get(), BIO_new_mem_buf(manifest.data(), static_cast<int>(manifest.size())));
    if (CMS_verify(cms.get(), nullptr, store.get(), content.get(), nullptr, CMS_BINARY) != 1) {
        return sigError("the manifest signature does not verify against the trust store " + trustDir + ": " +
                        crypto::lastOpenSslError());
    }
    X509StackView signers(CMS_get0_signers(cms.get()));
    if (!signers || sk_X509_num(signers.get()) < 1) {
        return sigError("the signature names no signer");
    }
    SignerInfo info;
    for (int i = 0; i < sk_X509_num(signers.get()); ++i) {
        X509* s = sk_X509_value(signers.get(), i);
        // OpenSSL 3.0 has no code-signing purpose: the EKU must be present and name codeSigning.
        const bool hasEku = (X509_get_extension_flags(s) & EXFLAG_XKUSAGE) != 0;
        if (!hasEku || (X509_get_extended_key_usage(s) & XKU_CODE_SIGN) == 0) {
            return sigError("signer " + nameOf(X509_get_subject_name(s)) +
                            " lacks the code-signing extended key usage");
        }
        if (i == 0) {
            info.subject = nameOf(X509_get_subject_name(s));
            info.issuer = nameOf(X509_get_issuer_name(s));
        }
    }
    return info;
}

Expected<std::string> signManifest(const std::string& manifest, const std::string& keyPem,
                                   const std::string& certPem, const std::string& chainPem)
{
    ERR_clear_error();
    crypto::Bio keyBio(BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size())));
    crypto::Pkey key(PEM_read_bio_PrivateKey(keyBio.get(), nullptr, nullptr, nullptr));
    if (!key) {
        return unexpected(ErrorCode::InvalidArgument, "cannot read the signing key: " + crypto::lastOpenSslError());
    }
    crypto::Bio certBio(BIO_new_mem_buf(certPem.data(), static_cast<int>(certPem.size())));
    crypto::X509Ptr cert(PEM_read_bio_X509(certBio.get(), nullptr, nullptr, nullptr));
    if (!cert) {
        return unexpected(ErrorCode::InvalidArgument,
                          "cannot read the signing certificate: " + crypto::lastOpenSslError());
    }
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
        return unexpected(ErrorCode::InvalidArgument, "the signing key does not match the certificate");
    }
    X509Stack chain(sk_X509_new_null());
    if (!chainPem.empty()) {
        crypto::Bio chainBio(BIO_new_mem_buf(chainPem.data(), static_cast<int>(chainPem.size())));
        while (X509* c = PEM_read_bio_X509(chainBio.get(), nullptr, nullptr, nullptr)) {
            sk_X509_push(chain.get(), c);
        }
        ERR_clear_error();
    }
    crypto::Bio data(BIO_new_mem_buf(manifest.data(), static_cast<int>(manifest.size())));
    Cms cms(CMS_sign(cert.get(), key.get(), chain.get(), data.get(), CMS_BINARY | CMS_DETACHED | CMS_NOSMIMECAP));
    if (!cms) {
        return unexpected(ErrorCode::Failed, "CMS signing failed: " + crypto::lastOpenSslError());
    }
    crypto::Bio out(BIO_new(BIO_s_mem()));
    if (i2d_CMS_bio(out.get(), cms.get()) != 1) {
        return unexpected(ErrorCode::Failed, "CMS encoding failed: " + crypto::lastOpenSslError());
    }
    char* p = nullptr;
    long len = BIO_get_mem_data(out.get(), &p);
    return std::string(p, static_cast<std::size_t>(len));
}

// ---------------------------------------------------------------------------
// Streaming reader

struct Reader::Impl {
    int fd = -1;
    Options opts;
    std::vector<char> buf;
    std::uint64_t consumed = 0;
    Error ioError;
    bool haveIoError = false;
    ArchiveReader ar;
    // Current payload.
    std::string current;
    std::uint64_t expectSize = 0;
    std::uint64_t gotSize = 0;
    bool inPayload = false;
    bool atEof = false;

    static la_ssize_t readCb(struct archive* a, void* client, const void** out)
    {
        auto* self = static_cast<Impl*>(client);
        for (;;) {
            if (self->opts.cancel != nullptr && self->opts.cancel->load()) {
                self->setIoError(Error{ErrorCode::Cancelled, "reading the bundle was cancelled"});
                archive_set_error(a, ECANCELED, "cancelled");
                return -1;
            }
            struct pollfd pfd{self->fd, POLLIN, 0};
            int waited = 0;
            int pr = 0;
            // Wait in short steps so a cancel is seen promptly.
            while ((pr = ::poll(&pfd, 1, 200)) == 0) {
                waited += 200;
                if ((self->opts.cancel != nullptr && self->opts.cancel->load()) ||
                    waited >= self->opts.idleTimeoutMs) {
                    break;
                }
            }
            if (pr == 0) {
                if (self->opts.cancel != nullptr && self->opts.cancel->load()) {
                    continue;
                }
                self->setIoError(Error{ErrorCode::Timeout, "no bundle data arrived for " +
                                                               std::to_string(self->opts.idleTimeoutMs / 1000) +
                                                               " s"});
                archive_set_error(a, ETIMEDOUT, "timeout");
                return -1;
            }
            if (pr < 0 && errno != EINTR) {
                self->setIoError(errnoError("poll on the bundle", errno));
                archive_set_error(a, errno, "poll");
                return -1;
            }
            ssize_t n = ::read(self->fd, self->buf.data(), self->buf.size());
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN) {
                    continue;
                }
                self->setIoError(errnoError("read the bundle", errno));
                archive_set_error(a, errno, "read");
                return -1;
            }
            self->consumed += static_cast<std::uint64_t>(n);
            *out = self->buf.data();
            return n;
        }
    }

    void setIoError(Error e)
    {
        if (!haveIoError) {
            ioError = std::move(e);
            haveIoError = true;
        }
    }

    Unexpected archiveError(const std::string& what)
    {
        if (haveIoError) {
            return unexpected(ioError);
        }
        const char* msg = archive_error_string(ar.get());
        return unexpected(ErrorCode::InvalidArgument,
                          "the bundle is truncated or not a valid tar archive (" + what +
                              (msg != nullptr ? std::string(": ") + msg : std::string()) + ")");
    }

    // Next header; nullptr at the end of the archive.
    Expected<struct archive_entry*> next()
    {
        struct archive_entry* e = nullptr;
        int r = archive_read_next_header(ar.get(), &e);
        if (r == ARCHIVE_EOF) {
            atEof = true;
            return static_cast<struct archive_entry*>(nullptr);
        }
        if (r != ARCHIVE_OK) {
            return archiveError("reading a member header");
        }
        return e;
    }

    Expected<std::string> readSmall(struct archive_entry* e, const std::string& name, std::uint64_t limit)
    {
        if (archive_entry_filetype(e) != AE_IFREG) {
            return unexpected(ErrorCode::InvalidArgument, "bundle member '" + name + "' is not a regular file");
        }
        if (!archive_entry_size_is_set(e) || static_cast<std::uint64_t>(archive_entry_size(e)) > limit) {
            return unexpected(name == kManifestName ? ErrorCode::InvalidArgument : ErrorCode::SignatureInvalid,
                              "bundle member '" + name + "' is larger than the limit of " + std::to_string(limit) +
                                  " bytes");
        }
        const auto size = static_cast<std::size_t>(archive_entry_size(e));
        std::string out(size, '\0');
        std::size_t got = 0;
        while (got < size) {
            la_ssize_t n = archive_read_data(ar.get(), out.data() + got, size - got);
            if (n < 0) {
                return archiveError("reading " + name);
            }
            if (n == 0) {
                return unexpected(ErrorCode::InvalidArgument, "the bundle is truncated inside '" + name + "'");
            }
            got += static_cast<std::size_t>(n);
        }
        return out;
    }
};

Reader::Reader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Reader::~Reader() = default;

std::uint64_t Reader::consumed() const
{
    return impl_->consumed;
}

Expected<std::unique_ptr<Reader>> Reader::open(int fd, const Options& options)
{
    auto impl = std::make_unique<Impl>();
    impl->fd = fd;
    impl->opts = options;
    impl->buf.resize(options.blockSize);
    impl->ar.reset(archive_read_new());
    archive_read_support_format_tar(impl->ar.get());
    Impl* raw = impl.get();
    if (archive_read_open(impl->ar.get(), raw, nullptr, &Impl::readCb, nullptr) != ARCHIVE_OK) {
        return raw->archiveError("opening the bundle");
    }
    return std::unique_ptr<Reader>(new Reader(std::move(impl)));
}

Expected<Reader::Head> Reader::readHead()
{
    Head h;
    auto e = impl_->next();
    if (!e) {
        return unexpected(e.error());
    }
    if (*e == nullptr || std::string(archive_entry_pathname(*e) ? archive_entry_pathname(*e) : "") != kManifestName) {
        return unexpected(ErrorCode::InvalidArgument, std::string("the bundle's first member must be ") +
                                                          kManifestName);
    }
    auto m = impl_->readSmall(*e, kManifestName, impl_->opts.maxManifestBytes);
    if (!m) {
        return unexpected(m.error());
    }
    h.manifest = std::move(*m);
    e = impl_->next();
    if (!e) {
        return unexpected(e.error());
    }
    if (*e == nullptr || std::string(archive_entry_pathname(*e) ? archive_entry_pathname(*e) : "") != kSignatureName) {
        return unexpected(ErrorCode::SignatureInvalid,
                          std::string("the bundle is not signed: its second member must be ") + kSignatureName);
    }
    auto s = impl_->readSmall(*e, kSignatureName, kMaxSignatureBytes);
    if (!s) {
        return unexpected(s.error());
    }
    h.signature = std::move(*s);
    return h;
}

Status Reader::beginPayload(const Payload& p)
{
    auto e = impl_->next();
    if (!e) {
        return unexpected(e.error());
    }
    if (*e == nullptr) {
        return unexpected(ErrorCode::InvalidArgument,
                          "the bundle ends before payload '" + p.name + "' (missing member or truncated bundle)");
    }
    const char* pn = archive_entry_pathname(*e);
    const std::string name = pn != nullptr ? pn : "";
    if (name != p.name) {
        // The tar headers are not signed: the name is quoted, never shown as it is.
        return unexpected(ErrorCode::InvalidArgument, "bundle member '" + str::quotable(name) +
                                                          "' found where the manifest expects '" + p.name +
                                                          "' (extra, duplicated or reordered member)");
    }
    if (archive_entry_filetype(*e) != AE_IFREG) {
        return unexpected(ErrorCode::InvalidArgument, "bundle member '" + name + "' is not a regular file");
    }
    if (!archive_entry_size_is_set(*e) || static_cast<std::uint64_t>(archive_entry_size(*e)) != p.size) {
        return unexpected(ErrorCode::SignatureInvalid,
                          "payload '" + name + "' has " + std::to_string(archive_entry_size(*e)) +
                              " bytes, the signed manifest says " + std::to_string(p.size));
    }
    impl_->current = name;
    impl_->expectSize = p.size;
    impl_->gotSize = 0;
    impl_->inPayload = true;
    return {};
}

Expected<Reader::Chunk> Reader::read()
{
    if (!impl_->inPayload) {
        return Chunk{};
    }
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(impl_->ar.get(), &buf, &size, &offset);
    if (r == ARCHIVE_EOF) {
        impl_->inPayload = false;
        if (impl_->gotSize != impl_->expectSize) {
            return unexpected(ErrorCode::InvalidArgument, "the bundle is truncated inside '" + impl_->current + "'");
        }
        return Chunk{};
    }
    if (r != ARCHIVE_OK) {
        return impl_->archiveError("reading payload '" + impl_->current + "'");
    }
    if (static_cast<std::uint64_t>(offset) != impl_->gotSize) {
        return unexpected(ErrorCode::InvalidArgument, "payload '" + impl_->current + "' is sparse; bundles hold plain files");
    }
    impl_->gotSize += size;
    if (impl_->gotSize > impl_->expectSize) {
        return unexpected(ErrorCode::InvalidArgument, "payload '" + impl_->current + "' is longer than its header says");
    }
    return Chunk{buf, size};
}

Status Reader::expectEnd()
{
    if (impl_->inPayload) {
        return unexpected(ErrorCode::Failed, "internal: payload not fully read");
    }
    auto e = impl_->next();
    if (!e) {
        return unexpected(e.error());
    }
    if (*e != nullptr) {
        const char* pn = archive_entry_pathname(*e);
        return unexpected(ErrorCode::InvalidArgument, "bundle member '" + str::quotable(pn != nullptr ? pn : "") +
                                                          "' is not named in the manifest");
    }
    return {};
}

} // namespace mbl::bundle
