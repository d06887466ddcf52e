#pragma once

// The stream of a forked pipeline: its elements in order, each with its
// dispatcher (none for a range iterated in the parent), and what moves items
// from one to the next: routing outputs, recording errors, back-pressure,
// the end of the stream, early stops and failures. ForkedPipeline drives it
// from its event loop; this class owns no process and no thread.
//
// End of stream is counted, not signalled: an element has ended when its
// upstream has ended and it holds no item; the sink's finish() is then sent
// as its last task. Nothing a user emits can be mistaken for the end.

#include <multiworker/detail/deadline_watch.hpp>
#include <multiworker/detail/pending_limit.hpp>
#include <multiworker/detail/pipeline_elements.hpp>
#include <multiworker/detail/pipeline_plan.hpp>
#include <multiworker/detail/reorder_buffer.hpp>
#include <multiworker/detail/ring_channels.hpp>
#include <multiworker/detail/task_dispatcher.hpp>
#include <multiworker/detail/worker_logging.hpp>
#include <multiworker/detail/worker_pool.hpp>

#include <algorithm>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace multiworker::detail {

class PipelineStream {
public:
    /// Items and results are limited only by memory: a pipeline has no Options::max_message_bytes.
    static constexpr std::size_t max_message_bytes = std::size_t{1} << 31;

    struct Element {
        explicit Element(ElementPlan&& p)
            : plan{std::move(p)}, reorder{plan.options.ordered ? plan.options.capacity : 0} {}

        ElementPlan plan;
        std::optional<TaskDispatcher> dispatcher;  // none for a range iterated in the parent
        StageStats stats;
        std::uint64_t inputs = 0;  // items given to it so far: the next one's id
        bool ended = false;        // it will hand on nothing more
        bool closed = false;       // stopped early: what reaches it is unprocessed
        bool closing_sent = false;
        bool closing_settled = false;
        TaskId closing_id{};
        std::uint64_t skipped = 0;  // a sink's items not added: add() had said stop
        ReorderBuffer reorder;      // ordered: outputs waiting for an earlier input to settle
    };

    static unsigned total_processes(const std::vector<ElementPlan>& plans) {
        unsigned count = 0;
        for (const ElementPlan& plan : plans) count += plan.process_count();
        return count;
    }

    /// How each slot's worker is named in log records: its element, and its index there.
    static std::vector<std::string> worker_names(const std::vector<ElementPlan>& plans) {
        std::vector<std::string> names;
        for (const ElementPlan& plan : plans) {
            for (unsigned i = 0; i < plan.process_count(); ++i)
                names.push_back(plan.name + " worker " + std::to_string(i));
        }
        return names;
    }

    static DispatchPolicy policy_of(const ElementPlan& plan) {
        const bool stage = plan.kind == ElementKind::stage;
        return DispatchPolicy{stage ? plan.options.retries : 0U,
                              stage && plan.options.retry_exceptions,
                              stage ? plan.options.task_timeout : std::chrono::milliseconds{0},
                              stage ? plan.options.max_tasks_per_worker : 0U,
                              max_message_bytes,
                              plan.items,
                              stage && plan.options.ordered,
                              plan.name + " "};
    }

    Element& element_of_slot(int slot) {
        for (Element& element : elements_) {
            if (!element.dispatcher) continue;
            const auto& lanes = element.dispatcher->lanes();
            if (slot >= lanes.front().slot && slot <= lanes.back().slot) return element;
        }
        throw std::logic_error{"no pipeline element has worker slot " + std::to_string(slot)};
    }

    /// Makes each element's dispatcher, on consecutive slots of `pool` and `channels`.
    PipelineStream(std::vector<ElementPlan> plans, const PipelineOptions& options, ResultMailbox* results,
                   RingChannels& channels, WorkerPool& pool, LogCollector& logs, PendingLimit& pending)
        : options_{options}, results_{results}, pool_{pool} {
        int slot = 0;
        for (std::size_t i = 0; i < plans.size(); ++i) {
            Element& element = elements_.emplace_back(std::move(plans[i]));
            element.stats.name = element.plan.name;
            const int count = static_cast<int>(element.plan.process_count());
            if (count == 0) continue;
            element.dispatcher.emplace(policy_of(element.plan), channels, pool, logs, pending, slot, count);
            slot += count;
            all_dispatchers_.push_back(&*element.dispatcher);
            if (element.plan.kind != ElementKind::sink) upstream_dispatchers_.push_back(&*element.dispatcher);
        }
        watched_ = all_dispatchers_;
    }

    [[nodiscard]] std::deque<Element>& elements() noexcept { return elements_; }
    [[nodiscard]] const std::deque<Element>& elements() const noexcept { return elements_; }
    [[nodiscard]] const std::vector<TaskDispatcher*>& dispatchers() const noexcept { return all_dispatchers_; }
    /// The dispatchers the deadlines apply to (after an early stop, not the sink's: finish() runs to its end).
    [[nodiscard]] const std::vector<TaskDispatcher*>& watched() const noexcept { return watched_; }
    [[nodiscard]] DeadlineWatch& deadlines() noexcept { return deadlines_; }
    [[nodiscard]] const DeadlineWatch& deadlines() const noexcept { return deadlines_; }
    /// The stream is over (or failed): the loop ends with the last process.
    [[nodiscard]] bool complete() const noexcept { return complete_; }
    [[nodiscard]] bool stopping_early() const noexcept { return stopping_early_; }
    /// The run failed (the source or the sink, or an item under OnError::stop).
    [[nodiscard]] bool failed() const noexcept { return !failure_.empty(); }

    /// One round: hands items out, reads outputs where the next element has
    /// room, routes them, and ends what is over. True if anything moved.
    bool pass(bool collect_results) {
        bool progress = feed_from_range();
        for (std::size_t i = 0; i < elements_.size(); ++i) {
            Element& element = elements_[i];
            if (!element.dispatcher) continue;
            // An ordered stage hands out no item more than capacity ahead of the oldest one unreleased.
            const std::uint64_t admit_below = element.plan.options.ordered
                                                  ? element.reorder.next_release() + element.plan.options.capacity
                                                  : std::numeric_limits<std::uint64_t>::max();
            progress |= element.dispatcher->dispatch(admit_below);
            if (collect_results && has_room_after(i)) progress |= element.dispatcher->collect();
            progress |= route(i);
        }
        progress |= advance_ends();
        return progress;
    }

    /// Routes every element's outputs (after process events settled tasks).
    void route_all() {
        for (std::size_t i = 0; i < elements_.size(); ++i) {
            if (elements_[i].dispatcher) route(i);
        }
    }

    /// What the run did; call after wait().
    /// Every element's statistics as they stand.
    [[nodiscard]] std::vector<StageStats> stats() const {
        std::vector<StageStats> all;
        for (const Element& element : elements_) {
            StageStats stats = element.stats;
            if (element.dispatcher) {
                const TaskDispatcher::Tally& tally = element.dispatcher->tally();
                stats.completed =
                    tally.completed - element.skipped - (element.closing_sent && element.closing_settled ? 1 : 0);
                stats.retried = tally.retried;
                stats.dropped = tally.dropped;
            } else {
                stats.completed = stats.in;
            }
            all.push_back(std::move(stats));
        }
        return all;
    }

    /// What the run did; call once it is over.
    [[nodiscard]] RunReport report() {
        return RunReport{stats(), std::move(errors_), std::move(closing_value_), failure_};
    }

    /// Hands element `element` its next input.
    void give(Element& element, Bytes&& item) {
        ++element.stats.in;
        if (element.closed) {
            ++element.stats.unprocessed;
            return;
        }
        element.dispatcher->backlog().add(TaskId{++element.inputs}, std::move(item));
    }

    /// The next element can take more: fewer than its capacity queued.
    [[nodiscard]] bool has_room_after(std::size_t index) const {
        if (index + 1 >= elements_.size()) return true;
        const Element& next = elements_[index + 1];
        return next.closed || next.dispatcher->backlog().size() < next.plan.options.capacity;
    }

    /// Stops everything upstream of the sink; the sink then finishes on what it received.
    void stop_early() {
        stopping_early_ = true;
        for (Element& element : elements_) {
            if (element.plan.kind == ElementKind::sink) {
                element.stats.unprocessed += element.dispatcher->cancel_unstarted();
                static_cast<void>(element.dispatcher->take_forgotten());  // counted just above
                element.closed = true;
                continue;
            }
            element.closed = true;
            element.ended = true;
            if (!element.dispatcher) continue;
            // A source that did not ask for the stop is emitting what nobody wants.
            if (element.plan.kind == ElementKind::source_process && !element.dispatcher->stop_requested()) {
                kill_all(*element.dispatcher, "the pipeline stopped");
            }
            element.dispatcher->begin_stop();
        }
        watched_ = upstream_dispatchers_;
        deadlines_.begin_grace(options_.stop_timeout, "the pipeline stopped");
    }

    /// The run fails: everything stops, the sink's finish() does not run.
    void fail_run(const std::string& why) {
        if (failure_.empty()) failure_ = why;
        for (Element& element : elements_) {
            element.closed = true;
            element.ended = true;
            if (!element.dispatcher || element.dispatcher->stopping()) continue;
            if (element.plan.kind == ElementKind::source_process) kill_all(*element.dispatcher, "the pipeline failed");
            element.dispatcher->begin_stop();
        }
        watched_ = all_dispatchers_;
        if (!stopping_early_) deadlines_.begin_grace(options_.stop_timeout, "the pipeline failed");
        stopping_early_ = true;
        complete_ = true;
    }

private:
    bool feed_from_range() {
        Element& source = elements_.front();
        if (source.plan.kind != ElementKind::source_range || source.ended) return false;
        bool progress = false;
        Element& next = elements_[1];
        while (next.closed || next.dispatcher->backlog().size() < next.plan.options.capacity) {
            Bytes item;
            if (!source.plan.next_input(item)) {
                source.ended = true;
                break;
            }
            ++source.stats.in;
            ++source.stats.out;
            give(next, std::move(item));
            progress = true;
        }
        return progress;
    }

    /// Moves element `index`'s outputs on: to the next element, the results,
    /// or the run's value; records errors. True if anything moved.
    bool route(std::size_t index) {
        Element& element = elements_[index];
        TaskDispatcher& dispatcher = *element.dispatcher;
        element.stats.unprocessed += dispatcher.take_forgotten();
        std::vector<RawResult>& finished = dispatcher.finished();
        if (finished.empty() && dispatcher.silent().empty()) return false;  // silent: ordered stages only
        std::vector<RawResult> delivered;
        // Looked up once, not per item: indexing a deque divides.
        Element* const next = index + 1 < elements_.size() ? &elements_[index + 1] : nullptr;
        if (element.plan.options.ordered) {
            for (const TaskId id : dispatcher.silent()) element.reorder.settle_silent(id);
            dispatcher.silent().clear();
            for (RawResult& result : finished) element.reorder.hold(std::move(result));
            element.reorder.release_ready(
                [&](RawResult&& result) { hand_on(index, element, next, std::move(result), delivered); });
        } else {
            for (RawResult& result : finished) hand_on(index, element, next, std::move(result), delivered);
        }
        finished.clear();
        if (results_ != nullptr) results_->deliver(delivered);
        return true;
    }

    /// Hands element `index`'s output on to `next` (null: the last element's output).
    void hand_on(std::size_t index, Element& element, Element* next, RawResult&& result,
                 std::vector<RawResult>& delivered) {
        if (auto* error = std::get_if<std::unique_ptr<TaskError>>(&result.outcome)) {
            if (element.plan.kind == ElementKind::source_process && stopping_early_ && failure_.empty()) {
                ++element.stats.unprocessed;  // killed by the stop: its run was cut short, by design
                return;
            }
            const bool closing = element.closing_sent && result.id == element.closing_id;
            element.closing_settled |= closing;
            record_error(index, std::move(**error), !closing);
            if (results_ != nullptr && next == nullptr) {
                results_->expect_one();
                delivered.push_back(std::move(result));
            }
            return;
        }
        Bytes& bytes = std::get<Bytes>(result.outcome);
        if (element.plan.kind == ElementKind::sink) {
            sink_output(element, result.id, bytes);
        } else if (next == nullptr) {
            ++element.stats.out;
            if (results_ != nullptr) {
                results_->expect_one();
                delivered.push_back(std::move(result));
            }
        } else {
            ++element.stats.out;
            give(*next, std::move(bytes));
        }
    }

    void sink_output(Element& sink, TaskId id, Bytes& bytes) {
        if (sink.closing_sent && id == sink.closing_id) {
            sink.closing_settled = true;
            closing_value_ = std::move(bytes);
            return;
        }
        if (!sink.plan.add_says_go_on) return;
        try {
            auto [verdict] = decode_values<std::uint8_t>(bytes);
            if (verdict == static_cast<std::uint8_t>(SinkVerdict::skipped)) {
                ++sink.skipped;
                ++sink.stats.unprocessed;
            } else if (verdict == static_cast<std::uint8_t>(SinkVerdict::stop) && !stopping_early_) {
                stop_early();
            }
        } catch (const DecodeError& e) {
            fail_run("sink: add()'s answer could not be decoded: " + std::string{e.what()});
        }
    }

    /// Records an item's error (`counts_item` false: the sink's finish(), which is no item).
    void record_error(std::size_t index, TaskError&& error, bool counts_item = true) {
        Element& element = elements_[index];
        if (counts_item) ++element.stats.failed;
        errors_.push_back(ItemError{index, element.plan.name, std::move(error)});
        const bool fatal = element.plan.kind != ElementKind::stage || options_.on_error == OnError::stop;
        if (fatal && failure_.empty()) fail_run(describe_item_error(errors_.back()));
    }

    /// Ends elements whose stream is over; true if any ended.
    bool advance_ends() {
        bool progress = false;
        bool upstream_ended = true;
        for (Element& element : elements_) {
            if (!element.ended && upstream_ended) progress |= try_end(element);
            upstream_ended = element.ended;
        }
        if (elements_.back().ended && !complete_) {
            complete_ = true;
            progress = true;
        }
        if (!stopping_early_ && !complete_ &&
            std::any_of(all_dispatchers_.begin(), all_dispatchers_.end(),
                        [](const TaskDispatcher* d) { return d->stop_requested(); })) {
            stop_early();
            progress = true;
        }
        return progress;
    }

    /// Element `element`'s upstream has ended: it ends once it holds nothing.
    bool try_end(Element& element) {
        if (element.plan.kind == ElementKind::source_range) return false;  // feed_from_range() ends it
        TaskDispatcher& dispatcher = *element.dispatcher;
        if (element.plan.kind == ElementKind::source_process) {
            if (element.stats.failed + dispatcher.tally().completed == 0) return false;
        } else if (!dispatcher.idle() || !element.reorder.empty()) {
            return false;
        }
        if (element.plan.kind == ElementKind::sink && element.plan.hooks.closing && !element.closing_sent &&
            failure_.empty()) {
            element.closing_sent = true;
            element.closing_id = TaskId{++element.inputs};
            dispatcher.backlog().add_closing(element.closing_id);
            return true;
        }
        element.ended = true;
        dispatcher.begin_stop();
        return true;
    }

    void kill_all(TaskDispatcher& dispatcher, const std::string& why) {
        for (DispatchLane& lane : dispatcher.lanes()) {
            if (pool_.alive(lane.slot) && !pool_.doomed(lane.slot)) dispatcher.kill(lane, ErrorKind::worker_died, why);
        }
    }

    const PipelineOptions options_;
    ResultMailbox* const results_;
    WorkerPool& pool_;
    std::deque<Element> elements_;  // a deque: the dispatcher lists point into it
    std::vector<TaskDispatcher*> all_dispatchers_;
    std::vector<TaskDispatcher*> upstream_dispatchers_;  // all but the sink's
    std::vector<TaskDispatcher*> watched_;               // those the deadlines apply to
    DeadlineWatch deadlines_;
    std::vector<ItemError> errors_;
    std::optional<Bytes> closing_value_;
    std::string failure_;
    bool stopping_early_ = false;
    bool complete_ = false;
};

}  // namespace multiworker::detail
