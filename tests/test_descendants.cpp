// A worker's own children and grandchildren end with it: when it is replaced,
// and when the Processor stops, even if they left its process group; none of
// them holds stop() up by keeping a pipe open.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Forks a child that sleeps, and a grandchild (the child's child) that sleeps;
/// returns both pids. With `escape`, both leave the worker's process group
/// (setsid), as a daemon would. With `die`, the worker writes their pids to
/// `pid_file` and dies.
struct Spawner {
    std::vector<int> spawn(bool escape, bool die, const std::string& pid_file) {
        int ends[2];
        if (::pipe(ends) != 0) throw std::runtime_error{"pipe"};
        const pid_t child = ::fork();
        if (child < 0) throw std::runtime_error{"fork"};
        if (child == 0) {
            if (escape) ::setsid();
            const pid_t grandchild = ::fork();
            if (grandchild == 0) {
                ::sleep(30);
                ::_exit(0);
            }
            [[maybe_unused]] const ssize_t written = ::write(ends[1], &grandchild, sizeof grandchild);
            // Still holding the worker's stdout, stderr and log pipes, as children do.
            ::sleep(30);
            ::_exit(0);
        }
        pid_t grandchild = 0;
        [[maybe_unused]] const ssize_t got = ::read(ends[0], &grandchild, sizeof grandchild);
        ::close(ends[0]);
        ::close(ends[1]);
        if (die) {
            std::ofstream{pid_file} << child << ' ' << grandchild << '\n';
            ::raise(SIGKILL);
        }
        return {static_cast<int>(child), static_cast<int>(grandchild)};
    }
};

using SpawnProcessor = multiworker::Processor<Spawner, &Spawner::spawn>;

bool all_gone(const std::vector<pid_t>& pids, std::chrono::milliseconds within) {
    const auto deadline = Clock::now() + within;
    for (;;) {
        bool any = false;
        for (pid_t pid : pids) any |= test_support::process_alive(pid);
        if (!any) return true;
        if (Clock::now() > deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
}

}  // namespace

TEST_CASE("a worker's children and grandchildren end when the Processor stops") {
    test_support::Watchdog watchdog{60s};
    const bool escape = GENERATE(false, true);
    INFO("escape (setsid): " << escape);
    std::vector<pid_t> descendants;
    std::chrono::milliseconds stop_took{};
    {
        SpawnProcessor processor{Spawner{}, {.workers = 2}};
        processor.add(escape, false, std::string{});
        processor.add(escape, false, std::string{});
        processor.start();
        processor.wait();
        for (auto& result : processor.get_results()) {
            REQUIRE(result.ok());
            for (int pid : result.value()) descendants.push_back(pid);
        }
        REQUIRE(descendants.size() == 4);
        for (pid_t pid : descendants) CHECK(test_support::process_alive(pid));
        const auto before = Clock::now();
        processor.stop();
        stop_took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - before);
    }
    CHECK(all_gone(descendants, 0ms));  // gone by the time stop() returned
    // No wait for a pipe that a descendant held open (it was 2 s).
    CHECK(stop_took < 1500ms);
}

TEST_CASE("a dead worker's descendants end with it") {
    test_support::Watchdog watchdog{60s};
    const bool escape = GENERATE(false, true);
    INFO("escape (setsid): " << escape);
    auto [logger, sink] = test_support::capturing_logger();
    SpawnProcessor processor{Spawner{}, {.workers = 1, .logger = logger}};
    const std::string pid_file = "/tmp/multiworker_test_descendants_" + std::to_string(::getpid());
    processor.add(escape, true, pid_file);  // the worker forks two, writes their pids, then is killed
    processor.start();
    processor.wait();
    auto results = processor.get_results();
    REQUIRE(results.size() == 1);
    REQUIRE_FALSE(results[0].ok());
    CHECK(results[0].error().kind() == multiworker::ErrorKind::worker_died);
    std::vector<pid_t> descendants;
    {
        std::ifstream in{pid_file};
        for (pid_t pid = 0; in >> pid;) descendants.push_back(pid);
    }
    std::remove(pid_file.c_str());
    REQUIRE(descendants.size() == 2);
    // In its group: killed with it. Out of it (setsid): adopted by the fork
    // server, which sweeps its orphans at least once a second.
    CHECK(all_gone(descendants, 3s));
    // Replaced, and serving.
    processor.add(false, false, std::string{});
    processor.wait();
    results = processor.get_results();
    REQUIRE(results.size() == 1);
    CHECK(results[0].ok());
}
