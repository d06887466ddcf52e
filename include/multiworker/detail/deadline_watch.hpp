#pragma once

// The parent's time limits: a task's task_timeout, and stop()'s grace period,
// at whose end every worker still running is killed. Both are checked by the
// event loop between passes; sleep_budget_ms() keeps its sleeps short enough
// to miss neither.

#include <multiworker/detail/task_dispatcher.hpp>

#include <algorithm>
#include <chrono>
#include <span>
#include <string>

namespace multiworker::detail {

class DeadlineWatch {
public:
    using Clock = std::chrono::steady_clock;

    /// Starts stop()'s grace period; `ends_when` completes "was still running
    /// a task when ..." in the errors of the tasks killed at its end.
    void begin_grace(std::chrono::milliseconds grace, std::string ends_when) {
        grace_started_ = true;
        grace_end_ = Clock::now() + grace;
        grace_ends_when_ = std::move(ends_when);
    }

    /// The grace period is over: what still ran was killed.
    [[nodiscard]] bool grace_over() const noexcept { return grace_killed_; }

    /// Kills the workers of `dispatchers` whose task outlived its timeout,
    /// and every worker once the grace period is over.
    void enforce(std::span<TaskDispatcher* const> dispatchers) {
        const auto now = Clock::now();
        if (grace_started_ && !grace_killed_ && now >= grace_end_) {
            grace_killed_ = true;
            for (TaskDispatcher* dispatcher : dispatchers) kill_all(*dispatcher);
        }
        for (TaskDispatcher* dispatcher : dispatchers) kill_timed_out(*dispatcher, now);
    }

    /// How long the loop may sleep without missing a deadline, or a queued
    /// task due to move to an idle worker (at most a second).
    [[nodiscard]] int sleep_budget_ms(std::span<TaskDispatcher* const> dispatchers) const {
        auto wake = Clock::now() + std::chrono::seconds{1};
        if (grace_started_ && !grace_killed_) wake = std::min(wake, grace_end_);
        for (const TaskDispatcher* dispatcher : dispatchers) {
            // A queued task may become due to move to an idle worker (see
            // DispatchLane::queues_behind_long_task()): look again soon.
            if (dispatcher->worker_idles_beside_queued_tasks())
                wake = std::min(wake, Clock::now() + idle_worker_recheck);
            const auto timeout = dispatcher->policy().task_timeout;
            if (timeout.count() <= 0) continue;
            for (const DispatchLane& lane : dispatcher->lanes()) {
                if (!dispatcher->alive(lane) || lane.in_flight.empty()) continue;
                // A task not started yet cannot time out before a full timeout from now.
                wake = std::min(wake, dispatcher->task_deadline(lane).value_or(Clock::now() + timeout));
            }
        }
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(wake - Clock::now());
        return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1000));
    }

    /// A deadline may be due soon: the grace period runs, or tasks run under a timeout.
    [[nodiscard]] bool watching(bool tasks_timed) const noexcept { return grace_started_ || tasks_timed; }

private:
    static constexpr std::chrono::milliseconds idle_worker_recheck{1};

    void kill_all(TaskDispatcher& dispatcher) {
        for (DispatchLane& lane : dispatcher.lanes()) {
            if (!dispatcher.alive(lane) || dispatcher.doomed(lane)) continue;
            dispatcher.kill(lane, ErrorKind::worker_died, "was still running a task when " + grace_ends_when_);
        }
    }

    static void kill_timed_out(TaskDispatcher& dispatcher, Clock::time_point now) {
        const auto timeout = dispatcher.policy().task_timeout;
        if (timeout.count() <= 0) return;
        for (DispatchLane& lane : dispatcher.lanes()) {
            const auto deadline = dispatcher.task_deadline(lane);
            if (deadline && now >= *deadline) {
                dispatcher.kill(lane, ErrorKind::timeout,
                                "exceeded task_timeout (" + std::to_string(timeout.count()) + " ms)");
            }
        }
    }

    bool grace_started_ = false;
    bool grace_killed_ = false;
    Clock::time_point grace_end_{};
    std::string grace_ends_when_;
};

}  // namespace multiworker::detail
