// Central logging: records from every worker reach the parent's sinks over
// pipes, tagged, filtered by level, whole, and none lost; forking while other
// parent threads log (sync or async loggers) does not deadlock the workers.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/ostream_sink.h>

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace {

using namespace std::chrono_literals;

struct Chatty {
    int work(int task, int line_length) const {
        spdlog::debug("debug record of task {}", task);
        spdlog::info("task {} {}", task,
                     std::string(static_cast<std::size_t>(line_length), static_cast<char>('a' + task % 26)));
        if (auto named = spdlog::get("named")) named->warn("named logger record of task {}", task);
        return static_cast<int>(::getpid());
    }
};

/// A file path unique to this test process, removed when the guard dies.
struct TempFile {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() /
        ("multiworker-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".log");
    ~TempFile() { std::filesystem::remove(path); }
    static inline int counter = 0;
};

std::vector<std::string> read_lines(const std::filesystem::path& path) {
    std::ifstream in{path};
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

}  // namespace

TEST_CASE("every worker's records reach the log file - tagged and whole") {
    test_support::Watchdog watchdog{60s};
    TempFile log;
    constexpr int tasks = 200;
    constexpr int line_length = 3000;  // long records: interleaving would show
    std::set<int> pids;
    {
        multiworker::Processor<Chatty, &Chatty::work> processor{
            Chatty{}, {.workers = 3, .log_file = log.path.string(), .log_level = spdlog::level::info}};
        for (int i = 0; i < tasks; ++i) processor.add(i, line_length);
        processor.start();
        processor.wait();
        for (const auto& result : processor.get_results()) pids.insert(result.value());
    }  // records are all written once the Processor is gone
    const std::regex record{R"(.*\[info\] worker (\d) \(pid (\d+)\): task (\d+) ([a-z]+)$)"};
    std::set<int> logged_tasks;
    std::set<int> logged_pids;
    for (const auto& line : read_lines(log.path)) {
        CHECK(line.find("debug record") == std::string::npos);  // filtered by log_level
        std::smatch match;
        if (!std::regex_match(line, match, record)) continue;
        const int task = std::stoi(match[3]);
        logged_pids.insert(std::stoi(match[2]));
        CHECK(match[4].str() == std::string(line_length, static_cast<char>('a' + task % 26)));
        CHECK(logged_tasks.insert(task).second);
    }
    CHECK(logged_tasks.size() == tasks);
    CHECK(logged_pids == pids);
}

TEST_CASE("records go to the user's logger - at the chosen level - named loggers included") {
    test_support::Watchdog watchdog{60s};
    std::ostringstream captured;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::trace);
    spdlog::register_logger(std::make_shared<spdlog::logger>("named", std::make_shared<spdlog::sinks::null_sink_mt>()));
    {
        multiworker::Processor<Chatty, &Chatty::work> processor{
            Chatty{}, {.workers = 2, .log_level = spdlog::level::debug, .logger = logger}};
        for (int i = 0; i < 10; ++i) processor.add(i, 5);
        processor.start();
        processor.wait();
    }
    spdlog::drop("named");
    const std::string text = captured.str();
    for (int i = 0; i < 10; ++i) {
        CHECK_THAT(text, Catch::Contains("debug record of task " + std::to_string(i) + "\n"));
        CHECK_THAT(text, Catch::Contains("[named]: named logger record of task " + std::to_string(i) + "\n"));
    }
    CHECK_THAT(text, Catch::Contains("worker 0 (pid ") && Catch::Contains("worker 1 (pid "));
}

TEST_CASE("forking while parent threads log hard does not deadlock the workers") {
    test_support::Watchdog watchdog{100s, "fork-while-logging"};
    TempFile parent_log;
    auto previous_default = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        "parent", std::make_shared<spdlog::sinks::basic_file_sink_mt>(parent_log.path.string())));
    spdlog::init_thread_pool(8192, 1);
    auto async = spdlog::create_async<spdlog::sinks::null_sink_mt>("named");

    std::atomic<bool> stop{false};
    std::vector<std::thread> loggers;
    for (int t = 0; t < 2; ++t) {
        loggers.emplace_back([&] {
            for (long i = 0; !stop.load(std::memory_order_relaxed); ++i) {
                spdlog::info("parent thread record {}", i);
                async->info("parent async record {}", i);
            }
        });
    }
    std::ostringstream captured;
    auto logger =
        std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(captured));
    constexpr int rounds = 20;
    int finished = 0;
    for (int round = 0; round < rounds; ++round) {
        multiworker::Processor<Chatty, &Chatty::work> processor{Chatty{}, {.workers = 4, .logger = logger}};
        for (int i = 0; i < 8; ++i) processor.add(i, 10);
        processor.start();
        processor.wait();
        finished += static_cast<int>(processor.get_results().size());
    }
    stop = true;
    for (auto& thread : loggers) thread.join();
    spdlog::drop("named");
    async.reset();
    spdlog::set_default_logger(previous_default);
    CHECK(finished == rounds * 8);
    // Each worker's records, through both the default and the named logger, arrived.
    const std::string text = captured.str();
    std::size_t records = 0;
    for (std::size_t at = text.find("named logger record"); at != std::string::npos;
         at = text.find("named logger record", at + 1)) {
        ++records;
    }
    CHECK(records == rounds * 8);
}
