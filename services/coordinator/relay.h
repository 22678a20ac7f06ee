// SPDX-License-Identifier: Apache-2.0
#pragma once
// Moves bytes from one fd to another on a worker thread with splice(2) (no copy
// through user space), so the coordinator can stand between a download and the
// update service: it sees the byte count and can cut the stream on cancel, and
// the update service then sees a truncated bundle and arms nothing.

#include "mbl/event_loop.h"
#include "mbl/expected.h"
#include "mbl/fd.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

namespace mbl::coordinator {

class Relay {
public:
    // `done` runs on the loop thread with the number of bytes moved, or the error.
    Relay(EventLoop& loop, Fd from, Fd to, std::function<void(Expected<std::uint64_t>)> done);
    ~Relay();
    Relay(const Relay&) = delete;
    Relay& operator=(const Relay&) = delete;

    void cancel();
    std::uint64_t bytes() const { return bytes_.load(); }

private:
    void run(Fd from, Fd to);
    EventLoop& loop_;
    std::function<void(Expected<std::uint64_t>)> done_;
    Fd cancelFd_;
    std::atomic<std::uint64_t> bytes_{0};
    std::shared_ptr<std::atomic<bool>> alive_;
    std::thread thread_;
};

// A pipe: [0] read end, [1] write end, both O_CLOEXEC.
Expected<std::pair<Fd, Fd>> makePipe();

} // namespace mbl::coordinator
