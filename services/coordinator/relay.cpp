// SPDX-License-Identifier: Apache-2.0
#include "relay.h"

#include <cerrno>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace mbl::coordinator {

Expected<std::pair<Fd, Fd>> makePipe()
{
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
        return unexpected(errnoError("pipe", errno));
    }
    return std::make_pair(Fd{p[0]}, Fd{p[1]});
}

Relay::Relay(EventLoop& loop, Fd from, Fd to, std::function<void(Expected<std::uint64_t>)> done)
    : loop_(loop), done_(std::move(done)), cancelFd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      alive_(std::make_shared<std::atomic<bool>>(true))
{
    thread_ = std::thread([this, f = std::move(from), t = std::move(to)]() mutable { run(std::move(f), std::move(t)); });
}

Relay::~Relay()
{
    alive_->store(false);
    cancel();
    if (thread_.joinable()) {
        thread_.join();
    }
}

void Relay::cancel()
{
    std::uint64_t one = 1;
    ssize_t n = ::write(cancelFd_.get(), &one, sizeof one);
    (void)n;
}

void Relay::run(Fd from, Fd to)
{
    // Non-blocking on both ends so a cancel is seen even while a peer stalls.
    ::fcntl(from.get(), F_SETFL, ::fcntl(from.get(), F_GETFL) | O_NONBLOCK);
    ::fcntl(to.get(), F_SETFL, ::fcntl(to.get(), F_GETFL) | O_NONBLOCK);
    Expected<std::uint64_t> result = std::uint64_t{0};
    // Wait until `fd` is ready for `events` or the relay is cancelled.
    auto waitFor = [&](int fd, short events) -> bool {
        while (true) {
            struct pollfd pfds[2] = {{cancelFd_.get(), POLLIN, 0}, {fd, events, 0}};
            if (::poll(pfds, 2, -1) < 0) {
                if (errno == EINTR) {
                    continue;
                }
                result = unexpected(errnoError("poll", errno));
                return false;
            }
            if (pfds[0].revents & POLLIN) {
                result = unexpected(ErrorCode::Cancelled, "the transfer was cancelled");
                return false;
            }
            if (pfds[1].revents != 0) {
                return true;
            }
        }
    };
    bool ok = true;
    while (ok) {
        if (!(ok = waitFor(from.get(), POLLIN)) || !(ok = waitFor(to.get(), POLLOUT))) {
            break;
        }
        ssize_t n = ::splice(from.get(), nullptr, to.get(), nullptr, 1 << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            bytes_ += static_cast<std::uint64_t>(n);
        } else if (n == 0) {
            result = bytes_.load();
            break;
        } else if (errno != EAGAIN && errno != EINTR) {
            result = unexpected(errnoError("splice", errno));
            break;
        }
    }
    to.reset(); // the reader sees end of stream (or a truncated one on error/cancel)
    from.reset();
    auto alive = alive_;
    loop_.post([this, alive, result]() mutable {
        if (alive->load() && done_) {
            done_(std::move(result));
        }
    });
}

} // namespace mbl::coordinator
