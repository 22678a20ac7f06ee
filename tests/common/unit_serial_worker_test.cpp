// SPDX-License-Identifier: Apache-2.0
#include "mbl/serial_worker.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace mbl;

TEST_CASE("a serial worker runs jobs in the order they were posted, off the posting thread")
{
    std::vector<int> order;
    std::atomic<bool> offThread{true};
    const auto poster = std::this_thread::get_id();
    {
        SerialWorker w;
        for (int i = 0; i < 100; ++i) {
            w.post([&, i] {
                if (std::this_thread::get_id() == poster) {
                    offThread = false;
                }
                order.push_back(i);
            });
        }
    } // the destructor runs what is queued, then joins
    REQUIRE(order.size() == 100);
    for (int i = 0; i < 100; ++i) {
        REQUIRE(order[static_cast<std::size_t>(i)] == i);
    }
    REQUIRE(offThread);
}

TEST_CASE("a serial worker keeps going after a job throws")
{
    std::atomic<int> ran{0};
    {
        SerialWorker w;
        w.post([] { throw std::runtime_error("boom"); });
        w.post([&] { ++ran; });
    }
    REQUIRE(ran == 1);
}

TEST_CASE("posting does not wait for a running job, and the next job waits for it")
{
    std::atomic<bool> release{false};
    std::atomic<bool> firstDone{false};
    std::atomic<bool> second{false};
    std::atomic<bool> secondSawFirst{false};
    SerialWorker w;
    w.post([&] {
        while (!release) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        firstDone = true;
    });
    // If post() waited for the running job, this would never return (the job waits for us).
    w.post([&] {
        secondSawFirst = firstDone.load();
        second = true;
    });
    REQUIRE_FALSE(second);
    release = true;
    while (!second) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    REQUIRE(secondSawFirst);
}
