#pragma once

// The parent's event loop: one thread that owns all dispatch state of one
// engine (a Processor's backend, a pipeline). User threads hand the engine
// requests and raise the loop's request flag; the loop runs passes (take
// requests, collect results, hand out tasks, deliver), sleeps on the parent
// doorbell and the fork server's socket when nothing moves, and wakes for
// either or for the engine's next deadline.
//
// While the loop sleeps, a user thread that adds a task or waits for a result
// runs a pass itself, under the same mutex: waking a sleeping thread costs
// tens of microseconds on a virtual machine, so a task added to idle workers
// then takes one wake-up (the worker's) instead of three. Process events and
// deadlines remain the loop's alone.

#include <multiworker/detail/doorbell.hpp>
#include <multiworker/detail/spin.hpp>
#include <multiworker/detail/system.hpp>

#include <poll.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>

namespace multiworker::detail {

class EventLoop {
public:
    using Clock = std::chrono::steady_clock;

    /// What the loop drives. Every call but work_ready() and the fd comes from
    /// the thread holding the duty (the loop, or a user thread serving in its place).
    class Engine {
    public:
        /// In the loop thread, before the first pass: fork, wait for workers. May throw.
        virtual void prepare() = 0;
        /// One round of work; `collect_results` false: hand out only. True if anything moved.
        virtual bool run_pass(bool collect_results) = 0;
        /// The loop may end: stopping, and no process left.
        [[nodiscard]] virtual bool finished() const = 0;
        /// Kills what outlived its time limit.
        virtual void enforce_deadlines() = 0;
        /// Fork server messages (spawns, exits); never blocks.
        virtual void handle_process_events() = 0;
        /// The fork server's socket, polled while the loop sleeps (-1: none).
        [[nodiscard]] virtual int process_events_fd() const = 0;
        /// A worker's outcome can be read, or a frame can go on.
        [[nodiscard]] virtual bool work_ready() const = 0;
        /// Spin rather than sleep: a result is likely within the spin.
        [[nodiscard]] virtual bool result_expected_soon() const = 0;
        /// How long the loop may sleep without missing a deadline.
        [[nodiscard]] virtual int sleep_budget_ms() const = 0;
        /// After a caller's pass: the loop must look again (a deadline to watch).
        [[nodiscard]] virtual bool needs_loop_after(bool progress) const = 0;
        /// A worker has had tasks since before `cutoff` and returned nothing (see make_way_for_workers()).
        [[nodiscard]] virtual bool worker_starved(Clock::time_point cutoff) const = 0;
        /// The loop's pass threw: fail what can be failed, kill what runs.
        virtual void abandon(const std::string& why) = 0;
        /// In the loop thread, after the last pass.
        virtual void wind_down() = 0;

    protected:
        ~Engine() = default;
    };

    EventLoop(Engine& engine, const Doorbell& doorbell) : engine_{engine}, doorbell_{doorbell} {}

    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;
    ~EventLoop() { join(); }

    /// Starts the loop thread; returns once the engine is prepared, or throws what prepare() threw.
    void start(const char* thread_name) {
        std::promise<void> prepared;
        std::future<void> ready = prepared.get_future();
        thread_ = std::thread{[this, promise = std::move(prepared)]() mutable { run(std::move(promise)); }};
        name_thread(thread_, thread_name);
        try {
            ready.get();
        } catch (...) {
            thread_.join();
            throw;
        }
    }

    /// Waits for the loop to end (once the engine is finished()).
    void join() {
        if (thread_.joinable()) thread_.join();
    }

    [[nodiscard]] bool joinable() const noexcept { return thread_.joinable(); }

    /// Raises the flag that tells the loop to look at requests; true if this
    /// call raised it. Only the caller that raised it needs to ring: until
    /// the loop lowers it, it has yet to look and will see every request.
    /// The plain load first keeps the flag's cache line shared while raised.
    bool raise_request_flag() noexcept {
        return !requests_pending_.load(std::memory_order_relaxed) &&
               !requests_pending_.exchange(true, std::memory_order_acq_rel);
    }

    /// Wakes the loop if it sleeps.
    void ring() const noexcept {
        if (doorbell_.fd() >= 0) doorbell_.ring();
    }

    /// Raises the request flag and wakes the loop.
    void notify() noexcept {
        if (raise_request_flag()) ring();
    }

    /// For the engine's pass: lowers the flag; true if it was raised.
    bool take_request_flag() noexcept { return requests_pending_.exchange(false, std::memory_order_acq_rel); }

    /// For the engine's pass: requests are left for the next one.
    void keep_request_flag() noexcept { requests_pending_.store(true, std::memory_order_relaxed); }

    /// The loop sleeps: a caller adding work may serve in its place.
    [[nodiscard]] bool asleep() const noexcept { return asleep_.load(std::memory_order_relaxed); }

    /// What a user thread serving in the loop's place does (see serve_in_caller()).
    enum class CallerRole {
        adding,   // hands tasks out only: add() never copies a large result out of a ring
        waiting,  // also collects results: pop_result() waits for one
    };

    /// Runs one pass in the calling (user) thread if the loop sleeps; true if
    /// it did. The loop holds the duty mutex except while it sleeps, so the
    /// state a pass touches always has one owner at a time.
    ///
    /// A caller adding tasks stands back once the loop is awake, even before
    /// it has the mutex back: a stream of adds would otherwise keep it from
    /// the loop, which hands tasks out in larger batches. A caller waiting
    /// for a result does not: the loop woken by that very result is still
    /// tens of microseconds away.
    bool serve_in_caller(CallerRole role) {
        if (role == CallerRole::adding && !asleep()) return false;
        std::unique_lock duty{duty_mutex_, std::try_to_lock};
        if (!duty.owns_lock() || !callers_may_serve_) return false;
        const bool progress = engine_.run_pass(role == CallerRole::waiting);
        // The loop chose how long to sleep before this pass. It must look
        // again if requests are left (another thread held them), or if
        // there is a deadline to watch.
        if (requests_pending_.load(std::memory_order_acquire) || engine_.needs_loop_after(progress)) ring();
        return true;
    }

    /// Workers wait for a core (see make_way_for_workers()): adders should yield now and then.
    [[nodiscard]] bool workers_wait_for_core() const noexcept {
        return workers_wait_for_core_.load(std::memory_order_relaxed);
    }

private:
    static constexpr std::chrono::milliseconds process_check_interval{5};
    // A worker that has had tasks this long without a result is taken to
    // be waiting for a core (see make_way_for_workers()).
    static constexpr std::chrono::microseconds starved_worker_delay{20};

    void run(std::promise<void> prepared) {
        try {
            engine_.prepare();
        } catch (...) {
            prepared.set_exception(std::current_exception());
            return;
        }
        prepared.set_value();
        std::unique_lock duty{duty_mutex_};
        callers_may_serve_ = true;
        auto next_process_check = Clock::now();
        for (;;) {
            try {
                const bool progress = engine_.run_pass(true);
                if (engine_.finished()) break;
                engine_.enforce_deadlines();
                const auto now = Clock::now();
                // Also when idle() returns at once, again and again: an exit
                // is never left unread for long, whatever keeps the loop busy.
                if (now >= next_process_check) {
                    engine_.handle_process_events();
                    next_process_check = now + process_check_interval;
                }
                if (!progress) {
                    idle(duty);
                    continue;
                }
                make_way_for_workers(now);
            } catch (const std::exception& e) {
                engine_.abandon(std::string{"internal error in the event loop: "} + e.what());
            }
        }
        callers_may_serve_ = false;
        duty.unlock();
        engine_.wind_down();
    }

    /// Yields this thread's core when a worker has had tasks for a while and
    /// returned no result. While a caller adds tasks one by one, it and the
    /// loop, which takes them a few at a time, are both always runnable; a
    /// worker woken with tasks would otherwise wait for a core until one of
    /// them ends its time slice (milliseconds with the kernel's EEVDF
    /// scheduler), and the tasks pile up unprocessed. At most once per
    /// starved_worker_delay: a yield is a system call.
    void make_way_for_workers(Clock::time_point now) {
        if (now - last_yield_ < starved_worker_delay) return;
        const bool starved = engine_.worker_starved(now - starved_worker_delay);
        workers_wait_for_core_.store(starved, std::memory_order_relaxed);
        if (!starved) return;
        last_yield_ = now;
        ::sched_yield();
    }

    [[nodiscard]] bool work_ready() const {
        return requests_pending_.load(std::memory_order_acquire) || engine_.work_ready();
    }

    /// Spins if a result is likely soon, then sleeps until rung, a fork
    /// server message or the next deadline. `duty` is released only for the
    /// sleep itself, so that callers may run passes meanwhile.
    void idle(std::unique_lock<std::mutex>& duty) {
        const int spins = engine_.result_expected_soon() ? spins_before_sleep : 0;
        for (int i = 0; i < spins; ++i) {
            if (work_ready()) return;
            spin_pause(i);
        }
        int timeout_ms = engine_.sleep_budget_ms();
        if (!doorbell_.begin_sleep([this] { return work_ready(); })) timeout_ms = 0;
        asleep_.store(true, std::memory_order_relaxed);
        duty.unlock();
        const bool processes_spoke = poll_events(timeout_ms);
        asleep_.store(false, std::memory_order_relaxed);
        duty.lock();
        doorbell_.end_sleep();
        if (processes_spoke) engine_.handle_process_events();
    }

    /// Waits up to `timeout_ms` for the doorbell or the fork server; true if
    /// the fork server has a message. Reads only what no caller's pass
    /// changes: it runs while callers may serve.
    bool poll_events(int timeout_ms) const {
        pollfd descriptors[2];
        nfds_t count = 0;
        const int server = engine_.process_events_fd();
        if (server >= 0) descriptors[count++] = pollfd{server, POLLIN, 0};
        descriptors[count++] = pollfd{doorbell_.fd(), POLLIN, 0};
        if (::poll(descriptors, count, timeout_ms) <= 0) return false;
        return server >= 0 && descriptors[0].revents != 0;
    }

    Engine& engine_;
    const Doorbell& doorbell_;
    std::thread thread_;
    std::atomic<bool> requests_pending_{false};
    std::atomic<bool> workers_wait_for_core_{false};
    std::atomic<bool> asleep_{false};

    // Held by the loop thread except while it sleeps; a user thread that
    // takes it runs a pass in the loop's place (serve_in_caller()).
    std::mutex duty_mutex_;
    bool callers_may_serve_ = false;  // the loop runs its passes
    Clock::time_point last_yield_{};
};

}  // namespace multiworker::detail
