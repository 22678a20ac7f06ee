// SPDX-License-Identifier: Apache-2.0
#include "oci_image.h"

#include "mbl/archive_ptr.h"
#include "mbl/crypto.h"
#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <archive.h>

#include <cerrno>
#include <chrono>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>

namespace mbl::containers {

namespace {

using nlohmann::json;

constexpr std::size_t kMaxJson = 4u << 20;

const char* kIndexType = "application/vnd.oci.image.index.v1+json";
const char* kManifestType = "application/vnd.oci.image.manifest.v1+json";
const char* kDockerManifestType = "application/vnd.docker.distribution.manifest.v2+json";
const char* kConfigType = "application/vnd.oci.image.config.v1+json";
const char* kDockerConfigType = "application/vnd.docker.container.image.v1+json";

bool isLayerType(const std::string& t)
{
    static const char* known[] = {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    };
    for (const char* k : known) {
        if (t == k) {
            return true;
        }
    }
    return false;
}

Error invalid(const std::string& msg)
{
    return Error{ErrorCode::InvalidArgument, msg};
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

std::string stripDotSlash(std::string n)
{
    while (str::startsWith(n, "./")) {
        n = n.substr(2);
    }
    while (!n.empty() && n.back() == '/') {
        n.pop_back();
    }
    return n;
}

Expected<std::string> readEntryData(struct archive* a, std::size_t max, const std::string& what)
{
    std::string out;
    char buf[16384];
    while (true) {
        la_ssize_t n = archive_read_data(a, buf, sizeof buf);
        if (n == 0) {
            return out;
        }
        if (n < 0) {
            return unexpected(invalid("truncated or corrupt archive while reading " + what + ": " +
                                      archiveErrorString(a)));
        }
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > max) {
            return unexpected(invalid(what + " is larger than " + std::to_string(max) + " bytes"));
        }
    }
}

// Members of the image's JSON documents, read without trusting their types:
// nlohmann's value() throws when a member has another type than the default,
// and an exception out of the install worker ends the daemon.
// A string member; `fallback` when `obj` is not an object or the member is not a string.
std::string textOr(const json& obj, const char* key, const std::string& fallback = "")
{
    if (!obj.is_object()) {
        return fallback;
    }
    const auto it = obj.find(key);
    return it != obj.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// An object member; an empty object when there is none.
json objectOr(const json& obj, const char* key)
{
    if (!obj.is_object()) {
        return json::object();
    }
    const auto it = obj.find(key);
    return it != obj.end() && it->is_object() ? *it : json::object();
}

// Any member; null when there is none.
json memberOr(const json& obj, const char* key)
{
    if (!obj.is_object()) {
        return json();
    }
    const auto it = obj.find(key);
    return it != obj.end() ? *it : json();
}

struct Blob {
    std::string path;
    std::uint64_t size = 0;
};

class Stager {
public:
    Stager(std::string dir, StageOptions opts) : dir_(std::move(dir)), opts_(std::move(opts)) {}

    Expected<StagedImage> run(int fd)
    {
        if (auto st = readOuter(fd); !st) {
            return unexpected(st.error());
        }
        StagedImage out;
        if (mode_ == Mode::Bundle) {
            auto r = finishBundle(out);
            if (!r) {
                return unexpected(r.error());
            }
        } else if (mode_ == Mode::Image) {
            auto r = finishImage(out);
            (void)fs::removeTree(dir_ + "/blobs");
            if (!r) {
                return unexpected(r.error());
            }
        } else {
            return unexpected(invalid("the archive is empty: neither an OCI image layout nor a runtime bundle"));
        }
        out.rootfsBytes = writer_ ? writer_->bytesWritten() : 0;
        if (writer_ && writer_->setuidDropped() > 0) {
            std::string ex;
            for (const auto& p : writer_->setuidExamples()) {
                ex += (ex.empty() ? "" : ", ") + p;
            }
            out.withheld.push_back("setuid/setgid bits dropped from " + std::to_string(writer_->setuidDropped()) +
                                   " file(s) (" + ex + (writer_->setuidDropped() > 5 ? ", ..." : "") +
                                   "): policy.allow_setuid is false");
        }
        return out;
    }

private:
    enum class Mode { Unknown, Image, Bundle };

    // The outer archive's reads: each waits at most timeoutMs for data (a pipe
    // whose writer stalls) and ends early when cancel is set.
    struct FdReader {
        int fd = -1;
        int timeoutMs = 0;
        const std::atomic<bool>* cancel = nullptr;
        std::optional<Error> failure;
        char buf[1 << 16];

        static la_ssize_t read(struct archive* a, void* self, const void** out)
        {
            auto* r = static_cast<FdReader*>(self);
            *out = r->buf;
            auto waited = std::chrono::milliseconds(0);
            while (true) {
                if (r->cancel != nullptr && r->cancel->load()) {
                    r->failure = Error{ErrorCode::Cancelled, "the install was stopped (the daemon is stopping)"};
                    archive_set_error(a, ECANCELED, "cancelled");
                    return -1;
                }
                struct pollfd p = {r->fd, POLLIN, 0};
                const int slice = 200;
                const int n = ::poll(&p, 1, slice);
                if (n < 0 && errno != EINTR) {
                    archive_set_error(a, errno, "poll failed");
                    return -1;
                }
                if (n > 0) {
                    break;
                }
                waited += std::chrono::milliseconds(slice);
                if (r->timeoutMs > 0 && waited.count() >= r->timeoutMs) {
                    r->failure = Error{ErrorCode::Timeout, "the archive stopped coming: nothing was read for " +
                                                               std::to_string(r->timeoutMs) +
                                                               " ms (containers.json install_read_timeout_ms)"};
                    archive_set_error(a, ETIMEDOUT, "read timeout");
                    return -1;
                }
            }
            while (true) {
                const ssize_t got = ::read(r->fd, r->buf, sizeof r->buf);
                if (got < 0 && errno == EINTR) {
                    continue;
                }
                if (got < 0) {
                    archive_set_error(a, errno, "read failed");
                    return -1;
                }
                return got;
            }
        }
    };
    FdReader reader_;

    Status setMode(Mode m, const std::string& entry)
    {
        if (mode_ != Mode::Unknown && mode_ != m) {
            return unexpected(invalid("entry '" + entry +
                                      "' mixes an OCI image layout with a runtime bundle in one archive"));
        }
        mode_ = m;
        return {};
    }

    Status readOuter(int fd)
    {
        ArchiveReader a{archive_read_new()};
        archive_read_support_filter_all(a.get());
        archive_read_support_format_tar(a.get());
        reader_.fd = fd;
        reader_.timeoutMs = opts_.readTimeoutMs;
        reader_.cancel = opts_.limits.cancel;
        if (archive_read_open(a.get(), &reader_, nullptr, &FdReader::read, nullptr) != ARCHIVE_OK) {
            if (reader_.failure) {
                return unexpected(*reader_.failure);
            }
            return unexpected(invalid(std::string("not a readable archive: ") + archiveErrorString(a.get())));
        }
        struct archive_entry* e = nullptr;
        while (true) {
            int r = archive_read_next_header(a.get(), &e);
            if (r == ARCHIVE_EOF) {
                break;
            }
            if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
                if (reader_.failure) {
                    return unexpected(*reader_.failure);
                }
                return unexpected(invalid(std::string("truncated or corrupt archive: ") + archiveErrorString(a.get())));
            }
            const char* p = archive_entry_pathname(e);
            if (p == nullptr) {
                return unexpected(invalid("archive entry without a name"));
            }
            const std::string raw = p;
            if (!raw.empty() && raw[0] == '/') {
                return unexpected(invalid("absolute path '" + raw + "' in archive"));
            }
            const std::string name = stripDotSlash(raw);
            if (name.empty()) {
                continue;
            }
            if (name == "oci-layout" || name == "index.json") {
                if (auto st = setMode(Mode::Image, name); !st) {
                    return st;
                }
                auto data = readEntryData(a.get(), kMaxJson, name);
                if (!data) {
                    return unexpected(data.error());
                }
                (name == "index.json" ? index_ : layout_) = std::move(*data);
                continue;
            }
            if (name == "blobs" || str::startsWith(name, "blobs/")) {
                if (auto st = setMode(Mode::Image, name); !st) {
                    return st;
                }
                if (archive_entry_filetype(e) == AE_IFDIR) {
                    continue;
                }
                if (auto st = readBlob(a.get(), e, name); !st) {
                    return st;
                }
                continue;
            }
            if (name == "config.json") {
                if (auto st = setMode(Mode::Bundle, name); !st) {
                    return st;
                }
                auto data = readEntryData(a.get(), kMaxJson, name);
                if (!data) {
                    return unexpected(data.error());
                }
                bundleConfig_ = std::move(*data);
                continue;
            }
            if (name == "rootfs" || str::startsWith(name, "rootfs/")) {
                if (auto st = setMode(Mode::Bundle, name); !st) {
                    return st;
                }
                if (!writer_) {
                    if (auto st = openWriter(false); !st) {
                        return st;
                    }
                }
                const std::string inner = name == "rootfs" ? std::string() : name.substr(7);
                if (auto st = writer_->unpackEntry(a.get(), e, inner, "bundle rootfs"); !st) {
                    return st;
                }
                continue;
            }
            return unexpected(invalid("unexpected entry '" + raw +
                                      "': the archive must be an OCI image layout (oci-layout, index.json, blobs/) "
                                      "or an OCI runtime bundle (config.json, rootfs/)"));
        }
        return {};
    }

    Status openWriter(bool whiteouts)
    {
        const std::string rootfs = dir_ + "/rootfs";
        if (::mkdir(rootfs.c_str(), 0755) != 0 && errno != EEXIST) {
            return unexpected(errnoError("mkdir " + rootfs, errno));
        }
        UnpackLimits l = opts_.limits;
        l.applyWhiteouts = whiteouts;
        auto w = RootfsWriter::open(rootfs, l);
        if (!w) {
            return unexpected(w.error());
        }
        writer_.emplace(std::move(w).value());
        return {};
    }

    Status readBlob(struct archive* a, struct archive_entry* e, const std::string& name)
    {
        auto parts = str::split(name, '/');
        if (parts.size() != 3 || parts[1] != "sha256" || !isHex64(parts[2])) {
            return unexpected(invalid("unexpected blob '" + name + "' (only blobs/sha256/<64 hex digits> is supported)"));
        }
        if (archive_entry_filetype(e) != AE_IFREG) {
            return unexpected(invalid("blob '" + name + "' is not a regular file"));
        }
        const std::string blobDir = dir_ + "/blobs";
        if (::mkdir(blobDir.c_str(), 0700) != 0 && errno != EEXIST) {
            return unexpected(errnoError("mkdir " + blobDir, errno));
        }
        const std::string path = blobDir + "/" + parts[2];
        Fd out{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600)};
        if (!out) {
            return unexpected(errnoError("create " + path, errno));
        }
        crypto::Sha256 h;
        std::uint64_t size = 0;
        char buf[1 << 16];
        while (true) {
            la_ssize_t n = archive_read_data(a, buf, sizeof buf);
            if (n == 0) {
                break;
            }
            if (n < 0) {
                return unexpected(invalid("truncated or corrupt archive while reading " + name + ": " +
                                          archiveErrorString(a)));
            }
            h.update(buf, static_cast<std::size_t>(n));
            size += static_cast<std::uint64_t>(n);
            blobBytes_ += static_cast<std::uint64_t>(n);
            if (blobBytes_ > opts_.limits.quotaBytes) {
                return unexpected(Error{ErrorCode::NoSpace, "the image's blobs are larger than the install quota of " +
                                                                std::to_string(opts_.limits.quotaBytes) + " bytes"});
            }
            if (auto st = fs::writeAll(out.get(), buf, static_cast<std::size_t>(n)); !st) {
                return st;
            }
        }
        const std::string got = h.finishHex();
        if (got != parts[2]) {
            return unexpected(invalid("digest mismatch: blob sha256:" + parts[2] + " has content with sha256:" + got));
        }
        blobs_["sha256:" + parts[2]] = Blob{path, size};
        return {};
    }

    // Checks a descriptor against the blob it names: present, same size.
    Expected<const Blob*> blobFor(const json& desc, const std::string& what)
    {
        if (!desc.is_object() || !desc.contains("digest") || !desc["digest"].is_string() || !desc.contains("size") ||
            !desc["size"].is_number_unsigned()) {
            return unexpected(invalid(what + ": descriptor without digest or size"));
        }
        const std::string digest = desc["digest"].get<std::string>();
        if (!str::startsWith(digest, "sha256:")) {
            return unexpected(invalid(what + ": unsupported digest algorithm in '" + digest + "'"));
        }
        auto it = blobs_.find(digest);
        if (it == blobs_.end()) {
            return unexpected(invalid(what + ": missing blob " + digest + " (named by the image but not in the archive)"));
        }
        const auto size = desc["size"].get<std::uint64_t>();
        if (size != it->second.size) {
            return unexpected(invalid(what + ": blob " + digest + " is " + std::to_string(it->second.size) +
                                      " bytes but its descriptor says " + std::to_string(size)));
        }
        return &it->second;
    }

    Expected<json> readJsonBlob(const json& desc, const std::string& what)
    {
        auto b = blobFor(desc, what);
        if (!b) {
            return unexpected(b.error());
        }
        auto text = fs::readFile((*b)->path, kMaxJson);
        if (!text) {
            return unexpected(text.error());
        }
        try {
            return json::parse(*text);
        } catch (const std::exception& ex) {
            return unexpected(invalid(what + " is not valid JSON: " + ex.what()));
        }
    }

    static std::string hostArch()
    {
        struct utsname u {};
        ::uname(&u);
        std::string m = u.machine;
        if (m == "x86_64") {
            return "amd64";
        }
        if (m == "aarch64") {
            return "arm64";
        }
        if (str::startsWith(m, "arm")) {
            return "arm";
        }
        return m;
    }

    // Picks one manifest descriptor of an index (recursing into nested indexes).
    Expected<json> selectManifest(const json& index, int depth)
    {
        if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array()) {
            return unexpected(invalid("index.json has no \"manifests\" list"));
        }
        std::vector<json> candidates;
        for (const auto& m : index["manifests"]) {
            if (!opts_.imageRef.empty()) {
                if (textOr(objectOr(m, "annotations"), "org.opencontainers.image.ref.name") != opts_.imageRef) {
                    continue;
                }
            }
            candidates.push_back(m);
        }
        // Several platforms of one image: keep those for this machine.
        if (candidates.size() > 1) {
            std::vector<json> mine;
            for (const auto& m : candidates) {
                if (textOr(objectOr(m, "platform"), "architecture") == hostArch()) {
                    mine.push_back(m);
                }
            }
            if (!mine.empty()) {
                candidates = mine;
            }
        }
        if (candidates.empty()) {
            return unexpected(invalid(opts_.imageRef.empty()
                                          ? std::string("index.json names no manifest")
                                          : "index.json has no manifest with ref.name '" + opts_.imageRef + "'"));
        }
        if (candidates.size() > 1) {
            return unexpected(invalid("index.json names " + std::to_string(candidates.size()) +
                                      " manifests: choose one with the install option \"image\" (its ref.name)"));
        }
        json chosen = candidates[0];
        const std::string type = textOr(chosen, "mediaType");
        if (type == kIndexType) {
            if (depth > 2) {
                return unexpected(invalid("index.json nests indexes too deeply"));
            }
            auto nested = readJsonBlob(chosen, "nested index");
            if (!nested) {
                return unexpected(nested.error());
            }
            auto inner = selectManifest(*nested, depth + 1);
            if (inner && inner->is_object() && !inner->contains("annotations") && chosen.contains("annotations")) {
                (*inner)["annotations"] = chosen["annotations"];
            }
            return inner;
        }
        if (type != kManifestType && type != kDockerManifestType) {
            return unexpected(invalid("unknown media type '" + type + "' for the image manifest"));
        }
        return chosen;
    }

    Status finishImage(StagedImage& out)
    {
        out.kind = "oci-image";
        if (layout_.empty()) {
            return unexpected(invalid("the image layout has no oci-layout file"));
        }
        if (index_.empty()) {
            return unexpected(invalid("the image layout has no index.json"));
        }
        json index;
        try {
            index = json::parse(index_);
        } catch (const std::exception& ex) {
            return unexpected(invalid(std::string("index.json is not valid JSON: ") + ex.what()));
        }
        auto desc = selectManifest(index, 0);
        if (!desc) {
            return unexpected(desc.error());
        }
        out.manifestDigest = textOr(*desc, "digest");
        out.refName = textOr(objectOr(*desc, "annotations"), "org.opencontainers.image.ref.name");
        auto manifest = readJsonBlob(*desc, "manifest");
        if (!manifest) {
            return unexpected(manifest.error());
        }
        if (!manifest->is_object() || !manifest->contains("config") || !manifest->contains("layers") ||
            !(*manifest)["layers"].is_array()) {
            return unexpected(invalid("the manifest has no config or no layers list"));
        }
        if (manifest->contains("mediaType") && (*manifest)["mediaType"].is_string()) {
            const auto t = (*manifest)["mediaType"].get<std::string>();
            if (t != kManifestType && t != kDockerManifestType) {
                return unexpected(invalid("unknown media type '" + t + "' for the image manifest"));
            }
        }
        const json& cdesc = (*manifest)["config"];
        const std::string ctype = textOr(cdesc, "mediaType");
        if (ctype != kConfigType && ctype != kDockerConfigType) {
            return unexpected(invalid("unknown media type '" + ctype + "' for the image config"));
        }
        auto config = readJsonBlob(cdesc, "image config");
        if (!config) {
            return unexpected(config.error());
        }
        // Check every layer before writing anything.
        std::vector<const Blob*> layers;
        for (const auto& l : (*manifest)["layers"]) {
            const std::string t = textOr(l, "mediaType");
            if (!isLayerType(t)) {
                return unexpected(invalid("unknown media type '" + t + "' for a layer"));
            }
            auto b = blobFor(l, "layer");
            if (!b) {
                return unexpected(b.error());
            }
            layers.push_back(*b);
        }
        if (auto st = openWriter(true); !st) {
            return st;
        }
        for (std::size_t i = 0; i < layers.size(); ++i) {
            const std::string what = "layer " + std::to_string(i + 1) + " of " + std::to_string(layers.size());
            ArchiveReader a{archive_read_new()};
            archive_read_support_filter_all(a.get());
            archive_read_support_format_tar(a.get());
            if (archive_read_open_filename(a.get(), layers[i]->path.c_str(), 1 << 16) != ARCHIVE_OK) {
                return unexpected(invalid(what + ": not a tar archive: " + archiveErrorString(a.get())));
            }
            if (auto st = writer_->unpackLayer(a.get(), what); !st) {
                return st;
            }
        }
        if (!config->is_object()) {
            return unexpected(invalid("the image config is not a JSON object"));
        }
        return fillProcess(memberOr(*config, "config"), out, objectOr(*manifest, "annotations"));
    }

    static std::vector<std::string> strings(const json& j)
    {
        std::vector<std::string> out;
        if (j.is_array()) {
            for (const auto& s : j) {
                if (s.is_string()) {
                    out.push_back(s.get<std::string>());
                }
            }
        }
        return out;
    }

    Status fillProcess(const json& cfg, StagedImage& out, const json& annotations)
    {
        if (!cfg.is_object()) {
            return unexpected(invalid("the image config has no \"config\" object"));
        }
        auto entry = strings(memberOr(cfg, "Entrypoint"));
        auto cmd = strings(memberOr(cfg, "Cmd"));
        out.process.args = entry;
        out.process.args.insert(out.process.args.end(), cmd.begin(), cmd.end());
        out.process.env = strings(memberOr(cfg, "Env"));
        if (cfg.contains("WorkingDir") && cfg["WorkingDir"].is_string() && !cfg["WorkingDir"].get<std::string>().empty()) {
            out.process.cwd = cfg["WorkingDir"].get<std::string>();
        }
        if (cfg.contains("User") && cfg["User"].is_string()) {
            out.process.user = cfg["User"].get<std::string>();
        }
        out.version = textOr(annotations, "org.opencontainers.image.version");
        if (out.version.empty()) {
            out.version = textOr(objectOr(cfg, "Labels"), "org.opencontainers.image.version");
        }
        out.title = textOr(annotations, "org.opencontainers.image.title");
        if (out.title.empty()) {
            out.title = textOr(objectOr(cfg, "Labels"), "org.opencontainers.image.title");
        }
        // What the image declares that an app here does not get by asking in the image.
        const json ports = objectOr(cfg, "ExposedPorts");
        for (auto it = ports.begin(); it != ports.end(); ++it) {
            out.withheld.push_back("port " + str::quotable(it.key(), 32) +
                                   " exposed by the image is not published (app setting 'ports')");
        }
        const json volumes = objectOr(cfg, "Volumes");
        for (auto it = volumes.begin(); it != volumes.end(); ++it) {
            out.withheld.push_back("volume " + str::quotable(it.key(), 80) +
                                   " of the image is not kept across restarts (only /data is)");
        }
        return {};
    }

    // A runtime bundle's own isolation settings are never used: say which of
    // them asked for more than an app gets by default.
    static void noteBundlePrivileges(const json& spec, const json& proc, std::vector<std::string>& notes)
    {
        static const std::vector<std::string> plain = {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"};
        std::vector<std::string> caps;
        const json c = objectOr(proc, "capabilities");
        for (const char* set : {"bounding", "effective", "permitted", "ambient"}) {
            for (const auto& n : strings(memberOr(c, set))) {
                if (std::find(plain.begin(), plain.end(), n) == plain.end() &&
                    std::find(caps.begin(), caps.end(), n) == caps.end() && caps.size() < 40) {
                    caps.push_back(n);
                }
            }
        }
        if (!caps.empty()) {
            std::string list;
            for (const auto& n : caps) {
                list += (list.empty() ? "" : " ") + str::quotable(n, 32);
            }
            notes.push_back("capabilities " + list +
                            " of the bundle's config.json not granted (app setting 'capabilities', within "
                            "policy.allowed_capabilities)");
        }
        const json noNewPrivs = memberOr(proc, "noNewPrivileges");
        if (noNewPrivs.is_boolean() && !noNewPrivs.get<bool>()) {
            notes.push_back("noNewPrivileges false of the bundle's config.json not honoured (always true)");
        }
        const json linux = objectOr(spec, "linux");
        const json nss = memberOr(linux, "namespaces");
        if (nss.is_array()) {
            for (const char* ns : {"pid", "network", "ipc", "uts", "mount"}) {
                bool has = false;
                for (const auto& n : nss) {
                    has = has || textOr(n, "type") == ns;
                }
                if (!has) {
                    notes.push_back(std::string("the host's ") + ns +
                                    " namespace (the bundle's config.json has none of its own) not shared");
                }
            }
        }
        if (memberOr(linux, "seccomp").is_null()) {
            notes.push_back("running without seccomp (the bundle's config.json has no profile) not honoured: the "
                            "default profile applies");
        }
        const json devs = memberOr(linux, "devices");
        if (devs.is_array() && !devs.empty()) {
            notes.push_back(std::to_string(devs.size()) +
                            " device node(s) of the bundle's config.json not given (app setting 'devices')");
        }
        std::size_t binds = 0;
        for (const auto& m : memberOr(spec, "mounts").is_array() ? spec["mounts"] : json::array()) {
            binds += textOr(m, "type") == "bind" || textOr(m, "type").empty() ? 1 : 0;
        }
        if (binds > 0) {
            notes.push_back(std::to_string(binds) +
                            " bind mount(s) of the bundle's config.json not made (app setting 'mounts')");
        }
        const json root = objectOr(spec, "root");
        if (memberOr(root, "readonly").is_boolean() && !root["readonly"].get<bool>()) {
            notes.push_back("a writable root of the bundle's config.json not given (the root is read-only; /data "
                            "and /tmp are writable)");
        }
    }

    Status finishBundle(StagedImage& out)
    {
        out.kind = "oci-bundle";
        if (bundleConfig_.empty()) {
            return unexpected(invalid("the runtime bundle has no config.json"));
        }
        if (!writer_) {
            return unexpected(invalid("the runtime bundle has no rootfs/"));
        }
        json spec;
        try {
            spec = json::parse(bundleConfig_);
        } catch (const std::exception& ex) {
            return unexpected(invalid(std::string("config.json is not valid JSON: ") + ex.what()));
        }
        // Only the process is taken from the bundle: everything that decides
        // isolation is generated by the manager (oci_spec.h).
        const json proc = memberOr(spec, "process");
        if (!proc.is_null() && !proc.is_object()) {
            return unexpected(invalid("config.json: \"process\" is not an object"));
        }
        out.process.args = strings(memberOr(proc, "args"));
        out.process.env = strings(memberOr(proc, "env"));
        const json cwd = memberOr(proc, "cwd");
        if (!cwd.is_null() && !cwd.is_string()) {
            return unexpected(invalid("config.json: \"process.cwd\" is not a string"));
        }
        out.process.cwd = cwd.is_string() ? cwd.get<std::string>() : std::string("/");
        if (const json u = memberOr(proc, "user"); u.is_object()) {
            std::string ids;
            for (const char* key : {"uid", "gid"}) {
                const json id = memberOr(u, key);
                if (!id.is_null() && (!id.is_number_unsigned() || id.get<std::uint64_t>() > 0xfffffffeull)) {
                    return unexpected(invalid(std::string("config.json: \"process.user.") + key +
                                              "\" is not a user or group id"));
                }
                ids += (ids.empty() ? "" : ":") + std::to_string(id.is_null() ? 0 : id.get<std::uint64_t>());
            }
            out.process.user = ids;
        }
        const json annotations = objectOr(spec, "annotations");
        out.version = textOr(annotations, "org.opencontainers.image.version");
        out.refName = textOr(annotations, "org.opencontainers.image.ref.name");
        out.title = textOr(annotations, "org.opencontainers.image.title");
        noteBundlePrivileges(spec, proc, out.withheld);
        return {};
    }

    std::string dir_;
    StageOptions opts_;
    Mode mode_ = Mode::Unknown;
    std::string layout_;
    std::string index_;
    std::string bundleConfig_;
    std::map<std::string, Blob> blobs_;
    std::uint64_t blobBytes_ = 0;
    std::optional<RootfsWriter> writer_;
};

std::optional<std::uint32_t> parseId(const std::string& s)
{
    if (s.empty() || s.size() > 10) {
        return std::nullopt;
    }
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') {
            return std::nullopt;
        }
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (v > 0xfffffffeull) {
        return std::nullopt;
    }
    return static_cast<std::uint32_t>(v);
}

// Looks a name up in a passwd/group style file: field 0 name, field 2 id, field 3 (passwd) gid.
std::optional<std::vector<std::string>> lookupLine(const std::string& text, const std::string& name)
{
    for (const auto& line : str::split(text, '\n')) {
        auto f = str::split(line, ':');
        if (f.size() >= 3 && f[0] == name) {
            return f;
        }
    }
    return std::nullopt;
}

} // namespace

Expected<StagedImage> stageArchive(int fd, const std::string& stagingDir, const StageOptions& opts)
{
    // The documents are read without exceptions (textOr & co.); this catches what
    // a future change lets through, so that it refuses the image instead of
    // ending the daemon (STYLE: third-party exceptions stop at the boundary).
    try {
        Stager s(stagingDir, opts);
        return s.run(fd);
    } catch (const std::exception& e) {
        return unexpected(invalid(std::string("the app archive could not be read: ") + e.what()));
    }
}

Expected<std::pair<std::uint32_t, std::uint32_t>> resolveUser(const std::string& rootfs, const std::string& user)
{
    if (user.empty()) {
        return std::make_pair(0u, 0u);
    }
    const auto colon = user.find(':');
    const std::string u = user.substr(0, colon);
    const std::string g = colon == std::string::npos ? std::string() : user.substr(colon + 1);
    // Plain values with flags (GCC 12 warns falsely about optionals here at -O3).
    auto parsed = parseId(u);
    bool haveUid = parsed.has_value();
    std::uint32_t uid = parsed.value_or(0u);
    parsed = g.empty() ? std::nullopt : parseId(g);
    bool haveGid = parsed.has_value();
    std::uint32_t gid = parsed.value_or(0u);
    if (!haveUid || g.empty()) {
        auto passwd = readFileUnder(rootfs, "etc/passwd", 1 << 20);
        for (const auto& line : passwd ? str::split(*passwd, '\n') : std::vector<std::string>{}) {
            auto f = str::split(line, ':');
            if (f.size() < 4) {
                continue;
            }
            const bool match = haveUid ? parseId(f[2]).value_or(0xffffffffu) == uid : f[0] == u;
            if (match) {
                if (!haveUid) {
                    uid = parseId(f[2]).value_or(0u);
                    haveUid = parseId(f[2]).has_value();
                }
                if (g.empty()) {
                    gid = parseId(f[3]).value_or(0u);
                    haveGid = parseId(f[3]).has_value();
                }
                break;
            }
        }
        if (!haveUid) {
            return unexpected(invalid("the image's user '" + u + "' is not in its /etc/passwd"));
        }
        if (g.empty() && !haveGid) {
            gid = uid; // a numeric user without a passwd entry: same group id
            haveGid = true;
        }
    }
    if (!haveGid) {
        auto group = readFileUnder(rootfs, "etc/group", 1 << 20);
        auto line = group ? lookupLine(*group, g) : std::nullopt;
        if (!line) {
            return unexpected(invalid("the image's group '" + g + "' is not in its /etc/group"));
        }
        gid = parseId((*line)[2]).value_or(0u);
        haveGid = parseId((*line)[2]).has_value();
    }
    if (!haveUid || !haveGid) {
        return unexpected(invalid("the image's user '" + user + "' cannot be resolved"));
    }
    return std::make_pair(uid, gid);
}

} // namespace mbl::containers
