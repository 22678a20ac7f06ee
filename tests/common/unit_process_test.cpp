// SPDX-License-Identifier: Apache-2.0
#include "mbl/event_loop.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>

#include <csignal>
#include <thread>
#include <unistd.h>

using namespace mbl;

TEST_CASE("a child's exit code and death by signal are reported as a shell would")
{
    auto r = run({"sh", "-c", "echo out; echo err >&2; exit 3"});
    REQUIRE(r);
    CHECK(r->status.code == 3);
    CHECK_FALSE(r->status.signaled);
    CHECK(r->out == "out\n");
    CHECK(r->err == "err\n");

    auto killed = run({"sh", "-c", "kill -9 $$"});
    REQUIRE(killed);
    CHECK(killed->status.signaled);
    CHECK(killed->status.code == 128 + SIGKILL);
}

TEST_CASE("argv is passed as is, never through a shell")
{
    auto r = run({"printf", "%s|", "a b", "$(id)", ";rm -rf /"});
    REQUIRE(r);
    CHECK(r->out == "a b|$(id)|;rm -rf /|");
}

TEST_CASE("a program that does not exist is a named error, not a crash")
{
    auto c = Child::spawn({"/nonexistent/program"});
    REQUIRE_FALSE(c);
    CHECK(c.error().code == ErrorCode::NotFound);
}

TEST_CASE("a Child destroyed while running is killed and reaped")
{
    pid_t pid;
    {
        auto c = Child::spawn({"sleep", "30"});
        REQUIRE(c);
        pid = c->pid();
        CHECK(::kill(pid, 0) == 0);
    }
    CHECK(::kill(pid, 0) != 0); // reaped: no zombie left
}

TEST_CASE("terminate sends SIGTERM and escalates to SIGKILL after the grace period")
{
    auto c = Child::spawn({"sh", "-c", "trap '' TERM; exec sleep 30"});
    REQUIRE(c);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto st = c->terminate(std::chrono::milliseconds(100));
    CHECK(st.signaled);
    CHECK(st.signal == SIGKILL);
}

TEST_CASE("the event loop runs timers in order, work posted from threads, and stops on SIGTERM")
{
    EventLoop loop;
    REQUIRE(loop.watchTerminationSignals());
    std::vector<int> order;
    loop.addTimer(std::chrono::milliseconds(30), [&] { order.push_back(2); });
    loop.addTimer(std::chrono::milliseconds(10), [&] { order.push_back(1); });
    auto cancelled = loop.addTimer(std::chrono::milliseconds(20), [&] { order.push_back(99); });
    loop.cancelTimer(cancelled);
    int ticks = 0;
    loop.addRepeatingTimer(std::chrono::milliseconds(5), [&] { ++ticks; });
    std::thread worker([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(40));
        loop.post([&] { order.push_back(3); });
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        ::kill(::getpid(), SIGTERM);
    });
    int sig = loop.run();
    worker.join();
    CHECK(sig == SIGTERM);
    CHECK(order == std::vector<int>{1, 2, 3});
    CHECK(ticks >= 3);
}

TEST_CASE("safe names are single path components")
{
    CHECK(str::isSafeName("hello-app_1.2"));
    CHECK_FALSE(str::isSafeName(""));
    CHECK_FALSE(str::isSafeName(".."));
    CHECK_FALSE(str::isSafeName("../etc"));
    CHECK_FALSE(str::isSafeName("a/b"));
    CHECK_FALSE(str::isSafeName(".hidden"));
    CHECK_FALSE(str::isSafeName(std::string(65, 'a')));
    CHECK(str::split("a,b,,c", ',') == std::vector<std::string>{"a", "b", "", "c"});
    CHECK(str::words("  A  B C ") == std::vector<std::string>{"A", "B", "C"});
    CHECK(str::words("").empty());
    CHECK(str::join({"A", "B"}) == "A B");
    CHECK(str::join({"a", "b", "c"}, ", ") == "a, b, c");
    CHECK(str::join({}).empty());
}
