// SPDX-License-Identifier: Apache-2.0
#pragma once
// Single-threaded event loop of a daemon: carries the bus fd (or any fd), a
// signalfd for SIGTERM/SIGINT, one-shot and repeating timers, and work posted
// from worker threads (the only thread-safe entry point is post()).

#include "mbl/fd.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

namespace mbl {

class EventLoop {
public:
    using Clock = std::chrono::steady_clock;
    using TimerId = std::uint64_t;

    // A source the loop polls each iteration: `prepare` returns the fd, the poll
    // events and an absolute CLOCK_MONOTONIC deadline in µs (UINT64_MAX: none);
    // `dispatch` runs after poll returns (whether or not the fd was ready).
    struct Source {
        std::function<void(int& fd, short& events, std::uint64_t& deadlineUsec)> prepare;
        std::function<void()> dispatch;
    };

    EventLoop();
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Blocks SIGTERM/SIGINT (call before starting threads) and watches them.
    bool watchTerminationSignals();

    void addSource(Source source);
    // Watches an fd; the callback runs when poll reports any of `events`.
    void watchFd(int fd, short events, std::function<void(short revents)> cb);
    void unwatchFd(int fd);

    TimerId addTimer(std::chrono::milliseconds delay, std::function<void()> cb);
    TimerId addRepeatingTimer(std::chrono::milliseconds interval, std::function<void()> cb);
    void cancelTimer(TimerId id);

    // Thread-safe: runs `fn` on the loop thread soon.
    void post(std::function<void()> fn);

    // Runs until quit() or a termination signal; returns the signal number or 0.
    int run();
    void quit();
    // Stops the loop because something it depends on broke (e.g. the bus went away).
    void fail();
    bool failed() const { return failed_; }

private:
    struct Timer {
        Clock::time_point due;
        std::chrono::milliseconds interval{0};
        std::function<void()> cb;
    };
    struct Watch {
        int fd;
        short events;
        std::function<void(short)> cb;
    };
    void runDueTimers();
    void drainPosted();

    Fd signalFd_;
    Fd wakeFd_;
    bool quit_ = false;
    bool failed_ = false;
    int exitSignal_ = 0;
    std::vector<Source> sources_;
    std::vector<Watch> watches_;
    std::map<TimerId, Timer> timers_;
    TimerId nextTimer_ = 1;
    std::mutex postMutex_;
    std::vector<std::function<void()>> posted_;
};

} // namespace mbl
