#pragma once

// Hands tasks to a set of worker slots and takes their outcomes back: the
// backlog, each worker's window of tasks in flight (dispatch_lane.hpp), the
// claims that decide whether a task a worker was sent has run, retries, and
// what a worker's death means for its tasks. One dispatcher serves a
// Processor; a pipeline has one per stage, all on one pool and one loop.
//
// Accounting when a worker dies: tasks it was sent but had not claimed go back
// to the front of the queue (they never ran); the one task it had claimed and
// not answered is retried (retries) or reported as failed. A result the
// worker finished writing before it died is delivered normally. So every task
// ends with exactly one outcome in finished(), or is counted as forgotten.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/backlog.hpp>
#include <multiworker/detail/dispatch_lane.hpp>
#include <multiworker/detail/outcome_reader.hpp>
#include <multiworker/detail/pending_limit.hpp>
#include <multiworker/detail/ring_channels.hpp>
#include <multiworker/detail/worker_pool.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

namespace multiworker::detail {

class TaskDispatcher {
public:
    using Clock = std::chrono::steady_clock;

    /// Serves `slot_count` slots from `first_slot` on, of `pool` and `channels`.
    TaskDispatcher(DispatchPolicy policy, RingChannels& channels, WorkerPool& pool, LogCollector& logs,
                   PendingLimit& pending, int first_slot, int slot_count, LargePayloadMaker make_large = {})
        : policy_{policy},
          channels_{channels},
          pool_{pool},
          logs_{logs},
          pending_{pending},
          make_large_{std::move(make_large)} {
        lanes_.resize(static_cast<std::size_t>(slot_count));
        for (int i = 0; i < slot_count; ++i) {
            DispatchLane& lane = lanes_[static_cast<std::size_t>(i)];
            lane.index = i;
            lane.slot = first_slot + i;
            lane.reset(policy_.max_message_bytes, make_large_);
            channels_.endpoints(static_cast<std::size_t>(lane.slot)).track_start_times =
                policy_.task_timeout.count() > 0;
        }
    }

    [[nodiscard]] std::vector<DispatchLane>& lanes() noexcept { return lanes_; }
    [[nodiscard]] const std::vector<DispatchLane>& lanes() const noexcept { return lanes_; }

    /// Outcomes ready for delivery; the owner takes them after each pass.
    [[nodiscard]] std::vector<RawResult>& finished() noexcept { return finished_; }

    /// Under DispatchPolicy::ordered: tasks done with no item (not in finished()); the owner takes both.
    [[nodiscard]] std::vector<TaskId>& silent() noexcept { return outcomes_.silent(); }

    /// Tasks dropped unrun since the last call (cancelled, or lost in a stop).
    [[nodiscard]] std::size_t take_forgotten() noexcept { return std::exchange(forgotten_, 0); }

    [[nodiscard]] bool stopping() const noexcept { return stopping_; }

    /// The tasks waiting for a worker: new ones are added here.
    [[nodiscard]] Backlog& backlog() noexcept { return backlog_; }
    [[nodiscard]] const Backlog& backlog() const noexcept { return backlog_; }

    using Tally = OutcomeTally;
    [[nodiscard]] const Tally& tally() const noexcept { return tally_; }

    /// A task asked to end the whole run (Emit::stop()).
    [[nodiscard]] bool stop_requested() const noexcept { return outcomes_.stop_requested(); }

    /// Nothing queued, nothing in flight.
    [[nodiscard]] bool idle() const noexcept {
        return backlog_.empty() &&
               std::all_of(lanes_.begin(), lanes_.end(), [](const DispatchLane& l) { return l.in_flight.empty(); });
    }

    /// Readies the lane of `slot` for a new process, then asks the pool for one.
    void spawn(DispatchLane& lane) {
        channels_.reset(static_cast<std::size_t>(lane.slot));
        lane.reset(policy_.max_message_bytes, make_large_);
        pool_.spawn(lane.slot);
    }

    /// From now on: nothing retried, nothing new handed out, each worker told
    /// to end once its tasks are done. Drops what no worker has claimed.
    void begin_stop() {
        stopping_ = true;
        cancel_unstarted();
    }

    /// Drops the backlog and every task a worker has not claimed; returns the count.
    std::size_t cancel_unstarted() {
        std::size_t count = backlog_.size();
        pending_.left_queue(count);
        backlog_.clear();
        for (DispatchLane& lane : lanes_) {
            if (pool_.alive(lane.slot)) count += take_back_unclaimed(lane).size();
        }
        forgotten_ += count;
        return count;
    }

    /// Takes the tasks no worker has claimed out of the dispatcher, in the
    /// order they were to run, for another host to run; they count as forgotten.
    std::vector<QueuedTask> take_back_unstarted() {
        std::vector<QueuedTask> tasks;
        for (DispatchLane& lane : lanes_) {
            if (pool_.alive(lane.slot)) std::ranges::move(take_back_unclaimed(lane), std::back_inserter(tasks));
        }
        pending_.left_queue(backlog_.size());
        while (!backlog_.empty()) tasks.push_back(backlog_.take_next());
        forgotten_ += tasks.size();
        return tasks;
    }

    // ----- results -----

    /// Reads every complete outcome from every live worker; true if any.
    bool collect() {
        bool progress = false;
        for (DispatchLane& lane : lanes_) {
            if (pool_.alive(lane.slot) && !pool_.doomed(lane.slot)) progress |= collect(lane, pool_.pid(lane.slot));
        }
        return progress;
    }

    // ----- dispatch -----

    /// Streams frames on, hands backlog tasks to the least loaded workers
    /// within their windows, and tells workers due to end so. Only tasks with
    /// ids below `admit_below` are handed out (an ordered stage's bound on its
    /// reorder buffer; a retried task, whose id is lower, always goes). True
    /// if anything moved.
    bool dispatch(std::uint64_t admit_below = std::numeric_limits<std::uint64_t>::max()) {
        bool progress = false;
        for (DispatchLane& lane : lanes_) {
            progress |= continue_sending(lane);
            // Exact for the whole pass: sending a task adds one to both the
            // tasks in flight and the tasks dispatched, which is all window() reads.
            // 0 for a worker that takes nothing more: the loop below then
            // looks at the lane alone, not at the pool, for every task.
            const bool takes_tasks = pool_.alive(lane.slot) && !pool_.doomed(lane.slot) && !lane.shutdown_sent;
            lane.pass_window =
                takes_tasks ? lane.window(policy_.task_timeout.count() > 0, policy_.max_tasks_per_worker) : 0;
        }
        std::size_t handed_out = hand_out(admit_below);
        if (take_back_for_idle_workers()) handed_out += hand_out(admit_below);
        pending_.left_queue(handed_out);
        progress |= handed_out > 0;
        for (DispatchLane& lane : lanes_) {
            progress |= send_shutdown_if_due(lane);
            // Everything staged for this worker in this pass becomes visible at once, with one doorbell check.
            WorkerEndpoints& endpoints = channels_.endpoints(static_cast<std::size_t>(lane.slot));
            if (pool_.alive(lane.slot) && endpoints.tasks.publish()) endpoints.own.ring();
        }
        return progress;
    }

    // ----- deaths -----

    /// Settles the tasks of a worker that ended (`grace_over`: killed when stop()'s grace
    /// period ended; `expected_end`: ended on purpose, no news). True: give the slot a process.
    bool worker_exited(const WorkerExit& exit, bool grace_over, bool expected_end = false) {
        DispatchLane& lane = lane_of(exit.slot);
        if (!exit.killed_by_parent()) collect(lane, exit.pid);  // results it completed before it ended
        const bool clean_exit = WIFEXITED(exit.status) && WEXITSTATUS(exit.status) == 0;
        const bool expected = clean_exit && lane.shutdown_sent && lane.in_flight.empty();
        requeue_all(take_back_unclaimed(lane));
        lane.held_items.clear();  // its input runs again, or fails: what it emitted is void
        lane.items_of_task = 0;
        for (InFlight& lost : lane.in_flight) settle_lost_task(lane, exit, std::move(lost.task));
        // A worker with no task that ends once stop()'s grace period is over
        // was on its way out: killing it is no news. (A killed worker is
        // given and collected nothing, so in_flight is still what it was.)
        const bool killed_idle = grace_over && lane.in_flight.empty();
        if (!expected && !killed_idle && !expected_end)
            logs_.report(spdlog::level::warn, worker_name(lane, exit.pid) + " " + exit.reason);
        const bool failed_to_start = WIFEXITED(exit.status) && WEXITSTATUS(exit.status) == worker_start_failed_status &&
                                     lane.completed == 0 && lane.in_flight.empty();
        lane.in_flight.clear();
        lane.sending.reset();
        if (failed_to_start) {
            pool_.disable(lane.slot);
            logs_.report(spdlog::level::err,
                         "worker " + std::to_string(lane.index) + " failed to start (see the log); it is not replaced");
        }
        return !stopping_ && !pool_.disabled(lane.slot);
    }

    /// Fails every queued task when no worker is left to run it.
    void fail_backlog_if_no_worker() {
        const auto in_service = [this](const DispatchLane& l) { return pool_.in_service(l.slot); };
        if (stopping_ || std::any_of(lanes_.begin(), lanes_.end(), in_service)) return;
        pending_.left_queue(
            backlog_.fail_all("all " + std::to_string(lanes_.size()) + " workers have exited", finished_));
    }

    /// Kills the worker in `lane`; its exit is then handled like a crash.
    void kill(DispatchLane& lane, ErrorKind kind, std::string why) { pool_.kill(lane.slot, kind, std::move(why)); }

    /// When the lane's running task times out; empty if it runs none.
    [[nodiscard]] std::optional<Clock::time_point> task_deadline(const DispatchLane& lane) const {
        if (!pool_.alive(lane.slot) || pool_.doomed(lane.slot) || lane.in_flight.empty()) return std::nullopt;
        const std::uint64_t claimed =
            channels_.claimed(static_cast<std::size_t>(lane.slot)).load(std::memory_order_acquire);
        if (claimed < lane.in_flight.front().sequence) return std::nullopt;
        const Clock::time_point started{Clock::duration{channels_.started_ns(static_cast<std::size_t>(lane.slot))}};
        return started + policy_.task_timeout;
    }

    [[nodiscard]] const DispatchPolicy& policy() const noexcept { return policy_; }

    /// True when a worker's outcome waits to be read or its frame can go on.
    [[nodiscard]] bool work_ready() const noexcept {
        for (const DispatchLane& lane : lanes_) {
            if (!pool_.alive(lane.slot) || pool_.doomed(lane.slot)) continue;
            const WorkerEndpoints& endpoints = channels_.endpoints(static_cast<std::size_t>(lane.slot));
            if (endpoints.results.has_readable()) return true;
            if (lane.sending && endpoints.tasks.has_space()) return true;
        }
        return false;
    }

    /// What the workers are doing, for the loop's choice between spinning and sleeping.
    [[nodiscard]] LaneActivity activity() const noexcept { return activity_of(lanes_, pool_); }

    /// A worker has had tasks since before `cutoff` and returned no result.
    [[nodiscard]] bool worker_waiting_since(Clock::time_point cutoff) const noexcept {
        return lane_waiting_since(lanes_, pool_, cutoff);
    }

    /// The backlog is empty, a worker that takes tasks has none, and another
    /// has tasks queued: take_back_for_idle_workers() may soon move some.
    [[nodiscard]] bool worker_idles_beside_queued_tasks() const noexcept {
        return !stopping_ && backlog_.empty() && lane_idles_beside_queued_tasks(lanes_);
    }

    [[nodiscard]] bool alive(const DispatchLane& lane) const noexcept { return pool_.alive(lane.slot); }
    /// The parent killed the lane's worker: it is given and collected nothing more.
    [[nodiscard]] bool doomed(const DispatchLane& lane) const noexcept { return pool_.doomed(lane.slot); }

private:
    DispatchLane& lane_of(int slot) { return lanes_[static_cast<std::size_t>(slot - lanes_.front().slot)]; }

    std::string worker_name(const DispatchLane& lane, pid_t pid) const {
        return policy_.label + "worker " + std::to_string(lane.index) + " (pid " + std::to_string(pid) + ")";
    }

    /// The task a dead worker had claimed: run again, or failed.
    void settle_lost_task(const DispatchLane& lane, const WorkerExit& exit, QueuedTask&& task) {
        const std::string what =
            worker_name(lane, exit.pid) + " " + exit.reason + " while running task " + std::to_string(task.id.value());
        if (exit.kill_kind == ErrorKind::worker_died && retry(task, what)) return;
        const std::string message = exit.kill_kind == ErrorKind::timeout ? exit.kill_reason : exit.reason;
        finished_.push_back(
            RawResult{task.id, std::make_unique<TaskError>(exit.kill_kind, task.id, "", message, lane.index, exit.pid),
                      lane.index, exit.pid});
    }

    void requeue(QueuedTask&& task) {
        pending_.returned_to_queue();
        backlog_.give_back(std::move(task));
    }

    /// Puts `tasks` back at the front of the backlog in their order, or
    /// forgets them once stopping; false if there is none.
    bool requeue_all(std::vector<QueuedTask>&& tasks) {
        if (stopping_) forgotten_ += tasks.size();
        for (auto it = tasks.rbegin(); !stopping_ && it != tasks.rend(); ++it) requeue(std::move(*it));
        return !tasks.empty();
    }

    /// Requeues a failed task if its retries allow; false if they are used up.
    bool retry(QueuedTask& task, const std::string& why) {
        if (stopping_ || task.failures >= policy_.retries) return false;
        ++task.failures;
        ++tally_.retried;
        logs_.report(spdlog::level::warn, why + "; running task " + std::to_string(task.id.value()) + " again (retry " +
                                              std::to_string(task.failures) + " of " + std::to_string(policy_.retries) +
                                              ")");
        requeue(std::move(task));
        return true;
    }

    std::vector<QueuedTask> take_back_unclaimed(DispatchLane& lane) {
        return lane.take_back_unclaimed(channels_.claimed(static_cast<std::size_t>(lane.slot)));
    }

    bool collect(DispatchLane& lane, pid_t pid) {
        std::size_t count = 0;
        try {
            count = outcomes_.accept_all(lane, pid, channels_.endpoints(static_cast<std::size_t>(lane.slot)),
                                         [this](QueuedTask& task, const std::string& why) { return retry(task, why); });
        } catch (const std::exception& e) {
            kill(lane, ErrorKind::worker_died, std::string{"sent corrupt data ("} + e.what() + ")");
            return true;
        }
        if (count > 0) lane.update_task_duration(count);
        return count > 0;
    }

    /// Ends a worker at stop(), or when it has served max_tasks_per_worker.
    bool send_shutdown_if_due(DispatchLane& lane) {
        if (!pool_.alive(lane.slot) || lane.shutdown_sent || lane.sending || pool_.doomed(lane.slot)) return false;
        const bool recycle = policy_.max_tasks_per_worker > 0 && lane.dispatched >= policy_.max_tasks_per_worker &&
                             lane.in_flight.empty();
        if (!stopping_ && !recycle) return false;
        lane.sending.emplace(FrameHeader{.kind = FrameKind::shutdown}, std::span<const char>{});
        lane.shutdown_sent = true;
        continue_sending(lane);
        return true;
    }

    /// Hands backlog tasks below `admit_below` to the least loaded workers
    /// within their windows; returns how many.
    std::size_t hand_out(std::uint64_t admit_below) {
        std::size_t handed_out = 0;
        while (backlog_.next_is_below(admit_below)) {
            DispatchLane* target = least_loaded_ready_lane(lanes_);
            if (target == nullptr) break;
            InFlight& sent = target->open_slot();
            backlog_.take_next_into(sent.task);
            send_task(*target, sent);
            ++handed_out;
        }
        return handed_out;
    }

    /// When no task is left to hand out and a worker idles, the tasks queued
    /// behind another worker's long task come back to the backlog, to be
    /// handed out again (that worker will skip them, unclaimed). True if any did.
    bool take_back_for_idle_workers() {
        if (!worker_idles_beside_queued_tasks()) return false;
        const auto now = Clock::now();
        bool took = false;
        for (DispatchLane& lane : lanes_) {
            if (lane.pass_window > 0 && lane.queues_behind_long_task(now))
                took |= requeue_all(take_back_unclaimed(lane));
        }
        return took;
    }

    /// Sends `sent` to the lane's worker, or starts streaming it there.
    void send_task(DispatchLane& lane, const InFlight& sent) {
        try {
            lane.send_task(tasks_of(lane), sent);
        } catch (const std::exception& e) {
            ring_corrupted(lane, e);
        }
    }

    bool continue_sending(DispatchLane& lane) {
        if (!lane.sending || !pool_.alive(lane.slot) || pool_.doomed(lane.slot)) return false;
        try {
            return lane.continue_sending(tasks_of(lane));
        } catch (const std::exception& e) {
            ring_corrupted(lane, e);
            return true;
        }
    }

    /// The worker corrupted its task ring's shared counters: it is killed
    /// (its tasks are then settled as for a crash) and given nothing more.
    void ring_corrupted(DispatchLane& lane, const std::exception& e) {
        kill(lane, ErrorKind::worker_died, std::string{"corrupted its task ring ("} + e.what() + ")");
        lane.pass_window = 0;
    }

    ByteRing& tasks_of(const DispatchLane& lane) {
        return channels_.endpoints(static_cast<std::size_t>(lane.slot)).tasks;
    }

    const DispatchPolicy policy_;
    RingChannels& channels_;
    WorkerPool& pool_;
    LogCollector& logs_;
    PendingLimit& pending_;
    LargePayloadMaker make_large_;
    std::vector<DispatchLane> lanes_;
    Backlog backlog_;
    std::vector<RawResult> finished_;
    std::size_t forgotten_ = 0;
    Tally tally_;
    OutcomeReader outcomes_{policy_.items, policy_.retry_exceptions, policy_.ordered, finished_, tally_};
    bool stopping_ = false;
};

}  // namespace multiworker::detail
