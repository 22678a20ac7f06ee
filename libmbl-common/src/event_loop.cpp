// SPDX-License-Identifier: Apache-2.0
#include "mbl/event_loop.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <ctime>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

namespace mbl {

namespace {
std::uint64_t monotonicUsec()
{
    struct timespec ts {};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}
} // namespace

EventLoop::EventLoop() : wakeFd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

EventLoop::~EventLoop() = default;

bool EventLoop::watchTerminationSignals()
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (::sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) {
        return false;
    }
    signalFd_ = Fd{::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)};
    return signalFd_.valid();
}

void EventLoop::addSource(Source source)
{
    sources_.push_back(std::move(source));
}

void EventLoop::watchFd(int fd, short events, std::function<void(short)> cb)
{
    unwatchFd(fd);
    watches_.push_back(Watch{fd, events, std::move(cb)});
}

void EventLoop::unwatchFd(int fd)
{
    for (auto& w : watches_) {
        if (w.fd == fd) {
            w.fd = -1; // removed lazily: a callback may be running
        }
    }
}

EventLoop::TimerId EventLoop::addTimer(std::chrono::milliseconds delay, std::function<void()> cb)
{
    TimerId id = nextTimer_++;
    timers_[id] = Timer{Clock::now() + delay, std::chrono::milliseconds(0), std::move(cb)};
    return id;
}

EventLoop::TimerId EventLoop::addRepeatingTimer(std::chrono::milliseconds interval, std::function<void()> cb)
{
    TimerId id = nextTimer_++;
    timers_[id] = Timer{Clock::now() + interval, interval, std::move(cb)};
    return id;
}

void EventLoop::cancelTimer(TimerId id)
{
    timers_.erase(id);
}

void EventLoop::post(std::function<void()> fn)
{
    {
        std::lock_guard<std::mutex> lock(postMutex_);
        posted_.push_back(std::move(fn));
    }
    std::uint64_t one = 1;
    ssize_t n = ::write(wakeFd_.get(), &one, sizeof one);
    (void)n; // EAGAIN means the counter is already non-zero: the loop wakes anyway
}

void EventLoop::quit()
{
    quit_ = true;
}

void EventLoop::fail()
{
    failed_ = true;
    quit_ = true;
}

void EventLoop::runDueTimers()
{
    auto now = Clock::now();
    std::vector<TimerId> due;
    for (const auto& [id, t] : timers_) {
        if (t.due <= now) {
            due.push_back(id);
        }
    }
    for (TimerId id : due) {
        auto it = timers_.find(id);
        if (it == timers_.end()) {
            continue; // cancelled by an earlier callback
        }
        auto cb = it->second.cb;
        if (it->second.interval.count() > 0) {
            it->second.due = now + it->second.interval;
        } else {
            timers_.erase(it);
        }
        cb();
    }
}

void EventLoop::drainPosted()
{
    std::uint64_t count;
    ssize_t n = ::read(wakeFd_.get(), &count, sizeof count);
    (void)n;
    std::vector<std::function<void()>> work;
    {
        std::lock_guard<std::mutex> lock(postMutex_);
        work.swap(posted_);
    }
    for (auto& fn : work) {
        fn();
    }
}

int EventLoop::run()
{
    quit_ = false;
    while (!quit_) {
        std::vector<struct pollfd> pfds;
        std::uint64_t deadline = UINT64_MAX;
        pfds.push_back({wakeFd_.get(), POLLIN, 0});
        pfds.push_back({signalFd_.get(), POLLIN, 0});
        const std::size_t firstSource = pfds.size();
        for (auto& s : sources_) {
            int fd = -1;
            short events = 0;
            std::uint64_t d = UINT64_MAX;
            s.prepare(fd, events, d);
            pfds.push_back({fd, events, 0});
            deadline = std::min(deadline, d);
        }
        watches_.erase(std::remove_if(watches_.begin(), watches_.end(), [](const Watch& w) { return w.fd < 0; }),
                       watches_.end());
        const std::size_t firstWatch = pfds.size();
        const std::vector<Watch> watches = watches_;
        for (const auto& w : watches) {
            pfds.push_back({w.fd, w.events, 0});
        }
        int timeoutMs = -1;
        if (!timers_.empty()) {
            auto next = std::min_element(timers_.begin(), timers_.end(), [](const auto& a, const auto& b) {
                            return a.second.due < b.second.due;
                        })->second.due;
            auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count() + 1;
            timeoutMs = static_cast<int>(std::max<long long>(0, std::min<long long>(ms, 1 << 30)));
        }
        if (deadline != UINT64_MAX) {
            std::uint64_t now = monotonicUsec();
            int ms = deadline <= now ? 0 : static_cast<int>(std::min<std::uint64_t>((deadline - now + 999) / 1000, 1u << 30));
            timeoutMs = timeoutMs < 0 ? ms : std::min(timeoutMs, ms);
        }
        int r = ::poll(pfds.data(), pfds.size(), timeoutMs);
        if (r < 0 && errno != EINTR) {
            return -1;
        }
        if (pfds[1].revents & POLLIN) {
            struct signalfd_siginfo si {};
            if (::read(signalFd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
                exitSignal_ = static_cast<int>(si.ssi_signo);
                return exitSignal_;
            }
        }
        if (pfds[0].revents & POLLIN) {
            drainPosted();
        }
        for (std::size_t i = 0; i < sources_.size() && !quit_; ++i) {
            (void)pfds[firstSource + i];
            sources_[i].dispatch();
        }
        for (std::size_t i = 0; i < watches.size() && !quit_; ++i) {
            if (pfds[firstWatch + i].revents != 0) {
                watches[i].cb(pfds[firstWatch + i].revents);
            }
        }
        runDueTimers();
    }
    return exitSignal_;
}

} // namespace mbl
