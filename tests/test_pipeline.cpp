// Pipelines when nothing fails: every item reaches the sink exactly once,
// fan-out and fan-in, filters and flat-maps, ordering, back-pressure,
// results without a sink, and the in-process mode giving the same answers.

#include "pipeline_support.hpp"
#include "support.hpp"

#include <multiworker/multiworker.hpp>

#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using multiworker::Emit;
using test_support::check_accounting;
using test_support::numbers;

namespace {

struct Counter {
    int count = 0;
    void read(Emit<int>& out) {
        for (int i = 0; i < count; ++i) out.emit(i);
    }
};

struct AddOne {
    long long apply(const int& x) { return x + 1LL; }
};

struct Double {
    long long apply(const long long& x) { return 2 * x; }
};

struct Collect {
    std::vector<long long> seen;
    void add(const long long& x) { seen.push_back(x); }
    std::vector<long long> finish() { return seen; }
};

struct PidOf {
    int apply(const int& x) {
        std::this_thread::sleep_for(5ms);  // long enough that every worker gets items
        return x >= 0 ? static_cast<int>(::getpid()) : 0;
    }
};

struct DistinctPids {
    std::set<int> pids;
    void add(const int& pid) { pids.insert(pid); }
    std::size_t finish() { return pids.size(); }
};

/// Keeps multiples of 3, each twice: as x and as x * 10.
struct TripleTens {
    void keep(const long long& x, Emit<long long>& out) {
        if (x % 3 != 0) return;
        out.emit(x);
        out.emit(x * 10);
    }
};

}  // namespace

TEST_CASE("every item reaches the sink exactly once - through two stages") {
    test_support::Watchdog watchdog{60s};
    multiworker::Pipeline pipeline{multiworker::from(numbers(20'000)),
                                   multiworker::stage<&AddOne::apply>(AddOne{}, {.workers = 2}),
                                   multiworker::stage<&Double::apply>(Double{}, {.workers = 3}),
                                   multiworker::sink<&Collect::add, &Collect::finish>(Collect{})};
    auto result = pipeline.run();
    std::vector<long long> seen = result.value();
    std::sort(seen.begin(), seen.end());
    std::vector<long long> expected(20'000);
    for (int i = 0; i < 20'000; ++i) expected[static_cast<std::size_t>(i)] = 2LL * (i + 1);
    CHECK(seen == expected);
    REQUIRE(result.stats().size() == 4);
    CHECK(result.stats()[1].in == 20'000);
    CHECK(result.stats()[2].out == 20'000);
    CHECK(result.stats()[3].completed == 20'000);
    CHECK(result.errors().empty());
    check_accounting(result.stats());
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("a source process fanning out to 12 workers and in to one sink uses 12 distinct processes") {
    test_support::Watchdog watchdog{60s};
    multiworker::Pipeline pipeline{multiworker::source<&Counter::read>(Counter{600}),
                                   multiworker::stage<&PidOf::apply>(PidOf{}, {.workers = 12}),
                                   multiworker::sink<&DistinctPids::add, &DistinctPids::finish>(DistinctPids{})};
    auto result = pipeline.run();
    CHECK(result.value() == 12);
    CHECK(result.stats()[0].out == 600);
    CHECK(result.stats()[2].in == 600);
    check_accounting(result.stats());
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("a stage with an Emit filters and flat-maps - without a sink the outputs come back as results") {
    test_support::Watchdog watchdog{60s};
    multiworker::Pipeline pipeline{multiworker::from(numbers(3'000)),
                                   multiworker::stage<&AddOne::apply>(AddOne{}, {.workers = 2}),
                                   multiworker::stage<&TripleTens::keep>(TripleTens{}, {.workers = 2})};
    pipeline.start();
    std::vector<long long> values;
    for (auto& result : pipeline.get_results()) values.push_back(result.value());
    std::sort(values.begin(), values.end());
    std::vector<long long> expected;
    for (long long x = 1; x <= 3'000; ++x) {
        if (x % 3 == 0) {
            expected.push_back(x);
            expected.push_back(x * 10);
        }
    }
    std::sort(expected.begin(), expected.end());
    CHECK(values == expected);
    CHECK(pipeline.results_within(10ms).empty());  // the stream is over and every result taken
    CHECK_FALSE(pipeline.pop_result(10ms));
    auto summary = pipeline.run();  // already over: the statistics
    CHECK(summary.stats()[2].in == 3'000);
    CHECK(summary.stats()[2].out == 2'000);
    CHECK(summary.stats()[2].dropped == 2'000);
    check_accounting(summary.stats());
}

namespace {

/// Item 0 takes long; the others do not.
struct SlowFirst {
    long long apply(const int& x) {
        if (x == 0) std::this_thread::sleep_for(300ms);
        return x;
    }
};

}  // namespace

TEST_CASE("results_within and pop_result take the results of a pipeline without a sink as they come") {
    test_support::Watchdog watchdog{60s};
    multiworker::Pipeline pipeline{multiworker::from(numbers(2'000)),
                                   multiworker::stage<&AddOne::apply>(AddOne{}, {.workers = 2})};
    pipeline.start();
    std::vector<long long> values;
    if (auto first = pipeline.pop_result(10s)) values.push_back(first->value());
    for (auto& result : pipeline.results_within(30s)) values.push_back(result.value());
    std::sort(values.begin(), values.end());
    std::vector<long long> expected(2'000);
    std::iota(expected.begin(), expected.end(), 1LL);
    CHECK(values == expected);
    CHECK(pipeline.done());
}

TEST_CASE("ordered keeps the order of the inputs - the default hands outputs on as they come") {
    test_support::Watchdog watchdog{60s};
    const auto run = [](bool ordered) {
        multiworker::Pipeline pipeline{
            multiworker::from(numbers(2'000)),
            multiworker::stage<&SlowFirst::apply>(SlowFirst{}, {.workers = 2, .ordered = ordered, .capacity = 64}),
            multiworker::sink<&Collect::add, &Collect::finish>(Collect{})};
        return pipeline.run().value();
    };
    std::vector<long long> in_order(2'000);
    std::iota(in_order.begin(), in_order.end(), 0LL);
    CHECK(run(true) == in_order);
    const std::vector<long long> unordered = run(false);
    CHECK(unordered != in_order);  // item 0 was overtaken
    CHECK(std::is_permutation(unordered.begin(), unordered.end(), in_order.begin()));
}

namespace {

/// Emits x % 3 outputs for input x (none for a multiple of 3); input 1 is slow.
struct SlowSplit {
    void split(const int& input, Emit<long long>& out) {
        const long long x = input;
        if (x == 1) std::this_thread::sleep_for(300ms);
        for (long long k = 0; k < x % 3; ++k) out.emit(x * 10 + k);
    }
};

}  // namespace

TEST_CASE("ordered on an emitting stage keeps each input's outputs together and in input order") {
    test_support::Watchdog watchdog{60s};
    const auto run = [](bool ordered, std::size_t capacity) {
        multiworker::Pipeline pipeline{multiworker::from(numbers(2'000)),
                                       multiworker::stage<&SlowSplit::split>(
                                           SlowSplit{}, {.workers = 2, .ordered = ordered, .capacity = capacity}),
                                       multiworker::sink<&Collect::add, &Collect::finish>(Collect{})};
        auto result = pipeline.run();
        const auto& stats = result.stats()[1];
        CHECK(stats.in == 2'000);
        CHECK(stats.in == stats.completed + stats.failed + stats.unprocessed);
        CHECK(stats.dropped == 667);  // 0, 3, ..., 1998 emit nothing
        return result.value();
    };
    std::vector<long long> in_order;
    for (long long x = 0; x < 2'000; ++x) {
        for (long long k = 0; k < x % 3; ++k) in_order.push_back(x * 10 + k);
    }
    CHECK(run(true, 64) == in_order);
    CHECK(run(true, 4096) == in_order);  // its buffer grows while input 1 holds everything back
    const std::vector<long long> unordered = run(false, 64);
    CHECK(unordered != in_order);  // input 1's output was overtaken
    CHECK(std::is_permutation(unordered.begin(), unordered.end(), in_order.begin()));
}

namespace {

/// Emits two outputs per input; the first time it sees input 500, its
/// worker is killed between the two.
struct DiesMidway {
    std::atomic<long long>* deaths = nullptr;
    void split(const int& input, Emit<long long>& out) {
        const long long x = input;
        out.emit(x * 10);
        if (x == 500 && deaths->fetch_add(1) == 0) ::raise(SIGKILL);
        out.emit(x * 10 + 1);
    }
};

}  // namespace

TEST_CASE("an ordered emitting stage whose worker died mid-input releases the retried outputs once and in order") {
    test_support::Watchdog watchdog{60s};
    test_support::SharedCounters shared{1};
    multiworker::Pipeline pipeline{
        multiworker::from(numbers(1'000)),
        multiworker::stage<&DiesMidway::split>(DiesMidway{&shared[0]},
                                               {.workers = 2, .retries = 1, .ordered = true, .capacity = 16}),
        multiworker::sink<&Collect::add, &Collect::finish>(Collect{})};
    auto result = pipeline.run();
    std::vector<long long> in_order;
    for (long long x = 0; x < 1'000; ++x) in_order.insert(in_order.end(), {x * 10, x * 10 + 1});
    CHECK(result.value() == in_order);
    CHECK(shared[0].load() == 2);  // it died once, and its retry ran
    CHECK(result.stats()[1].retried == 1);
    CHECK(result.errors().empty());
}

namespace {

/// Emits as fast as it can, counting in shared memory how far it got.
struct Flood {
    std::atomic<long long>* emitted = nullptr;
    long long count = 0;
    void read(Emit<long long>& out) {
        for (long long i = 0; i < count; ++i) {
            out.emit(i);
            emitted->store(i + 1);
        }
    }
};

struct Slow {
    long long apply(const long long& x) {
        std::this_thread::sleep_for(1ms);
        return x;
    }
};

struct Count {
    long long n = 0;
    void add(const long long&) { ++n; }
    long long finish() { return n; }
};

}  // namespace

TEST_CASE("capacity bounds what a fast source runs ahead of a slow stage - stop() ends the run early") {
    test_support::Watchdog watchdog{60s};
    test_support::SharedCounters shared{1};
    multiworker::Pipeline pipeline{multiworker::PipelineOptions{.stop_timeout = 2s, .ring_bytes = 4096},
                                   multiworker::source<&Flood::read>(Flood{&shared[0], 1'000'000}),
                                   multiworker::stage<&Slow::apply>(Slow{}, {.workers = 1, .capacity = 32}),
                                   multiworker::sink<&Count::add, &Count::finish>(Count{})};
    pipeline.start();
    std::this_thread::sleep_for(500ms);
    // At 1 ms an item, about 500 have passed the stage; the source may be ahead
    // by the stage's capacity, its window and what the two small rings hold.
    const long long ahead = shared[0].load();
    CHECK(ahead < 3'000);
    pipeline.stop();
    auto result = pipeline.run();
    CHECK(result.value() > 0);
    CHECK(result.value() < 3'000);
    CHECK(result.stats()[0].out < 3'000);
    check_accounting(result.stats());
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("in-process mode gives the same value and statistics as worker processes") {
    test_support::Watchdog watchdog{60s};
    const auto run = [](bool in_process) {
        multiworker::Pipeline pipeline{multiworker::PipelineOptions{.in_process = in_process},
                                       multiworker::source<&Counter::read>(Counter{5'000}),
                                       multiworker::stage<&AddOne::apply>(AddOne{}, {.workers = 2}),
                                       multiworker::stage<&TripleTens::keep>(TripleTens{}, {.workers = 2}),
                                       multiworker::sink<&Count::add, &Count::finish>(Count{})};
        return pipeline.run();
    };
    const auto forked = run(false);
    const auto local = run(true);
    CHECK(forked.value() == local.value());
    CHECK(local.value() == 2 * (5'000 / 3));
    REQUIRE(forked.stats().size() == local.stats().size());
    for (std::size_t i = 0; i < local.stats().size(); ++i) {
        INFO(local.stats()[i].name);
        CHECK(forked.stats()[i].in == local.stats()[i].in);
        CHECK(forked.stats()[i].out == local.stats()[i].out);
        CHECK(forked.stats()[i].completed == local.stats()[i].completed);
        CHECK(forked.stats()[i].dropped == local.stats()[i].dropped);
        CHECK(forked.stats()[i].failed == local.stats()[i].failed);
    }
    check_accounting(local.stats());
}

namespace {

struct Chatty {
    int apply(const int& x) {
        spdlog::info("saw {}", x);
        return x;
    }
};

struct Ignore {
    void add(const int&) {}
};

}  // namespace

TEST_CASE("a stage worker's log records reach the pipeline's logger - tagged with its stage and worker") {
    test_support::Watchdog watchdog{60s};
    auto [logger, sink] = test_support::capturing_logger();
    multiworker::Pipeline pipeline{multiworker::PipelineOptions{.logger = logger}, multiworker::from(numbers(3)),
                                   multiworker::stage<&Chatty::apply>(Chatty{}, {.workers = 1, .name = "chatty"}),
                                   multiworker::sink<&Ignore::add>(Ignore{})};
    auto result = pipeline.run();
    CHECK(result.stats()[2].completed == 3);
    const std::string text = sink->text();
    CHECK_THAT(text, Catch::Matchers::Contains("chatty worker 0 (pid "));
    for (const char* seen : {"saw 0", "saw 1", "saw 2"}) CHECK_THAT(text, Catch::Matchers::Contains(seen));
}

TEST_CASE("on_progress reports every stage while the run goes on and once at its end") {
    test_support::Watchdog watchdog{60s};
    std::mutex mutex;
    std::vector<std::vector<multiworker::StageProgress>> reports;
    multiworker::PipelineOptions options{.on_progress =
                                             [&](const std::vector<multiworker::StageProgress>& stages) {
                                                 std::lock_guard lock{mutex};
                                                 reports.push_back(stages);
                                             },
                                         .progress_interval = 20ms};
    multiworker::Pipeline pipeline{options, multiworker::from(numbers(300)),
                                   multiworker::stage<&SlowFirst::apply>(SlowFirst{}, {.workers = 2}),
                                   multiworker::sink<&Count::add, &Count::finish>(Count{})};
    CHECK(pipeline.run().value() == 300);
    std::lock_guard lock{mutex};
    REQUIRE(reports.size() >= 3);  // item 0 alone takes 300 ms
    const auto& last = reports.back();
    REQUIRE(last.size() == 3);
    CHECK(last[0].name == "source");
    CHECK(last[1].name == "stage 1");
    CHECK(last[1].in == 300);
    CHECK(last[2].name == "sink");
    CHECK(last[2].in == 300);
    CHECK(reports.front()[2].in < 300);  // an early report saw the run unfinished
}

TEST_CASE("the progress line shows each element's counts and rate") {
    const std::vector<multiworker::StageProgress> stages{{"source", 300, 300, 0, 150.0}, {"whois", 300, 297, 3, 99.5}};
    CHECK(multiworker::format_stage_progress(stages) ==
          "source 300 in, 300 out, 0 failed, 150.0/s | whois 300 in, 297 out, 3 failed, 99.5/s");
}

TEST_CASE("progress_bar draws every element's progress on stderr - in both modes") {
    test_support::Watchdog watchdog{60s};
    const auto drawn = [](bool in_process) {
        const std::string path = "/tmp/multiworker_test_progress_bar_" + std::to_string(::getpid());
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        REQUIRE(fd >= 0);
        {
            test_support::Redirect redirect{STDERR_FILENO, fd};  // not a terminal: plain lines
            multiworker::Pipeline pipeline{
                multiworker::PipelineOptions{.in_process = in_process, .progress_bar = true, .progress_interval = 20ms},
                multiworker::from(numbers(300)), multiworker::stage<&SlowFirst::apply>(SlowFirst{}, {.workers = 2}),
                multiworker::sink<&Count::add, &Count::finish>(Count{})};
            CHECK(pipeline.run().value() == 300);
        }
        ::close(fd);
        std::ifstream in{path};
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);) lines.push_back(line);
        std::remove(path.c_str());
        return lines;
    };
    for (const bool in_process : {false, true}) {
        const std::vector<std::string> lines = drawn(in_process);
        REQUIRE(!lines.empty());
        // The run takes at least 300 ms, reported on every 20 ms, and a plain line is
        // drawn every 2 s at most: the first report's, then the last at the end
        // (in-process: one report, at the end).
        if (in_process) {
            CHECK(lines.size() == 1);
        } else {
            CHECK(lines.size() >= 2);
        }
        CHECK_THAT(lines.back(), Catch::Matchers::StartsWith("progress: source 300 in, 300 out, 0 failed, "));
        CHECK_THAT(lines.back(), Catch::Matchers::Contains(" | stage 1 300 in, 300 out, 0 failed, "));
        CHECK_THAT(lines.back(), Catch::Matchers::Contains(" | sink 300 in, "));
    }
}
