#include "downloader.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <algorithm>
#include <cerrno>
#include <deque>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

namespace mbl::cloud {

using std::chrono::milliseconds;

struct Downloader::Job {
    DownloadRequest req;
    std::shared_ptr<const SessionConfig> session;
    Fd writeEnd;
    std::atomic<bool> cancel{false};
    std::thread thread;
    std::uint32_t lastPct = 0;
    bool done = false;
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
// download), and their buffers are reused. A kept copy (tee) is written in the
// same order.
class PipeFeeder {
public:
    static constexpr std::size_t kChunk = 256 * 1024;
    static constexpr std::size_t kMaxQueued = 4;

    PipeFeeder(int fd, int teeFd, const std::atomic<bool>& cancel)
        : fd_(fd), teeFd_(teeFd), cancel_(cancel), thread_([this] { run(); })
    {
    }
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
    // False when writing the kept copy failed (the download goes on without it).
    bool teeOk() const { return teeOk_; }

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
                if (ok && teeFd_ >= 0 && teeOk_) {
                    teeOk_ = fs::writeAll(teeFd_, chunk.data(), chunk.size()).ok();
                }
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
    int teeFd_;
    const std::atomic<bool>& cancel_;
    crypto::Sha256 hash_;
    std::atomic<bool> teeOk_{true};
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::vector<char>> queue_;
    std::vector<std::vector<char>> spare_;
    bool busy_ = false;
    bool stop_ = false;
    bool failed_ = false;
    std::thread thread_; // last: starts when everything above exists
};

} // namespace

Downloader::Downloader(DownloadSettings settings, std::unique_ptr<ArtifactCache> cache, Events& events)
    : settings_(settings), cache_(std::move(cache)), events_(events)
{
}

Downloader::~Downloader()
{
    stop();
}

Expected<Fd> Downloader::start(const DownloadRequest& req, std::shared_ptr<const SessionConfig> session)
{
    if (auto st = checkLink(req.url, session->origin, session->policy, true); !st) {
        return unexpected(st.error());
    }
    std::optional<Fd> kept = cache_->open(req.sha256, req.size);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
        return unexpected(errnoError("pipe", errno));
    }
    Fd readEnd{p[0]};
    auto job = std::make_shared<Job>();
    job->req = req;
    job->session = std::move(session);
    job->writeEnd = Fd{p[1]};
    // Bigger pipe buffer: fewer wake-ups of the reader (best effort).
    ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    ::fcntl(p[1], F_SETFL, O_NONBLOCK);
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) {
        return unexpected(ErrorCode::Cancelled, "the cloud client is stopping");
    }
    // Forget finished jobs.
    std::vector<std::shared_ptr<Job>> live;
    for (auto& j : jobs_) {
        if (!j->done) {
            live.push_back(j);
        } else if (j->thread.joinable()) {
            j->thread.join();
        }
    }
    jobs_ = std::move(live);
    jobs_.push_back(job);
    if (kept) {
        job->thread = std::thread([this, job, fd = std::make_shared<Fd>(std::move(*kept))]() mutable {
            serveKept(job, std::move(*fd));
        });
    } else {
        job->thread = std::thread([this, job] { run(job); });
    }
    return readEnd;
}

void Downloader::cancelAction(const std::string& actionId)
{
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& j : jobs_) {
        if (j->req.actionId == actionId) {
            j->cancel = true;
        }
    }
    cv_.notify_all();
}

void Downloader::stop()
{
    std::vector<std::shared_ptr<Job>> jobs;
    {
        std::lock_guard<std::mutex> lk(mu_);
        stopping_ = true;
        stopFlag_ = true;
        jobs = jobs_;
        for (auto& j : jobs) {
            j->cancel = true;
        }
    }
    cv_.notify_all();
    for (auto& j : jobs) {
        if (j->thread.joinable()) {
            j->thread.join();
        }
    }
}

void Downloader::progress(Job& job, std::uint64_t bytes)
{
    const std::uint32_t pct = job.req.size == 0 ? 100 : static_cast<std::uint32_t>(bytes * 100 / job.req.size);
    if (pct == job.lastPct) {
        return;
    }
    job.lastPct = pct;
    std::uint32_t running = 0;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto& j : jobs_) {
            running += j->done ? 0 : 1;
        }
    }
    events_.downloadProgress(pct, running);
}

void Downloader::finished(Job& job, const std::string& result, const std::string& message)
{
    std::uint32_t running = 0;
    {
        std::lock_guard<std::mutex> lk(mu_);
        job.writeEnd.reset(); // EOF for the reader (short on failure)
        job.done = true;
        for (const auto& j : jobs_) {
            running += j->done ? 0 : 1;
        }
    }
    if (result != "success") {
        log::warning("cloud: download of " + job.req.filename + " failed: " + message);
    }
    // No stale progress: with nothing running, DownloadProgress goes back to 0.
    events_.downloadProgress(running == 0 ? 0 : job.lastPct, running);
    events_.downloadFinished(job.req.actionId, job.req.filename, result, message);
}

bool Downloader::pause(Job& job, milliseconds d)
{
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, d, [&] { return stopping_ || job.cancel.load(); });
    return !stopping_ && !job.cancel;
}

void Downloader::serveKept(const std::shared_ptr<Job>& job, Fd kept)
{
    log::info("cloud: " + job->req.filename + " comes from the copy kept on the device (no download)");
    std::vector<char> buf(256 * 1024);
    std::uint64_t sent = 0;
    std::string result = "success";
    std::string message = "from the copy kept on the device";
    while (sent < job->req.size) {
        const ssize_t n = ::read(kept.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            result = "failure";
            message = "the kept copy of " + job->req.filename + " could not be read";
            break;
        }
        if (job->cancel) {
            result = stopFlag_ ? "interrupted" : "cancelled";
            message = "download cancelled";
            break;
        }
        if (!pipeWrite(job->writeEnd.get(), job->cancel, buf.data(), static_cast<std::size_t>(n))) {
            result = stopFlag_ ? "interrupted" : "cancelled";
            message = stopFlag_ ? "the cloud client stopped during the download" : "the reader closed the stream";
            break;
        }
        sent += static_cast<std::uint64_t>(n);
        progress(*job, sent);
    }
    finished(*job, result, message);
}

void Downloader::run(const std::shared_ptr<Job>& job)
{
    const SessionConfig& sc = *job->session;
    HttpSession session(sc.tls, sc.origin, sc.policy);
    session.setAbortFlag(&job->cancel);
    auto tee = job->req.keep ? cache_->begin(job->req.sha256, job->req.size) : nullptr;
    PipeFeeder feeder(job->writeEnd.get(), tee ? tee->fd() : -1, job->cancel);
    const std::uint64_t size = job->req.size;
    std::uint64_t received = 0; // bytes hashed (and written, except the held-back last byte)
    std::uint64_t skip = 0;     // bytes to drop when a server ignores Range
    bool held = false;
    char last = 0;
    bool pipeGone = false;
    bool tooLong = false;
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
        if (received + len > size) {
            tooLong = true;
            return false;
        }
        received += len;
        // Hold back the very last byte until the hash is checked, so a reader
        // of a bad artifact always sees a short stream.
        std::size_t out = len;
        if (received == size) {
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
        progress(*job, received);
        return true;
    };

    std::string result = "failure";
    std::string message;
    Backoff backoff(settings_.retryBase, std::max(settings_.retryBase, milliseconds(60000)));
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
        auto r = session.stream(job->req.url, from, sink);
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
            message = "the server sent more than the announced " + std::to_string(size) + " bytes";
            break;
        }
        if (!r) {
            if (r.error().code == ErrorCode::Cancelled) {
                result = "cancelled";
                message = "download cancelled";
                break;
            }
            message = r.error().message;
            // A refused link or redirect (another host, plain http, a loop) will not
            // get better by trying again.
            retry = r.error().code != ErrorCode::InvalidArgument && !str::startsWith(message, "too many redirects");
        } else if (r->status == 200 || r->status == 206) {
            if (r->status == 206 && from > 0 && !str::startsWith(r->contentRange, "bytes " + std::to_string(from) + "-")) {
                message = "the server resumed at the wrong offset (" + str::quotable(r->contentRange) + ")";
                break;
            }
            if (received == size) {
                break; // complete; checked below
            }
            message = "the transfer ended after " + std::to_string(received) + " of " + std::to_string(size) + " bytes";
            retry = true;
        } else if (r->status == 416) {
            if (received == size) {
                break;
            }
            message = "the server cannot serve the rest of the artifact (HTTP 416 at byte " + std::to_string(from) +
                      " of " + std::to_string(size) + ")";
            break;
        } else if (r->status == 429 || r->status >= 500) {
            message = "server answered HTTP " + std::to_string(r->status);
            retry = true;
        } else {
            message = "server answered HTTP " + std::to_string(r->status) + " for " + job->req.filename +
                      (r->status == 401 && r->url.rfind("http://", 0) == 0
                           ? " (credentials are never sent over plain http)"
                           : "");
            break;
        }
        if (!retry) {
            break;
        }
        if (attempt >= settings_.maxRetries) {
            // The artifact may well be fine: the link or the server failed. Say so,
            // so the reader can try again later instead of giving up on it.
            result = "interrupted";
            message = "gave up after " + std::to_string(attempt + 1) + " attempts: " + message;
            break;
        }
        ++attempt;
        const milliseconds wait = backoff.next();
        log::warning("cloud: download of " + job->req.filename + " interrupted at " + std::to_string(received) +
                     " bytes (" + message + "); resuming in " + std::to_string(wait.count()) + " ms");
        (void)pause(*job, wait);
    }
    if (stopFlag_ && result == "cancelled") {
        // Not the reader's or the server's doing: the artifact can be fetched again.
        result = "interrupted";
        message = "the cloud client stopped during the download";
    }
    // The feeder is idle here (drained after the last attempt): its hash covers every
    // byte but the held-back last one.
    if (received == size && held && result != "cancelled" && result != "interrupted") {
        feeder.hash().update(&last, 1);
        const std::string got = feeder.hash().finishHex();
        if (got == job->req.sha256) {
            if (pipeWrite(job->writeEnd.get(), job->cancel, &last, 1)) {
                result = "success";
                message = "";
                progress(*job, size);
                if (tee && feeder.teeOk() && fs::writeAll(tee->fd(), &last, 1).ok()) {
                    if (auto st = tee->commit(); !st) {
                        log::warning("cloud: cannot keep " + job->req.filename + ": " + st.error().message);
                    } else {
                        log::info("cloud: kept " + job->req.filename + " for the later installation");
                    }
                }
            } else {
                result = "cancelled";
                message = "the reader closed the stream";
            }
        } else {
            result = "failure";
            message = "SHA-256 mismatch for " + job->req.filename + ": expected " + job->req.sha256 + ", got " + got;
        }
    } else if (size == 0 && result != "cancelled" && result != "interrupted" && message.empty()) {
        result = feeder.hash().finishHex() == job->req.sha256 ? "success" : "failure";
    }
    if (result == "success") {
        log::info("cloud: downloaded " + job->req.filename + " (" + std::to_string(size) + " bytes, SHA-256 ok)");
    }
    feeder.stop(); // before the fd goes
    finished(*job, result, message);
}

} // namespace mbl::cloud
