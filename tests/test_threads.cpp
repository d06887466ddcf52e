// Backend::threads: worker threads of the calling process, each on its own
// copy of the object, with the results and errors worker processes give, and
// a clear error for every option a thread cannot honour.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

namespace {

using namespace std::chrono_literals;
using multiworker::Backend;
using multiworker::ErrorKind;

multiworker::Options threads(unsigned workers) {
    return {.workers = workers, .backend = Backend::threads};
}

// Counts the calls on each copy: state that lives on between one thread's
// calls, and that no other thread sees.
struct CallCounter {
    int calls = 0;
    std::pair<int, std::size_t> count(int /*task*/) {
        std::this_thread::sleep_for(1ms);  // long enough that both threads take tasks
        return {++calls, std::hash<std::thread::id>{}(std::this_thread::get_id())};
    }
};

struct Fallible {
    int twice(int x) {
        if (x < 0) throw std::domain_error{"negative: " + std::to_string(x)};
        return 2 * x;
    }
};

// Fails the first `failures` calls on each copy.
struct FlakyOnce {
    int failures = 1;
    int run(int x) {
        if (failures-- > 0) throw std::runtime_error{"flaky"};
        return x;
    }
};

// Records its hooks in a log the test reads; shared by every copy.
struct Hooked {
    std::shared_ptr<std::mutex> mutex = std::make_shared<std::mutex>();
    std::shared_ptr<std::vector<std::string>> log = std::make_shared<std::vector<std::string>>();
    bool throw_on_start = false;
    void on_worker_start() {
        if (throw_on_start) throw std::runtime_error{"no connection"};
        std::lock_guard lock{*mutex};
        log->push_back("start");
    }
    void on_worker_exit() {
        std::lock_guard lock{*mutex};
        log->push_back("exit");
    }
    int calls = 0;
    int id(int /*x*/) { return ++calls; }  // the count of calls on this copy
};

struct Sleepy {
    std::shared_ptr<std::atomic<int>> finished = std::make_shared<std::atomic<int>>(0);
    int nap(int ms) {
        std::this_thread::sleep_for(std::chrono::milliseconds{ms});
        ++*finished;
        return ms;
    }
};

}  // namespace

TEST_CASE("threads run every task on copies of the object in the calling process") {
    test_support::Watchdog watchdog{60s};
    CallCounter original;
    multiworker::Processor<CallCounter, &CallCounter::count> processor{original, threads(2)};
    CHECK(processor.backend() == Backend::threads);
    CHECK_FALSE(processor.in_process());
    for (int i = 0; i < 200; ++i) processor.add(i);
    processor.start();
    CHECK(test_support::child_pids().empty());
    processor.wait();
    auto results = processor.get_results();
    REQUIRE(results.size() == 200);
    std::map<std::size_t, int> highest_call_per_thread;
    for (const auto& result : results) {
        REQUIRE(result.ok());
        auto& highest = highest_call_per_thread[result.value().second];
        highest = std::max(highest, result.value().first);
    }
    // Each thread counted its own calls from 1: the counts add up to every task.
    CHECK(highest_call_per_thread.size() == 2);
    int total = 0;
    for (const auto& [thread, calls] : highest_call_per_thread) total += calls;
    CHECK(total == 200);
    CHECK(processor.object().calls == 0);  // the Processor's own object ran nothing
}

TEST_CASE("threads report what the method throws and retry it when asked") {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<Fallible, &Fallible::twice> processor{Fallible{}, threads(2)};
    processor.start();
    const auto good = processor.add(21);
    const auto bad = processor.add(-1);
    processor.wait();
    for (const auto& result : processor.get_results()) {
        if (result.id() == good) {
            CHECK(result.value() == 42);
        } else {
            REQUIRE(result.id() == bad);
            REQUIRE_FALSE(result.ok());
            CHECK(result.error().kind() == ErrorKind::exception);
            CHECK(result.error().type_name() == "std::domain_error");
            CHECK(result.error().message() == "negative: -1");
            CHECK(result.error().worker_pid() == ::getpid());
            CHECK(result.error().worker_index() >= 0);
        }
    }

    auto options = threads(1);
    options.retries = 1;
    options.retry_exceptions = true;
    multiworker::Processor<FlakyOnce, &FlakyOnce::run> flaky{FlakyOnce{}, options};
    flaky.add(7);
    flaky.start();
    flaky.wait();
    auto results = flaky.get_results();
    REQUIRE(results.size() == 1);
    CHECK(results[0].value() == 7);
}

TEST_CASE("each thread calls the hooks on its copy and a fresh copy after max_tasks_per_worker") {
    test_support::Watchdog watchdog{60s};
    Hooked hooked;
    auto options = threads(2);
    options.max_tasks_per_worker = 5;
    {
        multiworker::Processor<Hooked, &Hooked::id> processor{hooked, options};
        for (int i = 0; i < 20; ++i) processor.add(i);
        processor.start();
        processor.wait();
        const auto results = processor.get_results();
        REQUIRE(results.size() == 20);
        for (const auto& result : results) CHECK(result.value() <= 5);  // no copy ran more than 5
    }
    // 20 tasks, at most 5 per copy: at least 4 copies, each started and ended once.
    const auto starts = std::count(hooked.log->begin(), hooked.log->end(), "start");
    CHECK(starts >= 4);
    CHECK(std::count(hooked.log->begin(), hooked.log->end(), "exit") == starts);
}

TEST_CASE("when every thread's on_worker_start throws the tasks get no_worker errors") {
    test_support::Watchdog watchdog{60s};
    Hooked hooked;
    hooked.throw_on_start = true;
    multiworker::Processor<Hooked, &Hooked::id> processor{hooked, threads(2)};
    processor.add(1);
    processor.start();
    processor.add(2);
    processor.wait();
    auto results = processor.get_results();
    REQUIRE(results.size() == 2);
    for (const auto& result : results) {
        REQUIRE_FALSE(result.ok());
        CHECK(result.error().kind() == ErrorKind::no_worker);
        CHECK_THAT(result.error().message(),
                   Catch::Contains("on_worker_start threw std::runtime_error: no connection"));
    }
}

TEST_CASE("options a thread cannot honour are rejected at construction") {
    const auto rejected = [](multiworker::Options options, const std::string& naming) {
        try {
            multiworker::Processor<Fallible, &Fallible::twice> processor{Fallible{}, options};
            FAIL("accepted options that name " << naming);
        } catch (const std::invalid_argument& e) {
            CHECK_THAT(e.what(), Catch::Contains(naming) && Catch::Contains("Backend::threads"));
        }
    };
    auto options = threads(2);
    options.task_timeout = 1s;
    rejected(options, "task_timeout");
    options = threads(2);
    options.debug_worker = 0;
    rejected(options, "debug_worker");
    options = threads(2);
    options.worker_output = multiworker::WorkerOutput::log;
    rejected(options, "worker_output");
    options = threads(2);
    options.log_file = "/tmp/never-written.log";
    rejected(options, "log_file");
}

TEST_CASE("stop() waits for running tasks on threads and cancels the rest") {
    test_support::Watchdog watchdog{60s};
    Sleepy sleepy;
    auto options = threads(2);
    options.stop_timeout = 0ms;  // a thread cannot be killed: its task still finishes
    multiworker::Processor<Sleepy, &Sleepy::nap> processor{sleepy, options};
    processor.start();
    processor.add(200);
    processor.add(200);
    for (int i = 0; i < 10; ++i) processor.add(200);
    std::this_thread::sleep_for(50ms);
    processor.stop();
    CHECK(*sleepy.finished == 2);
    CHECK(processor.done());
    CHECK(processor.get_results().size() == 2);
}

TEST_CASE("max_pending bounds the queue of the threads") {
    test_support::Watchdog watchdog{60s};
    auto options = threads(2);
    options.max_pending = 8;
    multiworker::Processor<Fallible, &Fallible::twice> processor{Fallible{}, options};
    for (int i = 0; i < 8; ++i) processor.add(i);
    CHECK_THROWS_AS(processor.add(9), std::logic_error);  // would wait forever before start()
    processor.start();
    for (int i = 0; i < 10'000; ++i) processor.add(i);
    processor.wait();
    CHECK(processor.get_results().size() == 10'008);
}

TEST_CASE("MULTIWORKER_BACKEND chooses the backend and a wrong name is an error") {
    ::setenv("MULTIWORKER_BACKEND", "threads", 1);
    multiworker::Processor<Fallible, &Fallible::twice> on_threads{Fallible{}, {.workers = 2}};
    CHECK(on_threads.backend() == Backend::threads);
    multiworker::Processor<Fallible, &Fallible::twice> none{Fallible{}, {.workers = 0}};
    CHECK(none.backend() == Backend::in_process);  // workers = 0 always runs in-process
    ::setenv("MULTIWORKER_BACKEND", "cluster", 1);
    CHECK_THROWS_WITH((multiworker::Processor<Fallible, &Fallible::twice>{Fallible{}, {.workers = 2}}),
                      Catch::Contains("MULTIWORKER_BACKEND=cluster names no backend"));
    ::unsetenv("MULTIWORKER_BACKEND");
}
