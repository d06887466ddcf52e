#pragma once

// A pipeline run in the calling thread (PipelineOptions::in_process): every
// element on its own object, composed the way nested generators compose,
// consumer(stage(source())): each item goes all the way down before the
// source makes the next. Items still travel as their encoding and every
// call goes through execute_task(), so a type that does not serialize, or a
// method that throws, behaves as it does in worker processes; results and
// statistics are the same as with processes (save what a stop cuts short,
// which depends on timing there).

#include <multiworker/detail/item_channel.hpp>
#include <multiworker/detail/pipeline_elements.hpp>
#include <multiworker/detail/pipeline_plan.hpp>

#include <unistd.h>

#include <string>
#include <vector>

namespace multiworker::detail {

class InProcessPipeline {
public:
    /// `results` receives the last stage's outputs when there is no sink.
    InProcessPipeline(std::vector<ElementPlan> plans, const PipelineOptions& options, ResultMailbox* results)
        : plans_{std::move(plans)}, options_{options}, results_{results}, stats_{initial_stats(plans_)} {}

    /// Runs the whole stream, then the sink's finish(); returns when it is over.
    void run() {
        for (ElementPlan& plan : plans_) {
            if (plan.hooks.on_start) plan.hooks.on_start();
        }
        run_source();
        ElementPlan& last = plans_.back();
        if (last.kind == ElementKind::sink && last.hooks.closing && failure_.empty()) run_closing(last);
        for (ElementPlan& plan : plans_) {
            if (plan.hooks.on_exit) plan.hooks.on_exit();
        }
        if (results_ != nullptr) results_->forget(1);  // the stream's token (see Pipeline::start())
    }

    /// Ends the run early (from the thread running it: an Emit, a sink's add()).
    void request_stop() { stopped_ = true; }

    [[nodiscard]] RunReport report() {
        for (StageStats& stats : stats_) stats.completed = stats.in - stats.failed - stats.unprocessed;
        return RunReport{stats_, std::move(errors_), std::move(closing_value_), failure_};
    }

private:
    /// Where element `index`'s Emit sends: the next element, at once
    /// (`held`: once the method returned, as a worker's parent does).
    class Downstream final : public ItemChannel {
    public:
        Downstream(InProcessPipeline& run, std::size_t index, bool held) : run_{run}, index_{index}, held_{held} {}
        void send_item(std::span<const char> encoded) override {
            ++sent;
            if (held_) {
                kept.emplace_back(encoded.begin(), encoded.end());
            } else {
                run_.hand_on(index_, encoded);
            }
        }
        void request_stop() override { run_.request_stop(); }

        std::vector<Bytes> kept;
        std::uint64_t sent = 0;

    private:
        InProcessPipeline& run_;
        std::size_t index_;
        bool held_;
    };

    void run_source() {
        ElementPlan& source = plans_.front();
        if (source.kind == ElementKind::source_range) {
            for (Bytes item; !stopped_ && failure_.empty(); item.clear()) {
                if (!source.next_input(item)) break;
                ++stats_[0].in;
                hand_on(0, item);
            }
            return;
        }
        ++stats_[0].in;
        call(0, {});
    }

    /// Gives element `index`'s output to the next element (or the results).
    void hand_on(std::size_t index, std::span<const char> item) {
        ++stats_[index].out;
        const std::size_t next = index + 1;
        if (next == plans_.size()) {
            deliver(RawResult{current_input_, copy_bytes(item), 0, ::getpid()});
            return;
        }
        ++stats_[next].in;
        if (stopped_ || !failure_.empty()) {
            ++stats_[next].unprocessed;
            return;
        }
        call(next, item);
    }

    /// Runs element `index` on one input, retrying an exception as its options allow.
    void call(std::size_t index, std::span<const char> input) {
        ElementPlan& plan = plans_[index];
        const TaskId id{index == 0 ? 1 : stats_[index].in};
        if (index + 1 == plans_.size()) current_input_ = id;
        for (unsigned attempt = 0;; ++attempt) {
            Downstream downstream{*this, index, plan.items == ItemMode::held};
            const ItemChannelScope scope{&downstream};
            bool ok = false;
            Bytes payload;
            execute_task(plan.runner, input, [&](bool succeeded, const EncodedView& view) {
                ok = succeeded;
                assign_bytes(payload, view.head, view.body);
            });
            if (ok) {
                for (const Bytes& item : downstream.kept) hand_on(index, item);
                if (plan.items != ItemMode::none && downstream.sent == 0) {
                    ++stats_[index].dropped;
                }
                if (plan.items == ItemMode::none) take_output(index, payload);
                return;
            }
            TaskError error = error_from_report(id, payload, 0, ::getpid());
            if (error.kind() == ErrorKind::exception && plan.options.retry_exceptions &&
                attempt < plan.options.retries) {
                ++stats_[index].retried;
                continue;
            }
            fail(index, std::move(error));
            return;
        }
    }

    /// A method's returned value: a map's output, or a sink's "go on".
    void take_output(std::size_t index, const Bytes& payload) {
        const ElementPlan& plan = plans_[index];
        if (plan.kind != ElementKind::sink) {
            hand_on(index, payload);
        } else if (plan.add_says_go_on) {
            auto [verdict] = decode_values<std::uint8_t>(payload);
            if (verdict == static_cast<std::uint8_t>(SinkVerdict::stop)) stopped_ = true;
        }
    }

    void run_closing(ElementPlan& sink) {
        bool ok = false;
        Bytes payload;
        execute_task(sink.hooks.closing, {}, [&](bool succeeded, const EncodedView& view) {
            ok = succeeded;
            assign_bytes(payload, view.head);
        });
        if (ok) {
            closing_value_ = std::move(payload);
            return;
        }
        const std::size_t index = plans_.size() - 1;
        errors_.push_back(
            ItemError{index, sink.name, error_from_report(TaskId{stats_[index].in + 1}, payload, 0, ::getpid())});
        failure_ = describe_item_error(errors_.back());
    }

    void fail(std::size_t index, TaskError&& error) {
        ++stats_[index].failed;
        const ElementPlan& plan = plans_[index];
        if (index + 1 == plans_.size() && results_ != nullptr) {
            deliver(RawResult{error.task(), std::make_unique<TaskError>(error), 0, ::getpid()});
        }
        errors_.push_back(ItemError{index, plan.name, std::move(error)});
        const bool fatal = plan.kind != ElementKind::stage || options_.on_error == OnError::stop;
        if (fatal && failure_.empty()) failure_ = describe_item_error(errors_.back());
    }

    void deliver(RawResult&& result) {
        if (results_ == nullptr) return;
        std::vector<RawResult> one;
        one.push_back(std::move(result));
        results_->expect_one();
        results_->deliver(one);
    }

    std::vector<ElementPlan> plans_;
    const PipelineOptions options_;
    ResultMailbox* const results_;
    std::vector<StageStats> stats_;
    std::vector<ItemError> errors_;
    std::optional<Bytes> closing_value_;
    std::string failure_;
    TaskId current_input_{};  // the last element's input being run: its outputs' id
    bool stopped_ = false;
};

}  // namespace multiworker::detail
