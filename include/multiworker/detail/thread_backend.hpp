#pragma once

// Backend::threads: N threads of the calling process, each running tasks on
// its own copy of the user's object, so that the method needs no thread
// safety. Tasks wait in one queue that every thread takes from. A thread
// whose tasks take microseconds takes several at a time when many wait
// (fewer lock hand-offs) and delivers their results at once; one whose
// tasks take longer takes one at a time, so that long tasks stay balanced
// and cancel() and stop() discard every task not yet started.
//
// What a thread cannot do is left to the other backends and rejected at
// construction (see reject_thread_options): a thread cannot be killed, so
// there is no task_timeout, and stop() waits for running tasks however long
// they take. Outcomes otherwise match those of worker processes: exceptions
// become errors (retried as retry_exceptions says), max_tasks_per_worker
// gives the thread a fresh copy, and a thread whose on_worker_start threw
// takes no task; when no thread is left, tasks get no_worker errors.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/pending_limit.hpp>
#include <multiworker/detail/task_queue.hpp>
#include <multiworker/options.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace multiworker::detail {

/// One worker thread's own copy of the user's object, and the calls bound to it.
struct WorkerCopy {
    TaskRunner run;
    WorkerHooks hooks;
    std::shared_ptr<void> owner;  // the copy itself, alive as long as the calls above
};

/// Makes a fresh copy of the object as it was at construction.
using WorkerCopyMaker = std::function<WorkerCopy()>;

class ThreadBackend final : public ExecutionBackend {
public:
    ThreadBackend(const Options& options, ResultMailbox& mailbox, WorkerCopyMaker make_copy)
        : mailbox_{mailbox},
          make_copy_{std::move(make_copy)},
          workers_{options.workers},
          exception_retries_{options.retry_exceptions ? options.retries : 0},
          max_tasks_per_worker_{options.max_tasks_per_worker},
          max_message_bytes_{options.max_message_bytes},
          exception_stacks_{options.exception_stack_traces},
          pending_{options.max_pending} {}

    ThreadBackend(const ThreadBackend&) = delete;
    ThreadBackend& operator=(const ThreadBackend&) = delete;
    ~ThreadBackend() override { stop(std::chrono::milliseconds{0}, {}); }

    /// Copies the object once per thread (here, in the caller's thread: the
    /// copies are made one at a time from an object no thread runs on), then
    /// starts the threads.
    void start() override {
        std::vector<WorkerCopy> copies;
        copies.reserve(workers_);
        for (unsigned i = 0; i < workers_; ++i) copies.push_back(make_copy_());
        {
            std::lock_guard lock{mutex_};
            alive_ = workers_;
            started_ = true;
        }
        threads_.reserve(workers_);
        for (unsigned i = 0; i < workers_; ++i) {
            threads_.emplace_back(
                [this, i, copy = std::move(copies[i])]() mutable { serve(static_cast<int>(i), std::move(copy)); });
        }
    }

    void submit(TaskId id, Bytes&& arguments) override {
        if (pending_.bounded()) pending_.wait_for_room(stopping_);
        std::unique_lock lock{mutex_};
        if (stopping_) {
            lock.unlock();
            refuse_task_after_stop(mailbox_);
        }
        if (started_ && alive_ == 0) {
            RawResult failed = no_worker_result(id);
            lock.unlock();
            deliver_one(std::move(failed));
            return;
        }
        queue_.push_back(id, std::move(arguments));
        queued_.store(queue_.size(), std::memory_order_relaxed);
        pending_.returned_to_queue();
        const bool wake = idle_ > 0;
        lock.unlock();
        if (wake) task_added_.notify_one();
    }

    std::size_t cancel() override {
        std::lock_guard lock{mutex_};
        return drop_queue();
    }

    /// Threads cannot be killed: running tasks are waited for whatever
    /// `grace` says (Options::backend documents this).
    void stop(std::chrono::milliseconds /*grace*/, std::string /*grace_end*/) override {
        {
            std::lock_guard lock{mutex_};
            if (stopping_) return;
            stopping_ = true;
            drop_queue();
        }
        pending_.wake_all();
        task_added_.notify_all();
        for (auto& thread : threads_) thread.join();
        threads_.clear();
    }

    [[nodiscard]] std::vector<pid_t> worker_pids() const override { return {}; }

    [[nodiscard]] std::size_t undispatched() const override { return pending_.queued(); }

private:
    struct QueuedTask {
        TaskId id;
        Bytes arguments;
    };

    // A group larger than this keeps other threads waiting on a thread that
    // is behind; one this size already makes the lock cost per task small.
    static constexpr std::size_t max_tasks_taken = 64;
    // Tasks shorter than this are taken in groups: the lock hand-off is then
    // a cost as large as the task. A group this long is over within a
    // moment, so discarding it in cancel() would gain nothing.
    static constexpr auto short_task = std::chrono::microseconds{20};
    // About 50 to 100 us of yields before an idle thread sleeps.
    static constexpr int yields_before_sleep = 200;

    void serve(int index, WorkerCopy copy) {
        if (!begin(copy)) return;
        std::vector<QueuedTask> taken;
        std::vector<RawResult> finished;
        unsigned run_on_this_copy = 0;
        std::size_t group = 1;  // grows once the tasks prove short
        while (take(taken, std::min(group, room_on_copy(run_on_this_copy)))) {
            const auto began = std::chrono::steady_clock::now();
            for (auto& task : taken) finished.push_back(run_task(copy.run, task, index));
            const auto per_task = (std::chrono::steady_clock::now() - began) / taken.size();
            group = per_task < short_task ? max_tasks_taken : 1;
            run_on_this_copy += static_cast<unsigned>(taken.size());
            taken.clear();
            mailbox_.deliver(finished);
            if (max_tasks_per_worker_ > 0 && run_on_this_copy >= max_tasks_per_worker_) {
                end(copy);
                copy = fresh_copy();
                run_on_this_copy = 0;
                if (!begin(copy)) return;
            }
        }
        end(copy);
    }

    [[nodiscard]] std::size_t room_on_copy(unsigned run_on_this_copy) const noexcept {
        if (max_tasks_per_worker_ == 0) return max_tasks_taken;
        return std::min<std::size_t>(max_tasks_taken, max_tasks_per_worker_ - run_on_this_copy);
    }

    // Runs the start hook; false when it threw, and this thread then ends
    // (as a worker process whose on_worker_start throws is not replaced).
    bool begin(WorkerCopy& copy) {
        try {
            if (copy.hooks.on_start) copy.hooks.on_start();
            return true;
        } catch (...) {
            const FailureReport report = report_current_exception();
            thread_lost("on_worker_start threw " + report.type_name + ": " + report.message);
            return false;
        }
    }

    static void end(WorkerCopy& copy) {
        if (copy.hooks.on_exit) copy.hooks.on_exit();
    }

    WorkerCopy fresh_copy() {
        std::lock_guard lock{copy_mutex_};
        return make_copy_();
    }

    // Waits for tasks; takes up to `limit` of them (fewer when fewer wait
    // per thread). False when the backend stops.
    bool take(std::vector<QueuedTask>& taken, std::size_t limit) {
        std::unique_lock lock{mutex_};
        if (queue_.empty() && !stopping_) {
            // The next task is often microseconds away (a caller adding one
            // at a time): yielding for a moment saves both the caller's
            // notify and this thread's wake-up, while a thread that needs
            // the core gets it.
            lock.unlock();
            for (int i = 0; i < yields_before_sleep && queued_.load(std::memory_order_relaxed) == 0 && !stopping_;
                 ++i) {
                std::this_thread::yield();
            }
            lock.lock();
        }
        ++idle_;
        task_added_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        --idle_;
        if (stopping_) return false;
        const std::size_t share = std::max<std::size_t>(1, queue_.size() / (2 * std::size_t{workers_}));
        const std::size_t count = std::min({limit, share, queue_.size()});
        for (std::size_t i = 0; i < count; ++i) {
            TaskQueue::Taken next = queue_.take_front();
            taken.push_back(QueuedTask{next.id, std::move(next.arguments)});
        }
        queued_.store(queue_.size(), std::memory_order_relaxed);
        lock.unlock();
        pending_.left_queue(count);
        return true;
    }

    RawResult run_task(const TaskRunner& runner, const QueuedTask& task, int index) const {
        RawResult result{task.id, Bytes{}, index, pid_};
        for (unsigned attempt = 0;; ++attempt) {
            Bytes payload;
            bool ok = false;
            const auto keep = [this, &payload, &ok](bool succeeded, const EncodedView& outcome) {
                ok = succeeded;
                if (outcome.size() > max_message_bytes_) {  // as worker processes report it
                    ok = false;
                    payload = encode_failure({static_cast<std::uint32_t>(ErrorKind::bad_message), "",
                                              "the result encodes to " + std::to_string(outcome.size()) +
                                                  " bytes, more than max_message_bytes (" +
                                                  std::to_string(max_message_bytes_) + ")"});
                    return;
                }
                assign_bytes(payload, outcome.head, outcome.body);
            };
            execute_task(runner, task.arguments, keep, exception_stacks_);
            if (ok) {
                result.outcome = std::move(payload);
                return result;
            }
            TaskError error = error_from_report(task.id, payload, index, pid_);
            if (error.kind() != ErrorKind::exception || attempt >= exception_retries_) {
                result.outcome = std::make_unique<TaskError>(std::move(error));
                return result;
            }
        }
    }

    // A thread ended for good; the last one to go fails what waits.
    void thread_lost(std::string why) {
        std::vector<RawResult> failed;
        {
            std::lock_guard lock{mutex_};
            last_loss_ = std::move(why);
            if (--alive_ > 0) return;
            queue_.for_each(
                [this, &failed](const TaskQueue::Task& task) { failed.push_back(no_worker_result(task.id)); });
            pending_.left_queue(queue_.size());
            queue_.clear();
            queued_.store(0, std::memory_order_relaxed);
        }
        mailbox_.deliver(failed);
    }

    // Under mutex_ (it reads last_loss_).
    RawResult no_worker_result(TaskId id) const {
        return detail::no_worker_result(id, "no worker thread is left (the last one ended because " + last_loss_ + ")");
    }

    void deliver_one(RawResult result) {
        std::vector<RawResult> batch;
        batch.push_back(std::move(result));
        mailbox_.deliver(batch);
    }

    std::size_t drop_queue() {
        const std::size_t count = queue_.size();
        queue_.clear();
        queued_.store(0, std::memory_order_relaxed);
        pending_.left_queue(count);
        mailbox_.forget(count);
        return count;
    }

    ResultMailbox& mailbox_;
    const WorkerCopyMaker make_copy_;
    const unsigned workers_;
    const unsigned exception_retries_;
    const unsigned max_tasks_per_worker_;
    const std::size_t max_message_bytes_;
    const bool exception_stacks_;
    // Every thread's: getpid() is a system call (glibc no longer caches it),
    // which was a third of the time of a trivial task.
    const pid_t pid_ = ::getpid();
    PendingLimit pending_;
    std::mutex copy_mutex_;  // one copy at a time: the object is single-threaded code

    std::mutex mutex_;  // guards what follows
    std::condition_variable task_added_;
    TaskQueue queue_;
    std::atomic<std::size_t> queued_{0};  // queue_.size(), for a look without the lock
    bool started_ = false;
    unsigned alive_ = 0;     // threads still taking tasks
    unsigned idle_ = 0;      // threads waiting in take()
    std::string last_loss_;  // why the latest thread ended early
    std::atomic<bool> stopping_{false};

    std::vector<std::thread> threads_;
};

}  // namespace multiworker::detail
