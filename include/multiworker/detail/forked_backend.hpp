#pragma once

// Execution in forked worker processes.
//
// Parent side: one supervisor thread owns all dispatch state. User threads
// hand it requests (new tasks, cancel, stop) through a small mutex-guarded
// inbox and ring its doorbell; it moves tasks into the workers' task rings,
// drains their result rings into the ResultMailbox, and watches every worker
// through a pidfd, so a worker's death is noticed at once, not by polling.
//
// Dispatch keeps a bounded window of tasks in flight per worker. The window
// adapts to the measured task duration: about a millisecond of work, at least
// two tasks (one running, one ready, so a worker never waits on the parent) and
// at most max_window. Short tasks thus travel many per wake-up, and long tasks
// are not queued behind a busy worker while another one idles.
//
// The workers are forked by the supervisor thread rather than by the caller
// of start(): PR_SET_PDEATHSIG fires when the *thread* that forked exits, and
// the supervisor lives exactly as long as the workers should.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/doorbell.hpp>
#include <multiworker/detail/ring.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/detail/wire.hpp>
#include <multiworker/detail/worker_logging.hpp>
#include <multiworker/detail/worker_loop.hpp>
#include <multiworker/options.hpp>

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace multiworker::detail {

/// How a child ended, in words: "exited with status 3", "was killed by SIGSEGV".
inline std::string describe_exit_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* name = ::sigabbrev_np(WTERMSIG(status));
        return "was killed by " + (name ? "SIG" + std::string{name} : "signal " + std::to_string(WTERMSIG(status)));
    }
    return "ended with wait status " + std::to_string(status);
}

class ForkedBackend final : public ExecutionBackend {
public:
    ForkedBackend(const Options& options, ResultMailbox& mailbox, TaskRunner runner,
                  std::vector<std::shared_ptr<spdlog::logger>> log_destinations)
        : options_{options},
          mailbox_{mailbox},
          runner_{std::move(runner)},
          ring_capacity_{std::bit_ceil(std::max<std::size_t>(options.ring_bytes, 4096))},
          log_collector_{std::move(log_destinations), options.log_level} {}

    ~ForkedBackend() override { stop(); }

    ForkedBackend(const ForkedBackend&) = delete;
    ForkedBackend& operator=(const ForkedBackend&) = delete;

    void start() override {
        map_shared_state();
        log_collector_.start();
        std::promise<void> started;
        std::future<void> forked = started.get_future();
        supervisor_ = std::thread{[this, promise = std::move(started)]() mutable { supervise(std::move(promise)); }};
        try {
            forked.get();
        } catch (...) {
            supervisor_.join();
            log_collector_.stop(std::chrono::milliseconds{1000});
            throw;
        }
    }

    void submit(TaskId id, Bytes arguments) override {
        {
            std::lock_guard lock{requests_mutex_};
            inbox_.emplace_back(id, std::move(arguments));
        }
        notify_supervisor();
    }

    std::size_t cancel() override {
        std::future<std::size_t> answer;
        {
            std::lock_guard lock{requests_mutex_};
            if (!supervisor_running_) {
                const std::size_t count = inbox_.size();
                inbox_.clear();
                mailbox_.forget(count);
                return count;
            }
            answer = cancel_requests_.emplace_back().get_future();
        }
        notify_supervisor();
        return answer.get();
    }

    void stop() override {
        {
            std::lock_guard lock{requests_mutex_};
            stop_requested_ = true;
            if (!supervisor_running_) {
                mailbox_.forget(inbox_.size());
                inbox_.clear();
            }
        }
        if (!supervisor_.joinable()) return;
        notify_supervisor();
        supervisor_.join();
        // Every worker is reaped, so every log pipe reaches end-of-file soon;
        // the grace period only matters if a worker's own child kept one open.
        log_collector_.stop(std::chrono::milliseconds{2000});
    }

private:
    static constexpr std::size_t max_window = 4096;
    static constexpr std::chrono::nanoseconds window_target{std::chrono::milliseconds{1}};
    static constexpr std::chrono::milliseconds death_check_interval{5};

    struct InFlight {
        std::uint64_t sequence;
        TaskId id;
        std::shared_ptr<const Bytes> arguments;  // kept to requeue if the worker dies unclaimed
    };

    /// Parent-side state of one worker; touched only by the supervisor thread.
    struct Worker {
        int index = 0;
        pid_t pid = 0;
        bool alive = false;
        FileDescriptor pidfd;
        FileDescriptor doorbell_fd;
        WorkerSlotState* slot = nullptr;
        WorkerEndpoints endpoints;
        std::deque<InFlight> in_flight;
        std::optional<FrameWriter> sending;
        std::optional<FrameReader> receiving;
        std::uint64_t last_sequence = 0;
        bool shutdown_sent = false;
        std::string fault;  // why the parent killed it, if it did
        double task_ns = 0;  // moving average of task duration; 0 = unknown
        std::chrono::steady_clock::time_point last_collect{};
    };

    // ----- set-up -----

    void map_shared_state() {
        const std::size_t slots_bytes = sizeof(DoorbellFlag) + options_.workers * sizeof(WorkerSlotState);
        const std::size_t header_bytes = (slots_bytes + 4095) / 4096 * 4096;
        shared_ = SharedMapping{header_bytes + 2 * options_.workers * ring_capacity_};
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
                .parent_pid = ::getpid(),
                .tasks = ByteRing{&worker.slot->tasks, rings + (2 * i) * ring_capacity_, ring_capacity_},
                .results = ByteRing{&worker.slot->results, rings + (2 * i + 1) * ring_capacity_, ring_capacity_},
                .own = Doorbell{&worker.slot->doorbell, worker.doorbell_fd.get()},
                .parent = parent_doorbell_,
                .claimed = &worker.slot->claimed,
                .max_message_bytes = options_.max_message_bytes,
            };
            worker.receiving.emplace(options_.max_message_bytes);
        }
    }

    void spawn(Worker& worker) {
        int pipe_ends[2];
        if (::pipe2(pipe_ends, O_CLOEXEC) != 0) throw_errno("pipe2 for worker logs");
        FileDescriptor log_read{pipe_ends[0]};
        FileDescriptor log_write{pipe_ends[1]};
        const auto inherited = loggers_to_inherit();
        const pid_t pid = ::fork();
        if (pid < 0) throw_errno("fork of worker " + std::to_string(worker.index));
        if (pid == 0) {
            run_worker_process(worker.endpoints, runner_, log_write.get(), options_.log_level, inherited);
        }
        // The write end must not outlive this fork in the parent, or later
        // children would inherit it and the pipe would never reach end-of-file.
        log_write.reset();
        worker.pid = pid;
        worker.alive = true;
        worker.pidfd = open_pidfd(pid);
        log_collector_.add_source(worker.index, pid, std::move(log_read));
    }

    // ----- the supervisor thread -----

    void supervise(std::promise<void> started) {
        try {
            for (Worker& worker : workers_) spawn(worker);
        } catch (...) {
            kill_all("start() failed");
            while (live_workers() > 0) wait_for_deaths(-1);
            started.set_exception(std::current_exception());
            return;
        }
        {
            std::lock_guard lock{requests_mutex_};
            supervisor_running_ = true;
        }
        started.set_value();
        auto next_death_check = std::chrono::steady_clock::now();
        for (;;) {
            try {
                bool progress = accept_requests();
                for (Worker& worker : workers_) progress |= collect(worker);
                progress |= dispatch();
                mailbox_.deliver(std::move(finished_));
                if (stopping_ && live_workers() == 0) break;
                enforce_stop_deadline();
                const auto now = std::chrono::steady_clock::now();
                if (!progress) {
                    idle();
                } else if (now >= next_death_check) {
                    wait_for_deaths(0);
                    next_death_check = now + death_check_interval;
                }
            } catch (const std::exception& e) {
                abandon_everything(std::string{"internal error in the supervisor: "} + e.what());
            }
        }
        std::lock_guard lock{requests_mutex_};
        supervisor_running_ = false;
        for (auto& request : cancel_requests_) request.set_value(0);
        cancel_requests_.clear();
    }

    void notify_supervisor() {
        requests_pending_.store(true, std::memory_order_release);
        if (parent_doorbell_.fd() >= 0) parent_doorbell_.ring();
    }

    bool accept_requests() {
        if (!requests_pending_.exchange(false, std::memory_order_acq_rel)) return false;
        std::deque<std::pair<TaskId, Bytes>> arrived;
        std::vector<std::promise<std::size_t>> cancels;
        bool stop = false;
        {
            std::lock_guard lock{requests_mutex_};
            arrived.swap(inbox_);
            cancels.swap(cancel_requests_);
            stop = stop_requested_;
        }
        for (auto& task : arrived) backlog_.push_back(std::move(task));
        if (live_workers() == 0 && !stopping_) fail_backlog();
        for (auto& request : cancels) request.set_value(cancel_unstarted());
        if (stop && !stopping_) begin_stop();
        return true;
    }

    /// Drops the backlog and every task a worker has not claimed; returns the count.
    std::size_t cancel_unstarted() {
        std::size_t count = backlog_.size();
        backlog_.clear();
        for (Worker& worker : workers_) {
            if (worker.alive) count += take_back_unclaimed(worker).size();
        }
        mailbox_.forget(count);
        return count;
    }

    /// Moves the worker's claim counter past every task it was sent, so it
    /// will skip them; returns those tasks, oldest first.
    std::vector<InFlight> take_back_unclaimed(Worker& worker) {
        std::uint64_t claimed = worker.slot->claimed.load(std::memory_order_acquire);
        while (claimed < worker.last_sequence &&
               !worker.slot->claimed.compare_exchange_weak(claimed, worker.last_sequence, std::memory_order_acq_rel)) {
        }
        std::vector<InFlight> unclaimed;
        while (!worker.in_flight.empty() && worker.in_flight.back().sequence > claimed) {
            unclaimed.push_back(std::move(worker.in_flight.back()));
            worker.in_flight.pop_back();
        }
        std::reverse(unclaimed.begin(), unclaimed.end());
        return unclaimed;
    }

    // ----- results -----

    bool collect(Worker& worker) {
        if (!worker.alive || !worker.fault.empty()) return false;
        std::size_t count = 0;
        try {
            RingReader source{worker.endpoints.results, worker.endpoints.own};
            while (worker.receiving->poll(source)) {
                accept_result(worker, worker.receiving->header(), worker.receiving->take_payload());
                ++count;
            }
        } catch (const std::exception& e) {
            fault(worker, std::string{"sent corrupt data ("} + e.what() + ")");
            return true;
        }
        if (count > 0) update_task_duration(worker, count);
        return count > 0;
    }

    void accept_result(Worker& worker, const FrameHeader& header, Bytes payload) {
        if (header.kind != FrameKind::result && header.kind != FrameKind::failure) {
            throw ProtocolError{"unexpected frame kind " + std::to_string(static_cast<std::uint32_t>(header.kind))};
        }
        if (worker.in_flight.empty() || worker.in_flight.front().sequence != header.sequence ||
            worker.in_flight.front().id.value() != header.task) {
            throw ProtocolError{"result for task " + std::to_string(header.task) + " that it was not running"};
        }
        const TaskId id = worker.in_flight.front().id;
        worker.in_flight.pop_front();
        RawResult result{id, Bytes{}, worker.index, worker.pid};
        if (header.kind == FrameKind::result) {
            result.outcome = std::move(payload);
        } else {
            result.outcome = error_from_report(id, payload, worker.index, worker.pid);
        }
        finished_.push_back(std::move(result));
    }

    void update_task_duration(Worker& worker, std::size_t results) {
        const auto now = std::chrono::steady_clock::now();
        const bool busy_since_last = worker.last_collect != std::chrono::steady_clock::time_point{};
        if (busy_since_last) {
            const double sample = static_cast<double>((now - worker.last_collect).count()) / static_cast<double>(results);
            worker.task_ns = worker.task_ns == 0 ? sample : 0.8 * worker.task_ns + 0.2 * sample;
        }
        // Only an interval during which the worker had work measures its speed.
        worker.last_collect = worker.in_flight.empty() ? std::chrono::steady_clock::time_point{} : now;
    }

    // ----- dispatch -----

    static std::size_t window(const Worker& worker) {
        if (worker.task_ns <= 0) return 2;
        const double tasks = static_cast<double>(window_target.count()) / worker.task_ns;
        return static_cast<std::size_t>(std::clamp(tasks, 2.0, static_cast<double>(max_window)));
    }

    bool dispatch() {
        bool progress = false;
        for (Worker& worker : workers_) progress |= continue_sending(worker);
        while (!backlog_.empty()) {
            Worker* target = least_loaded_ready_worker();
            if (target == nullptr) break;
            auto [id, arguments] = std::move(backlog_.front());
            backlog_.pop_front();
            auto shared_arguments = std::make_shared<const Bytes>(std::move(arguments));
            const std::uint64_t sequence = ++target->last_sequence;
            target->in_flight.push_back(InFlight{sequence, id, shared_arguments});
            target->sending.emplace(FrameHeader{.kind = FrameKind::task, .sequence = sequence, .task = id.value()},
                                    std::move(shared_arguments));
            if (target->last_collect == std::chrono::steady_clock::time_point{}) {
                target->last_collect = std::chrono::steady_clock::now();
            }
            continue_sending(*target);
            progress = true;
        }
        if (stopping_) {
            for (Worker& worker : workers_) {
                if (!worker.alive || worker.shutdown_sent || worker.sending) continue;
                worker.sending.emplace(FrameHeader{.kind = FrameKind::shutdown}, nullptr);
                worker.shutdown_sent = true;
                continue_sending(worker);
                progress = true;
            }
        }
        return progress;
    }

    Worker* least_loaded_ready_worker() {
        Worker* best = nullptr;
        for (Worker& worker : workers_) {
            if (!worker.alive || !worker.fault.empty() || worker.sending || worker.shutdown_sent) continue;
            if (worker.in_flight.size() >= window(worker)) continue;
            if (best == nullptr || worker.in_flight.size() < best->in_flight.size()) best = &worker;
        }
        return best;
    }

    bool continue_sending(Worker& worker) {
        if (!worker.sending || !worker.alive || !worker.fault.empty()) return false;
        try {
            RingWriter sink{worker.endpoints.tasks, worker.endpoints.own};
            const std::size_t before = worker.sending->written();
            if (worker.sending->poll(sink)) {
                worker.sending.reset();
                return true;
            }
            return worker.sending->written() != before;
        } catch (const std::exception& e) {
            fault(worker, std::string{"corrupted its task ring ("} + e.what() + ")");
            return true;
        }
    }

    // ----- sleeping and deaths -----

    /// True when the supervisor has something to do right now.
    bool work_ready() const noexcept {
        if (requests_pending_.load(std::memory_order_acquire)) return true;
        for (const Worker& worker : workers_) {
            if (!worker.alive || !worker.fault.empty()) continue;
            if (worker.endpoints.results.has_readable()) return true;
            if (worker.sending && worker.endpoints.tasks.has_space()) return true;
        }
        return false;
    }

    void idle() {
        for (int i = 0; i < spins_before_sleep; ++i) {
            if (work_ready()) return;
            cpu_relax();
        }
        int timeout_ms = 1000;
        if (stopping_) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(stop_deadline_ - std::chrono::steady_clock::now());
            timeout_ms = static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1000));
        }
        if (!parent_doorbell_.begin_sleep([this] { return work_ready(); })) timeout_ms = 0;
        wait_for_deaths(timeout_ms, parent_doorbell_.fd());
        parent_doorbell_.end_sleep();
    }

    /// Polls the live workers' pidfds (and `extra_fd`), handling every exit.
    void wait_for_deaths(int timeout_ms, int extra_fd = -1) {
        std::vector<pollfd> descriptors;
        std::vector<Worker*> watched;
        if (extra_fd >= 0) descriptors.push_back(pollfd{extra_fd, POLLIN, 0});
        for (Worker& worker : workers_) {
            if (!worker.alive) continue;
            descriptors.push_back(pollfd{worker.pidfd.get(), POLLIN, 0});
            watched.push_back(&worker);
        }
        if (::poll(descriptors.data(), descriptors.size(), timeout_ms) <= 0) return;
        const std::size_t first = extra_fd >= 0 ? 1 : 0;
        for (std::size_t i = 0; i < watched.size(); ++i) {
            if (descriptors[first + i].revents != 0) on_worker_exit(*watched[i]);
        }
    }

    void on_worker_exit(Worker& worker) {
        int status = 0;
        std::string how;
        if (::waitpid(worker.pid, &status, 0) == worker.pid) {
            how = describe_exit_status(status);
        } else {
            how = "exited (its status was reaped elsewhere: is SIGCHLD ignored?)";
        }
        if (worker.fault.empty()) collect(worker);  // results it completed before dying
        const std::string reason = worker.fault.empty() ? how : worker.fault + " and " + how;
        std::vector<InFlight> unclaimed = take_back_unclaimed(worker);
        if (stopping_) {
            mailbox_.forget(unclaimed.size());
        } else {
            for (auto it = unclaimed.rbegin(); it != unclaimed.rend(); ++it) {
                backlog_.emplace_front(it->id, Bytes{it->arguments->begin(), it->arguments->end()});
            }
        }
        for (const InFlight& lost : worker.in_flight) {
            finished_.push_back(RawResult{lost.id, TaskError{ErrorKind::worker_died, lost.id, "", reason, worker.index, worker.pid},
                                          worker.index, worker.pid});
        }
        if (!(stopping_ && worker.in_flight.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            spdlog::warn("multiworker: worker {} (pid {}) {}", worker.index, worker.pid, reason);
        }
        worker.in_flight.clear();
        worker.sending.reset();
        worker.alive = false;
        worker.pidfd.reset();
        worker.endpoints.tasks.reset();
        worker.endpoints.results.reset();
        if (live_workers() == 0 && !stopping_) fail_backlog();
        mailbox_.deliver(std::move(finished_));
    }

    /// The worker broke the protocol: kill it; its exit is handled like a crash.
    void fault(Worker& worker, std::string what) {
        worker.fault = std::move(what);
        ::kill(worker.pid, SIGKILL);
    }

    void kill_all(const std::string& why) {
        for (Worker& worker : workers_) {
            if (worker.alive && worker.fault.empty()) fault(worker, why);
        }
    }

    void fail_backlog() {
        const std::string why = "all " + std::to_string(workers_.size()) + " workers have exited";
        for (auto& [id, arguments] : backlog_) {
            finished_.push_back(RawResult{id, TaskError{ErrorKind::no_worker, id, "", why, TaskError::no_worker_index, 0}});
        }
        backlog_.clear();
    }

    void abandon_everything(const std::string& why) {
        spdlog::error("multiworker: {}", why);
        kill_all(why);
        while (live_workers() > 0) wait_for_deaths(-1);
        fail_backlog();
        mailbox_.deliver(std::move(finished_));
    }

    void begin_stop() {
        stopping_ = true;
        stop_deadline_ = std::chrono::steady_clock::now() + options_.stop_timeout;
        cancel_unstarted();
    }

    void enforce_stop_deadline() {
        if (!stopping_ || stop_killed_ || std::chrono::steady_clock::now() < stop_deadline_) return;
        stop_killed_ = true;
        kill_all("outlived stop_timeout (" + std::to_string(options_.stop_timeout.count()) + " ms)");
    }

    [[nodiscard]] std::size_t live_workers() const noexcept {
        return static_cast<std::size_t>(std::count_if(workers_.begin(), workers_.end(), [](const Worker& w) { return w.alive; }));
    }

    // ----- members -----

    const Options options_;
    ResultMailbox& mailbox_;
    TaskRunner runner_;
    const std::size_t ring_capacity_;
    LogCollector log_collector_;
    SharedMapping shared_;
    FileDescriptor parent_doorbell_fd_;
    Doorbell parent_doorbell_;

    // Shared between user threads and the supervisor, under requests_mutex_.
    std::mutex requests_mutex_;
    std::deque<std::pair<TaskId, Bytes>> inbox_;
    std::vector<std::promise<std::size_t>> cancel_requests_;
    bool stop_requested_ = false;
    bool supervisor_running_ = false;
    std::atomic<bool> requests_pending_{false};

    // Owned by the supervisor thread.
    std::thread supervisor_;
    std::vector<Worker> workers_;
    std::deque<std::pair<TaskId, Bytes>> backlog_;
    std::vector<RawResult> finished_;
    bool stopping_ = false;
    bool stop_killed_ = false;
    std::chrono::steady_clock::time_point stop_deadline_{};
};

}  // namespace multiworker::detail
