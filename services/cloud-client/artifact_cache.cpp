#include "artifact_cache.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/log.h"

#include <algorithm>
#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>
#include <vector>

namespace mbl::cloud {

namespace {

struct Entry {
    std::string path;
    std::uint64_t size;
    std::int64_t used; // mtime: the last time it was written or served
};

bool isEntryName(const std::string& n)
{
    return n.size() == 64 && std::all_of(n.begin(), n.end(), [](unsigned char c) { return std::isxdigit(c); });
}

std::vector<Entry> entries(const std::string& dir)
{
    std::vector<Entry> out;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return out;
    }
    while (dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        struct stat st {};
        if (!isEntryName(name) || ::stat((dir + "/" + name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        out.push_back({dir + "/" + name, static_cast<std::uint64_t>(st.st_size), static_cast<std::int64_t>(st.st_mtime)});
    }
    ::closedir(d);
    return out;
}

} // namespace

ArtifactCache::ArtifactCache(std::string dir, std::uint64_t maxBytes) : dir_(std::move(dir)), maxBytes_(maxBytes)
{
    if (maxBytes_ == 0) {
        return;
    }
    (void)fs::makeDirs(dir_, 0700);
    // Leftovers of writes cut short (crash, power loss) are not entries: drop them.
    DIR* d = ::opendir(dir_.c_str());
    if (d != nullptr) {
        while (dirent* e = ::readdir(d)) {
            const std::string name = e->d_name;
            if (name.size() > 5 && name.compare(name.size() - 5, 5, ".part") == 0) {
                ::unlink((dir_ + "/" + name).c_str());
            }
        }
        ::closedir(d);
    }
}

std::uint64_t ArtifactCache::usedBytes() const
{
    std::lock_guard<std::mutex> lk(mu_);
    std::uint64_t n = 0;
    for (const auto& e : entries(dir_)) {
        n += e.size;
    }
    return n;
}

std::optional<Fd> ArtifactCache::open(const std::string& sha256, std::uint64_t size)
{
    if (maxBytes_ == 0 || !isEntryName(sha256)) {
        return std::nullopt;
    }
    std::lock_guard<std::mutex> lk(mu_);
    const std::string p = path(sha256);
    Fd fd{::open(p.c_str(), O_RDONLY | O_CLOEXEC)};
    if (!fd) {
        return std::nullopt;
    }
    auto got = crypto::sha256HexOfFd(fd.get());
    if (!got || got->first != sha256 || got->second != size) {
        log::warning("cloud: kept artifact " + sha256 + " is damaged; deleted");
        ::unlink(p.c_str());
        return std::nullopt;
    }
    if (::lseek(fd.get(), 0, SEEK_SET) != 0) {
        return std::nullopt;
    }
    ::utime(p.c_str(), nullptr); // recently used: evicted last
    return fd;
}

void ArtifactCache::makeRoomLocked(std::uint64_t incoming)
{
    auto list = entries(dir_);
    std::sort(list.begin(), list.end(), [](const Entry& a, const Entry& b) { return a.used < b.used; });
    std::uint64_t used = 0;
    for (const auto& e : list) {
        used += e.size;
    }
    for (const auto& e : list) {
        if (used + incoming <= maxBytes_) {
            break;
        }
        log::info("cloud: dropping kept artifact " + e.path + " (quota " + std::to_string(maxBytes_) + " bytes)");
        ::unlink(e.path.c_str());
        used -= e.size;
    }
}

std::unique_ptr<ArtifactCache::Writer> ArtifactCache::begin(const std::string& sha256, std::uint64_t size)
{
    if (maxBytes_ == 0 || size > maxBytes_ || !isEntryName(sha256)) {
        return nullptr;
    }
    const std::string tmp = path(sha256) + "." + std::to_string(::getpid()) + "." +
                            std::to_string(reinterpret_cast<std::uintptr_t>(this) & 0xffff) + ".part";
    Fd fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (!fd) {
        log::warning("cloud: cannot keep artifact " + sha256 + ": " + errnoError("create " + tmp, errno).message);
        return nullptr;
    }
    return std::unique_ptr<Writer>(new Writer(*this, sha256, size, std::move(fd), tmp));
}

ArtifactCache::Writer::Writer(ArtifactCache& cache, std::string sha256, std::uint64_t size, Fd fd, std::string tmp)
    : cache_(cache), sha256_(std::move(sha256)), size_(size), fd_(std::move(fd)), tmp_(std::move(tmp))
{
}

ArtifactCache::Writer::~Writer()
{
    if (!committed_) {
        fd_.reset();
        ::unlink(tmp_.c_str());
    }
}

Status ArtifactCache::Writer::commit()
{
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != size_) {
        return unexpected(ErrorCode::Io, "kept copy of " + sha256_ + " is incomplete");
    }
    if (::fsync(fd_.get()) != 0) {
        return unexpected(errnoError("fsync " + tmp_, errno));
    }
    fd_.reset();
    std::lock_guard<std::mutex> lk(cache_.mu_);
    cache_.makeRoomLocked(size_);
    if (::rename(tmp_.c_str(), cache_.path(sha256_).c_str()) != 0) {
        return unexpected(errnoError("rename " + tmp_, errno));
    }
    committed_ = true;
    (void)fs::syncDir(cache_.dir_);
    return {};
}

} // namespace mbl::cloud
