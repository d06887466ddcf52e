#pragma once

// The seam between the typed Processor and the strategies that execute tasks
// (in the calling thread, in forked processes, later across MPI ranks).
//
// Backends see only bytes: encoded arguments in, encoded results or errors
// out, delivered to a ResultMailbox that the Processor reads. Encoding and
// decoding of the user's types stays in the Processor, so every backend runs
// the same code path and a new backend needs no templates.

#include <multiworker/detail/batch_queue.hpp>
#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/function_ref.hpp>
#include <multiworker/detail/spin.hpp>
#include <multiworker/detail/throw_trace.hpp>
#include <multiworker/detail/wire.hpp>
#include <multiworker/error.hpp>
#include <multiworker/task_id.hpp>

#include <boost/core/demangle.hpp>

#include <sys/types.h>

#include <cxxabi.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <variant>
#include <vector>

namespace multiworker::detail {

/// A task's encoded outcome on its way out: `head`, then `body`, back to back.
/// Views: valid only during the call that receives them, so that a large
/// result is sent straight from the value the method returned (see
/// encode_borrowing()), never copied into a buffer first.
struct EncodedView {
    std::span<const char> head;
    std::span<const char> body;

    [[nodiscard]] std::size_t size() const noexcept { return head.size() + body.size(); }
};

/// Receives a task's encoded return value (empty for void).
using ResultSender = FunctionRef<void(const EncodedView& value)>;

/// Runs one task on the executing process's object: decodes the arguments,
/// calls the method, and calls `send` once with the encoded result while the
/// value is alive. Throws what the method throws.
using TaskRunner = std::function<void(std::span<const char> arguments, const ResultSender& send)>;

/// Receives a task's outcome: `ok` and the encoded value, or not `ok` and an
/// encoded FailureReport.
using OutcomeSender = FunctionRef<void(bool ok, const EncodedView& payload)>;

/// Calls made in each worker process around its tasks (not in-process).
struct WorkerHooks {
    std::function<void()> on_start;  // before the worker's first task
    std::function<void()> on_exit;   // after its last task, when it ends normally
    TaskRunner closing;              // runs a closing frame (a pipeline sink's finish()); empty: none
};

/// A task's outcome before the Processor decodes it into a Result<R>.
struct RawResult {
    TaskId id;
    // The encoded return value, or the error (rare and large: kept out of line,
    // so that a batch of results is a compact array), or a large return value
    // already read into its final form.
    std::variant<Bytes, std::unique_ptr<TaskError>, std::unique_ptr<LargePayload>> outcome;
    int worker_index = TaskError::no_worker_index;
    pid_t worker_pid = 0;

    [[nodiscard]] bool failed() const noexcept { return std::holds_alternative<std::unique_ptr<TaskError>>(outcome); }
};

/// The outcome of a task that no worker is left to run, saying `why`.
inline RawResult no_worker_result(TaskId id, std::string why) {
    return RawResult{
        id, std::make_unique<TaskError>(ErrorKind::no_worker, id, "", std::move(why), TaskError::no_worker_index, 0),
        TaskError::no_worker_index, 0};
}

/// What a task's exception becomes in the failure report; call only in a catch block.
inline FailureReport report_current_exception() {
    const auto report = [](ErrorKind kind, std::string type_name, std::string message) {
        return FailureReport{static_cast<std::uint32_t>(kind), std::move(type_name), std::move(message)};
    };
    try {
        throw;
    } catch (const DecodeError& e) {
        return report(ErrorKind::bad_message, "", std::string{"arguments could not be decoded: "} + e.what());
    } catch (const std::exception& e) {
        return report(ErrorKind::exception, boost::core::demangle(typeid(e).name()), e.what());
    } catch (...) {
        const std::type_info* type = abi::__cxa_current_exception_type();
        return report(ErrorKind::exception, type ? boost::core::demangle(type->name()) : "unknown",
                      "(an exception not derived from std::exception)");
    }
}

/// Runs `runner` and passes its outcome to `send`: the encoded value when
/// the method returned, a FailureReport naming the exception when it (or the
/// decoding of its arguments, or the encoding of its result) threw, with the
/// frames of the throw when `capture_stack`. What `send` itself throws
/// propagates: a result half sent cannot become a report.
inline void execute_task(const TaskRunner& runner, std::span<const char> arguments, const OutcomeSender& send,
                         bool capture_stack = worker_exception_traces().load(std::memory_order_relaxed)) {
    bool sending = false;
    Bytes report;
    {
        const ThrowTraceCapture capture{capture_stack};
        try {
            runner(arguments, [&send, &sending](const EncodedView& value) {
                sending = true;
                send(true, value);
            });
            return;
        } catch (...) {
            if (sending) throw;
            FailureReport failure = report_current_exception();
            if (failure.kind == static_cast<std::uint32_t>(ErrorKind::exception)) failure.trace = capture.raw_lines();
            report = encode_failure(failure);
        }
    }
    send(false, EncodedView{report, {}});
}

/// Turns a worker's failure report into the TaskError the user sees; a report
/// that does not decode is itself reported as a bad message.
inline TaskError error_from_report(TaskId id, std::span<const char> report, int worker_index, pid_t worker_pid) {
    try {
        FailureReport failure = decode_failure(report);
        if (failure.kind != static_cast<std::uint32_t>(ErrorKind::exception) &&
            failure.kind != static_cast<std::uint32_t>(ErrorKind::bad_message)) {
            throw DecodeError{"unknown error kind " + std::to_string(failure.kind)};
        }
        return TaskError{static_cast<ErrorKind>(failure.kind),
                         id,
                         std::move(failure.type_name),
                         std::move(failure.message),
                         worker_index,
                         worker_pid,
                         {},
                         ExceptionStack::from_frames(failure.trace)};
    } catch (const DecodeError& e) {
        return TaskError{
            ErrorKind::bad_message, id,        "", std::string{"failure report could not be decoded: "} + e.what(),
            worker_index,           worker_pid};
    }
}

/// Where backends deliver results and users collect them. Tracks how many
/// tasks were added and how many are settled (result delivered, or cancelled),
/// so that "done" and "no more results can arrive" are exact.
///
/// Built for streams of millions of tiny results: results pass through in
/// the batches they were delivered in, whose storage is recycled (no result
/// moved on the way, no page faults of fresh memory per batch), and waiters
/// are woken only when what they wait for may have happened (a thread in
/// wait_for_batch() is not woken for every delivery, which on a machine with
/// few cores would cost the workers their CPU).
class ResultMailbox {
public:
    /// Counts one more task; called by add() before the task is submitted.
    /// Returns the count with it (1, 2, ...): a number no other task gets,
    /// which serves as its id.
    std::uint64_t expect_one() noexcept { return added_.fetch_add(1, std::memory_order_release) + 1; }

    /// Results taken out at once, in the batches they were delivered in.
    using Batches = BatchQueue<RawResult>::Batches;

    /// Takes the results out of `results`, which is left empty (with the
    /// storage of results taken before, when there is some).
    void deliver(std::vector<RawResult>& results) {
        if (results.empty()) return;
        bool wake = false;
        {
            std::lock_guard lock{mutex_};
            settled_ += results.size();
            delivered_ += results.size();
            for (const auto& result : results) failed_ += result.failed() ? 1 : 0;
            results_.append(results);  // the whole batch, no result moved
            wake = should_wake();
            changes_.fetch_add(1, std::memory_order_relaxed);
        }
        if (wake) changed_.notify_all();
    }

    /// Records that `count` tasks will never get a result (cancelled).
    void forget(std::size_t count) {
        if (count == 0) return;
        bool wake = false;
        {
            std::lock_guard lock{mutex_};
            settled_ += count;
            cancelled_ += count;
            wake = should_wake();
            changes_.fetch_add(1, std::memory_order_relaxed);
        }
        if (wake) changed_.notify_all();
    }

    /// Counts for progress reports: (added - cancelled, delivered, failed).
    struct Counts {
        std::uint64_t total;
        std::uint64_t delivered;
        std::uint64_t failed;
    };
    [[nodiscard]] Counts counts() const {
        std::lock_guard lock{mutex_};
        return Counts{added() - cancelled_, delivered_, failed_};
    }

    [[nodiscard]] bool done() const {
        std::lock_guard lock{mutex_};
        return settled_ == added();
    }

    /// Tasks added and not settled yet: the results still to come, unless
    /// some are cancelled.
    [[nodiscard]] std::uint64_t unsettled() const {
        std::lock_guard lock{mutex_};
        return added() - settled_;
    }

    /// Blocks until at least batch_results results wait or every task is
    /// settled; returns true in the latter case. A caller waiting for the
    /// whole job takes and decodes results batch by batch while the rest
    /// run, woken once per batch, not per delivery (nor at all while fewer
    /// arrive, as with long tasks).
    bool wait_for_batch() {
        std::unique_lock lock{mutex_};
        ++waiting_for_batch_;
        changed_.wait(lock, [this] { return batch_ready(); });
        --waiting_for_batch_;
        return settled_ == added();
    }

    /// True when every task is settled and no result is left to take.
    [[nodiscard]] bool drained() const {
        std::lock_guard lock{mutex_};
        return settled_ == added() && results_.empty();
    }

    /// Wakes the threads in pop(), so that they look at `stop_early` again
    /// (results taken out of the mailbox and held elsewhere, say).
    void wake_takers() {
        {
            std::lock_guard lock{mutex_};
            changes_.fetch_add(1, std::memory_order_relaxed);
        }
        changed_.notify_all();
    }

    /// Takes the oldest result, waiting until `deadline` (none: forever) for
    /// one to arrive. Empty when the deadline passes, when every task is
    /// settled and nothing is left to take, or when `stop_early` (if any)
    /// holds. Before it sleeps, it calls `help` (if any) between yields, with
    /// no lock held: the backend may deliver the result from this very thread.
    std::optional<RawResult> pop(std::optional<std::chrono::steady_clock::time_point> deadline,
                                 const std::function<void()>& help = {}, const std::function<bool()>& stop_early = {}) {
        std::unique_lock lock{mutex_};
        const auto ready = [this, &stop_early] {
            return !results_.empty() || settled_ == added() || (stop_early && stop_early());
        };
        if (!ready() && (!deadline || *deadline > std::chrono::steady_clock::now())) {
            // A result is often microseconds away. Yielding for a moment
            // instead of sleeping saves the wake-up, and keeps this core
            // from halting under the threads about to deliver the result,
            // while any of them that needs the core gets it.
            const std::uint64_t seen = changes_.load(std::memory_order_relaxed);
            const auto changed = [this, seen] { return changes_.load(std::memory_order_relaxed) != seen; };
            lock.unlock();
            for (int i = 0; i < yields_before_sleep && !changed(); ++i) {
                if (help) help();
                if (!changed()) ::sched_yield();
            }
            lock.lock();
        }
        ++waiting_for_one_;
        if (deadline) {
            changed_.wait_until(lock, *deadline, ready);
        } else {
            changed_.wait(lock, ready);
        }
        --waiting_for_one_;
        if (results_.empty()) return std::nullopt;
        return results_.pop_front();
    }

    /// Takes every waiting result. Give the batches back with recycle().
    Batches take_all() {
        std::lock_guard lock{mutex_};
        return results_.take_all();
    }

    /// Returns batches from take_all(), so that their storage serves the next deliveries.
    void recycle(Batches&& used) {
        std::lock_guard lock{mutex_};
        results_.recycle(std::move(used));
    }

private:
    // wait_for_batch() returns once this many results wait: enough that a
    // wake-up (a few microseconds) is small beside decoding them.
    static constexpr std::size_t batch_results = 1024;

    [[nodiscard]] std::uint64_t added() const noexcept { return added_.load(std::memory_order_acquire); }

    [[nodiscard]] bool batch_ready() const noexcept { return results_.size() >= batch_results || settled_ == added(); }

    [[nodiscard]] bool should_wake() const noexcept {
        return waiting_for_one_ > 0 || (waiting_for_batch_ > 0 && batch_ready());
    }

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    BatchQueue<RawResult> results_;  // waiting to be taken
    // Counted without the lock: add() is the hot path. Whoever reads it under
    // the lock after a result of a task sees that task counted, since add()
    // counts before it hands the task over.
    std::atomic<std::uint64_t> added_{0};
    std::uint64_t settled_ = 0;  // delivered or cancelled
    std::uint64_t delivered_ = 0;
    std::uint64_t cancelled_ = 0;
    std::uint64_t failed_ = 0;
    std::atomic<std::uint64_t> changes_{0};  // deliveries and cancellations: pop() spins on it without the lock
    int waiting_for_batch_ = 0;              // threads in wait_for_batch()
    int waiting_for_one_ = 0;                // threads in pop()
};

/// Ends an add() that waited for room (Options::max_pending) while another
/// thread stopped the run: its task was counted, and will never run.
[[noreturn]] inline void refuse_task_after_stop(ResultMailbox& mailbox) {
    mailbox.forget(1);
    throw std::logic_error{"multiworker::Processor::add(): the Processor was stopped meanwhile"};
}

/// An execution strategy. Calls come from user threads; implementations
/// deliver every submitted task's outcome to the mailbox exactly once, or
/// count it as forgotten when cancelled.
class ExecutionBackend {
public:
    virtual ~ExecutionBackend() = default;

    /// Begins executing; tasks submitted before are queued until then.
    virtual void start() = 0;
    /// Queues a task; the mailbox has already counted it.
    virtual void submit(TaskId id, Bytes&& arguments) = 0;
    /// Drops every task no worker has taken; returns how many.
    virtual std::size_t cancel() = 0;
    /// Takes back every task no worker has started, for another host to run
    /// (Backend::mpi's agents give them back to rank 0): they will have no
    /// outcome here. A backend that cannot take tasks back returns none.
    virtual std::vector<std::pair<TaskId, Bytes>> take_back_unstarted() { return {}; }
    /// Drops queued tasks, lets running ones finish for up to `grace`, then
    /// kills what still runs; releases every process and resource. Idempotent.
    /// `grace_end` completes "was still running a task when ..." in the errors
    /// of tasks killed at the end of the grace period.
    virtual void stop(std::chrono::milliseconds grace, std::string grace_end) = 0;
    /// The pids of the worker processes alive now (empty in-process).
    [[nodiscard]] virtual std::vector<pid_t> worker_pids() const = 0;
    /// Called repeatedly by a thread about to wait for a result: may move
    /// results along in that thread. Never blocks.
    virtual void help_while_waiting() {}
    /// Tasks submitted and not yet handed to a worker (nor cancelled); counted
    /// only when Options::max_pending is set (0 otherwise).
    [[nodiscard]] virtual std::size_t undispatched() const = 0;
};

/// Makes a backend that delivers to `mailbox` (an MPI agent's local workers, say).
using BackendMaker = std::function<std::unique_ptr<ExecutionBackend>(ResultMailbox& mailbox)>;

}  // namespace multiworker::detail
