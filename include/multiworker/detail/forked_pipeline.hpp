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
// Measured (bench_pipeline, 2 cores, 100,000 items of x + 1, start-up
// included): a source process, one stage of 2 workers and a sink 0.29 us an
// item; each further stage, one more hop through the parent, adds 0.11 to
// 0.16 us (2 to 4 stages: 0.40, 0.54, 0.70 us). docs/pipelines.md has the table.

#include <multiworker/detail/deadline_watch.hpp>
#include <multiworker/detail/event_loop.hpp>
#include <multiworker/detail/pipeline_elements.hpp>
#include <multiworker/detail/pipeline_plan.hpp>
#include <multiworker/detail/pipeline_progress.hpp>
#include <multiworker/detail/pipeline_stream.hpp>
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
          channels_{PipelineStream::total_processes(plans), options.ring_bytes, PipelineStream::max_message_bytes},
          pending_{0},
          pool_{channels_.size(), logs_, true, [this](int slot, const WorkerBirth& birth) { run_worker(slot, birth); },
                PipelineStream::worker_names(plans)},
          stream_{std::move(plans), options, results, channels_, pool_, logs_, pending_},
          progress_{options},
          loop_{*this, channels_.parent_doorbell()} {}

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
        progress_.start();
    }

    /// Blocks until the run has ended and every process is reaped.
    void wait() {
        loop_.join();
        logs_.stop(std::chrono::milliseconds{2000});
        progress_.finish(stream_.stats());
    }

    /// Ends the run early, from any thread (Pipeline::stop()).
    void request_stop() {
        user_stop_.store(true);
        loop_.notify();
    }

    /// The run has ended and every process is reaped.
    [[nodiscard]] bool done() const noexcept { return over_.load(); }

    /// What the run did; call after wait().
    [[nodiscard]] RunReport report() { return stream_.report(); }

private:
    using Clock = std::chrono::steady_clock;

    void run_worker(int slot, const WorkerBirth& birth) {
        const PipelineStream::Element& element = stream_.element_of_slot(slot);
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
            for (TaskDispatcher* dispatcher : stream_.dispatchers()) {
                for (DispatchLane& lane : dispatcher->lanes()) dispatcher->spawn(lane);
            }
            pool_.await_spawns(options_.start_timeout, *this, "multiworker::Pipeline::start()");
        } catch (...) {
            pool_.shut_down();
            over_.store(true);
            throw;
        }
        PipelineStream::Element& first = stream_.elements().front();
        if (first.plan.kind == ElementKind::source_process) stream_.give(first, Bytes{});
    }

    bool run_pass(bool collect_results) override {
        // The request flag's only request here is stop(), read from user_stop_.
        bool progress = loop_.take_request_flag();
        if (user_stop_.load(std::memory_order_relaxed) && !stream_.stopping_early() && !stream_.complete()) {
            stream_.stop_early();
            progress = true;
        }
        progress |= stream_.pass(collect_results);
        if (progress_.enabled()) {
            if (const auto now = Clock::now(); progress_.publish_due(now)) progress_.publish(stream_.stats(), now);
        }
        return progress;
    }

    [[nodiscard]] bool finished() const override { return stream_.complete() && pool_.no_processes(); }

    void enforce_deadlines() override { stream_.deadlines().enforce(stream_.watched()); }

    void handle_process_events() override {
        pool_.handle_events(*this);
        stream_.route_all();
    }

    [[nodiscard]] int process_events_fd() const override { return pool_.server_fd(); }

    /// Only elements whose outputs the next one has room for count: the others wait.
    template <class Predicate>
    [[nodiscard]] bool any_readable(Predicate&& predicate) const {
        const auto& elements = stream_.elements();
        for (std::size_t i = 0; i < elements.size(); ++i) {
            if (elements[i].dispatcher && stream_.has_room_after(i) && predicate(*elements[i].dispatcher)) return true;
        }
        return false;
    }

    [[nodiscard]] bool work_ready() const override {
        return any_readable([](const TaskDispatcher& d) { return d.work_ready(); });
    }

    [[nodiscard]] bool result_expected_soon() const override {
        return any_readable([](const TaskDispatcher& d) { return d.activity() == LaneActivity::result_soon; });
    }

    [[nodiscard]] int sleep_budget_ms() const override {
        return stream_.deadlines().sleep_budget_ms(stream_.watched());
    }

    [[nodiscard]] bool needs_loop_after(bool) const override { return true; }

    [[nodiscard]] bool worker_starved(Clock::time_point cutoff) const override {
        const auto& all = stream_.dispatchers();
        return std::any_of(all.begin(), all.end(),
                           [cutoff](const TaskDispatcher* d) { return d->worker_waiting_since(cutoff); });
    }

    void abandon(const std::string& why) override {
        logs_.report(spdlog::level::err, why);
        stream_.fail_run(why);
        for (TaskDispatcher* dispatcher : stream_.dispatchers()) {
            for (DispatchLane& lane : dispatcher->lanes()) {
                pool_.disable(lane.slot);
                if (pool_.alive(lane.slot) && !pool_.doomed(lane.slot))
                    dispatcher->kill(lane, ErrorKind::worker_died, why);
            }
        }
    }

    void wind_down() override {
        pool_.shut_down();
        over_.store(true);                             // first: a getter that sees the stream's end sees done() too
        if (results_ != nullptr) results_->forget(1);  // the stream's token (see Pipeline::start())
    }

    // ----- WorkerPool::Events -----

    void worker_started(int) override {}

    void worker_exited(const WorkerExit& exit) override {
        PipelineStream::Element& element = stream_.element_of_slot(exit.slot);
        TaskDispatcher& dispatcher = *element.dispatcher;
        DispatchLane& lane = dispatcher.lanes()[static_cast<std::size_t>(exit.slot - dispatcher.lanes().front().slot)];
        // A source killed by an early stop emitted what nobody wanted any more: no news.
        const bool stopped_source = element.plan.kind == ElementKind::source_process && stream_.stopping_early() &&
                                    exit.killed_by_parent() && !stream_.failed();
        if (dispatcher.worker_exited(exit, stream_.deadlines().grace_over(), stopped_source) && !element.ended) {
            dispatcher.spawn(lane);
        }
        dispatcher.fail_backlog_if_no_worker();
    }

    void spawn_failed(int slot, int /*error*/) override {
        stream_.element_of_slot(slot).dispatcher->fail_backlog_if_no_worker();
    }

    const PipelineOptions options_;
    ResultMailbox* const results_;
    LogCollector logs_;
    RingChannels channels_;
    PendingLimit pending_;  // unbounded: capacity bounds a pipeline's queues
    WorkerPool pool_;
    PipelineStream stream_;
    PipelineProgress progress_;
    std::atomic<bool> user_stop_{false};
    std::atomic<bool> over_{false};
    EventLoop loop_;  // last: its thread uses everything above
};

}  // namespace multiworker::detail
