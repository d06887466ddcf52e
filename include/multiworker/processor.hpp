#pragma once

/// @file
/// Processor: runs one method of a class across worker processes.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/forked_backend.hpp>
#include <multiworker/detail/inprocess_backend.hpp>
#include <multiworker/detail/method_checks.hpp>
#include <multiworker/detail/method_runner.hpp>
#include <multiworker/detail/processor_support.hpp>
#include <multiworker/detail/progress_reporter.hpp>
#include <multiworker/detail/result_decoding.hpp>
#include <multiworker/detail/thread_backend.hpp>
#include <multiworker/detail/vector_fifo.hpp>
#include <multiworker/options.hpp>
#include <multiworker/result.hpp>
#include <multiworker/task_id.hpp>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace multiworker {

/// Runs `Method` of a `T` over many argument tuples, in `Options::workers`
/// forked processes (or in the calling thread when workers is 0).
///
/// Each worker calls the method on its own copy of the object, made by fork()
/// at start(), so state the object builds (a connection, a cache) lives on
/// between that worker's calls. Arguments and results cross processes with
/// Boost.Serialization (see <multiworker/serialization.hpp>).
///
/// Every added task ends with exactly one Result (value or TaskError) unless
/// it is cancelled; a throwing method, a crashing worker or a malformed
/// message becomes an error result, never a hang or a crash of the caller.
/// A worker that dies is replaced by a fresh one, forked from the object as it
/// was at start().
///
/// Optional hooks: if T has `void on_worker_start()` or `void on_worker_exit()`,
/// each worker calls them on its copy before its first task and after its last
/// (when it ends normally: at stop(), or when recycled). If on_worker_start
/// throws, that worker is not replaced.
///
/// Thread safety: any thread may call add(), done(), wait() and the result
/// getters, also concurrently; start() and stop() must not race with other
/// calls. The object must not be moved (it owns threads and processes).
///
/// Latency: while the library's event loop thread sleeps, add() hands its
/// task to a worker itself, and pop_result() collects the result itself
/// while it waits, so that one task on idle workers costs one wake-up.
/// wait() decodes results as they arrive, so that get_results() after it
/// has little left to do.
template <class T, auto Method>
class Processor {
    using check = detail::MethodCheck<T, Method>;
    using Problem = detail::MethodProblem;
    // Only the first problem is reported (see method_checks.hpp).
    static_assert(detail::MethodProblemReport<check>::reported);
    using traits = typename check::traits;
    using runner = detail::MethodRunner<T, Method, check>;

public:
    /// The method's return type without cv/ref qualifiers; what Result holds.
    using result_type = typename check::result_type;
    /// The argument values a task stores: the method's parameters, decayed.
    using arguments_type = typename traits::stored_arguments;

public:
    /// Takes the object every worker will copy. Nothing runs until start().
    /// Throws std::invalid_argument for options the backend cannot honour:
    /// in-process (workers = 0), task_timeout and max_tasks_per_worker; on
    /// threads, task_timeout, debug_worker, WorkerOutput::log, log_file and logger.
    explicit Processor(T object, Options options = {})
        : object_{std::move(object)}, options_{detail::with_environment(std::move(options))} {
        switch (options_.backend) {
            case Backend::in_process:
                detail::reject_in_process_options(options_);
                backend_ = std::make_unique<detail::InProcessBackend>(
                    mailbox_, runner::on(object_, encoded_head_), detail::hooks_of(object_),
                    options_.retry_exceptions ? options_.retries : 0, options_.exception_stack_traces);
                break;
            case Backend::threads:
                detail::reject_thread_options(options_);
                backend_ = std::make_unique<detail::ThreadBackend>(options_, mailbox_, runner::copies_of(object_));
                break;
            case Backend::processes:
                backend_ = std::make_unique<detail::ForkedBackend>(
                    options_, mailbox_, runner::on(object_, encoded_head_), detail::hooks_of(object_),
                    detail::log_destinations(options_), detail::large_result_maker<result_type>());
                break;
            case Backend::mpi:
                backend_ = detail::make_mpi_backend(options_, mailbox_, agent_workers());
                break;
        }
    }

    Processor(const Processor&) = delete;
    Processor& operator=(const Processor&) = delete;

    /// Equivalent to stop(); never throws. While an exception unwinds the
    /// stack, running tasks are not waited for: the workers are killed at once.
    ~Processor() {
        try {
            if (std::uncaught_exceptions() > 0) {
                stop_with(std::chrono::milliseconds{0}, "the Processor was destroyed during an exception");
            } else {
                stop();
            }
        } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
        }
    }

    /// Queues a call of the method with these arguments; returns its id.
    /// Callable before and after start(). The arguments are converted to the
    /// method's parameter types and encoded now, so they may be temporaries.
    template <class... Args>
    TaskId add(Args&&... args) {
        constexpr bool count_matches = sizeof...(Args) == std::tuple_size_v<arguments_type>;
        static_assert(count_matches,
                      "multiworker::Processor::add() arguments: wrong number of arguments for the method");
        constexpr bool convertible = count_matches && std::is_constructible_v<arguments_type, Args&&...>;
        static_assert(!count_matches || convertible,
                      "multiworker::Processor::add() arguments: cannot convert to the method's parameter types");
        // Nothing more is instantiated when the call or the method is wrong:
        // the message above stays the only error.
        if constexpr (convertible && check::usable) {
            return submit(encode_arguments(std::forward<Args>(args)...));
        } else {
            return TaskId{0};
        }
    }

    /// Forks the workers (or, in-process, runs the tasks added so far) and
    /// returns. Throws std::system_error if a worker cannot be created, and
    /// std::runtime_error if the workers are not ready within
    /// Options::start_timeout; the Processor is then stopped, and the tasks
    /// added so far are cancelled (done() is true, wait() returns).
    void start() {
        if (started_) throw std::logic_error{"multiworker::Processor::start() called twice"};
        if (stopped_) throw std::logic_error{"multiworker::Processor::start() called after stop()"};
        try {
            backend_->start();
        } catch (...) {
            stop_now();
            throw;
        }
        started_ = true;
        start_progress_reports();
    }

    /// True once every added task has a result (waiting or taken) or was
    /// cancelled. Never blocks.
    [[nodiscard]] bool done() const { return mailbox_.done(); }

    /// Blocks until done(). Throws std::logic_error if tasks are outstanding
    /// and start() was never called, as the wait could not end.
    ///
    /// Meanwhile it decodes the results that have arrived, a batch at a time,
    /// for the getters to hand out: decoding them while the workers run
    /// leaves little for get_results() to do once the last one is in.
    void wait() {
        require_progress_possible("wait()");
        for (;;) {
            const bool settled = mailbox_.wait_for_batch();
            decode_arrived();
            if (settled) return;
        }
    }

    /// Takes every result that has arrived, each exactly once; never blocks.
    [[nodiscard]] std::vector<Result<result_type>> get_results() {
        std::lock_guard lock{decoded_mutex_};
        std::vector<Result<result_type>> results = decoded_.take_all();
        decoded_waiting_.store(false, std::memory_order_relaxed);
        take_converted(results,
                       [&results](std::size_t count) { detail::reserve_prefaulted(results, results.size() + count); });
        return results;
    }

    /// Takes the oldest arrived result, blocking until one arrives. Empty only
    /// when every task is settled and no result is left.
    [[nodiscard]] std::optional<Result<result_type>> pop_result() {
        require_progress_possible("pop_result() without a timeout");
        return pop_until(std::nullopt);
    }

    /// Takes the oldest arrived result, waiting at most `timeout` (0: just
    /// look). Empty when none arrived in time or none can arrive any more.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<Result<result_type>> pop_result(std::chrono::duration<Rep, Period> timeout) {
        return pop_until(std::chrono::steady_clock::now() + timeout);
    }

    /// Collects results as they arrive until `timeout` has passed or no more
    /// can arrive (every task settled), whichever is first.
    template <class Rep, class Period>
    [[nodiscard]] std::vector<Result<result_type>> results_within(std::chrono::duration<Rep, Period> timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        std::vector<Result<result_type>> results;
        while (auto result = pop_until(deadline)) results.push_back(std::move(*result));
        return results;
    }

    /// Discards every task no worker has started; returns how many. Those
    /// tasks get no result, and done() no longer waits for them.
    std::size_t cancel() { return backend_->cancel(); }

    /// Ends the run: discards tasks not yet started (as cancel() does), lets
    /// running tasks finish (up to Options::stop_timeout, then kills their
    /// workers; those tasks get worker_died errors), reaps every worker and
    /// releases all shared memory. Results already delivered stay available.
    /// Idempotent; add() and start() are errors afterwards.
    void stop() {
        stop_with(options_.stop_timeout, "stop()'s grace period (stop_timeout, " +
                                             std::to_string(options_.stop_timeout.count()) + " ms) ended");
    }

    /// Like stop(), but kills the workers at once: running tasks get
    /// worker_died errors instead of being waited for.
    void stop_now() { stop_with(std::chrono::milliseconds{0}, "stop_now() was called"); }

    /// The pids of the worker processes alive now (empty in-process, before
    /// start() and after stop()). A worker that dies is replaced by one with
    /// a new pid.
    [[nodiscard]] std::vector<pid_t> worker_pids() const { return backend_->worker_pids(); }

    /// True when tasks run in the calling thread (workers = 0 or Backend::in_process).
    [[nodiscard]] bool in_process() const noexcept { return options_.backend == Backend::in_process; }

    /// The backend the workers run on (Options::backend, after
    /// MULTIWORKER_BACKEND and workers = 0 had their say).
    [[nodiscard]] Backend backend() const noexcept { return options_.backend; }

    /// The Processor's own object: in-process mode runs on it; workers run on copies.
    [[nodiscard]] const T& object() const noexcept { return object_; }

private:
    template <class... Args>
    detail::Bytes encode_arguments(Args&&... args) {
        if (stopped_) throw std::logic_error{"multiworker::Processor::add() called after stop()"};
        detail::Bytes encoded;
        if constexpr (std::is_same_v<std::tuple<std::remove_cvref_t<Args>...>, arguments_type>) {
            detail::encode_values(encoded, args...);  // already the parameter types: no copy first
        } else {
            std::apply([&encoded](const auto&... values) { detail::encode_values(encoded, values...); },
                       arguments_type{std::forward<Args>(args)...});
        }
        if (encoded.size() > options_.max_message_bytes) {
            throw std::length_error{"multiworker::Processor::add(): the arguments encode to " +
                                    std::to_string(encoded.size()) + " bytes, more than max_message_bytes (" +
                                    std::to_string(options_.max_message_bytes) + ")"};
        }
        return encoded;
    }

    TaskId submit(detail::Bytes&& encoded) {
        if (options_.max_pending > 0 && !started_ && backend_->undispatched() >= options_.max_pending) {
            throw std::logic_error{"multiworker::Processor::add(): " + std::to_string(options_.max_pending) +
                                   " tasks (max_pending) already wait for start(); another add() before "
                                   "start() would wait forever: call start() first, or raise max_pending"};
        }
        const TaskId id{mailbox_.expect_one()};
        backend_->submit(id, std::move(encoded));
        return id;
    }

    void stop_with(std::chrono::milliseconds grace, std::string grace_end) {
        if (stopped_.exchange(true)) return;
        backend_->stop(grace, std::move(grace_end));
        if (progress_) progress_->stop();
    }

    void start_progress_reports() {
        if (!options_.on_progress && !options_.progress_bar) return;
        auto callback = [user = options_.on_progress, bar = options_.progress_bar
                                                                ? std::optional<detail::ProgressBar>{std::in_place}
                                                                : std::nullopt](const Progress& progress) mutable {
            if (user) user(progress);
            if (bar) (*bar)(progress);
        };
        progress_ =
            std::make_unique<detail::ProgressReporter>(mailbox_, std::move(callback), options_.progress_interval);
        progress_->start();
    }

    // Backend::mpi, on an agent rank: this host's worker processes, whose
    // outcomes the agent relays to rank 0 (which bounds what it sends, so
    // max_pending is rank 0's alone).
    detail::BackendMaker agent_workers() {
        return [this](detail::ResultMailbox& local) -> std::unique_ptr<detail::ExecutionBackend> {
            Options local_options = options_;
            local_options.max_pending = 0;
            return std::make_unique<detail::ForkedBackend>(local_options, local, runner::on(object_, encoded_head_),
                                                           detail::hooks_of(object_),
                                                           detail::log_destinations(local_options));
        };
    }

    Result<result_type> convert(detail::RawResult& raw) {
        return detail::decode_raw_result<result_type, check::usable>(raw);
    }

    // Takes every result waiting in the mailbox and appends it, decoded, to
    // `out`, after `reserve(count)` has made room for all; returns the count.
    template <class Out, class Reserve>
    std::size_t take_converted(Out& out, Reserve&& reserve) {
        detail::ResultMailbox::Batches batches = mailbox_.take_all();
        std::size_t count = 0;
        for (const auto& batch : batches) count += batch.size();
        reserve(count);
        for (auto& batch : batches) {
            for (auto& raw : batch) out.push_back(convert(raw));
        }
        mailbox_.recycle(std::move(batches));
        return count;
    }

    // Moves the results that have arrived into decoded_, decoded. Under
    // decoded_mutex_ from taking to storing, so that a getter that finds
    // both the mailbox and decoded_ empty knows that no result is in between.
    void decode_arrived() {
        std::lock_guard lock{decoded_mutex_};
        const std::size_t arrived =
            take_converted(decoded_, [this](std::size_t count) { decoded_.reserve_more(count, mailbox_.unsettled()); });
        if (arrived == 0) return;
        decoded_waiting_.store(true, std::memory_order_release);
        // A thread in pop_result() waits in the mailbox: it must look here.
        mailbox_.wake_takers();
    }

    // Moves the oldest result in decoded_ into `out`; false if there is none.
    bool take_one_decoded(std::optional<Result<result_type>>& out) {
        std::lock_guard lock{decoded_mutex_};
        if (decoded_.empty()) return false;
        out.emplace(decoded_.pop_front());
        decoded_waiting_.store(!decoded_.empty(), std::memory_order_relaxed);
        return true;
    }

    // pop_result(): results wait() decoded come first (they arrived first).
    std::optional<Result<result_type>> pop_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
        const auto decoded_waiting = [this] { return decoded_waiting_.load(std::memory_order_acquire); };
        std::optional<Result<result_type>> result;  // one object, returned in place
        for (;;) {
            if (take_one_decoded(result)) return result;
            if (auto raw = mailbox_.pop(deadline, help_backend_, decoded_waiting)) {
                result.emplace(convert(*raw));
                return result;
            }
            // The deadline passed, every task is settled, or wait() decoded
            // results meanwhile (look again).
            if (take_one_decoded(result)) return result;
            if (mailbox_.drained() || (deadline && std::chrono::steady_clock::now() >= *deadline)) return result;
        }
    }

    void require_progress_possible(const char* call) const {
        if (!started_ && !mailbox_.done()) {
            throw std::logic_error{std::string{"multiworker::Processor::"} + call +
                                   " before start() would block forever"};
        }
    }

    T object_;
    detail::Bytes encoded_head_;  // the runner's on object_, reused: no allocation per task
    Options options_;
    detail::ResultMailbox mailbox_;
    // Results wait() took out of the mailbox and decoded; the getters hand
    // these out before the mailbox's.
    std::mutex decoded_mutex_;
    detail::VectorFifo<Result<result_type>> decoded_;
    // !decoded_.empty(), for pop() to read under the mailbox's lock, where
    // taking decoded_mutex_ would invert the lock order.
    std::atomic<bool> decoded_waiting_{false};
    std::unique_ptr<detail::ExecutionBackend> backend_;
    const std::function<void()> help_backend_ = [this] { backend_->help_while_waiting(); };
    std::unique_ptr<detail::ProgressReporter> progress_;
    bool started_ = false;
    std::atomic<bool> stopped_{false};  // read by add(), which may wait for room while another thread stops
};

}  // namespace multiworker
