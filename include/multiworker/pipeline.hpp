#pragma once

/// @file
/// Pipeline: a source, stages of N worker processes each, and a sink, with
/// fan-out, fan-in, back-pressure and end of stream handled by the library.

#include <multiworker/detail/forked_pipeline.hpp>
#include <multiworker/detail/inprocess_pipeline.hpp>
#include <multiworker/detail/pipeline_elements.hpp>
#include <multiworker/detail/result_decoding.hpp>
#include <multiworker/emit.hpp>
#include <multiworker/pipeline_options.hpp>
#include <multiworker/pipeline_result.hpp>
#include <multiworker/processor.hpp>
#include <multiworker/result.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace multiworker {

/// A source run once in a process of its own: `void read(Emit<U>&)` on `object`.
template <auto Method, class T>
detail::SourceElement<Method> source(T object) {
    return detail::SourceElement<Method>{std::move(object)};
}

/// A source iterated in the parent: every element of `range` (a vector, an iota_view, ...).
template <class Range>
detail::RangeSource<std::remove_cvref_t<Range>> from(Range&& range) {
    return detail::RangeSource<std::remove_cvref_t<Range>>{std::forward<Range>(range)};
}

/// A stage: `U m(const In&)` (one output per input) or `void m(const In&, Emit<U>&)`
/// (any number), run by `options.workers` processes, each on its own copy of `object`.
template <auto Method, class T>
detail::StageElement<Method> stage(T object, StageOptions options = {}) {
    return detail::StageElement<Method>{std::move(object), std::move(options)};
}

/// The sink: one process, one object; `Add` for every item that reaches it,
/// then `Finish...` (at most one), whose value is the run's value.
template <auto Add, auto... Finish, class T>
detail::SinkElement<Add, Finish...> sink(T object) {
    return detail::SinkElement<Add, Finish...>{std::move(object)};
}

namespace detail {

template <class E>
inline constexpr bool is_sink_element = false;
template <auto Add, auto... Finish>
inline constexpr bool is_sink_element<SinkElement<Add, Finish...>> = true;

template <class E>
inline constexpr bool is_source_element = std::is_same_v<typename E::input, no_item>;

/// Each element's input is the previous one's output.
template <class First, class Second, class... Rest>
constexpr bool chain_matches() {
    static_assert(std::is_same_v<typename First::output, typename Second::input>,
                  "multiworker::Pipeline: an element's input type must be the previous element's output type");
    if constexpr (sizeof...(Rest) > 0) {
        return std::is_same_v<typename First::output, typename Second::input> && chain_matches<Second, Rest...>();
    } else {
        return std::is_same_v<typename First::output, typename Second::input>;
    }
}

template <class... Es>
using last_element = std::tuple_element_t<sizeof...(Es) - 1, std::tuple<Es...>>;

template <class Last, bool Sink = is_sink_element<Last>>
struct pipeline_value {
    using type = void;
};
template <class Last>
struct pipeline_value<Last, true> {
    using type = typename Last::value_type;
};

}  // namespace detail

/// A chain of elements: a source (source() or from()), any number of
/// stage()s, and optionally a sink(). Without a sink, the last stage's
/// outputs come back to the parent as Result objects (pop_result(), get_results()).
///
/// No sentinels: an element ends when every upstream producer has ended and
/// it holds nothing more. A method that throws records that item's error and
/// the stream goes on (PipelineOptions::on_error); a stage worker that dies
/// has its item retried (StageOptions::retries) or recorded; the source or the
/// sink failing ends the run, and run() throws PipelineError.
template <class... Elements>
class Pipeline {
    static_assert(sizeof...(Elements) >= 2, "multiworker::Pipeline: a source and at least one stage or sink");
    using first_element = std::tuple_element_t<0, std::tuple<Elements...>>;
    using last = detail::last_element<Elements...>;
    static_assert(detail::is_source_element<first_element>,
                  "multiworker::Pipeline: the first element must be a source (source<&T::m>(obj) or from(range))");
    static_assert(detail::chain_matches<Elements...>());

public:
    /// The last element has no sink: its outputs are results.
    static constexpr bool has_sink = detail::is_sink_element<last>;
    /// What run() returns the value of: the sink's finish() (void without one).
    using value_type = typename detail::pipeline_value<last>::type;
    /// The type of each result of a pipeline without a sink.
    using output_type = typename last::output;

    /// A pipeline with default run-wide settings.
    explicit Pipeline(Elements... elements) : Pipeline{PipelineOptions{}, std::move(elements)...} {}

    /// A pipeline with the run-wide settings `options`.
    explicit Pipeline(PipelineOptions options, Elements... elements)
        : options_{std::move(options)}, elements_{std::move(elements)...} {}

    Pipeline(const Pipeline&) = delete;
    Pipeline& operator=(const Pipeline&) = delete;

    /// Stops the run if it still goes on (as stop() does) and reaps every process.
    ~Pipeline() {
        if (forked_) {
            forked_->request_stop();
            forked_->wait();
        }
    }

    /// Starts the run: forks every worker (in-process: runs the whole stream
    /// now, in this thread). Throws if the workers cannot start.
    void start() {
        if (started_) throw std::logic_error{"multiworker::Pipeline::start() called twice"};
        started_ = true;
        std::vector<detail::ElementPlan> plans = make_plans(std::index_sequence_for<Elements...>{});
        detail::validate_plan(plans);
        results_.expect_one();  // the stream itself: settled when it is over, so getters know the end
        if (options_.in_process) {
            detail::PipelineProgress progress{options_};  // from now: its one report's rates are the run's
            detail::InProcessPipeline run{std::move(plans), options_, has_sink ? nullptr : &results_};
            run.run();
            report_ = run.report();
            progress.finish(report_->stats);
            return;
        }
        Options log_options;
        log_options.log_file = options_.log_file;
        log_options.logger = options_.logger;
        forked_ = std::make_unique<detail::ForkedPipeline>(
            std::move(plans), options_, detail::log_destinations(log_options), has_sink ? nullptr : &results_);
        try {
            forked_->start();
        } catch (...) {
            forked_.reset();
            results_.forget(1);
            throw;
        }
    }

    /// True once the stream has ended and every process is reaped.
    [[nodiscard]] bool done() const { return report_ || (forked_ && forked_->done()); }

    /// Blocks until the stream has ended and every process is reaped.
    void wait() {
        if (!started_) throw std::logic_error{"multiworker::Pipeline::wait() before start()"};
        if (report_) return;
        forked_->wait();
        report_ = forked_->report();
    }

    /// Ends the run early from any thread: upstream stops at once, items not
    /// yet processed are counted as unprocessed, the sink's finish() runs on
    /// what it received.
    void stop() {
        if (forked_) forked_->request_stop();
    }

    /// start() and wait(); returns finish()'s value, the statistics and the
    /// item errors. Throws PipelineError if the run failed (the source or the
    /// sink failed, or an item failed under OnError::stop).
    PipelineResult<value_type> run() {
        if (!started_) start();
        wait();
        if (!report_->failure.empty()) {
            throw PipelineError{"multiworker::Pipeline: " + report_->failure, report_->errors};
        }
        if constexpr (std::is_void_v<value_type>) {
            return PipelineResult<void>{report_->stats, report_->errors};
        } else {
            std::optional<value_type> value;
            if (report_->closing_value) {
                auto [decoded] = detail::decode_values<value_type>(*report_->closing_value);
                value.emplace(std::move(decoded));
            }
            return PipelineResult<value_type>{std::move(value), report_->stats, report_->errors};
        }
    }

    /// The next result of a pipeline without a sink, waiting up to `timeout`;
    /// empty when it passes, or when the stream is over and every result taken.
    std::optional<Result<output_type>> pop_result(std::chrono::milliseconds timeout) requires(!has_sink) {
        require_started("pop_result()");
        auto raw = results_.pop(std::chrono::steady_clock::now() + timeout);
        if (!raw) return std::nullopt;
        return detail::decode_raw_result<output_type>(*raw);
    }

    /// Collects results as they arrive until `timeout` has passed or the
    /// stream is over and every result taken, whichever is first.
    template <class Rep, class Period>
    std::vector<Result<output_type>> results_within(std::chrono::duration<Rep, Period> timeout) requires(!has_sink) {
        require_started("results_within()");
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        std::vector<Result<output_type>> results;
        while (auto raw = results_.pop(deadline)) results.push_back(detail::decode_raw_result<output_type>(*raw));
        return results;
    }

    /// Waits for the end of the stream and returns every result not taken yet.
    std::vector<Result<output_type>> get_results() requires(!has_sink) {
        require_started("get_results()");
        std::vector<Result<output_type>> results;
        while (auto raw = results_.pop(std::nullopt)) results.push_back(detail::decode_raw_result<output_type>(*raw));
        return results;
    }

private:
    template <std::size_t... I>
    std::vector<detail::ElementPlan> make_plans(std::index_sequence<I...>) {
        std::vector<detail::ElementPlan> plans;
        (plans.push_back(std::get<I>(elements_).plan(I)), ...);
        return plans;
    }

    void require_started(const char* call) const {
        if (!started_) {
            throw std::logic_error{std::string{"multiworker::Pipeline::"} + call +
                                   " before start() would block forever"};
        }
    }

    PipelineOptions options_;
    std::tuple<Elements...> elements_;
    detail::ResultMailbox results_;
    std::unique_ptr<detail::ForkedPipeline> forked_;
    std::optional<detail::RunReport> report_;
    bool started_ = false;
};

/// `Pipeline{options, elements...}` deduces the elements' types.
template <class... Elements>
Pipeline(PipelineOptions, Elements...) -> Pipeline<Elements...>;

}  // namespace multiworker
