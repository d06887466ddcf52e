// cancel(): discards exactly the tasks no worker has started, says how many,
// and done() accounts for them.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <set>
#include <thread>

namespace {

using namespace std::chrono_literals;

using test_support::Sleeper;

using SleepProcessor = multiworker::Processor<Sleeper, &Sleeper::sleep_ms>;

}  // namespace

TEST_CASE("cancel() before start() discards everything") {
    for (unsigned workers : {0u, 2u}) {
        SleepProcessor processor{Sleeper{}, {.workers = workers}};
        for (int i = 0; i < 7; ++i) processor.add(1);
        CHECK(processor.cancel() == 7);
        CHECK(processor.done());
        CHECK(processor.cancel() == 0);
        processor.start();
        processor.wait();
        CHECK(processor.get_results().empty());
    }
}

TEST_CASE("cancel() while running: cancelled plus results equals added") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    std::set<multiworker::TaskId> added;
    for (int i = 0; i < 100; ++i) added.insert(processor.add(20));
    processor.start();
    auto results = processor.results_within(100ms);
    const auto first = processor.pop_result(30s);  // at least one task ran: the workers are busy
    REQUIRE(first.has_value());
    results.push_back(*first);
    const std::size_t cancelled = processor.cancel();
    CHECK(cancelled > 50);
    CHECK(cancelled < 99);
    processor.wait();
    for (auto& result : processor.get_results()) results.push_back(std::move(result));
    CHECK(results.size() + cancelled == 100);
    std::set<multiworker::TaskId> seen;
    for (const auto& result : results) {
        CHECK(result.ok());
        CHECK(added.count(result.id()) == 1);
        CHECK(seen.insert(result.id()).second);
    }
    // The Processor stays usable.
    const auto later = processor.add(1);
    auto result = processor.pop_result(30s);
    REQUIRE(result);
    CHECK(result->id() == later);
}

TEST_CASE("cancel() with nothing queued returns 0") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    processor.start();
    CHECK(processor.cancel() == 0);
    processor.add(1);
    processor.wait();
    CHECK(processor.cancel() == 0);
}

TEST_CASE("repeated cancels from another thread never lose or duplicate a task") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    processor.start();
    std::size_t cancelled = 0;
    std::size_t added = 0;
    for (int round = 0; round < 20; ++round) {
        for (int i = 0; i < 50; ++i, ++added) processor.add(0);
        std::this_thread::sleep_for(1ms);
        cancelled += processor.cancel();
    }
    processor.wait();
    std::set<multiworker::TaskId> seen;
    for (const auto& result : processor.get_results()) CHECK(seen.insert(result.id()).second);
    CHECK(seen.size() + cancelled == added);
}
