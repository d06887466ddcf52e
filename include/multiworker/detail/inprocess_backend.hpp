#pragma once

// In-process execution: every task runs in the calling thread, on the
// Processor's own object. No fork, no shared memory, so the method can be
// unit-tested and stepped through in a debugger. The worker hooks run too:
// on_worker_start in start(), on_worker_exit in stop(). Arguments and results still
// go through the same encoding as in worker processes, so a type that does not
// serialize fails the same way in both modes.

#include <multiworker/detail/backend.hpp>

#include <unistd.h>

#include <deque>
#include <mutex>
#include <utility>

namespace multiworker::detail {

class InProcessBackend final : public ExecutionBackend {
public:
    InProcessBackend(ResultMailbox& mailbox, TaskRunner runner, WorkerHooks hooks)
        : mailbox_{mailbox}, runner_{std::move(runner)}, hooks_{std::move(hooks)} {}

    /// Calls the start hook, then runs the tasks added so far, in order. A
    /// start hook that throws fails start() itself: there is no other worker.
    void start() override {
        std::lock_guard lock{mutex_};
        if (hooks_.on_start) hooks_.on_start();
        started_ = true;
        while (!queued_.empty()) {
            auto [id, arguments] = std::move(queued_.front());
            queued_.pop_front();
            run(id, arguments);
        }
    }

    /// Before start(): queues. After: runs the task now, before returning.
    void submit(TaskId id, Bytes&& arguments) override {
        std::lock_guard lock{mutex_};
        if (started_) {
            run(id, arguments);
        } else {
            queued_.emplace_back(id, std::move(arguments));
        }
    }

    std::size_t cancel() override {
        std::lock_guard lock{mutex_};
        return cancel_queued();
    }

    void stop(std::chrono::milliseconds /*grace*/) override {
        std::lock_guard lock{mutex_};
        cancel_queued();
        if (started_ && hooks_.on_exit) hooks_.on_exit();
        started_ = false;
    }

    [[nodiscard]] std::vector<pid_t> worker_pids() const override { return {}; }

private:
    std::size_t cancel_queued() {
        const std::size_t count = queued_.size();
        queued_.clear();
        mailbox_.forget(count);
        return count;
    }

    void run(TaskId id, const Bytes& arguments) {
        Bytes payload;
        bool ok = false;
        execute_task(runner_, arguments, [&payload, &ok](bool succeeded, const EncodedView& outcome) {
            ok = succeeded;
            payload.reserve(outcome.size());
            payload.assign(outcome.head.begin(), outcome.head.end());
            payload.insert(payload.end(), outcome.body.begin(), outcome.body.end());
        });
        RawResult result{id, Bytes{}, 0, ::getpid()};
        if (ok) {
            result.outcome = std::move(payload);
        } else {
            result.outcome = std::make_unique<TaskError>(error_from_report(id, payload, 0, ::getpid()));
        }
        std::vector<RawResult> batch;
        batch.push_back(std::move(result));
        mailbox_.deliver(batch);
    }

    ResultMailbox& mailbox_;
    TaskRunner runner_;
    WorkerHooks hooks_;
    // Calls from several threads run one task at a time: the object is the
    // user's single-threaded code.
    std::mutex mutex_;
    std::deque<std::pair<TaskId, Bytes>> queued_;
    bool started_ = false;
};

}  // namespace multiworker::detail
