// Retrieving results: pop_result with no wait, a bounded wait and an unbounded
// wait; results_within; get_results; done() and wait(); the results wait()
// decodes ahead, taken once whichever getter and thread takes them.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <mutex>
#include <set>
#include <thread>
#include <vector>

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

// wait() decodes results a batch at a time (1024) while the rest run; the
// getters hand those out first. Enough tasks here for several batches.
namespace {

constexpr int kMany = 5000;

std::set<multiworker::TaskId> add_quick_tasks(SleepProcessor& processor, int count) {
    std::set<multiworker::TaskId> ids;
    for (int i = 0; i < count; ++i) ids.insert(processor.add(0));
    return ids;
}

}  // namespace

TEST_CASE("after wait(), get_results() returns every result once, also those wait() decoded") {
    test_support::Watchdog watchdog{120s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    processor.start();
    for (int round = 0; round < 2; ++round) {
        const auto ids = add_quick_tasks(processor, kMany);
        processor.wait();
        const auto results = processor.get_results();
        REQUIRE(results.size() == ids.size());
        std::set<multiworker::TaskId> seen;
        for (const auto& result : results) {
            CHECK(result.value() == 0);
            seen.insert(result.id());
        }
        CHECK(seen == ids);
        CHECK(processor.get_results().empty());
    }
}

TEST_CASE("after wait(), pop_result() hands out the decoded results in arrival order, then none", "[worker_count]") {
    test_support::Watchdog watchdog{120s};
    SleepProcessor processor{Sleeper{}, {.workers = 1}};  // one worker: results arrive in task order
    const auto ids = add_quick_tasks(processor, kMany);
    processor.start();
    processor.wait();
    std::vector<multiworker::TaskId> order;
    while (auto result = processor.pop_result(0ms)) order.push_back(result->id());
    CHECK(std::vector<multiworker::TaskId>(ids.begin(), ids.end()) == order);
    CHECK_FALSE(processor.pop_result().has_value());
    CHECK(processor.results_within(0ms).empty());
}

TEST_CASE("a thread in pop_result() gets results that wait() in another thread decoded") {
    test_support::Watchdog watchdog{120s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    const auto ids = add_quick_tasks(processor, kMany);
    const auto slow = processor.add(3000);
    processor.start();
    std::thread waiter{[&processor] { processor.wait(); }};
    // The quick results reach this thread while the slow task still runs,
    // whether it takes them from the mailbox or from what wait() decoded.
    std::set<multiworker::TaskId> popped;
    bool slow_still_running = true;
    while (popped.size() < ids.size()) {
        auto result = processor.pop_result();
        REQUIRE(result.has_value());
        REQUIRE(result->id() != slow);
        popped.insert(result->id());
        slow_still_running = slow_still_running && !processor.done();
    }
    waiter.join();
    CHECK(slow_still_running);
    CHECK(popped == ids);
    const auto rest = processor.get_results();
    REQUIRE(rest.size() == 1);
    CHECK(rest.front().id() == slow);
    CHECK(rest.front().value() == 3000);
}

TEST_CASE("results taken concurrently by wait(), pop_result() and get_results() are each taken once") {
    test_support::Watchdog watchdog{120s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    processor.start();
    const auto ids = add_quick_tasks(processor, 4 * kMany);
    std::mutex seen_mutex;
    std::multiset<multiworker::TaskId> seen;
    const auto record = [&](const multiworker::Result<int>& result) {
        std::lock_guard lock{seen_mutex};
        seen.insert(result.id());
    };
    std::thread waiter{[&processor] { processor.wait(); }};
    std::thread popper{[&] {
        while (auto result = processor.pop_result()) record(*result);
    }};
    while (!processor.done()) {
        for (const auto& result : processor.get_results()) record(result);
        std::this_thread::sleep_for(1ms);
    }
    waiter.join();
    popper.join();
    for (const auto& result : processor.get_results()) record(result);
    CHECK(seen.size() == ids.size());
    CHECK(std::set<multiworker::TaskId>(seen.begin(), seen.end()) == ids);
}
