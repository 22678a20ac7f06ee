// SPDX-License-Identifier: Apache-2.0
#include "slot_writer.h"

#include "rootfs_head.h"

#include "mbl/crypto.h"
#include "mbl/fd.h"
#include "mbl/log.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <linux/fs.h>
#include <mutex>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace mbl::update {

namespace {

constexpr std::size_t kRingBuffers = 4;
constexpr std::size_t kBufferSize = 512u << 10;
constexpr std::size_t kDirectAlign = 4096;

// One anonymous mapping for the pipeline's buffers: page aligned (as O_DIRECT
// needs) and returned to the system as a whole when the install ends.
class PageBuffers {
public:
    PageBuffers(std::size_t count, std::size_t size) : len_(count * size), size_(size)
    {
        void* p = ::mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        base_ = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    }
    ~PageBuffers()
    {
        if (base_ != nullptr) {
            ::munmap(base_, len_);
        }
    }
    PageBuffers(const PageBuffers&) = delete;
    PageBuffers& operator=(const PageBuffers&) = delete;
    bool ok() const { return base_ != nullptr; }
    char* at(std::size_t i) const { return base_ + i * size_; }

private:
    char* base_ = nullptr;
    std::size_t len_;
    std::size_t size_;
};

// 0 or the errno of the failed write.
int pwriteAll(int fd, const char* p, std::size_t len, std::uint64_t off)
{
    while (len > 0) {
        ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? errno : EIO;
        }
        p += n;
        len -= static_cast<std::size_t>(n);
        off += static_cast<std::uint64_t>(n);
    }
    return 0;
}

// Drops O_DIRECT from an fd (for an unaligned tail, or where the file system refuses it).
void dropDirect(int fd)
{
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) {
        (void)::fcntl(fd, F_SETFL, fl & ~O_DIRECT);
    }
}

// The rootfs pipeline. The install thread copies the stream into a ring of
// page-aligned buffers and hashes the copy (EVP SHA-256); a writer thread writes
// each buffer to the slot with O_DIRECT (no page-cache copy, nothing to drop);
// a verifier thread then reads that range back from the medium with O_DIRECT and
// compares it byte for byte with the buffer before the buffer is reused. So the
// slot is proven to return exactly the bytes whose hash matched the signed
// manifest, at the cost of a memcmp instead of a second SHA-256 pass, and the
// read-back overlaps the stream. Memory: (kRingBuffers + 1) x kBufferSize.
// Where the medium refuses O_DIRECT the writes are buffered and the read-back
// runs after the fsync from a dropped page cache, hashed again (readBackHash).
class SlotPipeline {
public:
    // direct: wfd (and rfd) are O_DIRECT; verify: read every range back and compare.
    SlotPipeline(int wfd, int rfd, bool direct, bool verify)
        : wfd_(wfd), rfd_(rfd), direct_(direct), verify_(direct && verify), mem_(kRingBuffers + 1, kBufferSize)
    {
        for (std::size_t i = 0; i < kRingBuffers; ++i) {
            free_.push_back(i);
        }
        if (!mem_.ok()) {
            failed_ = true;
            error_ = Error{ErrorCode::Io, "cannot map the install buffers"};
            return;
        }
        cur_ = take();
        writer_ = std::thread([this] { writeLoop(); });
        if (verify_) {
            verifier_ = std::thread([this] { verifyLoop(); });
        }
    }
    ~SlotPipeline()
    {
        {
            std::lock_guard<std::mutex> l(m_);
            closed_ = true;
            abort_ = true;
        }
        cv_.notify_all();
        join();
    }
    SlotPipeline(const SlotPipeline&) = delete;
    SlotPipeline& operator=(const SlotPipeline&) = delete;

    // Copies into the ring and hashes the copy (what is written is what was hashed).
    Status append(const void* data, std::size_t len, crypto::Sha256& hash)
    {
        const char* p = static_cast<const char*>(data);
        while (len > 0) {
            if (cur_ == kNone) {
                return result();
            }
            const std::size_t n = std::min(len, kBufferSize - fill_);
            char* dst = mem_.at(cur_) + fill_;
            std::memcpy(dst, p, n);
            hash.update(dst, n);
            fill_ += n;
            p += n;
            len -= n;
            if (fill_ == kBufferSize) {
                if (auto st = flushCurrent(); !st) {
                    return st;
                }
            }
        }
        return {};
    }

    // Every byte written and (with O_DIRECT) read back and compared; not yet synced.
    Status finish()
    {
        if (fill_ > 0 && cur_ != kNone) {
            (void)flushCurrent();
        }
        {
            std::lock_guard<std::mutex> l(m_);
            closed_ = true;
        }
        cv_.notify_all();
        join();
        return result();
    }
    bool verified() const { return verify_; }

    // The buffered case: SHA-256 (hex) of what the medium returns for [0, size).
    Expected<std::string> readBackHash(int rfd, std::uint64_t size)
    {
        crypto::Sha256 check;
        char* buf = mem_.at(kRingBuffers);
        std::uint64_t off = 0;
        while (off < size) {
            const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(size - off, kBufferSize));
            ssize_t n = ::pread(rfd, buf, want, static_cast<off_t>(off));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0) {
                return unexpected(errnoError("read back", errno));
            }
            if (n == 0) {
                return unexpected(ErrorCode::Io, "the slot is shorter than what was written");
            }
            check.update(buf, static_cast<std::size_t>(n));
            off += static_cast<std::uint64_t>(n);
        }
        return check.finishHex();
    }

private:
    struct Job {
        std::size_t buf;
        std::size_t len;
        std::uint64_t off;
    };
    std::size_t take()
    {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [&] { return !free_.empty() || failed_; });
        if (failed_) {
            return kNone;
        }
        std::size_t i = free_.back();
        free_.pop_back();
        return i;
    }
    Status flushCurrent()
    {
        {
            std::lock_guard<std::mutex> l(m_);
            if (failed_) {
                return unexpected(error_);
            }
            toWrite_.push_back(Job{cur_, fill_, queued_});
            queued_ += fill_;
        }
        cv_.notify_all();
        fill_ = 0;
        cur_ = take();
        if (cur_ == kNone) {
            return result();
        }
        return {};
    }
    void failLocked(Error e)
    {
        if (!failed_) {
            failed_ = true;
            error_ = std::move(e);
        }
    }
    void writeLoop()
    {
        for (;;) {
            Job job{};
            {
                std::unique_lock<std::mutex> l(m_);
                cv_.wait(l, [&] { return !toWrite_.empty() || closed_ || failed_; });
                if (failed_ || abort_ || toWrite_.empty()) {
                    writerDone_ = true;
                    cv_.notify_all();
                    return;
                }
                job = toWrite_.front();
                toWrite_.pop_front();
            }
            const char* p = mem_.at(job.buf);
            // O_DIRECT wants aligned lengths: only the very last buffer may be short,
            // its unaligned tail goes through the page cache (the fsync flushes it).
            const std::size_t aligned = job.len - job.len % kDirectAlign;
            int err = pwriteAll(wfd_, p, aligned, job.off);
            if (err == EINVAL) {
                // A file system that accepts O_DIRECT at open but not for writes: go
                // through the page cache (direct reads still flush and read the medium).
                dropDirect(wfd_);
                err = pwriteAll(wfd_, p, aligned, job.off);
            }
            if (err == 0 && aligned < job.len) {
                dropDirect(wfd_);
                err = pwriteAll(wfd_, p + aligned, job.len - aligned, job.off + aligned);
            }
            {
                std::lock_guard<std::mutex> l(m_);
                if (err != 0) {
                    failLocked(errnoError("write at offset " + std::to_string(job.off), err));
                } else if (verify_) {
                    toVerify_.push_back(job);
                } else {
                    free_.push_back(job.buf);
                }
            }
            cv_.notify_all();
        }
    }
    void verifyLoop()
    {
        char* back = mem_.at(kRingBuffers);
        for (;;) {
            Job job{};
            {
                std::unique_lock<std::mutex> l(m_);
                cv_.wait(l, [&] { return !toVerify_.empty() || failed_ || abort_ || writerDone_; });
                if (failed_ || abort_ || toVerify_.empty()) {
                    return; // writerDone_ with nothing left, or stopped
                }
                job = toVerify_.front();
                toVerify_.pop_front();
            }
            Status st = compareRange(back, mem_.at(job.buf), job.len, job.off);
            {
                std::lock_guard<std::mutex> l(m_);
                if (!st) {
                    failLocked(st.error());
                }
                free_.push_back(job.buf);
            }
            cv_.notify_all();
        }
    }
    // Reads [off, off+len) back from the medium and compares it with what was written.
    Status compareRange(char* back, const char* want, std::size_t len, std::uint64_t off)
    {
        // Aligned length for O_DIRECT; a short read at the end of an image file is fine.
        const std::size_t ask = (len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
        std::size_t got = 0;
        while (got < len) {
            ssize_t n = ::pread(rfd_, back + got, ask - got, static_cast<off_t>(off + got));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0 && errno == EINVAL) {
                // Only the unaligned remainder of a short read can get here.
                dropDirect(rfd_);
                continue;
            }
            if (n < 0) {
                return unexpected(errnoError("read back at offset " + std::to_string(off + got), errno));
            }
            if (n == 0) {
                return unexpected(ErrorCode::Io, "the slot ends at offset " + std::to_string(off + got) +
                                                     ", before what was written");
            }
            got += static_cast<std::size_t>(n);
        }
        if (std::memcmp(back, want, len) != 0) {
            std::size_t i = 0;
            while (i < len && back[i] == want[i]) {
                ++i;
            }
            return unexpected(ErrorCode::Io, "reads back different bytes than were written at offset " +
                                                 std::to_string(off + i) + ": the medium may be failing");
        }
        return {};
    }
    Status result()
    {
        std::lock_guard<std::mutex> l(m_);
        if (failed_) {
            return unexpected(error_);
        }
        return {};
    }
    void join()
    {
        if (writer_.joinable()) {
            writer_.join();
        }
        if (verifier_.joinable()) {
            verifier_.join();
        }
    }

    static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
    int wfd_;
    int rfd_;
    bool direct_;
    bool verify_;
    PageBuffers mem_;
    std::vector<std::size_t> free_;
    std::deque<Job> toWrite_;
    std::deque<Job> toVerify_;
    std::size_t cur_ = kNone;
    std::size_t fill_ = 0;
    std::uint64_t queued_ = 0;
    std::mutex m_;
    std::condition_variable cv_;
    bool closed_ = false;
    bool abort_ = false;
    bool failed_ = false;
    bool writerDone_ = false;
    Error error_;
    std::thread writer_;
    std::thread verifier_;
};

} // namespace

Expected<std::uint64_t> slotCapacity(const SlotConfig& s)
{
    struct stat st{};
    if (::stat(s.device.c_str(), &st) != 0) {
        return unexpected(errnoError("slot " + s.name + " device " + s.device, errno));
    }
    if (S_ISBLK(st.st_mode)) {
        Fd fd(::open(s.device.c_str(), O_RDONLY | O_CLOEXEC));
        std::uint64_t size = 0;
        if (!fd || ::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) {
            return unexpected(errnoError("size of slot device " + s.device, errno));
        }
        return s.size > 0 ? std::min(size, s.size) : size;
    }
    if (!S_ISREG(st.st_mode)) {
        return unexpected(ErrorCode::InvalidArgument, "slot " + s.name + " device " + s.device +
                                                          " is neither a block device nor an image file");
    }
    return s.size > 0 ? s.size : static_cast<std::uint64_t>(st.st_size);
}

Status wipeSlotHead(const SlotConfig& s)
{
    constexpr std::size_t kWipe = 1u << 20;
    auto cap = slotCapacity(s);
    if (!cap) {
        return unexpected(cap.error());
    }
    Fd fd(::open(s.device.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) {
        return unexpected(errnoError("open slot " + s.name + " to wipe it", errno));
    }
    const std::vector<char> zeros(64u << 10, 0);
    const std::uint64_t end = std::min<std::uint64_t>(*cap, kWipe);
    for (std::uint64_t off = 0; off < end; off += zeros.size()) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(end - off, zeros.size()));
        if (int err = pwriteAll(fd.get(), zeros.data(), n, off); err != 0) {
            return unexpected(errnoError("wipe slot " + s.name, err));
        }
    }
    if (::fsync(fd.get()) != 0) {
        return unexpected(errnoError("fsync slot " + s.name, errno));
    }
    return {};
}

Status writeRootfs(bundle::Reader& r, const bundle::Payload& p, const SlotConfig& target, const SlotWriteOptions& o)
{
    const std::string what = "slot " + target.name + " (" + target.device + ")";
    auto advanced = [&](std::uint64_t n) {
        if (o.advanced) {
            o.advanced(n);
        }
    };
    auto pausePoint = [&](const char* point) {
        if (o.pause) {
            o.pause(point);
        }
    };
    // The head of the image, seen before a byte is written (and before the slot is claimed).
    std::string head;
    bool ended = false;
    while (head.size() < std::min<std::uint64_t>(kHeadBytes, p.size)) {
        auto c = r.read();
        if (!c) {
            return unexpected(c.error());
        }
        if (c->size == 0) {
            ended = true;
            break;
        }
        head.append(static_cast<const char*>(c->data), c->size);
    }
    if (auto st = checkRootfsHead(head, p.size, target.name, target.filesystem); !st) {
        return st;
    }
    if (o.beforeFirstWrite) {
        if (auto st = o.beforeFirstWrite(head); !st) {
            return st;
        }
    }
    // O_DIRECT where the medium allows it (block devices, most file systems);
    // otherwise buffered writes and a read-back after the cache was dropped.
    Fd out(o.noDirect ? -1 : ::open(target.device.c_str(), O_WRONLY | O_CLOEXEC | O_DIRECT));
    Fd in;
    if (out) {
        in = Fd(::open(target.device.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT));
    }
    const bool direct = out && in;
    if (!direct) {
        in.reset();
        out = Fd(::open(target.device.c_str(), O_WRONLY | O_CLOEXEC));
    }
    if (!out) {
        return unexpected(errnoError("open " + what, errno));
    }
    const auto t0 = std::chrono::steady_clock::now();
    crypto::Sha256 hash;
    std::uint64_t written = 0;
    bool paused = false;
    SlotPipeline pipe(out.get(), in.get(), direct, o.readBack);
    if (!head.empty()) {
        if (auto s = pipe.append(head.data(), head.size(), hash); !s) {
            return unexpected(s.error().code, what + ": " + s.error().message);
        }
        written += head.size();
        advanced(head.size());
        head.clear();
        head.shrink_to_fit();
    }
    while (!ended) {
        auto c = r.read();
        if (!c) {
            return unexpected(c.error());
        }
        if (c->size == 0) {
            break;
        }
        if (auto s = pipe.append(c->data, c->size, hash); !s) {
            return unexpected(s.error().code, what + ": " + s.error().message);
        }
        written += c->size;
        advanced(c->size);
        if (!paused && written * 2 >= p.size) {
            paused = true;
            pausePoint("rootfs-half");
        }
    }
    if (auto s = pipe.finish(); !s) {
        return unexpected(s.error().code, what + ": " + s.error().message);
    }
    if (hash.finishHex() != p.sha256 || written != p.size) {
        return unexpected(ErrorCode::SignatureInvalid, "payload '" + p.name +
                                                           "' does not match the SHA-256 of the signed manifest; "
                                                           "slot " + target.name + " was left unbootable");
    }
    if (::fsync(out.get()) != 0) {
        return unexpected(errnoError("fsync " + what, errno));
    }
    const auto t1 = std::chrono::steady_clock::now();
    pausePoint("rootfs-written");
    if (o.readBack && !pipe.verified()) {
        // Drop the cached pages so the check reads back what the medium holds.
        (void)::posix_fadvise(out.get(), 0, 0, POSIX_FADV_DONTNEED);
        in = Fd(::open(target.device.c_str(), O_RDONLY | O_CLOEXEC));
        if (!in) {
            return unexpected(errnoError("reopen " + what, errno));
        }
        auto check = pipe.readBackHash(in.get(), p.size);
        if (!check) {
            return unexpected(check.error().code, what + ": " + check.error().message);
        }
        if (*check != p.sha256) {
            return unexpected(ErrorCode::Io, what + " reads back different bytes than were written: the medium may be failing");
        }
    }
    const auto t2 = std::chrono::steady_clock::now();
    auto ms = [](auto d) { return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()); };
    std::string how = direct ? "written (O_DIRECT)" : "written";
    if (!o.readBack) {
        how += ", synced in " + ms(t1 - t0) + " ms, not read back (readBack is off)";
    } else if (pipe.verified()) {
        how += ", read back and compared, synced in " + ms(t1 - t0) + " ms";
    } else {
        how += ", synced in " + ms(t1 - t0) + " ms, read back and verified in " + ms(t2 - t1) + " ms";
    }
    log::info(what + ": " + std::to_string(p.size) + " bytes streamed, hashed, " + how);
    return {};
}

} // namespace mbl::update
