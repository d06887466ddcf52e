// Every family of method the Processor accepts gives correct results, both in
// worker processes and in-process, and the two modes agree.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// Runs `Method` over `inputs` with `workers` workers; returns results sorted by TaskId.
template <class T, auto Method, class... Inputs>
auto run_tasks(const T& object, unsigned workers, const std::vector<std::tuple<Inputs...>>& inputs) {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<T, Method> processor{object, {.workers = workers}};
    for (const auto& input : inputs) std::apply([&](const auto&... args) { processor.add(args...); }, input);
    processor.start();
    processor.wait();
    auto results = processor.get_results();
    std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.id() < b.id(); });
    return results;
}

/// Values of successful results, in task order; fails the test on any error.
template <class Results>
auto values_of(const Results& results) {
    std::vector<std::remove_cvref_t<decltype(results.front().value())>> values;
    for (const auto& result : results) {
        INFO((result.ok() ? "" : result.error().what()));
        REQUIRE(result.ok());
        values.push_back(result.value());
    }
    return values;
}

/// Runs in 2 workers and in-process; checks both against `expected`.
template <class T, auto Method, class Expected, class... Inputs>
void check_both_modes(const T& object, const std::vector<std::tuple<Inputs...>>& inputs, const Expected& expected) {
    const auto forked = values_of(run_tasks<T, Method>(object, 2, inputs));
    const auto in_process = values_of(run_tasks<T, Method>(object, 0, inputs));
    CHECK(forked == expected);
    CHECK(in_process == expected);
}

struct Arithmetic {
    long square(int x) const { return static_cast<long>(x) * x; }
    double scale(double x, float factor, short offset) noexcept { return x * factor + offset; }
};

enum class Parity { even, odd };

struct Text {
    std::string prefix = ">";
    std::string join(const std::string& a, std::string b) const { return prefix + a + "+" + b; }
    std::pair<std::string, bool> contains(const std::string& haystack, const std::string& needle) const {
        return {haystack, haystack.find(needle) != std::string::npos};
    }
    Parity parity(int x) const { return x % 2 == 0 ? Parity::even : Parity::odd; }
};

struct Collections {
    std::vector<int> range(int n) const {
        std::vector<int> values(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = i;
        return values;
    }
    std::map<std::string, int> histogram(const std::vector<std::string>& words) const {
        std::map<std::string, int> counts;
        for (const auto& word : words) ++counts[word];
        return counts;
    }
    std::tuple<int, std::string, double> describe(int x) const { return {x, std::to_string(x), x / 2.0}; }
};

struct Measurement {
    std::string name;
    std::vector<double> samples;
    bool operator==(const Measurement&) const = default;
    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& name& samples;
    }
};

struct Statistics {
    Measurement summarize(const Measurement& in) const {
        double total = 0;
        for (double s : in.samples) total += s;
        return Measurement{in.name + "-sum", {total}};
    }
};

struct Functor {
    int offset = 100;
    int operator()(int x) const { return x + offset; }
};

struct Recorder {
    void record(int /*x*/) {}
    void reject(int x) {
        if (x < 0) throw std::invalid_argument{"negative"};
    }
};

struct RvalueTaker {
    std::size_t size(std::string&& s) const { return s.size(); }
};

}  // namespace

TEST_CASE("arithmetic methods - const and noexcept", "[many_processors]") {
    check_both_modes<Arithmetic, &Arithmetic::square>(Arithmetic{}, std::vector<std::tuple<int>>{{3}, {-4}, {100000}},
                                                      std::vector<long>{9, 16, 10000000000L});
    check_both_modes<Arithmetic, &Arithmetic::scale>(
        Arithmetic{}, std::vector<std::tuple<double, float, short>>{{1.5, 2.0f, 1}, {-1.0, 0.5f, 3}},
        std::vector<double>{4.0, 2.5});
}

TEST_CASE("strings - pairs and enums", "[many_processors]") {
    check_both_modes<Text, &Text::contains>(
        Text{}, std::vector<std::tuple<std::string, std::string>>{{"marilyn monroe", "monroe"}, {"abc", "x"}},
        std::vector<std::pair<std::string, bool>>{{"marilyn monroe", true}, {"abc", false}});
    check_both_modes<Text, &Text::parity>(Text{}, std::vector<std::tuple<int>>{{2}, {3}},
                                          std::vector<Parity>{Parity::even, Parity::odd});
}

TEST_CASE("the object's state travels with it") {
    Text text;
    text.prefix = "custom:";
    check_both_modes<Text, &Text::join>(text, std::vector<std::tuple<std::string, std::string>>{{"a", "b"}},
                                        std::vector<std::string>{"custom:a+b"});
}

TEST_CASE("vectors - maps and tuples", "[many_processors]") {
    check_both_modes<Collections, &Collections::range>(Collections{}, std::vector<std::tuple<int>>{{0}, {5}},
                                                       std::vector<std::vector<int>>{{}, {0, 1, 2, 3, 4}});
    check_both_modes<Collections, &Collections::histogram>(
        Collections{}, std::vector<std::tuple<std::vector<std::string>>>{{{"a", "b", "a"}}},
        std::vector<std::map<std::string, int>>{{{"a", 2}, {"b", 1}}});
    check_both_modes<Collections, &Collections::describe>(
        Collections{}, std::vector<std::tuple<int>>{{7}},
        std::vector<std::tuple<int, std::string, double>>{{7, "7", 3.5}});
}

TEST_CASE("user structs with serialize()") {
    check_both_modes<Statistics, &Statistics::summarize>(
        Statistics{}, std::vector<std::tuple<Measurement>>{{Measurement{"m", {1.0, 2.0, 3.5}}}},
        std::vector<Measurement>{Measurement{"m-sum", {6.5}}});
}

TEST_CASE("a functor's operator()") {
    check_both_modes<Functor, &Functor::operator()>(Functor{}, std::vector<std::tuple<int>>{{1}, {2}},
                                                    std::vector<int>{101, 102});
}

TEST_CASE("rvalue-reference parameters receive the decoded value") {
    check_both_modes<RvalueTaker, &RvalueTaker::size>(RvalueTaker{}, std::vector<std::tuple<std::string>>{{"four"}},
                                                      std::vector<std::size_t>{4});
}

TEST_CASE("void methods report success and failure", "[many_processors]") {
    for (unsigned workers : {0u, 2u}) {
        const auto recorded =
            run_tasks<Recorder, &Recorder::record>(Recorder{}, workers, std::vector<std::tuple<int>>{{1}, {2}});
        REQUIRE(recorded.size() == 2);
        for (const auto& result : recorded) {
            CHECK(result.ok());
            CHECK_NOTHROW(result.value());
        }
        const auto rejected =
            run_tasks<Recorder, &Recorder::reject>(Recorder{}, workers, std::vector<std::tuple<int>>{{1}, {-1}});
        REQUIRE(rejected.size() == 2);
        CHECK(rejected[0].ok());
        REQUIRE_FALSE(rejected[1].ok());
        CHECK(rejected[1].error().type_name() == "std::invalid_argument");
        CHECK_THROWS_AS(rejected[1].value(), multiworker::TaskError);
    }
}

TEST_CASE("add() converts arguments to the parameter types") {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<Text, &Text::contains> processor{Text{}, {.workers = 1}};
    processor.add("a string literal", std::string_view{"literal"});
    processor.start();
    auto result = processor.pop_result();
    REQUIRE(result);
    CHECK(result->value() == std::pair<std::string, bool>{"a string literal", true});
}
