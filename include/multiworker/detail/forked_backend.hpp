#pragma once

// Execution in forked worker processes.
//
// Parent side: one supervisor thread owns all dispatch state. User threads
// hand it requests (new tasks, cancel, stop) through a small lock-guarded
// inbox and ring its doorbell; it moves tasks into the workers' task rings,
// drains their result rings into the ResultMailbox, enforces time limits, and
// replaces workers that die. Workers are forked by a fork server (see
// fork_server.hpp), which reports every exit, so a death is noticed at once.
//
// While the supervisor sleeps, a user thread that adds a task or waits for a
// result runs the supervisor's pass itself, under the same mutex: waking a
// sleeping thread costs tens of microseconds on a virtual machine, so a task
// added to idle workers then takes one wake-up (the worker's) instead of
// three. Deaths, deadlines and the fork server remain the supervisor's alone.
//
// Dispatch keeps a bounded window of tasks in flight per worker. The window
// adapts to the measured task duration: about a millisecond of work, at least
// two tasks (one running, one ready, so a worker never waits on the parent) and
// at most max_window. Short tasks thus travel many per wake-up, and long tasks
// are not queued behind a busy worker while another one idles.
//
// Accounting when a worker dies: tasks it was sent but had not claimed go back
// to the front of the queue (they never ran); the one task it had claimed and
// not answered is retried (Options::retries) or reported as failed. A result
// the worker finished writing before it died is delivered normally. So every
// task ends with exactly one result, or is counted as cancelled.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/crash_report.hpp>
#include <multiworker/detail/doorbell.hpp>
#include <multiworker/detail/fork_server.hpp>
#include <multiworker/detail/ring.hpp>
#include <multiworker/detail/spin_lock.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/detail/wire.hpp>
#include <multiworker/detail/worker_logging.hpp>
#include <multiworker/detail/worker_loop.hpp>
#include <multiworker/options.hpp>

#include <boost/container/deque.hpp>
#include <boost/container/options.hpp>

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace multiworker::detail {

/// How a child ended, in words: "exited with status 3", "was killed by SIGSEGV".
inline std::string describe_exit_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* name = ::sigabbrev_np(WTERMSIG(status));
        std::string text =
            "was killed by " + (name ? "SIG" + std::string{name} : "signal " + std::to_string(WTERMSIG(status)));
        if (is_reported_signal(WTERMSIG(status))) text += " (its stack trace is in the log)";
        return text;
    }
    return "ended with wait status " + std::to_string(status);
}

class ForkedBackend final : public ExecutionBackend {
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
          ring_capacity_{std::bit_ceil(std::max<std::size_t>(options.ring_bytes, 4096))},
          log_collector_{std::move(log_destinations), options.log_level, options.worker_output} {}

    ~ForkedBackend() override { stop(options_.stop_timeout, "the Processor's destructor stopped"); }

    ForkedBackend(const ForkedBackend&) = delete;
    ForkedBackend& operator=(const ForkedBackend&) = delete;

    void start() override {
        map_shared_state();
        std::promise<void> started;
        std::future<void> ready = started.get_future();
        supervisor_ = std::thread{[this, promise = std::move(started)]() mutable { supervise(std::move(promise)); }};
        try {
            ready.get();
        } catch (...) {
            supervisor_.join();
            log_collector_.stop(std::chrono::milliseconds{1000});
            throw;
        }
    }

    void submit(TaskId id, Bytes&& arguments) override {
        if (bounded()) wait_for_room();
        {
            std::lock_guard lock{requests_mutex_};
            if (stop_requested_) {
                // An add() that waited for room while another thread stopped the run.
                mailbox_.forget(1);
                throw std::logic_error{"multiworker::Processor::add(): the Processor was stopped meanwhile"};
            }
            if (bounded()) undispatched_.fetch_add(1, std::memory_order_relaxed);
            reserve_prefaulted(inbox_, inbox_.size() + 1);
            inbox_.emplace_back(id, std::move(arguments));
        }
        const bool raised = raise_requests_flag();
        // A sleeping supervisor would take a wake-up of tens of microseconds
        // to hand the task on; this thread can do it now.
        if (!serve_in_caller(CallerRole::adding) && raised) ring_supervisor();
        // A caller adding task after task never gives up its core by itself;
        // a worker queued behind it would wait for the end of its time slice
        // (see make_way_for_workers()). Every 64th task, when workers wait.
        if (id.value() % 64 == 0 && workers_wait_for_core_.load(std::memory_order_relaxed)) ::sched_yield();
    }

    std::size_t cancel() override {
        std::future<std::size_t> answer;
        {
            std::lock_guard lock{requests_mutex_};
            if (!supervisor_running_) {
                const std::size_t count = inbox_.size();
                inbox_.clear();
                mailbox_.forget(count);
                count_dispatched(count);
                return count;
            }
            answer = cancel_requests_.emplace_back().get_future();
        }
        notify_supervisor();
        return answer.get();
    }

    void stop(std::chrono::milliseconds grace, std::string grace_end) override {
        {
            std::lock_guard lock{requests_mutex_};
            if (!stop_requested_) {
                stop_grace_ = grace;
                stop_grace_end_ = std::move(grace_end);
            }
            stop_requested_ = true;
            if (!supervisor_running_) {
                mailbox_.forget(inbox_.size());
                count_dispatched(inbox_.size());
                inbox_.clear();
            }
        }
        undispatched_.notify_all();  // adders waiting for room see the stop
        if (!supervisor_.joinable()) return;
        notify_supervisor();
        supervisor_.join();
        // Every worker is gone, so every log pipe reaches end-of-file soon;
        // the grace period only matters if a worker's own child kept one open.
        log_collector_.stop(std::chrono::milliseconds{2000});
    }

    /// Collects results (and hands out tasks) in the calling thread if the
    /// supervisor sleeps, so that a caller waiting for a result needs no
    /// wake-up of the supervisor to get it.
    void help_while_waiting() override { serve_in_caller(CallerRole::waiting); }

    [[nodiscard]] std::vector<pid_t> worker_pids() const override {
        std::lock_guard lock{requests_mutex_};
        return live_pids_;
    }

    [[nodiscard]] std::size_t undispatched() const override { return undispatched_.load(std::memory_order_relaxed); }

private:
    static constexpr std::size_t max_window = 4096;
    static constexpr std::chrono::nanoseconds window_target{std::chrono::milliseconds{1}};
    static constexpr std::chrono::milliseconds server_check_interval{5};
    static constexpr int max_unanswered_spawns = 16;
    // Below this measured task time the supervisor spins for the result. The
    // measure runs from dispatch to collection, so a trivial task sent to a
    // sleeping worker measures its wake-up too: 50-100 us on a virtual machine.
    static constexpr double short_task_ns = 200'000;
    static constexpr std::chrono::microseconds recent_progress{50};
    // A worker that has had tasks this long without a result is taken to
    // be waiting for a core (see make_way_for_workers()).
    static constexpr std::chrono::microseconds starved_worker_delay{20};

    using Clock = std::chrono::steady_clock;

    // A FIFO whose elements stay in place (frames borrow their bytes) and
    // which allocates once per few dozen tasks, not once per few.
    template <class T>
    using BlockDeque =
        boost::container::deque<T, void, boost::container::deque_options_t<boost::container::block_bytes<8192>>>;

    // Constructors, not aggregates: emplace_back() builds them in place, and
    // clang before 16 has no parenthesized aggregate initialization.
    struct QueuedTask {
        QueuedTask(TaskId task_id, Bytes&& task_arguments) noexcept
            : id{task_id}, arguments{std::move(task_arguments)} {}

        TaskId id;
        Bytes arguments;        // kept until the result, to run the task again if need be
        unsigned failures = 0;  // runs that ended in a worker death (or a retried exception)
    };

    struct InFlight {
        InFlight(std::uint64_t task_sequence, QueuedTask&& queued) noexcept
            : sequence{task_sequence}, task{std::move(queued)} {}

        std::uint64_t sequence;
        QueuedTask task;
    };

    /// Parent-side state of one worker slot; touched only by the supervisor thread.
    struct Worker {
        int index = 0;
        pid_t pid = 0;          // 0: no process in this slot
        bool spawning = false;  // the fork server was asked for a process
        bool disabled = false;  // its worker failed to start: not replaced again
        FileDescriptor pidfd;   // exactly this process, for signals
        FileDescriptor doorbell_fd;
        WorkerSlotState* slot = nullptr;
        WorkerEndpoints endpoints;
        BlockDeque<InFlight> in_flight;  // sent, no result yet; oldest first
        std::optional<FrameWriter> sending;
        std::optional<FrameReader> receiving;
        std::uint64_t last_sequence = 0;
        std::uint64_t dispatched = 0;  // tasks sent to this process (for recycling)
        std::uint64_t completed = 0;   // results received from this process
        bool shutdown_sent = false;
        std::string fault;  // why the parent killed it, if it did
        ErrorKind fault_kind = ErrorKind::worker_died;
        double task_ns = 0;           // moving average of task duration; 0 = unknown
        std::size_t pass_window = 0;  // window() as this dispatch pass began
        Clock::time_point last_collect{};

        /// A process runs in this slot (it may be faulted and about to die).
        [[nodiscard]] bool alive() const noexcept { return pid != 0; }
    };

    // ----- bounded queue (Options::max_pending) -----

    /// Only a bounded queue counts its tasks: the count costs the hot path an
    /// atomic operation on a line the supervisor writes too.
    [[nodiscard]] bool bounded() const noexcept { return options_.max_pending > 0; }

    /// Blocks the adding thread while max_pending tasks wait for a worker;
    /// the supervisor wakes it as it hands tasks out. Returns at once when
    /// stopping: stop() accounts for whatever is added then.
    void wait_for_room() {
        for (;;) {
            const std::size_t waiting = undispatched_.load();
            if (waiting < options_.max_pending || stop_requested_.load()) return;
            adders_waiting_.fetch_add(1);
            undispatched_.wait(waiting);
            adders_waiting_.fetch_sub(1);
        }
    }

    /// Counts tasks leaving the queue (handed to a worker, cancelled, failed)
    /// and wakes adders waiting for room.
    void count_dispatched(std::size_t count) {
        if (count == 0 || !bounded()) return;
        undispatched_.fetch_sub(count);
        if (adders_waiting_.load() > 0) undispatched_.notify_all();
    }

    /// Puts a task back into the queue (a retry, or one a dead worker never started).
    void requeue(QueuedTask&& task) {
        if (bounded()) undispatched_.fetch_add(1, std::memory_order_relaxed);
        backlog_.push_front(std::move(task));
    }

    // ----- set-up -----

    void map_shared_state() {
        const std::size_t slots_bytes = sizeof(DoorbellFlag) + options_.workers * sizeof(WorkerSlotState);
        const std::size_t header_bytes = (slots_bytes + 4095) / 4096 * 4096;
        shared_ = SharedMapping{header_bytes + 2 * options_.workers * ring_capacity_};
        prefault(shared_.data(), shared_.size());
        auto* parent_flag = new (shared_.data()) DoorbellFlag{};
        parent_doorbell_fd_ = make_eventfd();
        parent_doorbell_ = Doorbell{parent_flag, parent_doorbell_fd_.get()};
        char* rings = reinterpret_cast<char*>(shared_.data()) + header_bytes;
        auto* slots = reinterpret_cast<WorkerSlotState*>(shared_.data() + sizeof(DoorbellFlag));
        workers_.resize(options_.workers);
        for (unsigned i = 0; i < options_.workers; ++i) {
            Worker& worker = workers_[i];
            worker.index = static_cast<int>(i);
            worker.slot = new (&slots[i]) WorkerSlotState{};
            worker.doorbell_fd = make_eventfd();
            worker.endpoints = WorkerEndpoints{
                .index = worker.index,
                .parent_pid = 0,  // set in the worker: its fork server's pid
                .tasks = ByteRing{&worker.slot->tasks, rings + (2 * i) * ring_capacity_, ring_capacity_},
                .results = ByteRing{&worker.slot->results, rings + (2 * i + 1) * ring_capacity_, ring_capacity_},
                .own = Doorbell{&worker.slot->doorbell, worker.doorbell_fd.get()},
                .parent = parent_doorbell_,
                .claimed = &worker.slot->claimed,
                .started_ns = &worker.slot->started_ns,
                .max_message_bytes = options_.max_message_bytes,
                .track_start_times = options_.task_timeout.count() > 0,
                .wait_for_debugger = options_.debug_worker == worker.index,
            };
            worker.receiving.emplace(options_.max_message_bytes, make_large_result_);
        }
    }

    /// Forks the fork server (from this, the supervisor thread: PR_SET_PDEATHSIG
    /// fires when the forking *thread* ends, and this one lives exactly as long
    /// as the workers should).
    void start_fork_server() {
        int ends[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) throw_errno("socketpair");
        FileDescriptor ours{ends[0]};
        FileDescriptor theirs{ends[1]};
        const auto inherited = loggers_to_inherit();
        const pid_t parent = ::getpid();
        // Output buffered but not yet written would otherwise be written again by every worker.
        std::fflush(nullptr);
        const pid_t pid = ::fork();
        if (pid < 0) throw_errno("fork of the fork server");
        if (pid == 0) {
            ours.reset();
            // The fork server and the workers forked from it go by the
            // program's name, not by this thread's.
            name_this_thread(program_invocation_short_name);
            run_fork_server(theirs.get(), parent, captures_output(),
                            [this, &inherited](int slot, const WorkerPipes& pipes, pid_t server) {
                                WorkerEndpoints endpoints = workers_[static_cast<std::size_t>(slot)].endpoints;
                                endpoints.parent_pid = server;
                                run_worker_process(endpoints, runner_, hooks_, pipes.log, pipes.out >= 0,
                                                   options_.log_level, inherited);
                            });
        }
        fork_server_pid_ = pid;
        fork_server_ = std::move(ours);
    }

    /// Asks the fork server for a process in `worker`'s slot, on fresh shared state.
    void request_worker(Worker& worker) {
        worker.slot->claimed.store(0, std::memory_order_relaxed);
        worker.slot->started_ns.store(0, std::memory_order_relaxed);
        worker.slot->doorbell.sleeping.store(0, std::memory_order_relaxed);
        worker.endpoints.tasks.reset();
        worker.endpoints.results.reset();
        worker.receiving.emplace(options_.max_message_bytes, make_large_result_);
        worker.in_flight.clear();
        worker.sending.reset();
        worker.last_sequence = 0;
        worker.dispatched = 0;
        worker.completed = 0;
        worker.shutdown_sent = false;
        worker.fault.clear();
        worker.fault_kind = ErrorKind::worker_died;
        worker.last_collect = {};
        if (!fork_server_.valid()) {
            worker.disabled = true;
            return;
        }
        worker.spawning = true;
        spawn_queue_.push_back(worker.index);
        send_spawn_requests();
    }

    /// Sends queued spawn requests while fewer than max_unanswered_spawns are
    /// unanswered. Unbounded, a thousand requests fill the socket's buffer
    /// before the server's answers, which then fill the other way: both sides
    /// would block in sendmsg() for good.
    void send_spawn_requests() {
        while (unanswered_spawns_ < max_unanswered_spawns && !spawn_queue_.empty()) {
            Worker& worker = workers_[static_cast<std::size_t>(spawn_queue_.front())];
            spawn_queue_.pop_front();
            if (!fork_server_.valid() ||
                !send_message(fork_server_.get(), {ForkServerMessage::Kind::spawn, worker.index, 0, 0})) {
                worker.spawning = false;
                worker.disabled = true;
                continue;
            }
            ++unanswered_spawns_;
        }
    }

    [[nodiscard]] bool captures_output() const noexcept { return options_.worker_output != WorkerOutput::inherit; }

    // ----- the supervisor thread -----

    void supervise(std::promise<void> started) {
        name_this_thread("mw-supervisor");
        try {
            start_fork_server();
            // Only now: a thread of ours running during the fork could hold a
            // lock (the allocator's, a logger's) that the fork server would
            // inherit, locked, forever.
            log_collector_.start();
            for (Worker& worker : workers_) request_worker(worker);
            const auto deadline = Clock::now() + options_.start_timeout;
            while (std::any_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.spawning; })) {
                if (Clock::now() > deadline) throw start_timed_out();
                wait_for_events(100, false);
            }
            if (start_error_ != 0) {
                errno = start_error_;
                throw_errno("fork of a worker");
            }
        } catch (...) {
            shut_down_fork_server();
            started.set_exception(std::current_exception());
            return;
        }
        {
            std::lock_guard lock{requests_mutex_};
            supervisor_running_ = true;
        }
        started.set_value();
        std::unique_lock duty{duty_mutex_};
        callers_may_serve_ = true;
        auto next_server_check = Clock::now();
        for (;;) {
            try {
                const bool progress = run_pass();
                if (stopping_ && no_processes()) break;
                enforce_deadlines();
                const auto now = Clock::now();
                if (!progress) {
                    idle(duty);
                    continue;
                }
                if (now >= next_server_check) {
                    wait_for_events(0, false);
                    next_server_check = now + server_check_interval;
                }
                make_way_for_workers(now);
            } catch (const std::exception& e) {
                abandon_everything(std::string{"internal error in the supervisor: "} + e.what());
            }
        }
        callers_may_serve_ = false;
        duty.unlock();
        shut_down_fork_server();
        std::lock_guard lock{requests_mutex_};
        supervisor_running_ = false;
        for (auto& request : cancel_requests_) request.set_value(0);
        cancel_requests_.clear();
    }

    [[nodiscard]] std::runtime_error start_timed_out() const {
        const auto waiting =
            std::count_if(workers_.begin(), workers_.end(), [](const Worker& w) { return w.spawning; });
        return std::runtime_error{"multiworker::Processor::start(): " + std::to_string(waiting) + " of " +
                                  std::to_string(workers_.size()) + " workers were not forked within start_timeout (" +
                                  std::to_string(options_.start_timeout.count()) + " ms)"};
    }

    /// Yields this thread's core when a worker has had tasks for a while and
    /// returned no result. While a caller adds tasks one by one, it and the
    /// supervisor, which takes them a few at a time, are both always
    /// runnable; a worker woken with tasks would otherwise wait for a core
    /// until one of them ends its time slice (milliseconds with the kernel's
    /// EEVDF scheduler), and the tasks pile up unprocessed. At most once per
    /// starved_worker_delay: a yield is a system call.
    void make_way_for_workers(Clock::time_point now) {
        if (now - last_yield_ < starved_worker_delay) return;
        const bool starved = std::any_of(workers_.begin(), workers_.end(), [now](const Worker& worker) {
            return worker.alive() && !worker.in_flight.empty() && worker.last_collect != Clock::time_point{} &&
                   now - worker.last_collect > starved_worker_delay;
        });
        workers_wait_for_core_.store(starved, std::memory_order_relaxed);
        if (!starved) return;
        last_yield_ = now;
        ::sched_yield();
    }

    /// What a user thread serving in the supervisor's place does (see serve_in_caller()).
    enum class CallerRole {
        adding,   // hands tasks out only: add() never copies a large result out of a ring
        waiting,  // also collects results: pop_result() waits for one
    };

    /// One round of the supervisor's work: take requests, collect results
    /// (unless `collect_results` is false), hand out tasks, deliver what
    /// finished. True if anything moved.
    bool run_pass(bool collect_results = true) {
        bool progress = accept_requests();
        if (collect_results) {
            for (Worker& worker : workers_) progress |= collect(worker);
        }
        progress |= dispatch();
        mailbox_.deliver(finished_);
        if (progress) last_progress_ = Clock::now();
        return progress;
    }

    /// Runs one pass in the calling (user) thread if the supervisor sleeps;
    /// true if it did. The supervisor holds duty_mutex_ except while it
    /// sleeps, so the state a pass touches always has one owner at a time.
    ///
    /// A caller adding tasks stands back once the supervisor is awake, even
    /// before it has the mutex back: a stream of adds would otherwise keep
    /// it from the supervisor, which hands tasks out in larger batches. A
    /// caller waiting for a result does not: the supervisor woken by that
    /// very result is still tens of microseconds away.
    bool serve_in_caller(CallerRole role) {
        if (role == CallerRole::adding && !supervisor_asleep_.load(std::memory_order_relaxed)) return false;
        std::unique_lock duty{duty_mutex_, std::try_to_lock};
        if (!duty.owns_lock() || !callers_may_serve_) return false;
        const bool progress = run_pass(role == CallerRole::waiting);
        // The supervisor chose how long to sleep before this pass. It must
        // look again if requests are left (another thread held the inbox),
        // or if there is a deadline to watch: a task handed out under
        // task_timeout, or stop()'s grace period.
        if (requests_pending_.load(std::memory_order_acquire) || stopping_ ||
            (progress && options_.task_timeout.count() > 0)) {
            ring_supervisor();
        }
        return true;
    }

    /// Raises the flag that tells the supervisor to look at the inbox; true
    /// if this call raised it. Only the caller that raised it needs to ring:
    /// until the supervisor lowers it, it has yet to look at the inbox and
    /// will see every request. The plain load first keeps the flag's cache
    /// line shared while it is raised.
    bool raise_requests_flag() noexcept {
        return !requests_pending_.load(std::memory_order_relaxed) &&
               !requests_pending_.exchange(true, std::memory_order_acq_rel);
    }

    void ring_supervisor() const noexcept {
        if (parent_doorbell_.fd() >= 0) parent_doorbell_.ring();
    }

    void notify_supervisor() {
        if (raise_requests_flag()) ring_supervisor();
    }

    bool accept_requests() {
        if (!requests_pending_.exchange(false, std::memory_order_acq_rel)) return false;
        std::vector<std::promise<std::size_t>> cancels;
        bool stop = false;
        std::chrono::milliseconds grace{};
        std::string grace_end;
        {
            std::unique_lock lock{requests_mutex_, std::try_to_lock};
            if (!lock.owns_lock()) {
                // A user thread is adding: better to serve the workers now and
                // come back than to wait for a thread that may have lost its core.
                requests_pending_.store(true, std::memory_order_relaxed);
                return false;
            }
            arrived_.swap(inbox_);
            cancels.swap(cancel_requests_);
            stop = stop_requested_;
            grace = stop_grace_;
            if (stop) grace_end = stop_grace_end_;
        }
        for (auto& [id, arguments] : arrived_) backlog_.emplace_back(id, std::move(arguments));
        arrived_.clear();  // keeps its capacity for the next swap
        fail_backlog_if_no_worker();
        for (auto& request : cancels) request.set_value(cancel_unstarted());
        if (stop && !stopping_) begin_stop(grace, std::move(grace_end));
        return true;
    }

    /// Drops the backlog and every task a worker has not claimed; returns the count.
    std::size_t cancel_unstarted() {
        std::size_t count = backlog_.size();
        count_dispatched(backlog_.size());
        backlog_.clear();
        for (Worker& worker : workers_) {
            if (worker.alive()) count += take_back_unclaimed(worker).size();
        }
        mailbox_.forget(count);
        return count;
    }

    /// Moves the worker's claim counter past every task it was sent, so it
    /// will skip them; returns those tasks, oldest first.
    std::vector<QueuedTask> take_back_unclaimed(Worker& worker) {
        std::uint64_t claimed = worker.slot->claimed.load(std::memory_order_acquire);
        while (claimed < worker.last_sequence &&
               !worker.slot->claimed.compare_exchange_weak(claimed, worker.last_sequence, std::memory_order_acq_rel)) {
        }
        if (worker.sending) worker.sending->keep_payload();  // its frame may borrow from a task taken here
        std::vector<QueuedTask> unclaimed;
        while (!worker.in_flight.empty() && worker.in_flight.back().sequence > claimed) {
            unclaimed.push_back(std::move(worker.in_flight.back().task));
            worker.in_flight.pop_back();
        }
        std::reverse(unclaimed.begin(), unclaimed.end());
        return unclaimed;
    }

    // ----- results -----

    bool collect(Worker& worker) {
        if (!worker.alive() || !worker.fault.empty()) return false;
        std::size_t count = 0;
        try {
            FrameReader& reader = *worker.receiving;
            // A large result is read into its final value instead (see LargePayload).
            while (reader.poll_ring(worker.endpoints.results, large_buffer_bytes - 1)) {
                accept_result(worker, reader);
                ++count;
            }
            // Space for the worker's next results: freed in one store, and
            // the worker woken if it waits for it.
            if (worker.endpoints.results.release()) worker.endpoints.own.ring();
        } catch (const std::exception& e) {
            fault(worker, ErrorKind::worker_died, std::string{"sent corrupt data ("} + e.what() + ")");
            return true;
        }
        if (count > 0) update_task_duration(worker, count);
        return count > 0;
    }

    /// Makes the complete frame in `reader` the outcome of the worker's oldest
    /// task, and readies the reader for the next frame.
    void accept_result(Worker& worker, FrameReader& reader) {
        const FrameHeader header = reader.header();
        if (header.kind != FrameKind::result && header.kind != FrameKind::failure) {
            throw ProtocolError{"unexpected frame kind " + std::to_string(static_cast<std::uint32_t>(header.kind))};
        }
        if (worker.in_flight.empty() || sequence_bits(worker.in_flight.front().sequence) != header.sequence) {
            throw ProtocolError{"result for its task number " + std::to_string(header.sequence) +
                                " (mod 2^32), which it was not running"};
        }
        QueuedTask& task = worker.in_flight.front().task;
        ++worker.completed;
        if (header.kind == FrameKind::result) {
            if (std::unique_ptr<LargePayload> large = reader.take_large()) {
                finished_.push_back(RawResult{task.id, std::move(large), worker.index, worker.pid});
            } else {
                // Built where it stays, the payload copied straight into it:
                // a small value is not moved from record to record on its way.
                RawResult& result = finished_.emplace_back();
                result.id = task.id;
                result.worker_index = worker.index;
                result.worker_pid = worker.pid;
                try {
                    reader.take_payload_into(std::get<Bytes>(result.outcome));
                } catch (...) {
                    finished_.pop_back();  // the task stays in flight, to be accounted for with the worker
                    throw;
                }
            }
        } else {
            TaskError error = error_from_report(task.id, reader.payload(), worker.index, worker.pid);
            if (error.kind() != ErrorKind::exception || !options_.retry_exceptions || !retry(task, error.what())) {
                finished_.push_back(
                    RawResult{task.id, std::make_unique<TaskError>(std::move(error)), worker.index, worker.pid});
            }
        }
        reader.next();
        worker.in_flight.pop_front();
    }

    /// Requeues a failed task if its retries allow; false if they are used up.
    bool retry(QueuedTask& task, const std::string& why) {
        if (stopping_ || task.failures >= options_.retries) return false;
        ++task.failures;
        log_collector_.report(spdlog::level::warn, why + "; running task " + std::to_string(task.id.value()) +
                                                       " again (retry " + std::to_string(task.failures) + " of " +
                                                       std::to_string(options_.retries) + ")");
        requeue(std::move(task));
        return true;
    }

    void update_task_duration(Worker& worker, std::size_t results) {
        const auto now = Clock::now();
        // A worker that finished every task it had may have waited for the
        // next ones for part of the interval, so its time per result then
        // only bounds the task time from above: it may lower the estimate,
        // never raise it. Otherwise a worker given few tasks, and collected
        // from seldom (the supervisor waiting for a core), would look slow,
        // be given fewer tasks still, and idle while the other one works.
        const bool drained = worker.in_flight.empty();
        if (worker.last_collect != Clock::time_point{}) {
            const double sample =
                static_cast<double>((now - worker.last_collect).count()) / static_cast<double>(results);
            if (worker.task_ns == 0) {
                worker.task_ns = sample;
            } else if (!drained || sample < worker.task_ns) {
                worker.task_ns = 0.8 * worker.task_ns + 0.2 * sample;
            }
        }
        // Only an interval during which the worker had work measures its speed.
        worker.last_collect = drained ? Clock::time_point{} : now;
    }

    // ----- dispatch -----

    std::size_t window(const Worker& worker) const {
        std::size_t tasks = 2;
        if (worker.task_ns > 0) {
            tasks = static_cast<std::size_t>(std::clamp(static_cast<double>(window_target.count()) / worker.task_ns,
                                                        2.0, static_cast<double>(max_window)));
        }
        if (options_.task_timeout.count() > 0) tasks = 1;  // a queued task must not wait behind one being killed
        if (options_.max_tasks_per_worker > 0) {
            const std::uint64_t left = options_.max_tasks_per_worker - worker.dispatched;
            tasks = std::min<std::size_t>(tasks, worker.in_flight.size() + left);
        }
        return tasks;
    }

    bool dispatch() {
        bool progress = false;
        for (Worker& worker : workers_) {
            progress |= continue_sending(worker);
            // Exact for the whole pass: sending a task adds one to both the
            // tasks in flight and the tasks dispatched, which is all window() reads.
            worker.pass_window = window(worker);
        }
        std::size_t handed_out = 0;
        while (!backlog_.empty()) {
            Worker* target = least_loaded_ready_worker();
            if (target == nullptr) break;
            const std::uint64_t sequence = ++target->last_sequence;
            ++target->dispatched;
            target->in_flight.emplace_back(sequence, std::move(backlog_.front()));
            backlog_.pop_front();
            ++handed_out;
            if (target->last_collect == Clock::time_point{}) target->last_collect = Clock::now();
            send_task(*target, target->in_flight.back());
            progress = true;
        }
        count_dispatched(handed_out);
        for (Worker& worker : workers_) {
            progress |= send_shutdown_if_due(worker);
            // Everything staged for this worker in this pass becomes visible
            // at once, with one doorbell check.
            if (worker.alive() && worker.endpoints.tasks.publish()) worker.endpoints.own.ring();
        }
        return progress;
    }

    /// Ends a worker at stop(), or when it has served max_tasks_per_worker.
    bool send_shutdown_if_due(Worker& worker) {
        if (!worker.alive() || worker.shutdown_sent || worker.sending || !worker.fault.empty()) return false;
        const bool recycle = options_.max_tasks_per_worker > 0 && worker.dispatched >= options_.max_tasks_per_worker &&
                             worker.in_flight.empty();
        if (!stopping_ && !recycle) return false;
        worker.sending.emplace(FrameHeader{.kind = FrameKind::shutdown}, std::span<const char>{});
        worker.shutdown_sent = true;
        continue_sending(worker);
        return true;
    }

    Worker* least_loaded_ready_worker() {
        Worker* best = nullptr;
        for (Worker& worker : workers_) {
            if (!worker.alive() || !worker.fault.empty() || worker.sending || worker.shutdown_sent) continue;
            if (worker.in_flight.size() >= worker.pass_window) continue;
            if (best == nullptr || worker.in_flight.size() < best->in_flight.size()) best = &worker;
        }
        return best;
    }

    /// Stages the task's frame in one step if it fits, or else starts
    /// streaming it (borrowing the arguments from in_flight, whose elements
    /// stay in place until they leave it).
    void send_task(Worker& worker, const InFlight& sent) {
        FrameHeader header{.kind = FrameKind::task, .sequence = sequence_bits(sent.sequence)};
        header.length = sent.task.arguments.size();
        try {
            if (worker.endpoints.tasks.stage_whole(header_bytes(header), sent.task.arguments)) return;
        } catch (const std::exception& e) {
            fault(worker, ErrorKind::worker_died, std::string{"corrupted its task ring ("} + e.what() + ")");
            return;
        }
        worker.sending.emplace(header, sent.task.arguments);
        continue_sending(worker);
    }

    bool continue_sending(Worker& worker) {
        if (!worker.sending || !worker.alive() || !worker.fault.empty()) return false;
        try {
            StagingSink sink{worker.endpoints.tasks};
            const std::size_t before = worker.sending->written();
            if (worker.sending->poll(sink)) {
                worker.sending.reset();
                return true;
            }
            return worker.sending->written() != before;
        } catch (const std::exception& e) {
            fault(worker, ErrorKind::worker_died, std::string{"corrupted its task ring ("} + e.what() + ")");
            return true;
        }
    }

    // ----- time limits -----

    /// Kills workers whose task outlived task_timeout, and all workers once
    /// the stop grace period is over.
    void enforce_deadlines() {
        if (stopping_ && !stop_killed_ && Clock::now() >= stop_deadline_) {
            stop_killed_ = true;
            for (Worker& worker : workers_) {
                if (!worker.alive() || !worker.fault.empty()) continue;
                fault(worker, ErrorKind::worker_died, "was still running a task when " + stop_grace_end_in_force_);
            }
        }
        if (options_.task_timeout.count() <= 0) return;
        const auto now = Clock::now();
        for (Worker& worker : workers_) {
            const auto deadline = task_deadline(worker);
            if (deadline && now >= *deadline) {
                fault(worker, ErrorKind::timeout,
                      "exceeded task_timeout (" + std::to_string(options_.task_timeout.count()) + " ms)");
            }
        }
    }

    /// When the worker's running task times out; empty if it runs none.
    std::optional<Clock::time_point> task_deadline(const Worker& worker) const {
        if (!worker.alive() || !worker.fault.empty() || worker.in_flight.empty()) return std::nullopt;
        const std::uint64_t claimed = worker.slot->claimed.load(std::memory_order_acquire);
        if (claimed < worker.in_flight.front().sequence) return std::nullopt;
        const Clock::time_point started{Clock::duration{worker.slot->started_ns.load(std::memory_order_relaxed)}};
        return started + options_.task_timeout;
    }

    /// How long the supervisor may sleep without missing a deadline.
    int sleep_budget_ms() const {
        auto wake = Clock::now() + std::chrono::seconds{1};
        if (stopping_ && !stop_killed_) wake = std::min(wake, stop_deadline_);
        if (options_.task_timeout.count() > 0) {
            for (const Worker& worker : workers_) {
                if (!worker.alive() || worker.in_flight.empty()) continue;
                // A task not started yet cannot time out before a full timeout from now.
                wake = std::min(wake, task_deadline(worker).value_or(Clock::now() + options_.task_timeout));
            }
        }
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(wake - Clock::now());
        return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1000));
    }

    // ----- sleeping and process events -----

    /// True when work is likely within the spin: a worker runs tasks short
    /// enough that a result may come, or, with no long task running, the
    /// supervisor was busy a moment ago (a caller adding one task after
    /// another's result is in). Otherwise the supervisor sleeps at once: on a
    /// machine with as many cores as workers, spinning through every
    /// millisecond-long task would take a core's time from the workers.
    bool result_expected_soon() const noexcept {
        bool running_long = false;
        for (const Worker& worker : workers_) {
            if (!worker.alive() || worker.in_flight.empty()) continue;
            // A large frame streaming through the ring: its next piece is
            // a ring-full away, and the worker waits for the space.
            if (worker.task_ns < short_task_ns || worker.receiving->mid_frame()) return true;
            running_long = true;
        }
        return !running_long && Clock::now() - last_progress_ < recent_progress;
    }

    /// True when the supervisor has something to do right now.
    bool work_ready() const noexcept {
        if (requests_pending_.load(std::memory_order_acquire)) return true;
        for (const Worker& worker : workers_) {
            if (!worker.alive() || !worker.fault.empty()) continue;
            if (worker.endpoints.results.has_readable()) return true;
            if (worker.sending && worker.endpoints.tasks.has_space()) return true;
        }
        return false;
    }

    /// Spins if a result is likely soon, then sleeps until rung, a fork
    /// server message or the next deadline. `duty` is released only for the
    /// sleep itself, so that callers may run passes meanwhile.
    void idle(std::unique_lock<std::mutex>& duty) {
        const int spins = result_expected_soon() ? spins_before_sleep : 0;
        for (int i = 0; i < spins; ++i) {
            if (work_ready()) return;
            spin_pause(i);
        }
        int timeout_ms = sleep_budget_ms();
        if (!parent_doorbell_.begin_sleep([this] { return work_ready(); })) timeout_ms = 0;
        supervisor_asleep_.store(true, std::memory_order_relaxed);
        duty.unlock();
        const bool server_spoke = poll_events(timeout_ms, true);
        supervisor_asleep_.store(false, std::memory_order_relaxed);
        duty.lock();
        parent_doorbell_.end_sleep();
        if (server_spoke) handle_server_messages();
    }

    /// Waits up to `timeout_ms` for the fork server (spawns, exits) and, if
    /// asked, the doorbell; handles every fork server message that arrived.
    void wait_for_events(int timeout_ms, bool include_doorbell) {
        if (poll_events(timeout_ms, include_doorbell)) handle_server_messages();
    }

    /// Waits as wait_for_events() does; true if the fork server has a message.
    /// Reads only what no caller's pass changes: it runs while callers may serve.
    bool poll_events(int timeout_ms, bool include_doorbell) const {
        pollfd descriptors[2];
        nfds_t count = 0;
        if (fork_server_.valid()) descriptors[count++] = pollfd{fork_server_.get(), POLLIN, 0};
        if (include_doorbell) descriptors[count++] = pollfd{parent_doorbell_.fd(), POLLIN, 0};
        if (count == 0) return false;
        if (::poll(descriptors, count, timeout_ms) <= 0) return false;
        return fork_server_.valid() && descriptors[0].revents != 0;
    }

    void handle_server_messages() {
        for (;;) {
            pollfd server{fork_server_.get(), POLLIN, 0};
            if (::poll(&server, 1, 0) <= 0) return;
            auto message = receive_message(fork_server_.get());
            if (!message) {
                on_fork_server_lost();
                return;
            }
            handle_server_message(std::move(*message));
        }
    }

    void handle_server_message(ReceivedMessage received) {
        const ForkServerMessage& message = received.message;
        if (message.kind == ForkServerMessage::Kind::exited) {
            for (Worker& worker : workers_) {
                if (worker.pid == message.pid && worker.pid != 0)
                    on_worker_exit(worker, describe_exit_status(message.value), message.value);
            }
            return;
        }
        if (message.slot < 0 || static_cast<std::size_t>(message.slot) >= workers_.size()) return;
        Worker& worker = workers_[static_cast<std::size_t>(message.slot)];
        worker.spawning = false;
        --unanswered_spawns_;
        send_spawn_requests();
        const std::size_t expected_fds = captures_output() ? 4 : 2;
        if (message.kind == ForkServerMessage::Kind::spawn_failed || received.fds.size() != expected_fds) {
            start_error_ = message.value != 0 ? message.value : EIO;
            worker.disabled = true;
            log_collector_.report(spdlog::level::err, "could not create worker " + std::to_string(worker.index) + ": " +
                                                          ::strerror(start_error_));
            fail_backlog_if_no_worker();
            return;
        }
        worker.pid = message.pid;
        worker.pidfd = std::move(received.fds[1]);
        log_collector_.add_source(worker.index, worker.pid, std::move(received.fds[0]));
        if (captures_output()) {
            log_collector_.add_source(worker.index, worker.pid, std::move(received.fds[2]),
                                      LogCollector::Stream::stdout_bytes);
            log_collector_.add_source(worker.index, worker.pid, std::move(received.fds[3]),
                                      LogCollector::Stream::stderr_bytes);
        }
        publish_pids();
    }

    void on_worker_exit(Worker& worker, const std::string& how, int status) {
        log_collector_.drain_exited(worker.pid);
        if (worker.fault.empty()) collect(worker);  // results it completed before it ended
        const bool clean_exit = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        const bool expected = clean_exit && worker.shutdown_sent && worker.in_flight.empty();
        std::string reason = worker.fault.empty() ? how : worker.fault + " and " + how;
        if (const std::string site = log_collector_.take_crash_site(worker.pid); !site.empty()) {
            reason += " " + site + ",";
        }
        std::vector<QueuedTask> unclaimed = take_back_unclaimed(worker);
        if (stopping_) {
            mailbox_.forget(unclaimed.size());
        } else {
            for (auto it = unclaimed.rbegin(); it != unclaimed.rend(); ++it) requeue(std::move(*it));
        }
        for (InFlight& lost : worker.in_flight) {
            const std::string what = "worker " + std::to_string(worker.index) + " (pid " + std::to_string(worker.pid) +
                                     ") " + reason + " while running task " + std::to_string(lost.task.id.value());
            if (worker.fault_kind == ErrorKind::worker_died && retry(lost.task, what)) continue;
            const std::string message = worker.fault_kind == ErrorKind::timeout ? worker.fault : reason;
            finished_.push_back(RawResult{
                lost.task.id,
                std::make_unique<TaskError>(worker.fault_kind, lost.task.id, "", message, worker.index, worker.pid),
                worker.index, worker.pid});
        }
        // A worker with no task that ends once stop()'s grace period is over
        // was on its way out: killing it is no news. (A faulted worker is
        // given and collected nothing, so in_flight is still what it was.)
        const bool killed_idle = stop_killed_ && worker.in_flight.empty();
        if (!expected && !killed_idle) {
            log_collector_.report(spdlog::level::warn, "worker " + std::to_string(worker.index) + " (pid " +
                                                           std::to_string(worker.pid) + ") " + reason);
        }
        worker.in_flight.clear();
        worker.sending.reset();
        worker.pid = 0;
        worker.pidfd.reset();
        const bool failed_to_start = WIFEXITED(status) && WEXITSTATUS(status) == worker_start_failed_status &&
                                     worker.completed == 0 && worker.in_flight.empty();
        if (failed_to_start) {
            worker.disabled = true;
            log_collector_.report(spdlog::level::err, "worker " + std::to_string(worker.index) +
                                                          " failed to start (see the log); it is not replaced");
        }
        if (!stopping_ && !worker.disabled) request_worker(worker);
        publish_pids();
        fail_backlog_if_no_worker();
        mailbox_.deliver(finished_);
    }

    /// The fork server is gone (killed from outside): its workers die with it.
    void on_fork_server_lost() {
        fork_server_.reset();
        ::waitpid(fork_server_pid_, nullptr, 0);
        fork_server_pid_ = 0;
        spawn_queue_.clear();
        unanswered_spawns_ = 0;
        for (Worker& worker : workers_) {
            worker.spawning = false;
            worker.disabled = true;
            if (worker.pid != 0) on_worker_exit(worker, "was lost with the fork server", 0);
        }
    }

    /// Stops a misbehaving worker; its exit is then handled like a crash.
    void fault(Worker& worker, ErrorKind kind, std::string what) {
        worker.fault = std::move(what);
        worker.fault_kind = kind;
        if (worker.pidfd.valid()) ::syscall(SYS_pidfd_send_signal, worker.pidfd.get(), SIGKILL, nullptr, 0);
    }

    void fail_backlog_if_no_worker() {
        if (stopping_) return;
        const bool any = std::any_of(workers_.begin(), workers_.end(),
                                     [](const Worker& w) { return w.alive() || w.spawning || !w.disabled; });
        if (any) return;
        const std::string why = "all " + std::to_string(workers_.size()) + " workers have exited";
        for (QueuedTask& task : backlog_) {
            finished_.push_back(RawResult{task.id, std::make_unique<TaskError>(ErrorKind::no_worker, task.id, "", why,
                                                                               TaskError::no_worker_index, 0)});
        }
        count_dispatched(backlog_.size());
        backlog_.clear();
    }

    void abandon_everything(const std::string& why) {
        log_collector_.report(spdlog::level::err, why);
        for (Worker& worker : workers_) {
            worker.disabled = true;
            if (worker.alive() && worker.fault.empty()) fault(worker, ErrorKind::worker_died, why);
        }
        const auto deadline = Clock::now() + std::chrono::seconds{5};
        while (!no_processes() && fork_server_.valid() && Clock::now() < deadline) wait_for_events(100, false);
        fail_backlog_if_no_worker();
        mailbox_.deliver(finished_);
    }

    void begin_stop(std::chrono::milliseconds grace, std::string grace_end) {
        stopping_ = true;
        stop_grace_end_in_force_ = std::move(grace_end);
        stop_deadline_ = Clock::now() + grace;
        cancel_unstarted();
    }

    /// Tells the fork server to kill what is left and exit, and reaps it.
    void shut_down_fork_server() {
        if (fork_server_.valid()) send_message(fork_server_.get(), {ForkServerMessage::Kind::quit, 0, 0, 0});
        fork_server_.reset();
        if (fork_server_pid_ > 0) ::waitpid(fork_server_pid_, nullptr, 0);
        fork_server_pid_ = 0;
    }

    [[nodiscard]] bool no_processes() const noexcept {
        return std::none_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.pid != 0 || w.spawning; });
    }

    void publish_pids() {
        std::vector<pid_t> pids;
        for (const Worker& worker : workers_) {
            if (worker.alive()) pids.push_back(worker.pid);
        }
        std::lock_guard lock{requests_mutex_};
        live_pids_ = std::move(pids);
    }

    // ----- members -----

    const Options options_;
    ResultMailbox& mailbox_;
    TaskRunner runner_;
    WorkerHooks hooks_;
    LargePayloadMaker make_large_result_;
    const std::size_t ring_capacity_;
    LogCollector log_collector_;
    SharedMapping shared_;
    FileDescriptor parent_doorbell_fd_;
    Doorbell parent_doorbell_;
    FileDescriptor fork_server_;
    pid_t fork_server_pid_ = 0;

    // Shared between user threads and the supervisor, under requests_mutex_.
    mutable SpinLock requests_mutex_;  // held for a few instructions at a time
    std::vector<std::pair<TaskId, Bytes>> inbox_;
    std::vector<std::promise<std::size_t>> cancel_requests_;
    std::atomic<bool> stop_requested_{false};  // atomic too: adders waiting for room read it without the lock
    std::chrono::milliseconds stop_grace_{};
    std::string stop_grace_end_;
    bool supervisor_running_ = false;
    std::vector<pid_t> live_pids_;
    std::atomic<bool> requests_pending_{false};
    std::atomic<bool> workers_wait_for_core_{false};  // see make_way_for_workers()
    // Tasks added and not yet handed to a worker (see wait_for_room()).
    std::atomic<std::size_t> undispatched_{0};
    std::atomic<int> adders_waiting_{0};

    std::thread supervisor_;

    // Held by the supervisor thread except while it sleeps; a user thread
    // that takes it runs a pass in the supervisor's place (serve_in_caller()).
    std::mutex duty_mutex_;
    bool callers_may_serve_ = false;              // the supervisor's loop runs
    std::atomic<bool> supervisor_asleep_{false};  // see serve_in_caller()

    // Owned by whichever thread holds duty_mutex_ (the supervisor thread
    // alone before its loop and after it).
    std::vector<std::pair<TaskId, Bytes>> arrived_;  // its side of the inbox swap
    std::vector<Worker> workers_;
    BlockDeque<QueuedTask> backlog_;
    std::vector<RawResult> finished_;
    std::deque<int> spawn_queue_;  // slots whose spawn request waits (see send_spawn_requests())
    int unanswered_spawns_ = 0;
    int start_error_ = 0;
    bool stopping_ = false;
    bool stop_killed_ = false;
    Clock::time_point last_progress_{};
    Clock::time_point last_yield_{};
    std::string stop_grace_end_in_force_;  // what ends the grace period, for messages
    Clock::time_point stop_deadline_{};
};

}  // namespace multiworker::detail
