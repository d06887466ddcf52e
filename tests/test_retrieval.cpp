// Retrieving results: pop_result with no wait, a bounded wait and an unbounded
// wait; results_within; get_results; done() and wait().

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <set>
#include <thread>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using test_support::Sleeper;

using SleepProcessor = multiworker::Processor<Sleeper, &Sleeper::sleep_ms>;

}  // namespace

TEST_CASE("pop_result(0) only looks") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 1}};
    processor.add(300);
    processor.start();
    const auto before = Clock::now();
    CHECK_FALSE(processor.pop_result(0ms).has_value());
    CHECK(Clock::now() - before < 250ms);
    processor.wait();
    auto result = processor.pop_result(0ms);
    REQUIRE(result.has_value());
    CHECK(result->value() == 300);
}

TEST_CASE("pop_result(bound) waits about that long when nothing arrives") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 1}};
    processor.add(2000);
    processor.start();
    const auto before = Clock::now();
    CHECK_FALSE(processor.pop_result(100ms).has_value());
    const auto waited = Clock::now() - before;
    CHECK(waited >= 100ms);
    CHECK(waited < 1900ms);
    processor.cancel();
}

TEST_CASE("pop_result(bound) returns as soon as a result arrives") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 1}};
    processor.add(50);
    processor.start();
    auto result = processor.pop_result(30s);
    REQUIRE(result.has_value());
    CHECK(result->value() == 50);
}

TEST_CASE("pop_result() blocks for each result - then reports that none is left") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    std::set<multiworker::TaskId> ids;
    for (int ms : {30, 10, 20}) ids.insert(processor.add(ms));
    processor.start();
    std::set<multiworker::TaskId> seen;
    for (int i = 0; i < 3; ++i) {
        auto result = processor.pop_result();
        REQUIRE(result.has_value());
        seen.insert(result->id());
    }
    CHECK(seen == ids);
    CHECK(processor.done());
    CHECK_FALSE(processor.pop_result().has_value());  // nothing outstanding: returns at once
}

TEST_CASE("results_within collects what arrives in the window") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    processor.add(10);
    processor.add(10);
    processor.add(3000);
    processor.start();
    const auto before = Clock::now();
    const auto early = processor.results_within(500ms);
    CHECK(Clock::now() - before >= 500ms);  // the slow task keeps it waiting to the end
    REQUIRE(early.size() == 2);
    for (const auto& result : early) CHECK(result.value() == 10);
    CHECK(processor.cancel() == 0);  // the slow task is running, not cancellable
}

TEST_CASE("results_within returns early once every task is settled") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    for (int i = 0; i < 4; ++i) processor.add(5);
    processor.start();
    const auto before = Clock::now();
    const auto results = processor.results_within(20s);
    CHECK(Clock::now() - before < 10s);
    CHECK(results.size() == 4);
}

TEST_CASE("done() turns true only when every task has a result") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    for (int i = 0; i < 6; ++i) processor.add(20);
    processor.start();
    CHECK_FALSE(processor.done());
    while (!processor.done()) std::this_thread::sleep_for(5ms);
    CHECK(processor.get_results().size() == 6);
    CHECK(processor.done());  // taking results keeps it done
    processor.add(1);
    CHECK_FALSE(processor.done());  // a new task reopens it
    processor.wait();
    CHECK(processor.get_results().size() == 1);
}
