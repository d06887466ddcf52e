// Options::max_pending: add() waits while that many tasks wait for a worker,
// so memory stays bounded however many tasks a program adds; before start()
// such an add() is an error, not a wait that could never end.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

namespace {

using namespace std::chrono_literals;
using test_support::Sleeper;
using SleepProcessor = multiworker::Processor<Sleeper, &Sleeper::sleep_ms>;

}  // namespace

TEST_CASE("add() waits while max_pending tasks wait for a worker - and every task still gets its result",
          "[worker_count]") {
    test_support::Watchdog watchdog{60s};
    constexpr std::size_t max_pending = 8;
    constexpr int tasks = 60;
    SleepProcessor processor{Sleeper{}, {.workers = 2, .max_pending = max_pending}};
    processor.start();
    std::atomic<int> added{0};
    std::thread producer{[&] {
        for (int i = 0; i < tasks; ++i) {
            processor.add(20);
            ++added;
        }
    }};
    // 20 ms tasks on 2 workers: in 150 ms about 15 finish; at most a window
    // of 2 per worker runs or waits in it, and max_pending wait to be handed out.
    std::this_thread::sleep_for(150ms);
    const int added_early = added.load();
    CHECK(added_early < tasks);
    CHECK(added_early <= 15 + 2 * 2 + static_cast<int>(max_pending) + 4);
    producer.join();
    processor.wait();
    const auto results = processor.get_results();
    REQUIRE(results.size() == static_cast<std::size_t>(tasks));
    std::set<multiworker::TaskId> ids;
    for (const auto& result : results) {
        REQUIRE(result.ok());
        CHECK(result.value() == 20);
        ids.insert(result.id());
    }
    CHECK(ids.size() == static_cast<std::size_t>(tasks));
}

TEST_CASE("max_pending before start(): the add() that would wait forever throws instead") {
    test_support::Watchdog watchdog{60s};
    for (const unsigned workers : {0u, 2u}) {
        INFO("workers " << workers);
        SleepProcessor processor{Sleeper{}, {.workers = workers, .max_pending = 3}};
        for (int i = 0; i < 3; ++i) processor.add(0);
        CHECK_THROWS_WITH(processor.add(0), Catch::Contains("3 tasks (max_pending) already wait for start()") &&
                                                Catch::Contains("would wait forever"));
        processor.start();
        for (int i = 0; i < 10; ++i) processor.add(0);  // after start(): no error
        processor.wait();
        CHECK(processor.get_results().size() == 13);
    }
}

TEST_CASE("stop() releases an add() waiting for room - with an error, and no task left unaccounted") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 1, .stop_timeout = 2s, .max_pending = 1}};
    processor.start();
    std::atomic<bool> stopped_error{false};
    std::thread producer{[&] {
        try {
            for (int i = 0; i < 100; ++i) processor.add(50);
        } catch (const std::logic_error& e) {
            stopped_error = std::string{e.what()}.find("stopped") != std::string::npos;
        }
    }};
    std::this_thread::sleep_for(200ms);
    processor.stop();
    producer.join();
    CHECK(stopped_error);
    CHECK(processor.done());  // every task added has a result or was cancelled
}
