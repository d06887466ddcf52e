#pragma once

// In-process execution: every task runs in the calling thread, on the
// Processor's own object. No fork, no shared memory, so the method can be
// unit-tested and stepped through in a debugger. The worker hooks run too:
// on_worker_start in start(), on_worker_exit in stop(). Arguments and results still
// go through the same encoding as in worker processes, so a type that does not
// serialize fails the same way in both modes.
//
// Outcomes match those with workers: an exception is retried as
// retry_exceptions says, and an on_worker_start that throws leaves no worker,
// so that every task gets a no_worker error (start() itself returns).

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/task_queue.hpp>

#include <unistd.h>

#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>

namespace multiworker::detail {

class InProcessBackend final : public ExecutionBackend {
public:
    /// `exception_retries`: how many times a task whose method threw runs again.
    InProcessBackend(ResultMailbox& mailbox, TaskRunner runner, WorkerHooks hooks, unsigned exception_retries,
                     bool exception_stacks = true)
        : mailbox_{mailbox},
          runner_{std::move(runner)},
          hooks_{std::move(hooks)},
          exception_retries_{exception_retries},
          exception_stacks_{exception_stacks} {}

    /// Calls the start hook, then runs the tasks added so far, in order.
    void start() override {
        std::lock_guard lock{mutex_};
        try {
            if (hooks_.on_start) hooks_.on_start();
        } catch (...) {
            const FailureReport report = report_current_exception();
            start_failure_ = "the in-process worker failed to start: on_worker_start threw " + report.type_name + ": " +
                             report.message;
        }
        started_ = true;
        while (!queued_.empty()) {
            const TaskQueue::Task task = queued_.front();
            run(task.id, task.arguments);
            queued_.pop_front();
        }
    }

    /// Before start(): queues. After: runs the task now, before returning.
    void submit(TaskId id, Bytes&& arguments) override {
        std::lock_guard lock{mutex_};
        if (started_) {
            run(id, arguments);
        } else {
            queued_.push_back(id, std::move(arguments));
        }
    }

    std::size_t cancel() override {
        std::lock_guard lock{mutex_};
        return cancel_queued();
    }

    void stop(std::chrono::milliseconds /*grace*/, std::string /*grace_end*/) override {
        std::lock_guard lock{mutex_};
        cancel_queued();
        if (started_ && !start_failure_ && hooks_.on_exit) hooks_.on_exit();
        started_ = false;
    }

    [[nodiscard]] std::vector<pid_t> worker_pids() const override { return {}; }

    /// Only tasks added before start() wait: later ones run inside add().
    [[nodiscard]] std::size_t undispatched() const override {
        std::lock_guard lock{mutex_};
        return queued_.size();
    }

private:
    std::size_t cancel_queued() {
        const std::size_t count = queued_.size();
        queued_.clear();
        mailbox_.forget(count);
        return count;
    }

    void run(TaskId id, std::span<const char> arguments) {
        RawResult result{id, Bytes{}, 0, ::getpid()};
        if (start_failure_) {
            result.outcome = std::make_unique<TaskError>(ErrorKind::no_worker, id, "", *start_failure_,
                                                         TaskError::no_worker_index, 0);
        } else {
            result.outcome = run_with_retries(id, arguments);
        }
        std::vector<RawResult> batch;
        batch.push_back(std::move(result));
        mailbox_.deliver(batch);
    }

    decltype(RawResult::outcome) run_with_retries(TaskId id, std::span<const char> arguments) {
        for (unsigned attempt = 0;; ++attempt) {
            Bytes payload;
            bool ok = false;
            const auto keep = [&payload, &ok](bool succeeded, const EncodedView& outcome) {
                ok = succeeded;
                assign_bytes(payload, outcome.head, outcome.body);
            };
            execute_task(runner_, arguments, keep, exception_stacks_);
            if (ok) return payload;
            TaskError error = error_from_report(id, payload, 0, ::getpid());
            if (error.kind() != ErrorKind::exception || attempt >= exception_retries_) {
                return std::make_unique<TaskError>(std::move(error));
            }
        }
    }

    ResultMailbox& mailbox_;
    TaskRunner runner_;
    WorkerHooks hooks_;
    const unsigned exception_retries_;
    const bool exception_stacks_;
    std::optional<std::string> start_failure_;  // why on_worker_start failed, if it did
    // Calls from several threads run one task at a time: the object is the
    // user's single-threaded code.
    mutable std::mutex mutex_;
    TaskQueue queued_;
    bool started_ = false;
};

}  // namespace multiworker::detail
