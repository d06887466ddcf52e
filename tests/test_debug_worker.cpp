// Debugging a worker: the chosen worker stops right after the fork, says how
// to attach gdb, and goes on when released by SIGCONT (or a debugger).

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <thread>

namespace {

using namespace std::chrono_literals;

struct Echo {
    int echo(int x) const { return x; }
};

void check_waits_then_continues(multiworker::Processor<Echo, &Echo::echo>& processor,
                                test_support::CapturingSink& log) {
    processor.add(42);
    processor.start();
    CHECK_FALSE(processor.pop_result(500ms).has_value());  // the only worker is waiting
    const auto pids = processor.worker_pids();
    REQUIRE(pids.size() == 1);
    CHECK_THAT(log.text(), Catch::Contains("waiting for a debugger: gdb -p " + std::to_string(pids[0])));
    REQUIRE(::kill(pids[0], SIGCONT) == 0);
    auto result = processor.pop_result(30s);
    REQUIRE(result.has_value());
    CHECK(result->value() == 42);
}

}  // namespace

TEST_CASE("Options::debug_worker parks that worker until SIGCONT") {
    test_support::Watchdog watchdog{60s};
    auto [logger, log] = test_support::capturing_logger();
    multiworker::Processor<Echo, &Echo::echo> processor{Echo{}, {.workers = 1, .logger = logger, .debug_worker = 0}};
    check_waits_then_continues(processor, *log);
}

TEST_CASE("MULTIWORKER_DEBUG_WORKER selects the worker from the environment") {
    test_support::Watchdog watchdog{60s};
    auto [logger, log] = test_support::capturing_logger();
    ::setenv("MULTIWORKER_DEBUG_WORKER", "0", 1);
    multiworker::Processor<Echo, &Echo::echo> processor{Echo{}, {.workers = 1, .logger = logger}};
    ::unsetenv("MULTIWORKER_DEBUG_WORKER");
    check_waits_then_continues(processor, *log);
}

TEST_CASE("workers not chosen do not wait") {
    test_support::Watchdog watchdog{60s};
    auto [logger, log] = test_support::capturing_logger();
    multiworker::Processor<Echo, &Echo::echo> processor{Echo{}, {.workers = 2, .logger = logger, .debug_worker = 1}};
    for (int i = 0; i < 10; ++i) processor.add(i);
    processor.start();
    // Worker 0 serves while worker 1 waits: results arrive without any signal.
    CHECK(processor.pop_result(20s).has_value());
    // Release worker 1 once it says it waits (a SIGCONT before that would be lost, as for a user).
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (log->text().find("waiting for a debugger") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(10ms);
    }
    for (pid_t pid : processor.worker_pids()) ::kill(pid, SIGCONT);
    processor.wait();
    CHECK(processor.get_results().size() == 9);
}
