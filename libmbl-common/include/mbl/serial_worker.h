// SPDX-License-Identifier: Apache-2.0
#pragma once
// One thread that runs posted jobs one after another, in the order they were
// posted: for work that must stay off a daemon's bus thread (an fsync'd state
// file, a key operation) but must keep its order with the jobs around it.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace mbl {

class SerialWorker {
public:
    SerialWorker();
    // Runs the jobs already posted, then joins.
    ~SerialWorker();
    SerialWorker(const SerialWorker&) = delete;
    SerialWorker& operator=(const SerialWorker&) = delete;

    // Thread-safe. A job that throws is logged and the worker goes on.
    void post(std::function<void()> job);

private:
    void run();

    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    bool stopping_ = false;
    std::thread thread_; // last: starts once the members above exist
};

} // namespace mbl
