#pragma once
// Artifact downloads: each on a thread of its own with its own HTTPS session,
// streamed into a pipe whose read end goes to the caller (the coordinator).
// Interruptions resume with HTTP Range after a jittered back-off; the SHA-256
// and size are checked and the last byte is held back until they match, so a
// reader of a bad or cut artifact always sees a short stream. Links and
// redirects to other hosts or plain http follow the LinkPolicy (anonymously,
// see http.h). Artifacts of download-only actions are kept in an ArtifactCache
// and served from there later.

#include "artifact_cache.h"
#include "http.h"

#include "mbl/expected.h"
#include "mbl/fd.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mbl::cloud {

struct DownloadSettings {
    int maxRetries = 5;
    std::chrono::milliseconds retryBase{1000};
};

// What a download is fetched with: the server's TLS settings, its origin and the link policy.
struct SessionConfig {
    TlsSettings tls;
    Origin origin;
    LinkPolicy policy;
};

struct DownloadRequest {
    std::string actionId;
    std::string filename;
    std::string url;
    std::uint64_t size = 0;
    std::string sha256;
    bool keep = false; // keep a copy in the cache (download-only action)
};

class Downloader {
public:
    class Events {
    public:
        virtual ~Events() = default;
        // Progress of the download that moved last (0-100) and how many run; (0, 0) once none runs.
        virtual void downloadProgress(std::uint32_t percent, std::uint32_t running) = 0;
        // result: success, failure, interrupted, cancelled (see DownloadFinished in the XML).
        virtual void downloadFinished(const std::string& actionId, const std::string& filename,
                                      const std::string& result, const std::string& message) = 0;
    };

    Downloader(DownloadSettings settings, std::unique_ptr<ArtifactCache> cache, Events& events);
    ~Downloader();
    Downloader(const Downloader&) = delete;
    Downloader& operator=(const Downloader&) = delete;

    // Starts a download (from the cache when a verified copy is kept there);
    // returns the read end of the pipe.
    Expected<Fd> start(const DownloadRequest& req, std::shared_ptr<const SessionConfig> session);
    // Aborts every download of an action (its cancel was accepted).
    void cancelAction(const std::string& actionId);
    // Aborts everything and joins the threads; "interrupted" is reported (the
    // artifacts can be fetched again after a restart).
    void stop();
    ArtifactCache& cache() { return *cache_; }

private:
    struct Job;
    void run(const std::shared_ptr<Job>& job);
    void serveKept(const std::shared_ptr<Job>& job, Fd kept);
    void progress(Job& job, std::uint64_t bytes);
    void finished(Job& job, const std::string& result, const std::string& message);
    // Waits `d` unless the job is cancelled or everything stops; false when it should end.
    bool pause(Job& job, std::chrono::milliseconds d);

    DownloadSettings settings_;
    std::unique_ptr<ArtifactCache> cache_;
    Events& events_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::atomic<bool> stopFlag_{false};
    std::vector<std::shared_ptr<Job>> jobs_;
};

} // namespace mbl::cloud
