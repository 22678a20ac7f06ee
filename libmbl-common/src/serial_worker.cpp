// SPDX-License-Identifier: Apache-2.0
#include "mbl/serial_worker.h"

#include "mbl/log.h"

#include <exception>
#include <string>

namespace mbl {

SerialWorker::SerialWorker() : thread_([this] { run(); }) {}

SerialWorker::~SerialWorker()
{
    {
        std::lock_guard<std::mutex> lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

void SerialWorker::post(std::function<void()> job)
{
    {
        std::lock_guard<std::mutex> lk(mu_);
        jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
}

void SerialWorker::run()
{
    while (true) {
        std::function<void()> job;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
            if (jobs_.empty()) {
                return; // stopping, and nothing left to run
            }
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        try {
            job();
        } catch (const std::exception& e) {
            log::error(std::string("a background job failed: ") + e.what());
        } catch (...) {
            log::error("a background job failed");
        }
    }
}

} // namespace mbl
