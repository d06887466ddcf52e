// Pipelines when things go wrong: a method that throws, a stage worker that
// dies in each way a process can, a source or a sink that fails, early stops
// from a stage, from the sink and from another thread. Each run must end
// (no hang), account for every item, name what failed and leave no process.

#include "pipeline_support.hpp"
#include "support.hpp"

#include <multiworker/multiworker.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using multiworker::Emit;
using test_support::check_accounting;
using test_support::numbers;

namespace {

struct Count {
    long long n = 0;
    void add(const int&) { ++n; }
    long long finish() { return n; }
};

/// Fails item 7 (and only it) in the way `how` names.
struct Fails {
    int how = 0;
    int apply(const int& x) {
        if (x != 7) return x;
        switch (how) {
            case 0:
                throw std::runtime_error{"seven is unlucky"};
            case 1:
                ::raise(SIGKILL);
                break;
            case 2:
                std::abort();
            case 3:
                std::exit(3);
            case 4:
                ::raise(SIGSEGV);
                break;
        }
        return x;
    }
};

}  // namespace

TEST_CASE("an item whose method throws is recorded with its stage - position - type and message - the rest go on") {
    test_support::Watchdog watchdog{60s};
    multiworker::Pipeline pipeline{multiworker::from(numbers(100)),
                                   multiworker::stage<&Fails::apply>(Fails{0}, {.workers = 2, .name = "lucky"}),
                                   multiworker::sink<&Count::add, &Count::finish>(Count{})};
    auto result = pipeline.run();
    CHECK(result.value() == 99);
    REQUIRE(result.errors().size() == 1);
    const multiworker::ItemError& error = result.errors()[0];
    CHECK(error.element == 1);
    CHECK(error.element_name == "lucky");
    CHECK(error.error.kind() == multiworker::ErrorKind::exception);
    CHECK(error.error.task().value() == 8);  // the 8th item into the stage
    CHECK(error.error.type_name() == "std::runtime_error");
    CHECK(error.error.message() == "seven is unlucky");
    CHECK(result.stats()[1].failed == 1);
    check_accounting(result.stats());
}

TEST_CASE("under OnError::stop the first error ends the run and run() throws PipelineError naming it") {
    test_support::Watchdog watchdog{60s};
    multiworker::Pipeline pipeline{multiworker::PipelineOptions{.on_error = multiworker::OnError::stop},
                                   multiworker::from(numbers(100'000)),
                                   multiworker::stage<&Fails::apply>(Fails{0}, {.workers = 2}),
                                   multiworker::sink<&Count::add, &Count::finish>(Count{})};
    try {
        pipeline.run();
        FAIL("run() returned");
    } catch (const multiworker::PipelineError& e) {
        CHECK_THAT(e.what(), Contains("stage 1") && Contains("seven is unlucky"));
        REQUIRE(e.errors().size() == 1);
    }
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("a stage worker that dies has its item retried - then reported - the worker is replaced") {
    test_support::Watchdog watchdog{120s};
    const char* names[] = {"", "SIGKILL", "abort", "exit(3)", "SIGSEGV"};
    for (int how = 1; how <= 4; ++how) {
        DYNAMIC_SECTION(names[how]) {
            multiworker::Pipeline pipeline{multiworker::from(numbers(200)),
                                           multiworker::stage<&Fails::apply>(Fails{how}, {.workers = 2, .retries = 1}),
                                           multiworker::sink<&Count::add, &Count::finish>(Count{})};
            auto result = pipeline.run();
            CHECK(result.value() == 199);
            REQUIRE(result.errors().size() == 1);
            {
                const multiworker::TaskError& error = result.errors()[0].error;
                CHECK(error.kind() == multiworker::ErrorKind::worker_died);
                CHECK(error.task().value() == 8);
                const std::string expected = how == 1   ? "SIGKILL"
                                             : how == 2 ? "SIGABRT"
                                             : how == 3 ? "exited with status 3"
                                                        : "SIGSEGV";
                CHECK_THAT(error.what(), Contains(expected));
            }
            CHECK(result.stats()[1].retried == 1);  // the item killed retries + 1 = 2 workers
            check_accounting(result.stats());
            CHECK(test_support::child_pids().empty());
        }
    }
}

namespace {

struct BadSource {
    int how = 0;
    void read(Emit<int>& out) {
        for (int i = 0; i < 50; ++i) out.emit(i);
        if (how == 0) throw std::runtime_error{"the log is gone"};
        std::abort();
    }
};

struct Identity {
    int apply(const int& x) { return x; }
};

struct BadSink {
    int how = 0;
    void add(const int& x) {
        if (x != 20) return;
        if (how == 0) throw std::invalid_argument{"no room for twenty"};
        ::raise(SIGKILL);
    }
    int finish() { return 1; }
};

}  // namespace

TEST_CASE("a source that throws or dies ends the run with a PipelineError naming the source") {
    test_support::Watchdog watchdog{60s};
    for (int how = 0; how <= 1; ++how) {
        multiworker::Pipeline pipeline{multiworker::source<&BadSource::read>(BadSource{how}),
                                       multiworker::stage<&Identity::apply>(Identity{}, {.workers = 2}),
                                       multiworker::sink<&Count::add, &Count::finish>(Count{})};
        try {
            pipeline.run();
            FAIL("run() returned");
        } catch (const multiworker::PipelineError& e) {
            CHECK_THAT(e.what(), Contains("source"));
            CHECK_THAT(e.what(), Contains(how == 0 ? "the log is gone" : "SIGABRT"));
        }
        CHECK(test_support::child_pids().empty());
    }
}

TEST_CASE("a sink that throws or dies ends the run with a PipelineError naming the sink") {
    test_support::Watchdog watchdog{60s};
    for (int how = 0; how <= 1; ++how) {
        multiworker::Pipeline pipeline{multiworker::from(numbers(10'000)),
                                       multiworker::stage<&Identity::apply>(Identity{}, {.workers = 2}),
                                       multiworker::sink<&BadSink::add, &BadSink::finish>(BadSink{how})};
        try {
            pipeline.run();
            FAIL("run() returned");
        } catch (const multiworker::PipelineError& e) {
            CHECK_THAT(e.what(), Contains("sink"));
            CHECK_THAT(e.what(), Contains(how == 0 ? "no room for twenty" : "SIGKILL"));
        }
        CHECK(test_support::child_pids().empty());
    }
}

namespace {

/// Ends the run when it sees 500.
struct StopsAt500 {
    void pass(const int& x, Emit<int>& out) {
        if (x == 500) out.stop();
        out.emit(x);
    }
};

/// Ends the run after 100 items.
struct TakesHundred {
    long long n = 0;
    bool add(const int&) { return ++n < 100; }
    long long finish() { return n; }
};

/// Emits until told to stop.
struct Endless {
    void read(Emit<int>& out) {
        for (int i = 0; !out.stopped(); ++i) out.emit(i);
    }
};

}  // namespace

TEST_CASE("a stage - the sink or another thread can end the run early - finish() runs - nothing hangs") {
    test_support::Watchdog watchdog{60s};
    SECTION("from a stage, by Emit::stop()") {
        multiworker::Pipeline pipeline{multiworker::from(numbers(1'000'000)),
                                       multiworker::stage<&StopsAt500::pass>(StopsAt500{}, {.workers = 2}),
                                       multiworker::sink<&Count::add, &Count::finish>(Count{})};
        auto result = pipeline.run();
        CHECK(result.value() < 1'000'000);
        CHECK(result.stats()[1].unprocessed + result.stats()[2].unprocessed > 0);
        CHECK(result.stats()[0].out < 1'000'000);  // the range was not read to its end
        check_accounting(result.stats());
    }
    SECTION("from the sink, by add() returning false") {
        multiworker::Pipeline pipeline{multiworker::source<&Endless::read>(Endless{}),
                                       multiworker::stage<&Identity::apply>(Identity{}, {.workers = 2}),
                                       multiworker::sink<&TakesHundred::add, &TakesHundred::finish>(TakesHundred{})};
        auto result = pipeline.run();
        CHECK(result.value() == 100);
        CHECK(result.stats()[2].completed == 100);
        check_accounting(result.stats());
    }
    SECTION("from another thread, by stop()") {
        multiworker::Pipeline pipeline{multiworker::source<&Endless::read>(Endless{}),
                                       multiworker::stage<&Identity::apply>(Identity{}, {.workers = 2}),
                                       multiworker::sink<&Count::add, &Count::finish>(Count{})};
        pipeline.start();
        std::thread stopper{[&pipeline] {
            std::this_thread::sleep_for(200ms);
            pipeline.stop();
        }};
        auto result = pipeline.run();
        stopper.join();
        CHECK(result.value() > 0);
        check_accounting(result.stats());
    }
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("a pipeline destroyed while it runs stops and reaps every process") {
    test_support::Watchdog watchdog{60s};
    {
        multiworker::Pipeline pipeline{multiworker::PipelineOptions{.stop_timeout = 1s},
                                       multiworker::source<&Endless::read>(Endless{}),
                                       multiworker::stage<&Identity::apply>(Identity{}, {.workers = 2}),
                                       multiworker::sink<&Count::add, &Count::finish>(Count{})};
        pipeline.start();
        std::this_thread::sleep_for(100ms);
    }
    CHECK(test_support::child_pids().empty());
}

namespace {

/// Publishes each worker's pid in the first free counter (source, stage workers, sink).
struct Registers {
    std::atomic<long long>* pids = nullptr;
    void on_worker_start() {
        for (int i = 0; i < 8; ++i) {
            long long free = 0;
            if (pids[i].compare_exchange_strong(free, ::getpid())) return;
        }
    }
};

struct RegisteredEndless : Registers {
    void read(Emit<int>& out) {
        for (int i = 0; !out.stopped(); ++i) out.emit(i);
    }
};

struct RegisteredIdentity : Registers {
    int apply(const int& x) { return x; }
};

struct RegisteredCount : Registers {
    void add(const int&) {}
};

}  // namespace

TEST_CASE("a parent killed by a signal while its pipeline runs leaves no process of it alive a second later") {
    test_support::Watchdog watchdog{60s};
    const int signal = GENERATE(SIGKILL, SIGTERM, SIGINT);
    test_support::SharedCounters pids{8};
    pid_t parent = ::fork();
    REQUIRE(parent >= 0);
    if (parent == 0) {
        // Stands in for a user's program: it must not outlive the test, nor return into the framework.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        ::signal(SIGTERM, SIG_DFL);
        ::signal(SIGINT, SIG_DFL);
        try {
            multiworker::Pipeline pipeline{
                multiworker::source<&RegisteredEndless::read>(RegisteredEndless{{&pids[0]}}),
                multiworker::stage<&RegisteredIdentity::apply>(RegisteredIdentity{{&pids[0]}}, {.workers = 2}),
                multiworker::sink<&RegisteredCount::add>(RegisteredCount{{&pids[0]}})};
            pipeline.start();
            for (;;) ::pause();
        } catch (...) {
            ::_exit(4);
        }
    }
    const std::unique_ptr<pid_t, void (*)(pid_t*)> reaper{&parent, [](pid_t* pid) {
                                                              if (*pid <= 0) return;
                                                              ::kill(*pid, SIGKILL);
                                                              ::waitpid(*pid, nullptr, 0);
                                                          }};
    std::vector<pid_t> workers;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (workers.size() < 4) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::sleep_for(1ms);
        workers.clear();
        for (int i = 0; i < 8; ++i) {
            if (pids[static_cast<std::size_t>(i)].load() != 0)
                workers.push_back(static_cast<pid_t>(pids[static_cast<std::size_t>(i)].load()));
        }
    }
    for (pid_t pid : workers) REQUIRE(test_support::process_alive(pid));
    REQUIRE(::kill(parent, signal) == 0);
    REQUIRE(::waitpid(parent, nullptr, 0) == parent);
    parent = 0;
    std::this_thread::sleep_for(1s);
    for (pid_t pid : workers) CHECK_FALSE(test_support::process_alive(pid));
}
