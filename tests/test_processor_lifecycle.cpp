// The life of a Processor: every task gets exactly one result, work is spread
// over distinct worker processes that keep their state, misuse is reported,
// and stop() or the destructor leave no process and no shared memory behind.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

struct Counter {
    int calls = 0;
    /// Returns (pid, how many calls this copy of the object has served).
    std::pair<int, int> next(int delay_ms) {
        if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds{delay_ms});
        return {static_cast<int>(::getpid()), ++calls};
    }
};

using test_support::Sleeper;

}  // namespace

TEST_CASE("every TaskId gets exactly one result") {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<Counter, &Counter::next> processor{Counter{}, {.workers = 3}};
    std::set<multiworker::TaskId> added;
    for (int i = 0; i < 500; ++i) added.insert(processor.add(0));
    processor.start();
    for (int i = 0; i < 500; ++i) added.insert(processor.add(0));  // also after start()
    REQUIRE(added.size() == 1000);
    processor.wait();
    CHECK(processor.done());
    const auto results = processor.get_results();
    std::set<multiworker::TaskId> seen;
    for (const auto& result : results) {
        CHECK(result.ok());
        CHECK(seen.insert(result.id()).second);  // no duplicates
    }
    CHECK(seen == added);
    CHECK(processor.get_results().empty());  // each result is taken once
}

TEST_CASE("work is spread over N distinct worker processes - each keeping its state", "[processes]") {
    test_support::Watchdog watchdog{60s};
    constexpr unsigned workers = 4;
    multiworker::Processor<Counter, &Counter::next> processor{Counter{}, {.workers = workers}};
    for (int i = 0; i < 80; ++i) processor.add(5);
    processor.start();
    processor.wait();
    std::map<int, std::vector<int>> calls_by_pid;
    for (const auto& result : processor.get_results()) {
        REQUIRE(result.ok());
        calls_by_pid[result.value().first].push_back(result.value().second);
    }
    CHECK(calls_by_pid.size() == workers);
    CHECK(calls_by_pid.count(static_cast<int>(::getpid())) == 0);
    for (auto& [pid, counts] : calls_by_pid) {
        // Each worker's copy counted its own calls 1, 2, 3, ... with no gaps.
        std::sort(counts.begin(), counts.end());
        for (std::size_t i = 0; i < counts.size(); ++i) CHECK(counts[i] == static_cast<int>(i + 1));
    }
    CHECK(processor.object().calls == 0);  // the parent's object was never called
}

TEST_CASE("stop() and the destructor leave no child process and no shared memory", "[processes]") {
    test_support::Watchdog watchdog{60s};
    const auto shm_before = test_support::shm_entries();
    REQUIRE(test_support::child_pids().empty());
    std::vector<int> worker_pids;
    {
        multiworker::Processor<Counter, &Counter::next> processor{Counter{}, {.workers = 3}};
        for (int i = 0; i < 30; ++i) processor.add(1);
        processor.start();
        processor.wait();
        for (const auto& result : processor.get_results()) worker_pids.push_back(result.value().first);
        const auto live = processor.worker_pids();
        CHECK(live.size() == 3);
        for (pid_t pid : live) CHECK(test_support::process_alive(pid));
        CHECK(test_support::child_pids().size() == 1);  // the fork server; workers are its children

        SECTION("stop()") {
            processor.stop();
            CHECK(test_support::child_pids().empty());
            CHECK(processor.worker_pids().empty());
            processor.stop();  // idempotent
        }
        SECTION("destructor") {}
    }
    CHECK(test_support::child_pids().empty());  // reaped: not even zombies
    for (int pid : worker_pids) CHECK_FALSE(test_support::process_alive(pid));
    CHECK(test_support::shm_entries() == shm_before);
}

TEST_CASE("stop() lets running tasks finish and discards queued ones", "[worker_count]") {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<Sleeper, &Sleeper::sleep_ms> processor{Sleeper{}, {.workers = 2}};
    for (int i = 0; i < 20; ++i) processor.add(300);
    processor.start();
    const auto first = processor.pop_result(30s);  // by now the workers are busy with later tasks
    REQUIRE(first.has_value());
    processor.stop();
    CHECK(processor.done());
    const auto rest = processor.get_results();
    // The first result, plus at most the two tasks running at stop() and one each claimed just before.
    CHECK(rest.size() >= 1);
    CHECK(rest.size() <= 5);
    for (const auto& result : rest) CHECK(result.ok());
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("stop() kills workers that outlive stop_timeout - and says so", "[processes]") {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<Sleeper, &Sleeper::sleep_ms> processor{
        Sleeper{}, {.workers = 1, .stop_timeout = std::chrono::milliseconds{100}}};
    processor.add(30'000);
    processor.start();
    std::this_thread::sleep_for(50ms);
    const auto before = std::chrono::steady_clock::now();
    processor.stop();
    CHECK(std::chrono::steady_clock::now() - before < 10s);
    auto results = processor.get_results();
    REQUIRE(results.size() == 1);
    REQUIRE_FALSE(results[0].ok());
    CHECK(results[0].error().kind() == multiworker::ErrorKind::worker_died);
    CHECK_THAT(results[0].error().what(), Catch::Contains("stop_timeout") && Catch::Contains("SIGKILL"));
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("misuse is reported - not hung on") {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<Counter, &Counter::next> processor{Counter{}, {.workers = 1}};
    CHECK(processor.done());  // nothing added yet
    processor.add(0);
    CHECK_FALSE(processor.done());
    CHECK_THROWS_AS(processor.wait(), std::logic_error);
    CHECK_THROWS_AS(processor.pop_result(), std::logic_error);
    CHECK_FALSE(processor.pop_result(10ms).has_value());  // a bounded wait is fine
    processor.start();
    CHECK_THROWS_AS(processor.start(), std::logic_error);
    processor.wait();
    processor.stop();
    CHECK_THROWS_AS(processor.add(0), std::logic_error);
    CHECK_THROWS_AS(processor.start(), std::logic_error);
    CHECK(processor.get_results().size() == 1);  // results survive stop()
}

TEST_CASE("a Processor that is never started forks nothing") {
    {
        multiworker::Processor<Counter, &Counter::next> processor{Counter{}, {.workers = 4}};
        processor.add(0);
        CHECK(test_support::child_pids().empty());
    }
    CHECK(test_support::child_pids().empty());
}

namespace {

/// The name (comm) of a thread or process, from /proc.
std::string comm_of(const std::string& proc_path) {
    std::ifstream file{proc_path + "/comm"};
    std::string name;
    std::getline(file, name);
    return name;
}

std::set<std::string> thread_names_of_this_process() {
    std::set<std::string> names;
    for (const auto& task : std::filesystem::directory_iterator{"/proc/self/task"}) {
        names.insert(comm_of(task.path().string()));
    }
    return names;
}

}  // namespace

TEST_CASE("the library's threads are named, and workers keep the program's name", "[processes]") {
    test_support::Watchdog watchdog{60s};
    const std::string program = comm_of("/proc/self");
    multiworker::Processor<Counter, &Counter::next> processor{Counter{}, {.workers = 2}};
    processor.start();
    const auto names = thread_names_of_this_process();
    CHECK(names.count("mw-event-loop") == 1);
    CHECK(names.count("mw-log") == 1);
    const auto pids = processor.worker_pids();
    REQUIRE(pids.size() == 2);
    for (pid_t pid : pids) CHECK(comm_of("/proc/" + std::to_string(pid)) == program);
    processor.stop();
    CHECK(thread_names_of_this_process().count("mw-event-loop") == 0);
}

TEST_CASE("start() with 1,000 workers returns - and every worker serves", "[processes]") {
    test_support::Watchdog watchdog{110s};
    // Under ASan a fork takes tens of milliseconds (its shadow memory), and other
    // tests run beside this one: 600 workers there, still past the ~555 at
    // which start() used to hang.
    constexpr unsigned workers = test_support::address_sanitizer ? 600 : 1000;
    {
        // The smallest rings: 1,000 workers share 8 MiB.
        multiworker::Processor<Counter, &Counter::next> processor{
            Counter{}, {.workers = workers, .ring_bytes = 4096, .start_timeout = std::chrono::seconds{90}}};
        // Added before start(): two for each worker's first window. Each
        // takes 100 ms, so that every worker claims its first task before
        // any worker idles: an idle worker takes over the tasks still queued
        // for another one (see test_load_balance).
        for (unsigned i = 0; i < 2 * workers; ++i) processor.add(100);
        processor.start();
        CHECK(processor.worker_pids().size() == workers);
        processor.wait();
        std::set<int> pids;
        for (const auto& result : processor.get_results()) {
            REQUIRE(result.ok());
            pids.insert(result.value().first);
        }
        CHECK(pids.size() == workers);
    }
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("workers not ready within start_timeout fail start() with a clear error - and nothing hangs", "[processes]") {
    test_support::Watchdog watchdog{60s};
    {
        multiworker::Processor<Counter, &Counter::next> processor{
            Counter{}, {.workers = 300, .ring_bytes = 4096, .start_timeout = std::chrono::milliseconds{1}}};
        processor.add(0);
        CHECK_THROWS_WITH(processor.start(), Catch::Matches("multiworker::Processor::start\\(\\): [0-9]+ of 300 "
                                                            "workers were not forked within start_timeout \\(1 ms\\)"));
        // The Processor is stopped, its task cancelled: nothing waits forever.
        CHECK(processor.done());
        processor.wait();
        CHECK(processor.get_results().empty());
        CHECK_THROWS_AS(processor.add(0), std::logic_error);
    }
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("only workers running a task are reported killed at stop - naming the period in force", "[processes]") {
    test_support::Watchdog watchdog{60s};
    auto [logger, sink] = test_support::capturing_logger();
    SECTION("stop_now(): the idle worker is not reported") {
        multiworker::Processor<Sleeper, &Sleeper::sleep_ms> processor{Sleeper{}, {.workers = 3, .logger = logger}};
        processor.add(30'000);
        processor.start();
        std::this_thread::sleep_for(200ms);
        processor.stop_now();
        auto results = processor.get_results();
        REQUIRE(results.size() == 1);
        CHECK_THAT(results[0].error().what(), Catch::Contains("was still running a task when stop_now() was called"));
        const std::string log = sink->text();
        CHECK_THAT(log, !Catch::Contains("stop_timeout"));
        // One warning: the worker that ran the task; the two idle ones are not named.
        std::size_t warnings = 0;
        for (std::size_t at = log.find("was killed by SIGKILL"); at != std::string::npos;
             at = log.find("was killed by SIGKILL", at + 1)) {
            ++warnings;
        }
        CHECK(warnings == 1);
    }
    SECTION("the destructor during an exception says so") {
        std::vector<multiworker::Result<int>> results;
        try {
            multiworker::Processor<Sleeper, &Sleeper::sleep_ms> processor{Sleeper{}, {.workers = 2, .logger = logger}};
            processor.add(30'000);
            processor.start();
            std::this_thread::sleep_for(200ms);
            throw std::runtime_error{"unwinding"};
        } catch (const std::runtime_error&) {
        }
        const std::string log = sink->text();
        CHECK_THAT(log,
                   Catch::Contains("was still running a task when the Processor was destroyed during an exception"));
        CHECK_THAT(log, !Catch::Contains("stop_timeout, 0 ms"));
    }
}
