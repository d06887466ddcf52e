// Load balance at the end of the work: a task queued for a worker busy with a
// long task moves to a worker that idles, and a task moved so runs once.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

using test_support::Sleeper;

using SleepProcessor = multiworker::Processor<Sleeper, &Sleeper::sleep_ms>;

/// Sleeps for its argument's milliseconds and appends the argument's task
/// number to a file, so that a task run twice shows.
struct RunLog {
    std::string path;

    int run(int task, int ms) const {
        std::this_thread::sleep_for(std::chrono::milliseconds{ms});
        const std::string line = std::to_string(task) + "\n";
        const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) throw std::runtime_error{"cannot open " + path};
        const bool whole = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
        ::close(fd);
        if (!whole) throw std::runtime_error{"cannot write " + path};
        return task;
    }
};

/// How many times each task number appears in the run log.
std::map<int, int> runs_per_task(const std::string& path) {
    std::map<int, int> runs;
    std::ifstream log{path};
    for (int task = 0; log >> task;) ++runs[task];
    return runs;
}

}  // namespace

TEST_CASE("a task queued behind a long one moves to a worker that idles") {
    test_support::Watchdog watchdog{60s};
    SleepProcessor processor{Sleeper{}, {.workers = 2}};
    processor.start();
    // Each worker is sent two tasks: the long one and a short one queue on
    // one worker, two short ones on the other, which is then left idle.
    processor.add(1500);
    for (int i = 0; i < 3; ++i) processor.add(20);
    std::vector<int> finished;
    while (auto result = processor.pop_result(30s)) finished.push_back(result->value());
    CHECK(finished == std::vector<int>{20, 20, 20, 1500});
}

TEST_CASE("a pipeline stage's item queued behind a long one moves to a worker that idles") {
    test_support::Watchdog watchdog{60s};
    multiworker::Pipeline pipeline{multiworker::from(std::vector<int>{1500, 20, 20, 20}),
                                   multiworker::stage<&Sleeper::sleep_ms>(Sleeper{}, {.workers = 2})};
    pipeline.start();
    std::vector<int> finished;
    while (auto result = pipeline.pop_result(30s)) finished.push_back(result->value());
    CHECK(finished == std::vector<int>{20, 20, 20, 1500});
    pipeline.wait();
}

TEST_CASE("tasks moved between workers run exactly once") {
    test_support::Watchdog watchdog{120s};
    const std::string path =
        (std::filesystem::temp_directory_path() / ("multiworker-load-balance-" + std::to_string(::getpid()))).string();
    std::filesystem::remove(path);
    // Recycled workers too: a task taken back does not count against the
    // quota of the worker it left.
    const unsigned max_tasks = GENERATE(0U, 3U);
    multiworker::Processor<RunLog, &RunLog::run> processor{RunLog{path},
                                                           {.workers = 3, .max_tasks_per_worker = max_tasks}};
    processor.start();
    // Waves that end with long tasks and short ones queued behind them:
    // each wave's end moves tasks while the workers may be claiming them.
    int task = 0;
    for (int wave = 0; wave < 12; ++wave) {
        for (int i = 0; i < 8; ++i, ++task) processor.add(task, i % 4 == 0 ? 60 : 1 + i % 3);
        processor.wait();
    }
    std::map<int, int> results;
    for (const auto& result : processor.get_results()) ++results[result.value()];
    const std::map<int, int> runs = runs_per_task(path);
    std::filesystem::remove(path);
    REQUIRE(results.size() == static_cast<std::size_t>(task));
    for (const auto& [number, count] : results) CHECK(count == 1);
    REQUIRE(runs.size() == static_cast<std::size_t>(task));
    for (const auto& [number, count] : runs) {
        INFO("task " << number);
        CHECK(count == 1);
    }
}
