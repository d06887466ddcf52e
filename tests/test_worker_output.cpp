// What workers print reaches the parent's stdout and stderr whole, a line at a
// time, whether those are a file or a pipe, and whatever way the worker ends;
// or it goes into the log sinks; or it is left alone.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// Prints `lines` numbered lines of ~`width` characters with printf, std::cout
/// or on stderr, then ends as `ending` says: returns, exit(3) or SIGKILL.
struct Printer {
    enum Ending { return_normally = 0, call_exit = 1, get_killed = 2 };

    int print(int task, int lines, int width, int ending, bool to_stderr) {
        const std::string filler(static_cast<std::size_t>(width), 'x');
        for (int line = 0; line < lines; ++line) {
            if (to_stderr) {
                std::fprintf(stderr, "task %d line %d %s end\n", task, line, filler.c_str());
            } else if (line % 2 == 0) {
                std::printf("task %d line %d %s end\n", task, line, filler.c_str());
            } else {
                std::cout << "task " << task << " line " << line << ' ' << filler << " end\n";
            }
        }
        if (ending == call_exit) std::exit(3);
        if (ending == get_killed) ::raise(SIGKILL);
        return task;
    }
};

using PrintProcessor = multiworker::Processor<Printer, &Printer::print>;

std::string temp_path(const char* tag) {
    return "/tmp/multiworker_test_output_" + std::to_string(::getpid()) + "_" + tag;
}

std::string read_file(const std::string& path) {
    std::ifstream in{path, std::ios::binary};
    return std::string{std::istreambuf_iterator<char>{in}, {}};
}

/// Checks that `text` holds exactly `lines` lines for each task in `tasks`,
/// each whole (its number and filler intact), and nothing else.
void check_whole_lines(const std::string& text, const std::vector<int>& tasks, int lines, int width) {
    std::map<int, std::vector<bool>> seen;
    for (int task : tasks) seen[task].assign(static_cast<std::size_t>(lines), false);
    std::istringstream in{text};
    const std::string filler(static_cast<std::size_t>(width), 'x');
    int count = 0;
    for (std::string line; std::getline(in, line);) {
        int task = -1;
        int number = -1;
        char rest[16] = {};
        INFO("line: " << line.substr(0, 80));
        REQUIRE(std::sscanf(line.c_str(), "task %d line %d %15s", &task, &number, rest) == 3);
        REQUIRE(seen.count(task) == 1);
        REQUIRE(number >= 0);
        REQUIRE(number < lines);
        const std::string expected =
            "task " + std::to_string(task) + " line " + std::to_string(number) + " " + filler + " end";
        REQUIRE(line == expected);  // whole: no other worker's bytes inside it
        REQUIRE_FALSE(seen[task][static_cast<std::size_t>(number)]);
        seen[task][static_cast<std::size_t>(number)] = true;
        ++count;
    }
    CHECK(count == lines * static_cast<int>(tasks.size()));
}

/// Runs `tasks` (each printing `lines` lines) on `workers` workers with stdout
/// (or stderr) redirected into a file; returns what the file received.
std::string run_into_file(const std::vector<int>& tasks, int lines, int width, int ending, bool to_stderr,
                          unsigned workers) {
    const std::string path = temp_path(to_stderr ? "err" : "out");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    {
        test_support::Redirect redirect{to_stderr ? STDERR_FILENO : STDOUT_FILENO, fd};
        PrintProcessor processor{Printer{}, {.workers = workers, .log_level = spdlog::level::off}};
        for (int task : tasks) processor.add(task, lines, width, ending, to_stderr);
        processor.start();
        processor.wait();
        processor.stop();
    }
    ::close(fd);
    const std::string text = read_file(path);
    std::remove(path.c_str());
    return text;
}

}  // namespace

TEST_CASE("worker output reaches a file whole, several workers printing hard") {
    test_support::Watchdog watchdog{100s};
    // 4 workers, 8 tasks of 2,000 lines of ~300 bytes: far more than stdio's 4 KiB buffer.
    const std::vector<int> tasks{0, 1, 2, 3, 4, 5, 6, 7};
    check_whole_lines(run_into_file(tasks, 2000, 300, Printer::return_normally, false, 4), tasks, 2000, 300);
}

TEST_CASE("worker stderr reaches the parent's stderr whole") {
    test_support::Watchdog watchdog{100s};
    const std::vector<int> tasks{0, 1, 2};
    check_whole_lines(run_into_file(tasks, 500, 100, Printer::return_normally, true, 3), tasks, 500, 100);
}

TEST_CASE("worker output written before exit() or SIGKILL is not lost") {
    test_support::Watchdog watchdog{100s};
    const auto ending = GENERATE(int{Printer::call_exit}, int{Printer::get_killed});
    INFO("ending " << ending);
    const std::vector<int> tasks{10, 11, 12};
    check_whole_lines(run_into_file(tasks, 300, 50, ending, false, 2), tasks, 300, 50);
}

TEST_CASE("worker output reaches a pipe whole") {
    test_support::Watchdog watchdog{100s};
    int ends[2];
    REQUIRE(::pipe(ends) == 0);
    std::string received;
    std::thread reader{[&received, fd = ends[0]] {
        char buffer[4096];
        for (ssize_t got; (got = ::read(fd, buffer, sizeof buffer)) > 0;) received.append(buffer, buffer + got);
    }};
    const std::vector<int> tasks{0, 1, 2, 3};
    {
        test_support::Redirect redirect{STDOUT_FILENO, ends[1]};
        PrintProcessor processor{Printer{}, {.workers = 2, .log_level = spdlog::level::off}};
        for (int task : tasks) processor.add(task, 1000, 200, int{Printer::return_normally}, false);
        processor.start();
        processor.wait();
    }
    ::close(ends[1]);
    reader.join();
    ::close(ends[0]);
    check_whole_lines(received, tasks, 1000, 200);
}

TEST_CASE("WorkerOutput::log makes each line a tagged log record") {
    test_support::Watchdog watchdog{100s};
    auto [logger, sink] = test_support::capturing_logger();
    {
        PrintProcessor processor{Printer{},
                                 {.workers = 1, .logger = logger, .worker_output = multiworker::WorkerOutput::log}};
        processor.add(7, 3, 5, int{Printer::return_normally}, false);
        processor.add(8, 2, 5, int{Printer::return_normally}, true);
        processor.start();
        processor.wait();
    }
    const std::string log = sink->text();
    for (int line = 0; line < 3; ++line) {
        CHECK_THAT(log, Catch::Contains("[stdout]: task 7 line " + std::to_string(line) + " xxxxx end"));
    }
    for (int line = 0; line < 2; ++line) {
        CHECK_THAT(log, Catch::Contains("[stderr]: task 8 line " + std::to_string(line) + " xxxxx end"));
    }
    CHECK_THAT(log, Catch::Matches("(.|\n)*worker 0 \\(pid [0-9]+\\) \\[stdout\\]: task 7 line 0(.|\n)*"));
}

TEST_CASE("WorkerOutput::inherit leaves the descriptors alone, still flushed at a normal end") {
    test_support::Watchdog watchdog{100s};
    const std::string path = temp_path("inherit");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    std::vector<pid_t> pids;
    {
        test_support::Redirect redirect{STDOUT_FILENO, fd};
        PrintProcessor processor{Printer{}, {.workers = 1, .worker_output = multiworker::WorkerOutput::inherit}};
        processor.add(3, 10, 5, int{Printer::return_normally}, false);
        processor.start();
        processor.wait();
        pids = processor.worker_pids();
        REQUIRE(pids.size() == 1);
        // The worker itself holds the file open: no pipe stands between them.
        CHECK(std::filesystem::read_symlink("/proc/" + std::to_string(pids[0]) + "/fd/1") ==
              std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd)));
    }
    ::close(fd);
    const std::string text = read_file(path);
    std::remove(path.c_str());
    check_whole_lines(text, {3}, 10, 5);
}
