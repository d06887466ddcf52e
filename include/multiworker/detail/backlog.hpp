#pragma once

// Backlog: the tasks of one dispatcher that wait for a worker. New tasks wait
// packed in a TaskQueue (a few bytes each, however many); the few given back
// (by a worker that died before running them, or to run again after a
// failure) wait as whole QueuedTasks, with their failure counts, and go first.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/dispatch_lane.hpp>
#include <multiworker/detail/task_queue.hpp>
#include <multiworker/task_id.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace multiworker::detail {

class Backlog {
public:
    [[nodiscard]] bool empty() const noexcept { return returned_.empty() && fresh_.empty(); }
    [[nodiscard]] std::size_t size() const noexcept { return returned_.size() + fresh_.size(); }

    /// Queues a new task behind the others.
    void add(TaskId id, Bytes&& arguments) { fresh_.push_back(id, std::move(arguments)); }

    /// Queues every task of `tasks` behind the others, leaving it empty.
    void add_all(TaskQueue& tasks) { fresh_.append(tasks); }

    /// Queues the element's closing call (FrameKind::closing) behind the tasks.
    void add_closing(TaskId id) { fresh_.push_back(id, Bytes{}, true); }

    /// Puts a task given back in front of all others.
    void give_back(QueuedTask&& task) { returned_.push_front(std::move(task)); }

    /// True if a task waits whose id is below `admit_below`.
    [[nodiscard]] bool next_is_below(std::uint64_t admit_below) const noexcept {
        if (!returned_.empty()) return returned_.front().id.value() < admit_below;
        return !fresh_.empty() && fresh_.front_id().value() < admit_below;
    }

    /// Takes the oldest task; the backlog must not be empty.
    QueuedTask take_next() {
        QueuedTask task{TaskId{}, Bytes{}};
        take_next_into(task);
        return task;
    }

    /// take_next() into `task`, which is replaced (see TaskQueue::take_front_into()).
    void take_next_into(QueuedTask& task) {
        if (!returned_.empty()) {
            task = std::move(returned_.front());
            returned_.pop_front();
            return;
        }
        task.failures = 0;
        task.closing = fresh_.take_front_into(task.id, task.arguments);
    }

    /// Calls `visit(TaskId)` for every task, in the order they would run.
    template <class Visit>
    void for_each_id(Visit&& visit) const {
        for (const QueuedTask& task : returned_) visit(task.id);
        fresh_.for_each([&visit](const TaskQueue::Task& task) { visit(task.id); });
    }

    /// Ends every task as a no_worker error saying `why`, into `failed`, and
    /// empties the backlog; returns how many.
    std::size_t fail_all(const std::string& why, std::vector<RawResult>& failed) {
        for_each_id([&](TaskId id) { failed.push_back(no_worker_result(id, why)); });
        const std::size_t count = size();
        clear();
        return count;
    }

    void clear() noexcept {
        returned_.clear();
        fresh_.clear();
    }

private:
    BlockDeque<QueuedTask> returned_;
    TaskQueue fresh_;
};

}  // namespace multiworker::detail
