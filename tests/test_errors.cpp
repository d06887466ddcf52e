// Failures become results: a throwing method, a crashing or exiting worker,
// a result that does not decode. The parent never crashes or hangs.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <set>
#include <stdexcept>

namespace {

using namespace std::chrono_literals;
using multiworker::ErrorKind;

// Workers crash on purpose here; keep them from writing core files.
const bool core_files_disabled = [] {
    const rlimit none{0, 0};
    return ::setrlimit(RLIMIT_CORE, &none) == 0;
}();

struct ParseError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Faulty {
    enum Action { succeed, throw_std, throw_custom, throw_int, abort_process, exit_process, segfault };

    std::pair<int, int> act(int action, int value) const {
        switch (action) {
            case throw_std:
                throw std::out_of_range{"value " + std::to_string(value) + " out of range"};
            case throw_custom:
                throw ParseError{"cannot parse"};
            case throw_int:
                throw 42;
            case abort_process:
                std::abort();
            case exit_process:
                std::exit(3);
            case segfault:
                std::raise(SIGSEGV);
                break;
            default:
                break;
        }
        return {value, static_cast<int>(::getpid())};
    }
};

using FaultyProcessor = multiworker::Processor<Faulty, &Faulty::act>;

template <class Results>
auto by_id(Results results) {
    std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.id() < b.id(); });
    return results;
}

/// A value whose decoding fails in the parent: it saves fine and refuses to load.
struct Unloadable {
    template <class Archive>
    void save(Archive& archive, unsigned /*version*/) const {
        archive << payload;
    }
    template <class Archive>
    void load(Archive& /*archive*/, unsigned /*version*/) {
        throw std::runtime_error{"refusing to load"};
    }
    BOOST_SERIALIZATION_SPLIT_MEMBER()
    int payload = 1;
};

struct MakesUnloadable {
    Unloadable make(int) const { return {}; }
};

}  // namespace

TEST_CASE("a throwing method yields an error naming the exception - and the worker serves on", "[worker_count]") {
    for (unsigned workers : {0u, 1u}) {
        test_support::Watchdog watchdog{60s};
        FaultyProcessor processor{Faulty{}, {.workers = workers}};
        processor.add(Faulty::succeed, 1);
        const auto failing = processor.add(Faulty::throw_std, 2);
        processor.add(Faulty::throw_custom, 3);
        processor.add(Faulty::throw_int, 4);
        processor.add(Faulty::succeed, 5);
        processor.start();
        processor.wait();
        const auto results = by_id(processor.get_results());
        REQUIRE(results.size() == 5);

        const auto& error = results[1].error();
        CHECK(error.kind() == ErrorKind::exception);
        CHECK(error.task() == failing);
        CHECK(error.type_name() == "std::out_of_range");
        CHECK(error.message() == "value 2 out of range");
        CHECK(error.worker_index() == 0);
        CHECK(error.worker_pid() == results[0].value().second);
        CHECK_THAT(error.what(), Catch::Contains("threw std::out_of_range") &&
                                     Catch::Contains("value 2 out of range") &&
                                     Catch::Contains("worker 0 (pid " + std::to_string(error.worker_pid()) + ")"));
        CHECK_THROWS_WITH(results[1].value(), Catch::Contains("value 2 out of range"));

        CHECK_THAT(results[2].error().type_name(), Catch::Contains("ParseError"));
        CHECK(results[3].error().type_name() == "int");
        // The same worker process served the tasks after the exceptions.
        CHECK(results[4].value() == std::pair{5, results[0].value().second});
        CHECK_THROWS_AS(results[0].error(), std::logic_error);
    }
}

namespace {

// Named in the traces the tests below look for; noinline: a frame of its own.
[[noreturn]] __attribute__((noinline)) void throw_from_deep_inside(int x) {
    throw std::invalid_argument{"bad input " + std::to_string(x)};
}

struct DeepThrower {
    int run(int x) {
        if (x >= 0) throw_from_deep_inside(x);
        return x;
    }
};

using DeepThrowerProcessor = multiworker::Processor<DeepThrower, &DeepThrower::run>;

}  // namespace

TEST_CASE("a task's exception carries the stack where it was thrown") {
    test_support::Watchdog watchdog{60s};
    DeepThrowerProcessor processor{DeepThrower{}, {.workers = 1}};
    processor.start();
    processor.add(3);
    const auto result = processor.pop_result(30s);
    REQUIRE(result.has_value());
    REQUIRE(!result->ok());
    CHECK(result->error().message() == "bad input 3");
    const std::string trace = result->error().stack_trace();
    INFO(trace);
    CHECK_THAT(trace, Catch::StartsWith("#0 ") && Catch::Contains("throw_from_deep_inside(int)"));
    CHECK_THAT(trace, !Catch::Contains("multiworker::") && !Catch::Contains("__cxa_throw"));
    CHECK(result->error().stack_trace() == trace);  // symbolized once, the same every time
}

TEST_CASE("exception_stack_traces = false captures no stack") {
    test_support::Watchdog watchdog{60s};
    multiworker::Options options{.workers = 1};
    options.exception_stack_traces = false;
    DeepThrowerProcessor processor{DeepThrower{}, options};
    processor.start();
    processor.add(3);
    const auto result = processor.pop_result(30s);
    REQUIRE(result.has_value());
    REQUIRE(!result->ok());
    CHECK(result->error().message() == "bad input 3");
    CHECK(result->error().stack_trace().empty());
}

TEST_CASE("a worker that dies yields an error for its task - the others finish the rest", "[processes]") {
    test_support::Watchdog watchdog{60s};
    const auto [action, description] = GENERATE(table<int, std::string>({
        {Faulty::abort_process, "was killed by SIGABRT"},
        {Faulty::segfault, "was killed by SIGSEGV"},
        {Faulty::exit_process, "exited with status 3"},
    }));
    FaultyProcessor processor{Faulty{}, {.workers = 3}};
    for (int i = 0; i < 30; ++i) processor.add(Faulty::succeed, i);
    const auto fatal = processor.add(action, 99);
    for (int i = 30; i < 60; ++i) processor.add(Faulty::succeed, i);
    processor.start();
    processor.wait();
    const auto results = by_id(processor.get_results());
    REQUIRE(results.size() == 61);
    std::set<int> values;
    for (const auto& result : results) {
        if (result.id() == fatal) {
            REQUIRE_FALSE(result.ok());
            CHECK(result.error().kind() == ErrorKind::worker_died);
            CHECK_THAT(result.error().what(),
                       Catch::Contains(description) && Catch::Contains("task " + std::to_string(fatal.value())));
        } else {
            INFO((result.ok() ? "" : result.error().what()));
            REQUIRE(result.ok());
            values.insert(result.value().first);
        }
    }
    CHECK(values.size() == 60);
}

TEST_CASE("a worker that dies in every task is replaced every time", "[processes]") {
    test_support::Watchdog watchdog{60s};
    FaultyProcessor processor{Faulty{}, {.workers = 2}};
    for (int i = 0; i < 10; ++i) processor.add(Faulty::abort_process, i);
    processor.add(Faulty::succeed, 10);
    processor.start();
    processor.wait();
    auto results = by_id(processor.get_results());
    REQUIRE(results.size() == 11);
    std::set<pid_t> pids;
    for (int i = 0; i < 10; ++i) {
        REQUIRE_FALSE(results[static_cast<std::size_t>(i)].ok());
        CHECK(results[static_cast<std::size_t>(i)].error().kind() == ErrorKind::worker_died);
        pids.insert(results[static_cast<std::size_t>(i)].error().worker_pid());
    }
    CHECK(pids.size() == 10);  // ten different processes died
    CHECK(results[10].ok());
}

TEST_CASE("a result that fails to decode becomes a bad_message error") {
    for (unsigned workers : {0u, 1u}) {
        test_support::Watchdog watchdog{60s};
        multiworker::Processor<MakesUnloadable, &MakesUnloadable::make> processor{MakesUnloadable{},
                                                                                  {.workers = workers}};
        processor.add(1);
        processor.start();
        auto result = processor.pop_result(30s);
        REQUIRE(result);
        REQUIRE_FALSE(result->ok());
        CHECK(result->error().kind() == ErrorKind::bad_message);
        CHECK_THAT(result->error().what(),
                   Catch::Contains("could not be decoded") && Catch::Contains("refusing to load"));
    }
}

TEST_CASE("a result that cannot be sent is not mistaken for a failure of the method") {
    using multiworker::detail::EncodedView;
    using multiworker::detail::execute_task;
    using multiworker::detail::ResultSender;
    const multiworker::detail::TaskRunner returns = [](std::span<const char>, const ResultSender& send) {
        send(EncodedView{std::span<const char>{"value", 5}, {}});
    };
    const multiworker::detail::TaskRunner throws = [](std::span<const char>, const ResultSender&) {
        throw ParseError{"bad input"};
    };
    int reports = 0;
    const auto broken_ring = [&reports](bool ok, const EncodedView&) {
        if (ok) throw std::runtime_error{"ring corrupted"};
        ++reports;
    };
    // The sender's own failure propagates: half a result cannot become a report.
    CHECK_THROWS_WITH(execute_task(returns, {}, broken_ring), "ring corrupted");
    CHECK(reports == 0);
    // The method's failure is reported, once.
    execute_task(throws, {}, broken_ring);
    CHECK(reports == 1);
}
