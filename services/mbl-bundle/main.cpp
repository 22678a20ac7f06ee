// SPDX-License-Identifier: Apache-2.0
// mbl-bundle: create, sign, inspect and verify update bundles (ARCHITECTURE §5)
// on the build host and in tests. The signature is a plain detached CMS, so
// `openssl cms -sign` (or an HSM) can sign a manifest this tool wrote
// (`create --manifest-out`) and `assemble` puts the bundle together.

#include "bundle.h"

#include "mbl/archive_ptr.h"
#include "mbl/crypto.h"
#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <ctime>
#include <fcntl.h>
#include <iostream>
#include <map>
#include <sys/stat.h>
#include <unistd.h>

using namespace mbl;

namespace {

struct PayloadSource {
    bundle::Payload payload;
    std::string path;
    bool hasSettings = false; // --app ...,SETTINGS.json given (payload.settings holds it)
};

struct Args {
    std::string key, cert, chain, version, created, out, manifestOut, manifestIn, signatureIn, trust, compatibleDevice;
    std::string slotClass = "rootfs";
    std::int64_t securityVersion = -1;
    std::vector<std::string> compatible;
    std::vector<PayloadSource> payloads;
    std::vector<std::string> positional;
    bool json = false;
};

int usage(int code)
{
    (code == 0 ? std::cout : std::cerr)
        << "Usage:\n"
           "  mbl-bundle create --key KEY --cert CERT [--chain PEM] --version SEMVER --security-version N\n"
           "                    --compatible CLASS[,CLASS...] [--rootfs IMG [--slot-class C]]\n"
           "                    [--app NAME[@VERSION]=OCI-ARCHIVE[,SETTINGS.json]]... [--config JSON]\n"
           "                    -o OUT.bundle\n"
           "  mbl-bundle create ... --manifest-out manifest.json      (manifest only, to sign elsewhere)\n"
           "  mbl-bundle assemble --manifest manifest.json --signature manifest.json.sig [payload flags] -o OUT\n"
           "  mbl-bundle inspect [--json] BUNDLE\n"
           "  mbl-bundle verify --trust DIR [--compatible CLASS] BUNDLE\n";
    return code;
}

int fail(const Error& e)
{
    std::cerr << "mbl-bundle: " << e.describe() << "\n";
    return 1;
}

std::string nowRfc3339()
{
    std::time_t t = std::time(nullptr);
    struct tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

Expected<bundle::Payload> describeFile(const std::string& path, bundle::Payload p)
{
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        return unexpected(errnoError("open " + path, errno));
    }
    auto h = crypto::sha256HexOfFd(fd.get());
    if (!h) {
        return unexpected(h.error());
    }
    p.sha256 = h->first;
    p.size = h->second;
    return p;
}

Expected<Args> parse(const std::vector<std::string>& argv)
{
    Args a;
    auto need = [&](std::size_t& i) -> Expected<std::string> {
        if (i + 1 >= argv.size()) {
            return unexpected(ErrorCode::InvalidArgument, argv[i] + " needs a value");
        }
        return argv[++i];
    };
    for (std::size_t i = 0; i < argv.size(); ++i) {
        const std::string& o = argv[i];
        if (o == "--json") {
            a.json = true;
            continue;
        }
        if (o.rfind("--", 0) != 0 && o != "-o") {
            a.positional.push_back(o);
            continue;
        }
        auto v = need(i);
        if (!v) {
            return unexpected(v.error());
        }
        if (o == "--key") {
            a.key = *v;
        } else if (o == "--cert") {
            a.cert = *v;
        } else if (o == "--chain") {
            auto t = fs::readFile(*v);
            if (!t) {
                return unexpected(t.error());
            }
            a.chain += *t;
        } else if (o == "--version") {
            a.version = *v;
        } else if (o == "--security-version") {
            try {
                a.securityVersion = std::stoll(*v);
            } catch (...) {
                return unexpected(ErrorCode::InvalidArgument, "--security-version needs an integer");
            }
        } else if (o == "--compatible") {
            for (const auto& c : str::split(*v, ',')) {
                if (!c.empty()) {
                    a.compatible.push_back(c);
                }
            }
        } else if (o == "--created") {
            a.created = *v;
        } else if (o == "--slot-class") {
            a.slotClass = *v;
        } else if (o == "--rootfs") {
            bundle::Payload p;
            p.name = "rootfs";
            p.type = bundle::PayloadType::Rootfs;
            a.payloads.push_back({p, *v});
        } else if (o == "--app") {
            auto eq = v->find('=');
            if (eq == std::string::npos) {
                return unexpected(ErrorCode::InvalidArgument, "--app takes NAME[@VERSION]=OCI-ARCHIVE[,SETTINGS.json]");
            }
            std::string name = v->substr(0, eq);
            std::string archive = v->substr(eq + 1);
            bundle::Payload p;
            p.type = bundle::PayloadType::App;
            if (auto at = name.find('@'); at != std::string::npos) {
                p.appVersion = name.substr(at + 1);
                name = name.substr(0, at);
            }
            p.appName = name;
            p.name = "app-" + name;
            PayloadSource src{p, archive};
            // The last comma separates the app's settings file (contract C4).
            if (auto comma = archive.rfind(','); comma != std::string::npos) {
                src.path = archive.substr(0, comma);
                const std::string file = archive.substr(comma + 1);
                const std::string what = "--app " + name + ": settings file " + file;
                auto text = fs::readFile(file, 1u << 20);
                if (!text) {
                    return unexpected(text.error());
                }
                nlohmann::json doc = nlohmann::json::parse(*text, nullptr, false);
                if (doc.is_discarded()) {
                    return unexpected(ErrorCode::InvalidArgument, what + " is not valid JSON");
                }
                if (auto st = bundle::checkAppSettings(doc, what); !st) {
                    return unexpected(st.error());
                }
                src.payload.settings = std::move(doc);
                src.hasSettings = true;
            }
            a.payloads.push_back(std::move(src));
        } else if (o == "--config") {
            bundle::Payload p;
            p.name = "config";
            p.type = bundle::PayloadType::Config;
            a.payloads.push_back({p, *v});
        } else if (o == "--file") {
            // Refused, not ignored: nothing on the device installs a file payload.
            return unexpected(ErrorCode::InvalidArgument,
                              "--file: file payloads are not supported (nothing on the device installs them; put "
                              "files in the rootfs, an app or a config payload)");
        } else if (o == "-o" || o == "--output") {
            a.out = *v;
        } else if (o == "--manifest-out") {
            a.manifestOut = *v;
        } else if (o == "--manifest") {
            a.manifestIn = *v;
        } else if (o == "--signature") {
            a.signatureIn = *v;
        } else if (o == "--trust") {
            a.trust = *v;
        } else if (o == "--device-class") {
            a.compatibleDevice = *v;
        } else {
            return unexpected(ErrorCode::InvalidArgument, "unknown option " + o);
        }
    }
    return a;
}

Status writeBundle(const std::string& out, const std::string& manifest, const std::string& sig,
                   const std::vector<bundle::Payload>& order, const std::map<std::string, std::string>& paths)
{
    ArchiveWriter w(archive_write_new());
    archive_write_set_format_pax_restricted(w.get());
    const std::string tmp = out + ".tmp";
    if (archive_write_open_filename(w.get(), tmp.c_str()) != ARCHIVE_OK) {
        return unexpected(ErrorCode::Io, "cannot create " + tmp + ": " + archiveErrorString(w.get()));
    }
    const std::time_t now = std::time(nullptr);
    auto header = [&](const std::string& name, std::uint64_t size) -> Status {
        ArchiveEntry e(archive_entry_new());
        archive_entry_set_pathname(e.get(), name.c_str());
        archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_perm(e.get(), 0644);
        archive_entry_set_mtime(e.get(), now, 0);
        if (archive_write_header(w.get(), e.get()) != ARCHIVE_OK) {
            return unexpected(ErrorCode::Io, "tar header for " + name + ": " + archiveErrorString(w.get()));
        }
        return {};
    };
    auto small = [&](const std::string& name, const std::string& data) -> Status {
        if (auto st = header(name, data.size()); !st) {
            return st;
        }
        if (archive_write_data(w.get(), data.data(), data.size()) != static_cast<la_ssize_t>(data.size())) {
            return unexpected(ErrorCode::Io, "writing " + name + ": " + archiveErrorString(w.get()));
        }
        return {};
    };
    if (auto st = small(bundle::kManifestName, manifest); !st) {
        return st;
    }
    if (auto st = small(bundle::kSignatureName, sig); !st) {
        return st;
    }
    std::vector<char> buf(1u << 20);
    for (const auto& p : order) {
        const std::string& path = paths.at(p.name);
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) {
            return unexpected(errnoError("open " + path, errno));
        }
        if (auto st = header(p.name, p.size); !st) {
            return st;
        }
        std::uint64_t left = p.size;
        while (left > 0) {
            ssize_t n = ::read(fd.get(), buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size())));
            if (n <= 0) {
                return unexpected(ErrorCode::Io, path + " changed while the bundle was written");
            }
            if (archive_write_data(w.get(), buf.data(), static_cast<std::size_t>(n)) != n) {
                return unexpected(ErrorCode::Io, "writing " + p.name + ": " + archiveErrorString(w.get()));
            }
            left -= static_cast<std::uint64_t>(n);
        }
    }
    if (archive_write_close(w.get()) != ARCHIVE_OK) {
        return unexpected(ErrorCode::Io, "closing " + tmp + ": " + archiveErrorString(w.get()));
    }
    if (::rename(tmp.c_str(), out.c_str()) != 0) {
        return unexpected(errnoError("rename to " + out, errno));
    }
    return {};
}

int cmdCreate(Args& a)
{
    if (a.version.empty() || a.securityVersion < 0 || a.compatible.empty() || a.payloads.empty()) {
        return fail(Error{ErrorCode::InvalidArgument,
                          "create needs --version, --security-version, --compatible and at least one payload"});
    }
    bundle::Manifest m;
    m.version = a.version;
    m.securityVersion = static_cast<std::uint64_t>(a.securityVersion);
    m.compatible = a.compatible;
    m.created = a.created.empty() ? nowRfc3339() : a.created;
    std::map<std::string, std::string> paths;
    for (auto& src : a.payloads) {
        if (src.payload.type == bundle::PayloadType::Rootfs) {
            src.payload.slotClass = a.slotClass;
        }
        if (src.payload.type == bundle::PayloadType::App && src.payload.appVersion.empty()) {
            src.payload.appVersion = a.version;
        }
        auto p = describeFile(src.path, src.payload);
        if (!p) {
            return fail(p.error());
        }
        paths[p->name] = src.path;
        m.payloads.push_back(*p);
    }
    const std::string text = m.toJson().dump(2) + "\n";
    if (auto check = bundle::Manifest::parse(text); !check) {
        return fail(check.error());
    }
    if (!a.manifestOut.empty()) {
        if (auto st = fs::writeFileAtomic(a.manifestOut, text); !st) {
            return fail(st.error());
        }
        return 0;
    }
    if (a.key.empty() || a.cert.empty() || a.out.empty()) {
        return fail(Error{ErrorCode::InvalidArgument, "create needs --key, --cert and -o (or --manifest-out)"});
    }
    auto key = fs::readFile(a.key);
    auto cert = fs::readFile(a.cert);
    if (!key || !cert) {
        return fail(!key ? key.error() : cert.error());
    }
    auto sig = bundle::signManifest(text, *key, *cert, a.chain);
    if (!sig) {
        return fail(sig.error());
    }
    if (auto st = writeBundle(a.out, text, *sig, m.payloads, paths); !st) {
        return fail(st.error());
    }
    return 0;
}

int cmdAssemble(Args& a)
{
    if (a.manifestIn.empty() || a.signatureIn.empty() || a.out.empty()) {
        return fail(Error{ErrorCode::InvalidArgument, "assemble needs --manifest, --signature and -o"});
    }
    auto text = fs::readFile(a.manifestIn);
    auto sig = fs::readFile(a.signatureIn);
    if (!text || !sig) {
        return fail(!text ? text.error() : sig.error());
    }
    auto m = bundle::Manifest::parse(*text);
    if (!m) {
        return fail(m.error());
    }
    std::map<std::string, std::string> paths;
    std::map<std::string, const PayloadSource*> sources;
    for (const auto& src : a.payloads) {
        paths[src.payload.name] = src.path;
        sources[src.payload.name] = &src;
    }
    for (const auto& p : m->payloads) {
        auto it = paths.find(p.name);
        if (it == paths.end()) {
            return fail(Error{ErrorCode::InvalidArgument, "no file given for payload '" + p.name + "'"});
        }
        // The settings are in the signed manifest; a settings file given again must be the same.
        if (const PayloadSource* src = sources[p.name]; src->hasSettings && src->payload.settings != p.settings) {
            return fail(Error{ErrorCode::InvalidArgument,
                              "the settings given for payload '" + p.name + "' are not those of the manifest"});
        }
        auto d = describeFile(it->second, p);
        if (!d) {
            return fail(d.error());
        }
        if (d->sha256 != p.sha256 || d->size != p.size) {
            return fail(Error{ErrorCode::InvalidArgument, it->second + " does not match payload '" + p.name +
                                                              "' of the manifest"});
        }
    }
    if (auto st = writeBundle(a.out, *text, *sig, m->payloads, paths); !st) {
        return fail(st.error());
    }
    return 0;
}

Expected<std::pair<bundle::Reader::Head, bundle::Manifest>> readHead(bundle::Reader& r)
{
    auto head = r.readHead();
    if (!head) {
        return unexpected(head.error());
    }
    auto m = bundle::Manifest::parse(head->manifest);
    if (!m) {
        return unexpected(m.error());
    }
    return std::make_pair(std::move(*head), std::move(*m));
}

int cmdInspect(Args& a)
{
    if (a.positional.size() != 1) {
        return usage(2);
    }
    Fd fd(::open(a.positional[0].c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        return fail(errnoError("open " + a.positional[0], errno));
    }
    auto r = bundle::Reader::open(fd.get(), {});
    if (!r) {
        return fail(r.error());
    }
    auto hm = readHead(**r);
    if (!hm) {
        return fail(hm.error());
    }
    const auto& m = hm->second;
    if (a.json) {
        std::cout << m.toJson().dump(2) << "\n";
        return 0;
    }
    std::cout << "version:          " << m.version << "\n"
              << "security_version: " << m.securityVersion << "\n"
              << "compatible:       ";
    for (std::size_t i = 0; i < m.compatible.size(); ++i) {
        std::cout << (i ? ", " : "") << m.compatible[i];
    }
    std::cout << "\ncreated:          " << m.created << "\n"
              << "signature:        " << hm->first.signature.size() << " bytes CMS (not checked; use verify)\n"
              << "payloads:\n";
    for (const auto& p : m.payloads) {
        std::cout << "  " << p.name << "  " << bundle::payloadTypeName(p.type) << "  " << p.size << " bytes  sha256 "
                  << p.sha256;
        if (p.type == bundle::PayloadType::App) {
            std::cout << "  app " << p.appName << " " << p.appVersion;
            if (!p.settings.is_null()) {
                std::cout << "  settings " << p.settings.dump().size() << " bytes";
            }
        } else if (p.type == bundle::PayloadType::Rootfs) {
            std::cout << "  slot class " << p.slotClass;
        }
        std::cout << "\n";
    }
    return 0;
}

int cmdVerify(Args& a)
{
    if (a.positional.size() != 1 || a.trust.empty()) {
        return usage(2);
    }
    Fd fd(::open(a.positional[0].c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        return fail(errnoError("open " + a.positional[0], errno));
    }
    auto r = bundle::Reader::open(fd.get(), {});
    if (!r) {
        return fail(r.error());
    }
    auto head = (*r)->readHead();
    if (!head) {
        return fail(head.error());
    }
    auto signer = bundle::verifySignature(head->manifest, head->signature, a.trust);
    if (!signer) {
        return fail(signer.error());
    }
    auto m = bundle::Manifest::parse(head->manifest);
    if (!m) {
        return fail(m.error());
    }
    const std::string device = !a.compatibleDevice.empty() ? a.compatibleDevice
                                                           : (a.compatible.empty() ? "" : a.compatible[0]);
    if (!device.empty()) {
        if (auto st = bundle::checkPolicy(*m, device, 0); !st) {
            return fail(st.error());
        }
    }
    for (const auto& p : m->payloads) {
        if (auto st = (*r)->beginPayload(p); !st) {
            return fail(st.error());
        }
        crypto::Sha256 h;
        for (;;) {
            auto c = (*r)->read();
            if (!c) {
                return fail(c.error());
            }
            if (c->size == 0) {
                break;
            }
            h.update(c->data, c->size);
        }
        if (h.finishHex() != p.sha256) {
            return fail(Error{ErrorCode::SignatureInvalid,
                              "payload '" + p.name + "' does not match the SHA-256 of the signed manifest"});
        }
    }
    if (auto st = (*r)->expectEnd(); !st) {
        return fail(st.error());
    }
    std::cout << "OK: bundle " << m->version << " signed by " << signer->subject << " (issuer " << signer->issuer
              << "), " << m->payloads.size() << " payload(s) verified\n";
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2) {
        return usage(2);
    }
    const std::string cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        return usage(0);
    }
    auto a = parse(std::vector<std::string>(argv + 2, argv + argc));
    if (!a) {
        std::cerr << "mbl-bundle: " << a.error().message << "\n";
        return usage(2);
    }
    try {
        if (cmd == "create") {
            return cmdCreate(*a);
        }
        if (cmd == "assemble") {
            return cmdAssemble(*a);
        }
        if (cmd == "inspect") {
            return cmdInspect(*a);
        }
        if (cmd == "verify") {
            return cmdVerify(*a);
        }
    } catch (const std::exception& e) {
        std::cerr << "mbl-bundle: internal error: " << e.what() << "\n";
        return 1;
    }
    std::cerr << "mbl-bundle: unknown command '" << cmd << "'\n";
    return usage(2);
}
