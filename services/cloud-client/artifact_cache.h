#pragma once
// Artifacts kept on the device after a download-only action (hawkBit's
// "downloadonly": the operator wants the bytes on the device now and the install
// later), so the later install does not download them again. Entries are named
// by their SHA-256, verified again before they are served, and the oldest go
// first when the configured quota would be exceeded.

#include "mbl/expected.h"
#include "mbl/fd.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace mbl::cloud {

class ArtifactCache {
public:
    // `maxBytes` 0 keeps nothing.
    ArtifactCache(std::string dir, std::uint64_t maxBytes);

    // A kept artifact with this size and SHA-256 (checked now), open for reading;
    // nullopt when there is none (a damaged one is deleted).
    std::optional<Fd> open(const std::string& sha256, std::uint64_t size);

    // A new entry being written; nothing is visible until commit().
    class Writer {
    public:
        ~Writer();
        Writer(const Writer&) = delete;
        Writer& operator=(const Writer&) = delete;
        int fd() const { return fd_.get(); }
        // Call only once all `size` bytes were written and their SHA-256 matched.
        Status commit();

    private:
        friend class ArtifactCache;
        Writer(ArtifactCache& cache, std::string sha256, std::uint64_t size, Fd fd, std::string tmp);
        ArtifactCache& cache_;
        std::string sha256_;
        std::uint64_t size_;
        Fd fd_;
        std::string tmp_;
        bool committed_ = false;
    };
    // nullptr when the artifact is larger than the quota (or the cache is off).
    std::unique_ptr<Writer> begin(const std::string& sha256, std::uint64_t size);

    std::uint64_t maxBytes() const { return maxBytes_; }
    // Bytes held by complete entries.
    std::uint64_t usedBytes() const;

private:
    // Deletes the least recently used entries until `incoming` more bytes fit. mu_ held.
    void makeRoomLocked(std::uint64_t incoming);
    std::string path(const std::string& sha256) const { return dir_ + "/" + sha256; }

    std::string dir_;
    std::uint64_t maxBytes_;
    mutable std::mutex mu_;
};

} // namespace mbl::cloud
