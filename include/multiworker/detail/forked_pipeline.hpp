#pragma once

// A pipeline in forked processes, on the parts a Processor is built from:
// one WorkerPool and one set of RingChannels for all elements' workers, one
// TaskDispatcher per element that runs in processes, one EventLoop.
//
// Items travel worker -> parent -> worker. The parent moves an item's bytes
// from one element's result ring into the next element's backlog without
// decoding them, and dispatching them keeps every guarantee of a Processor's
// tasks: a stage worker that dies at any instruction loses no item (claims,
// retries), a stage's outputs are held until its input's result (ItemMode),
// and back-pressure is the parent not reading an element's results while the
// next element has `capacity` items queued: its workers then wait for ring
// space, a source inside emit(). Worker-to-worker rings would save the
// parent's copy, but they would need a ring per pair of workers (or a
// multi-producer ring, whose claims a dying worker can leave half done), and
// the parent would still have to learn of every item to account for it.
//
// End of stream is counted, not signalled: an element has ended when its
// upstream has ended and it holds no item; the sink's finish() is then sent
// as its last task. Nothing a user emits can be mistaken for the end.

#include <multiworker/detail/deadline_watch.hpp>
#include <multiworker/detail/event_loop.hpp>
#include <multiworker/detail/pipeline_elements.hpp>
#include <multiworker/detail/pipeline_plan.hpp>
#include <multiworker/detail/ring_channels.hpp>
#include <multiworker/detail/task_dispatcher.hpp>
#include <multiworker/detail/worker_logging.hpp>
#include <multiworker/detail/worker_pool.hpp>

#include <poll.h>

#include <atomic>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace multiworker::detail {

class ForkedPipeline final : private EventLoop::Engine, private WorkerPool::Events {
public:
    /// `results` receives the last stage's outputs when there is no sink.
    ForkedPipeline(std::vector<ElementPlan> plans, const PipelineOptions& options,
                   std::vector<std::shared_ptr<spdlog::logger>> log_destinations, ResultMailbox* results)
        : options_{options},
          results_{results},
          logs_{std::move(log_destinations), options.log_level, WorkerOutput::forward},
          channels_{total_processes(plans), options.ring_bytes, max_message_bytes},
          pending_{0},
          pool_{channels_.size(), logs_, true, [this](int slot, const WorkerBirth& birth) { run_worker(slot, birth); }},
          loop_{*this, channels_.parent_doorbell()} {
        int slot = 0;
        for (std::size_t i = 0; i < plans.size(); ++i) {
            Element& element = elements_.emplace_back(std::move(plans[i]));
            element.stats.name = element.plan.name;
            const int count = static_cast<int>(element.plan.process_count());
            if (count == 0) continue;
            element.dispatcher.emplace(policy_of(element.plan), channels_, pool_, logs_, pending_, slot, count);
            slot += count;
            all_dispatchers_.push_back(&*element.dispatcher);
            if (element.plan.kind != ElementKind::sink) upstream_dispatchers_.push_back(&*element.dispatcher);
        }
        watched_ = all_dispatchers_;
    }

    ~ForkedPipeline() {
        request_stop();
        wait();
    }

    ForkedPipeline(const ForkedPipeline&) = delete;
    ForkedPipeline& operator=(const ForkedPipeline&) = delete;

    /// Forks every worker; throws (everything reaped) if they cannot start.
    void start() {
        try {
            loop_.start("mw-event-loop");
        } catch (...) {
            logs_.stop(std::chrono::milliseconds{1000});
            throw;
        }
    }

    /// Blocks until the run has ended and every process is reaped.
    void wait() {
        loop_.join();
        logs_.stop(std::chrono::milliseconds{2000});
    }

    /// Ends the run early, from any thread (Pipeline::stop()).
    void request_stop() {
        user_stop_.store(true);
        loop_.notify();
    }

    /// The run has ended and every process is reaped.
    [[nodiscard]] bool done() const noexcept { return over_.load(); }

    /// What the run did; call after wait().
    [[nodiscard]] RunReport report() {
        RunReport report;
        for (Element& element : elements_) {
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
            report.stats.push_back(std::move(stats));
        }
        report.errors = std::move(errors_);
        report.closing_value = std::move(closing_value_);
        report.failure = failure_;
        return report;
    }

private:
    using Clock = std::chrono::steady_clock;
    static constexpr std::size_t max_message_bytes = std::size_t{1} << 31;

    struct Element {
        explicit Element(ElementPlan&& p) : plan{std::move(p)} {}

        ElementPlan plan;
        std::optional<TaskDispatcher> dispatcher;  // none for a range iterated in the parent
        StageStats stats;
        std::uint64_t inputs = 0;  // items given to it so far: the next one's id
        bool ended = false;        // it will hand on nothing more
        bool closed = false;       // stopped early: what reaches it is unprocessed
        bool closing_sent = false;
        bool closing_settled = false;
        TaskId closing_id{};
        std::uint64_t skipped = 0;                   // a sink's items not added: add() had said stop
        std::map<std::uint64_t, RawResult> reorder;  // ordered: outputs waiting for an earlier one
        std::uint64_t next_release = 1;
    };

    static unsigned total_processes(const std::vector<ElementPlan>& plans) {
        unsigned count = 0;
        for (const ElementPlan& plan : plans) count += plan.process_count();
        return count;
    }

    static DispatchPolicy policy_of(const ElementPlan& plan) {
        const bool stage = plan.kind == ElementKind::stage;
        return DispatchPolicy{stage ? plan.options.retries : 0U,
                              stage && plan.options.retry_exceptions,
                              stage ? plan.options.task_timeout : std::chrono::milliseconds{0},
                              stage ? plan.options.max_tasks_per_worker : 0U,
                              max_message_bytes,
                              plan.items,
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

    void run_worker(int slot, const WorkerBirth& birth) {
        const Element& element = element_of_slot(slot);
        WorkerEndpoints endpoints = channels_.endpoints(static_cast<std::size_t>(slot));
        endpoints.index = slot - element.dispatcher->lanes().front().slot;
        endpoints.parent_pid = birth.server;
        run_worker_process(endpoints, element.plan.runner, element.plan.hooks, birth.pipes.log, true,
                           options_.log_level, birth.inherited_loggers);
    }

    // ----- EventLoop::Engine -----

    void prepare() override {
        try {
            pool_.start();
            logs_.start();
            for (TaskDispatcher* dispatcher : all_dispatchers_) {
                for (DispatchLane& lane : dispatcher->lanes()) dispatcher->spawn(lane);
            }
            const auto deadline = Clock::now() + options_.start_timeout;
            while (pool_.spawning_count() > 0) {
                if (Clock::now() > deadline) {
                    throw std::runtime_error{
                        "multiworker::Pipeline::start(): " + std::to_string(pool_.spawning_count()) +
                        " workers were not forked within start_timeout"};
                }
                wait_for_process_events(100);
            }
            if (start_error_ != 0) {
                errno = start_error_;
                throw_errno("fork of a pipeline worker");
            }
        } catch (...) {
            pool_.shut_down();
            over_.store(true);
            throw;
        }
        Element& first = elements_.front();
        if (first.plan.kind == ElementKind::source_process) give(first, Bytes{});
    }

    bool run_pass(bool collect_results) override {
        // The request flag's only request here is stop(), read from user_stop_.
        bool progress = loop_.take_request_flag();
        if (user_stop_.load(std::memory_order_relaxed) && !stopping_early_ && !complete_) {
            stop_early();
            progress = true;
        }
        progress |= feed_from_range();
        for (std::size_t i = 0; i < elements_.size(); ++i) {
            Element& element = elements_[i];
            if (!element.dispatcher) continue;
            // An ordered stage hands out no item more than capacity ahead of the oldest one unreleased.
            const std::uint64_t admit_below = element.plan.options.ordered
                                                  ? element.next_release + element.plan.options.capacity
                                                  : std::numeric_limits<std::uint64_t>::max();
            progress |= element.dispatcher->dispatch(admit_below);
            if (collect_results && has_room_after(i)) progress |= element.dispatcher->collect();
            progress |= route(i);
        }
        progress |= advance_ends();
        return progress;
    }

    [[nodiscard]] bool finished() const override { return complete_ && pool_.no_processes(); }

    void enforce_deadlines() override { deadlines_.enforce(watched_); }

    void handle_process_events() override {
        pool_.handle_events(*this);
        for (std::size_t i = 0; i < elements_.size(); ++i) {
            if (elements_[i].dispatcher) route(i);
        }
    }

    [[nodiscard]] int process_events_fd() const override { return pool_.server_fd(); }

    [[nodiscard]] bool work_ready() const override {
        for (std::size_t i = 0; i < elements_.size(); ++i) {
            const Element& element = elements_[i];
            if (element.dispatcher && has_room_after(i) && element.dispatcher->work_ready()) {
                return true;
            }
        }
        return false;
    }

    [[nodiscard]] bool result_expected_soon() const override {
        for (std::size_t i = 0; i < elements_.size(); ++i) {
            const Element& element = elements_[i];
            if (element.dispatcher && has_room_after(i) &&
                element.dispatcher->activity() == TaskDispatcher::Activity::result_soon)
                return true;
        }
        return false;
    }

    [[nodiscard]] int sleep_budget_ms() const override { return deadlines_.sleep_budget_ms(watched_); }

    [[nodiscard]] bool needs_loop_after(bool) const override { return true; }

    [[nodiscard]] bool worker_starved(Clock::time_point cutoff) const override {
        return std::any_of(all_dispatchers_.begin(), all_dispatchers_.end(),
                           [cutoff](const TaskDispatcher* d) { return d->worker_waiting_since(cutoff); });
    }

    void abandon(const std::string& why) override {
        logs_.report(spdlog::level::err, why);
        fail_run(why);
        for (TaskDispatcher* dispatcher : all_dispatchers_) {
            for (DispatchLane& lane : dispatcher->lanes()) {
                pool_.disable(lane.slot);
                if (pool_.alive(lane.slot) && !pool_.doomed(lane.slot))
                    dispatcher->kill(lane, ErrorKind::worker_died, why);
            }
        }
    }

    void wind_down() override {
        pool_.shut_down();
        if (results_ != nullptr) results_->forget(1);  // the stream's token (see Pipeline::start())
        over_.store(true);
    }

    // ----- WorkerPool::Events -----

    void worker_started(int) override {}

    void worker_exited(const WorkerExit& exit) override {
        Element& element = element_of_slot(exit.slot);
        TaskDispatcher& dispatcher = *element.dispatcher;
        DispatchLane& lane = dispatcher.lanes()[static_cast<std::size_t>(exit.slot - dispatcher.lanes().front().slot)];
        if (dispatcher.worker_exited(exit, deadlines_.grace_over()) && !element.ended) dispatcher.spawn(lane);
        dispatcher.fail_backlog_if_no_worker();
    }

    void spawn_failed(int slot, int error) override {
        start_error_ = error;
        element_of_slot(slot).dispatcher->fail_backlog_if_no_worker();
    }

    // ----- the stream -----

    /// Hands element `element` its next input.
    void give(Element& element, Bytes&& item) {
        ++element.stats.in;
        if (element.closed) {
            ++element.stats.unprocessed;
            return;
        }
        element.dispatcher->add(TaskId{++element.inputs}, std::move(item));
    }

    /// The next element can take more: fewer than its capacity queued.
    [[nodiscard]] bool has_room_after(std::size_t index) const {
        if (index + 1 >= elements_.size()) return true;
        const Element& next = elements_[index + 1];
        return next.closed || next.dispatcher->backlog_size() < next.plan.options.capacity;
    }

    bool feed_from_range() {
        Element& source = elements_.front();
        if (source.plan.kind != ElementKind::source_range || source.ended) return false;
        bool progress = false;
        Element& next = elements_[1];
        while (next.closed || next.dispatcher->backlog_size() < next.plan.options.capacity) {
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
        if (finished.empty()) return false;
        std::vector<RawResult> delivered;
        for (RawResult& result : finished) {
            if (element.plan.options.ordered) {
                element.reorder.emplace(result.id.value(), std::move(result));
                while (!element.reorder.empty() && element.reorder.begin()->first == element.next_release) {
                    hand_on(index, std::move(element.reorder.begin()->second), delivered);
                    element.reorder.erase(element.reorder.begin());
                    ++element.next_release;
                }
            } else {
                hand_on(index, std::move(result), delivered);
            }
        }
        finished.clear();
        if (results_ != nullptr) results_->deliver(delivered);
        return true;
    }

    void hand_on(std::size_t index, RawResult&& result, std::vector<RawResult>& delivered) {
        Element& element = elements_[index];
        if (auto* error = std::get_if<std::unique_ptr<TaskError>>(&result.outcome)) {
            if (element.plan.kind == ElementKind::source_process && stopping_early_ && failure_.empty()) {
                ++element.stats.unprocessed;  // killed by the stop: its run was cut short, by design
                return;
            }
            const bool closing = element.closing_sent && result.id == element.closing_id;
            element.closing_settled |= closing;
            record_error(index, std::move(**error), !closing);
            if (results_ != nullptr && index + 1 == elements_.size()) {
                results_->expect_one();
                delivered.push_back(std::move(result));
            }
            return;
        }
        Bytes& bytes = std::get<Bytes>(result.outcome);
        if (element.plan.kind == ElementKind::sink) {
            sink_output(element, result.id, bytes);
        } else if (index + 1 == elements_.size()) {
            ++element.stats.out;
            if (results_ != nullptr) {
                results_->expect_one();
                delivered.push_back(std::move(result));
            }
        } else {
            ++element.stats.out;
            give(elements_[index + 1], std::move(bytes));
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
            dispatcher.add_closing(element.closing_id);
            return true;
        }
        element.ended = true;
        dispatcher.begin_stop();
        return true;
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

    void kill_all(TaskDispatcher& dispatcher, const std::string& why) {
        for (DispatchLane& lane : dispatcher.lanes()) {
            if (pool_.alive(lane.slot) && !pool_.doomed(lane.slot)) dispatcher.kill(lane, ErrorKind::worker_died, why);
        }
    }

    void wait_for_process_events(int timeout_ms) {
        pollfd server{pool_.server_fd(), POLLIN, 0};
        if (server.fd >= 0 && ::poll(&server, 1, timeout_ms) > 0) handle_process_events();
    }

    const PipelineOptions options_;
    ResultMailbox* const results_;
    LogCollector logs_;
    RingChannels channels_;
    PendingLimit pending_;  // unbounded: capacity bounds a pipeline's queues
    WorkerPool pool_;
    std::deque<Element> elements_;  // a deque: the dispatcher lists point into it
    std::vector<TaskDispatcher*> all_dispatchers_;
    std::vector<TaskDispatcher*> upstream_dispatchers_;  // all but the sink's
    std::vector<TaskDispatcher*> watched_;               // those the deadlines apply to
    DeadlineWatch deadlines_;
    std::vector<ItemError> errors_;
    std::optional<Bytes> closing_value_;
    std::string failure_;
    int start_error_ = 0;
    bool stopping_early_ = false;
    bool complete_ = false;  // the stream is over (or failed): the loop ends with the last process
    std::atomic<bool> user_stop_{false};
    std::atomic<bool> over_{false};
    EventLoop loop_;  // last: its thread uses everything above
};

}  // namespace multiworker::detail
