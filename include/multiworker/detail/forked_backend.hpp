#pragma once

// Execution in forked worker processes: the one-stage case of the parts a
// pipeline is built from. A WorkerPool forks and watches the workers; their
// RingChannels carry tasks and results; a TaskDispatcher hands tasks out and
// settles every one; a DeadlineWatch kills what outlives its time; an
// EventLoop thread drives them all. This class adds what a Processor's user
// threads need on top: an inbox for tasks, cancels, take-backs and the stop
// request, and a pass run in the caller's thread while the loop sleeps.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/deadline_watch.hpp>
#include <multiworker/detail/event_loop.hpp>
#include <multiworker/detail/pending_limit.hpp>
#include <multiworker/detail/ring_channels.hpp>
#include <multiworker/detail/spin_lock.hpp>
#include <multiworker/detail/task_dispatcher.hpp>
#include <multiworker/detail/task_queue.hpp>
#include <multiworker/detail/worker_logging.hpp>
#include <multiworker/detail/worker_loop.hpp>
#include <multiworker/detail/worker_pool.hpp>
#include <multiworker/options.hpp>

#include <sched.h>

#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace multiworker::detail {

class ForkedBackend final : public ExecutionBackend, private EventLoop::Engine, private WorkerPool::Events {
public:
    /// `make_large_result` (may be empty) builds the final value a large
    /// result is read into (see LargePayload).
    ForkedBackend(const Options& options, ResultMailbox& mailbox, TaskRunner runner, WorkerHooks hooks,
                  std::vector<std::shared_ptr<spdlog::logger>> log_destinations,
                  LargePayloadMaker make_large_result = {})
        : options_{options},
          mailbox_{mailbox},
          runner_{std::move(runner)},
          hooks_{std::move(hooks)},
          make_large_result_{std::move(make_large_result)},
          log_collector_{std::move(log_destinations), options.log_level, options.worker_output},
          pending_{options.max_pending},
          pool_{options.workers, log_collector_, options.worker_output != WorkerOutput::inherit,
                [this](int slot, const WorkerBirth& birth) { run_worker(slot, birth); }},
          loop_{*this, channels_.parent_doorbell()} {}

    ~ForkedBackend() override { stop(options_.stop_timeout, "the Processor's destructor stopped"); }

    ForkedBackend(const ForkedBackend&) = delete;
    ForkedBackend& operator=(const ForkedBackend&) = delete;

    void start() override {
        channels_ = RingChannels{options_.workers, options_.ring_bytes, options_.max_message_bytes};
        for (unsigned i = 0; i < options_.workers; ++i) {
            channels_.endpoints(i).wait_for_debugger = options_.debug_worker == static_cast<int>(i);
        }
        dispatcher_.emplace(policy(), channels_, pool_, log_collector_, pending_, 0, static_cast<int>(options_.workers),
                            make_large_result_);
        dispatchers_[0] = &*dispatcher_;
        try {
            loop_.start("mw-event-loop");
        } catch (...) {
            log_collector_.stop(std::chrono::milliseconds{1000});
            throw;
        }
    }

    void submit(TaskId id, Bytes&& arguments) override {
        if (pending_.bounded()) pending_.wait_for_room(stop_requested_);
        {
            std::lock_guard lock{requests_mutex_};
            if (stop_requested_) refuse_task_after_stop(mailbox_);
            pending_.returned_to_queue();
            inbox_.push_back(id, std::move(arguments));
        }
        // Before start(), the flag tells the loop's first pass to look.
        const bool raised = loop_.raise_request_flag();
        // A sleeping loop would take a wake-up of tens of microseconds to
        // hand the task on; this thread can do it now.
        if (!loop_.serve_in_caller(EventLoop::CallerRole::adding) && raised) loop_.ring();
        // A caller adding task after task never gives up its core by itself;
        // a worker queued behind it would wait for the end of its time slice
        // (see EventLoop::make_way_for_workers()). Every 64th task, when workers wait.
        if (id.value() % 64 == 0 && loop_.workers_wait_for_core()) ::sched_yield();
    }

    std::size_t cancel() override {
        std::future<std::size_t> answer;
        {
            std::lock_guard lock{requests_mutex_};
            if (!loop_running_) return drop_inbox();
            answer = cancel_requests_.emplace_back().get_future();
        }
        loop_.notify();
        return answer.get();
    }

    std::vector<std::pair<TaskId, Bytes>> take_back_unstarted() override {
        std::future<std::vector<QueuedTask>> answer;
        {
            std::lock_guard lock{requests_mutex_};
            if (!loop_running_) return {};
            answer = take_back_requests_.emplace_back().get_future();
        }
        loop_.notify();
        std::vector<std::pair<TaskId, Bytes>> tasks;
        for (QueuedTask& task : answer.get()) tasks.emplace_back(task.id, std::move(task.arguments));
        return tasks;
    }

    void stop(std::chrono::milliseconds grace, std::string grace_end) override {
        {
            std::lock_guard lock{requests_mutex_};
            if (!stop_requested_) {
                stop_grace_ = grace;
                stop_grace_end_ = std::move(grace_end);
            }
            stop_requested_ = true;
            if (!loop_running_) drop_inbox();
        }
        pending_.wake_all();  // adders waiting for room see the stop
        if (!loop_.joinable()) return;
        loop_.notify();
        loop_.join();
        // Every worker is gone, so every log pipe reaches end-of-file soon;
        // the grace period only matters if a worker's own child kept one open.
        log_collector_.stop(std::chrono::milliseconds{2000});
    }

    /// Collects results (and hands out tasks) in the calling thread if the
    /// loop sleeps, so that a caller waiting for a result needs no wake-up
    /// of the loop to get it.
    void help_while_waiting() override { loop_.serve_in_caller(EventLoop::CallerRole::waiting); }

    [[nodiscard]] std::vector<pid_t> worker_pids() const override {
        std::lock_guard lock{requests_mutex_};
        return live_pids_;
    }

    [[nodiscard]] std::size_t undispatched() const override { return pending_.queued(); }

private:
    using Clock = std::chrono::steady_clock;

    // Only recent progress makes a result likely within the loop's spin.
    static constexpr std::chrono::microseconds recent_progress{50};

    [[nodiscard]] DispatchPolicy policy() const noexcept {
        return DispatchPolicy{options_.retries, options_.retry_exceptions, options_.task_timeout,
                              options_.max_tasks_per_worker, options_.max_message_bytes};
    }

    /// Drops what the inbox holds (no loop runs to take it); under requests_mutex_.
    std::size_t drop_inbox() {
        const std::size_t count = inbox_.size();
        inbox_.clear();
        mailbox_.forget(count);
        pending_.left_queue(count);
        return count;
    }

    /// The body of each worker process (in the fork server's child).
    void run_worker(int slot, const WorkerBirth& birth) {
        WorkerEndpoints endpoints = channels_.endpoints(static_cast<std::size_t>(slot));
        endpoints.parent_pid = birth.server;
        worker_exception_traces() = options_.exception_stack_traces;  // this process is the worker now
        run_worker_process(endpoints, runner_, hooks_, birth.pipes.log, birth.pipes.out >= 0, options_.log_level,
                           birth.inherited_loggers);
    }

    // ----- EventLoop::Engine -----

    void prepare() override {
        try {
            pool_.start();
            // Only now: a thread of ours running during the fork could hold a
            // lock (the allocator's, a logger's) that the fork server would
            // inherit, locked, forever.
            log_collector_.start();
            for (DispatchLane& lane : dispatcher_->lanes()) dispatcher_->spawn(lane);
            pool_.await_spawns(options_.start_timeout, *this, "multiworker::Processor::start()");
        } catch (...) {
            pool_.shut_down();
            throw;
        }
        publish_pids();
        std::lock_guard lock{requests_mutex_};
        loop_running_ = true;
    }

    bool run_pass(bool collect_results) override {
        bool progress = accept_requests();
        if (collect_results) progress |= dispatcher_->collect();
        progress |= dispatcher_->dispatch();
        deliver();
        if (progress) last_progress_ = Clock::now();
        return progress;
    }

    [[nodiscard]] bool finished() const override { return dispatcher_->stopping() && pool_.no_processes(); }

    void enforce_deadlines() override { deadlines_.enforce(dispatchers_); }

    void handle_process_events() override {
        pool_.handle_events(*this);
        deliver();
    }

    [[nodiscard]] int process_events_fd() const override { return pool_.server_fd(); }

    [[nodiscard]] bool work_ready() const override { return dispatcher_->work_ready(); }

    /// Spin when a short task runs, or, with no long task running, when the
    /// loop was busy a moment ago (a caller adding one task after another's
    /// result is in). Otherwise sleep at once: on a machine with as many
    /// cores as workers, spinning through every millisecond-long task would
    /// take a core's time from the workers.
    [[nodiscard]] bool result_expected_soon() const override {
        const auto activity = dispatcher_->activity();
        if (activity == LaneActivity::result_soon) return true;
        return activity == LaneActivity::idle && Clock::now() - last_progress_ < recent_progress;
    }

    [[nodiscard]] int sleep_budget_ms() const override { return deadlines_.sleep_budget_ms(dispatchers_); }

    [[nodiscard]] bool needs_loop_after(bool progress) const override {
        return dispatcher_->stopping() || (progress && options_.task_timeout.count() > 0) ||
               dispatcher_->worker_idles_beside_queued_tasks();
    }

    [[nodiscard]] bool worker_starved(Clock::time_point cutoff) const override {
        return dispatcher_->worker_waiting_since(cutoff);
    }

    void abandon(const std::string& why) override {
        log_collector_.report(spdlog::level::err, why);
        for (DispatchLane& lane : dispatcher_->lanes()) {
            pool_.disable(lane.slot);
            if (pool_.alive(lane.slot) && !pool_.doomed(lane.slot))
                dispatcher_->kill(lane, ErrorKind::worker_died, why);
        }
        const auto deadline = Clock::now() + std::chrono::seconds{5};
        while (!pool_.no_processes() && pool_.server_fd() >= 0 && Clock::now() < deadline)
            pool_.wait_for_events(100, *this);
        dispatcher_->fail_backlog_if_no_worker();
        deliver();
    }

    void wind_down() override {
        pool_.shut_down();
        std::lock_guard lock{requests_mutex_};
        loop_running_ = false;
        for (auto& request : cancel_requests_) request.set_value(0);
        cancel_requests_.clear();
        for (auto& request : take_back_requests_) request.set_value({});
        take_back_requests_.clear();
    }

    // ----- WorkerPool::Events -----

    void worker_started(int /*slot*/) override { publish_pids(); }

    void worker_exited(const WorkerExit& exit) override {
        DispatchLane& lane = dispatcher_->lanes()[static_cast<std::size_t>(exit.slot)];
        if (dispatcher_->worker_exited(exit, deadlines_.grace_over())) dispatcher_->spawn(lane);
        publish_pids();
        dispatcher_->fail_backlog_if_no_worker();
    }

    void spawn_failed(int /*slot*/, int /*error*/) override { dispatcher_->fail_backlog_if_no_worker(); }

    // ----- requests -----

    bool accept_requests() {
        if (!loop_.take_request_flag()) return false;
        std::vector<std::promise<std::size_t>> cancels;
        std::vector<std::promise<std::vector<QueuedTask>>> take_backs;
        bool stop = false;
        std::chrono::milliseconds grace{};
        std::string grace_end;
        {
            std::unique_lock lock{requests_mutex_, std::try_to_lock};
            if (!lock.owns_lock()) {
                // A user thread is adding: better to serve the workers now and
                // come back than to wait for a thread that may have lost its core.
                loop_.keep_request_flag();
                return false;
            }
            arrived_.swap(inbox_);
            cancels.swap(cancel_requests_);
            take_backs.swap(take_back_requests_);
            stop = stop_requested_;
            grace = stop_grace_;
            if (stop) grace_end = stop_grace_end_;
        }
        dispatcher_->backlog().add_all(arrived_);  // arrived_ keeps a chunk for the next swap
        dispatcher_->fail_backlog_if_no_worker();
        for (auto& request : cancels) request.set_value(dispatcher_->cancel_unstarted());
        for (auto& request : take_backs) request.set_value(dispatcher_->take_back_unstarted());
        if (stop && !dispatcher_->stopping()) {
            deadlines_.begin_grace(grace, std::move(grace_end));
            dispatcher_->begin_stop();
        }
        return true;
    }

    void deliver() {
        mailbox_.deliver(dispatcher_->finished());
        mailbox_.forget(dispatcher_->take_forgotten());
    }

    void publish_pids() {
        std::vector<pid_t> pids = pool_.pids();
        std::lock_guard lock{requests_mutex_};
        live_pids_ = std::move(pids);
    }

    const Options options_;
    ResultMailbox& mailbox_;
    TaskRunner runner_;
    WorkerHooks hooks_;
    LargePayloadMaker make_large_result_;
    LogCollector log_collector_;
    PendingLimit pending_;
    RingChannels channels_;
    WorkerPool pool_;
    std::optional<TaskDispatcher> dispatcher_;  // from start(): it needs the channels
    std::array<TaskDispatcher*, 1> dispatchers_{};
    DeadlineWatch deadlines_;

    // Shared between user threads and the loop, under requests_mutex_.
    mutable SpinLock requests_mutex_;  // held for a few instructions at a time
    TaskQueue inbox_;
    std::vector<std::promise<std::size_t>> cancel_requests_;
    std::vector<std::promise<std::vector<QueuedTask>>> take_back_requests_;
    std::atomic<bool> stop_requested_{false};  // atomic too: adders waiting for room read it without the lock
    std::chrono::milliseconds stop_grace_{};
    std::string stop_grace_end_;
    bool loop_running_ = false;
    std::vector<pid_t> live_pids_;

    // Owned by whichever thread holds the loop's duty (the loop thread alone
    // before its passes and after them).
    TaskQueue arrived_;  // its side of the inbox swap
    Clock::time_point last_progress_{};

    EventLoop loop_;  // last: its thread uses everything above
};

}  // namespace multiworker::detail
