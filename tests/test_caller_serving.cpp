// A user thread that adds a task or waits for a result while the event loop
// sleeps does the event loop's pass itself. These tests drive that path (every
// add and pop here finds the event loop asleep) and check that it keeps every
// guarantee of the event loop's own: one result per task, time limits, deaths.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using multiworker::ErrorKind;
using multiworker::TaskId;
using Clock = std::chrono::steady_clock;

// A worker is killed on purpose here; keep it from writing a core file.
const bool core_files_disabled = [] {
    const rlimit none{0, 0};
    return ::setrlimit(RLIMIT_CORE, &none) == 0;
}();

struct Task {
    enum Kind { echo, hang, die };
    int run(Kind kind, int value) const {
        if (kind == hang) std::this_thread::sleep_for(60s);
        if (kind == die) ::raise(SIGKILL);
        return value;
    }
};
using TaskProcessor = multiworker::Processor<Task, &Task::run>;

// Long enough for the event loop to stop spinning and sleep (it spins for
// about 50 us after its last progress).
constexpr auto loop_falls_asleep = 20ms;

}  // namespace

TEST_CASE("tasks added one at a time to sleeping workers each get their result") {
    test_support::Watchdog watchdog{60s};
    TaskProcessor processor{Task{}, {.workers = 2}};
    processor.start();
    for (int i = 0; i < 50; ++i) {
        std::this_thread::sleep_for(loop_falls_asleep / 10);
        const TaskId id = processor.add(Task::echo, i);
        auto result = processor.pop_result(30s);
        REQUIRE(result.has_value());
        CHECK(result->id() == id);
        CHECK(result->value() == i);
    }
    CHECK(processor.done());
}

TEST_CASE("a task added while the event loop sleeps is held to task_timeout", "[processes]") {
    test_support::Watchdog watchdog{60s};
    TaskProcessor processor{Task{}, {.workers = 1, .task_timeout = 100ms}};
    processor.start();
    std::this_thread::sleep_for(loop_falls_asleep);
    const auto added = Clock::now();
    const TaskId id = processor.add(Task::hang, 0);
    auto result = processor.pop_result(30s);
    const auto waited = Clock::now() - added;
    REQUIRE(result.has_value());
    CHECK(result->id() == id);
    REQUIRE_FALSE(result->ok());
    CHECK(result->error().kind() == ErrorKind::timeout);
    // The sleeping event loop had chosen to sleep up to a second; the task
    // is killed at its own deadline, not at the end of that sleep.
    CHECK(waited < 800ms);
}

TEST_CASE("a worker killed by a task a caller handed out is reported - and replaced", "[processes]") {
    test_support::Watchdog watchdog{60s};
    TaskProcessor processor{Task{}, {.workers = 1}};
    processor.start();
    std::this_thread::sleep_for(loop_falls_asleep);
    const TaskId id = processor.add(Task::die, 0);
    auto result = processor.pop_result(30s);
    REQUIRE(result.has_value());
    CHECK(result->id() == id);
    REQUIRE_FALSE(result->ok());
    CHECK(result->error().kind() == ErrorKind::worker_died);
    std::this_thread::sleep_for(loop_falls_asleep);
    processor.add(Task::echo, 7);
    result = processor.pop_result(30s);
    REQUIRE(result.has_value());
    CHECK(result->value() == 7);
}

TEST_CASE("threads adding and popping at once never lose or duplicate a result") {
    test_support::Watchdog watchdog{120s};
    TaskProcessor processor{Task{}, {.workers = 2}};
    processor.start();
    constexpr int threads = 4;
    constexpr int tasks_per_thread = 300;
    std::mutex mutex;
    std::map<std::uint64_t, int> expected;  // task id -> value
    std::map<std::uint64_t, int> received;
    std::atomic<int> missing{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < threads; ++t) {
        clients.emplace_back([&, t] {
            for (int i = 0; i < tasks_per_thread; ++i) {
                // Now and then a pause long enough for the event loop to sleep.
                if (i % 7 == 0) std::this_thread::sleep_for(1ms);
                const int value = t * tasks_per_thread + i;
                const TaskId id = processor.add(Task::echo, value);
                {
                    std::lock_guard lock{mutex};
                    expected[id.value()] = value;
                }
                // Any thread's result may come back here: results are not per thread.
                auto result = processor.pop_result(30s);
                if (!result || !result->ok()) {
                    ++missing;
                    continue;
                }
                std::lock_guard lock{mutex};
                CHECK(received.emplace(result->id().value(), result->value()).second);
            }
        });
    }
    for (auto& client : clients) client.join();
    CHECK(missing == 0);
    CHECK(received == expected);
    CHECK(processor.done());
}

constexpr auto kill_interval = test_support::address_sanitizer ? 20ms : 5ms;

TEST_CASE("workers killed while callers hand out and collect tasks lose none", "[processes]") {
    test_support::Watchdog watchdog{110s};
    TaskProcessor processor{Task{}, {.workers = 2, .log_level = spdlog::level::err, .retries = 1000}};
    processor.start();
    constexpr std::size_t enough_kills = 10;
    std::atomic<bool> clients_done{false};
    std::atomic<std::size_t> kills{0};
    std::thread killer{[&] {
        while (!clients_done) {
            std::this_thread::sleep_for(kill_interval);
            const auto pids = processor.worker_pids();
            if (!pids.empty() && ::kill(pids[kills % pids.size()], SIGKILL) == 0) ++kills;
        }
    }};
    constexpr int threads = 2;
    constexpr int min_tasks_per_thread = 500;
    std::mutex mutex;
    std::map<std::uint64_t, int> expected;
    std::map<std::uint64_t, int> received;
    int failed = 0;
    std::vector<std::thread> clients;
    for (int t = 0; t < threads; ++t) {
        clients.emplace_back([&, t] {
            // At least so many tasks each, and on until the workers were killed often enough.
            for (int i = 0; i < min_tasks_per_thread || kills < enough_kills; ++i) {
                if (i % 5 == 0) std::this_thread::sleep_for(1ms);  // the event loop falls asleep
                const int value = t * 1'000'000 + i;
                const TaskId id = processor.add(Task::echo, value);
                {
                    std::lock_guard lock{mutex};
                    expected[id.value()] = value;
                }
                auto result = processor.pop_result(60s);
                std::lock_guard lock{mutex};
                if (!result || !result->ok()) {
                    ++failed;
                } else {
                    CHECK(received.emplace(result->id().value(), result->value()).second);
                }
            }
        });
    }
    for (auto& client : clients) client.join();
    clients_done = true;
    killer.join();
    std::printf("caller serving under kills: %zu kills, %zu results, %d failed\n", kills.load(), received.size(),
                failed);
    CHECK(kills >= enough_kills);
    CHECK(failed == 0);
    CHECK(received == expected);
}
