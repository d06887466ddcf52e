// In-process mode (workers = 0): the same Processor runs every task in the
// calling thread, with no fork, and gives the same results as worker processes.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>

namespace {

using namespace std::chrono_literals;

struct Tokenizer {
    int calls = 0;
    std::vector<std::string> split(const std::string& text, char separator) {
        ++calls;
        if (text.empty()) throw std::invalid_argument{"empty text"};
        std::vector<std::string> parts(1);
        for (char c : text) {
            if (c == separator) {
                parts.emplace_back();
            } else {
                parts.back() += c;
            }
        }
        return parts;
    }
};

struct Where {
    std::pair<int, std::size_t> pid_and_thread() const {
        return {static_cast<int>(::getpid()), std::hash<std::thread::id>{}(std::this_thread::get_id())};
    }
};

template <class P>
auto sorted_results(P& processor) {
    auto results = processor.get_results();
    std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.id() < b.id(); });
    return results;
}

}  // namespace

TEST_CASE("in-process mode runs in the calling thread without forking") {
    multiworker::Processor<Where, &Where::pid_and_thread> processor{Where{}, {.workers = 0}};
    CHECK(processor.in_process());
    processor.add();
    processor.start();
    CHECK(test_support::child_pids().empty());
    processor.add();  // after start(): runs inside add()
    CHECK(processor.done());
    for (const auto& result : processor.get_results()) {
        CHECK(result.value().first == static_cast<int>(::getpid()));
        CHECK(result.value().second == std::hash<std::thread::id>{}(std::this_thread::get_id()));
    }
}

TEST_CASE("in-process mode calls the Processor's own object") {
    multiworker::Processor<Tokenizer, &Tokenizer::split> processor{Tokenizer{}, {.workers = 0}};
    processor.add("a,b", ',');
    processor.add("c", ',');
    processor.start();
    CHECK(processor.object().calls == 2);
}

TEST_CASE("in-process and worker processes give identical results and errors") {
    test_support::Watchdog watchdog{60s};
    const std::vector<std::pair<std::string, char>> inputs{
        {"a,b,c", ','}, {"", ','}, {"one two", ' '}, {"x", ';'}, {"::", ':'}};
    auto run = [&](unsigned workers) {
        multiworker::Processor<Tokenizer, &Tokenizer::split> processor{Tokenizer{}, {.workers = workers}};
        for (const auto& [text, separator] : inputs) processor.add(text, separator);
        processor.start();
        processor.wait();
        return sorted_results(processor);
    };
    const auto in_process = run(0);
    const auto forked = run(2);
    REQUIRE(in_process.size() == inputs.size());
    REQUIRE(forked.size() == inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        CHECK(in_process[i].id() == forked[i].id());
        REQUIRE(in_process[i].ok() == forked[i].ok());
        if (in_process[i].ok()) {
            CHECK(in_process[i].value() == forked[i].value());
        } else {
            CHECK(in_process[i].error().type_name() == forked[i].error().type_name());
            CHECK(in_process[i].error().message() == forked[i].error().message());
        }
    }
    CHECK(in_process[1].error().message() == "empty text");
}

TEST_CASE("in-process tasks added from several threads run one at a time") {
    test_support::Watchdog watchdog{60s};
    struct Exclusive {
        std::shared_ptr<std::atomic<int>> inside = std::make_shared<std::atomic<int>>(0);
        int enter(int x) const {
            const int others = inside->fetch_add(1);
            std::this_thread::sleep_for(std::chrono::microseconds{200});
            inside->fetch_sub(1);
            return others == 0 ? x : -1;  // -1: another call ran at the same time
        }
    };
    multiworker::Processor<Exclusive, &Exclusive::enter> processor{Exclusive{}, {.workers = 0}};
    processor.start();
    std::vector<std::thread> adders;
    for (int t = 0; t < 4; ++t) {
        adders.emplace_back([&processor] {
            for (int i = 0; i < 50; ++i) processor.add(i);
        });
    }
    for (auto& adder : adders) adder.join();
    const auto results = processor.get_results();
    REQUIRE(results.size() == 200);
    for (const auto& result : results) CHECK(result.value() >= 0);
}

namespace {

/// A worker whose on_worker_start fails, as when a connection cannot be opened.
struct Unstartable {
    void on_worker_start() { throw std::runtime_error{"cannot connect"}; }
    int twice(int x) const { return 2 * x; }
};

/// Throws on its first call in each copy of the object, then works.
struct FlakyOnce {
    bool called = false;
    int call(int x) {
        if (!std::exchange(called, true)) throw std::runtime_error{"first call fails"};
        return x;
    }
};

}  // namespace

TEST_CASE("in-process: an on_worker_start that throws gives every task a no_worker error, as with workers") {
    test_support::Watchdog watchdog{60s};
    auto run = [](unsigned workers) {
        multiworker::Processor<Unstartable, &Unstartable::twice> processor{
            Unstartable{}, {.workers = workers, .log_level = spdlog::level::off}};
        processor.add(1);
        processor.start();  // returns: the failure is the tasks' outcome
        processor.add(2);
        processor.wait();  // and nothing blocks
        CHECK(processor.done());
        return sorted_results(processor);
    };
    const auto in_process = run(0);
    const auto forked = run(1);
    REQUIRE(in_process.size() == 2);
    REQUIRE(forked.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        REQUIRE_FALSE(in_process[i].ok());
        REQUIRE_FALSE(forked[i].ok());
        CHECK(in_process[i].error().kind() == multiworker::ErrorKind::no_worker);
        CHECK(forked[i].error().kind() == multiworker::ErrorKind::no_worker);
        CHECK_THAT(in_process[i].error().what(),
                   Catch::Contains("on_worker_start threw std::runtime_error: cannot connect"));
    }
}

TEST_CASE("in-process: options it cannot honour are refused at construction, saying why") {
    using P = multiworker::Processor<Tokenizer, &Tokenizer::split>;
    CHECK_THROWS_WITH((P{Tokenizer{}, {.workers = 0, .task_timeout = std::chrono::milliseconds{100}}}),
                      Catch::Contains("Options::task_timeout needs worker processes") &&
                          Catch::Contains("nothing can stop it at a deadline"));
    CHECK_THROWS_WITH((P{Tokenizer{}, {.workers = 0, .max_tasks_per_worker = 10}}),
                      Catch::Contains("Options::max_tasks_per_worker needs worker processes"));
    CHECK_NOTHROW(P{Tokenizer{}, {.workers = 1, .task_timeout = std::chrono::milliseconds{100}}});
}

TEST_CASE("in-process: retry_exceptions retries a throwing task, as with workers") {
    test_support::Watchdog watchdog{60s};
    for (const unsigned workers : {0u, 1u}) {
        INFO("workers " << workers);
        multiworker::Processor<FlakyOnce, &FlakyOnce::call> processor{
            FlakyOnce{}, {.workers = workers, .log_level = spdlog::level::off, .retries = 1, .retry_exceptions = true}};
        processor.add(5);
        processor.start();
        processor.wait();
        auto results = processor.get_results();
        REQUIRE(results.size() == 1);
        REQUIRE(results[0].ok());
        CHECK(results[0].value() == 5);
    }
}
