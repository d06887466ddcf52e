#pragma once

// One run of a Supervisor, in the parent: the event loop's engine. It starts
// every process (ProcessHost), lets ParentMail read and send the parent's
// messages, learns how each process ended (its status block, and the host's
// exit report), restarts or stops on failure, tells the residents their end,
// and watches for a deadlock (deadlock_watch.hpp says how that is decided).

#include <multiworker/context.hpp>
#include <multiworker/detail/deadlock_watch.hpp>
#include <multiworker/detail/event_loop.hpp>
#include <multiworker/detail/interrupt_guard.hpp>
#include <multiworker/detail/message_mesh.hpp>
#include <multiworker/detail/messenger.hpp>
#include <multiworker/detail/parent_mail.hpp>
#include <multiworker/detail/process_directory.hpp>
#include <multiworker/detail/process_host.hpp>
#include <multiworker/detail/worker_logging.hpp>
#include <multiworker/supervisor_error.hpp>
#include <multiworker/supervisor_options.hpp>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace multiworker::detail {

/// A process's body: copies the object as registered and calls run(context).
using ProcessBody = std::function<void(Context&)>;

class SupervisorRun final : private EventLoop::Engine, private WorkerPool::Events {
public:
    SupervisorRun(const SupervisorOptions& options, const ProcessDirectory& directory, std::vector<ProcessBody> bodies,
                  std::map<std::uint64_t, ParentHandler> handlers,
                  std::vector<std::shared_ptr<spdlog::logger>> log_destinations)
        : options_{options},
          directory_{directory},
          bodies_{std::move(bodies)},
          mesh_{directory.size(), options.ring_bytes},
          logs_{std::move(log_destinations), options.log_level, WorkerOutput::forward},
          mail_{mesh_, directory_, std::move(handlers), logs_,
                [this](const std::string& what) {
                    failures_.push_back(ProcessFailure{directory_.at(0).info, 0, what});
                    begin_stop(Cause::failure);
                }},
          host_{make_host()},
          states_(directory.size(), NodeState::running),
          restarts_(directory.size()),
          loop_{*this, mesh_.doorbell(0)} {}

    SupervisorRun(const SupervisorRun&) = delete;
    SupervisorRun& operator=(const SupervisorRun&) = delete;

    /// Runs every process until all have ended; throws as Supervisor::run() documents.
    void run() {
        const InterruptGuard signals{mesh_.doorbell(0).fd()};
        loop_.start("mw-event-loop");
        loop_.join();
        if (!options_.in_process) logs_.stop(std::chrono::milliseconds{2000});
        if (cause_ == Cause::interrupted) throw Interrupted{interrupt_signal_};
        if (cause_ == Cause::failure) throw ProcessFailed{failures_};
        if (cause_ == Cause::deadlock) throw Deadlock{deadlocked_};
    }

    /// Sends from the parent, from any thread: never waits; what does not
    /// fit in a full mailbox waits in the parent, in order, for the loop.
    void send(ProcessId to, const MessageType& type, MessageKind kind, std::uint64_t ask, const Bytes& payload) {
        mail_.send(to, type, kind, ask, payload);
        loop_.notify();
    }

    /// Messages that reached no one: their receiver had ended, or the parent had no handler.
    [[nodiscard]] std::uint64_t dead_letters() const {
        std::uint64_t total = mail_.unhandled();
        for (std::size_t node = 0; node < directory_.size(); ++node)
            total += mesh_.status(static_cast<int>(node)).dead_letters.load();
        return total;
    }

private:
    using Clock = std::chrono::steady_clock;
    enum class NodeState { running, ended };
    enum class Cause { none, failure, deadlock, interrupted };
    static constexpr std::chrono::milliseconds deadlock_check_interval{50};

    std::unique_ptr<ProcessHost> make_host() {
        const std::size_t slots = directory_.size() - 1;
        SlotBody body = [this](int slot) { run_body(slot + 1); };
        if (options_.in_process) return std::make_unique<ThreadHost>(slots, std::move(body));
        std::vector<std::string> names;
        for (std::size_t node = 1; node < directory_.size(); ++node)
            names.push_back(describe(directory_.at(static_cast<int>(node)).info));
        return std::make_unique<ForkHost>(slots, logs_, options_.log_level, std::move(body), std::move(names));
    }

    // In the process (or thread) of `node`: how the body ends is its status block's to say.
    void run_body(int node) noexcept {
        Messenger messenger{mesh_, directory_, node};
        NodeStatus& status = messenger.status();
        try {
            Context context{messenger};
            try {
                bodies_[static_cast<std::size_t>(node)](context);
                end_of_body(context);
                status.end_state.store(static_cast<std::uint32_t>(EndState::returned), std::memory_order_release);
            } catch (const StopRequest&) {
                status.end_state.store(static_cast<std::uint32_t>(EndState::stopped), std::memory_order_release);
            }
        } catch (...) {
            status.record_failure("threw " + describe_current_exception());
        }
        messenger.close();
    }

    // ----- EventLoop::Engine -----

    void prepare() override {
        for (std::size_t node = 1; node < directory_.size(); ++node)
            mesh_.status(static_cast<int>(node)).reset_for_start();
        mesh_.status(0).reset_for_start();
        try {
            host_->start();
            if (!options_.in_process) logs_.start();
            for (std::size_t slot = 0; slot + 1 < directory_.size(); ++slot) host_->spawn(static_cast<int>(slot));
            host_->await_spawns(options_.start_timeout, *this);
        } catch (...) {
            for (std::size_t node = 1; node < directory_.size(); ++node)
                mesh_.status(static_cast<int>(node)).stop_requested.store(1);
            host_->shut_down();
            throw;
        }
        tell_residents_if_due();
    }

    bool run_pass(bool /*collect_results*/) override {
        bool progress = loop_.take_request_flag();
        if (const int signal = supervisor_interrupt.load(std::memory_order_relaxed); signal != 0 && !stopping_) {
            interrupt_signal_ = signal;
            begin_stop(Cause::interrupted);
            progress = true;
        }
        progress |= mail_.read();
        if (mail_.overflowing()) progress |= mail_.flush_overflow();
        return progress;
    }

    [[nodiscard]] bool finished() const override { return host_->no_processes(); }

    void enforce_deadlines() override {
        const auto now = Clock::now();
        if (stopping_ && !killed_ && now >= kill_deadline_) kill_everyone();
        if (!stopping_ && now >= next_deadlock_check_) {
            next_deadlock_check_ = now + deadlock_check_interval;
            check_deadlock();
        }
    }

    void handle_process_events() override { host_->handle_events(*this); }
    [[nodiscard]] int process_events_fd() const override { return host_->events_fd(); }
    [[nodiscard]] bool work_ready() const override {
        return mail_.incoming_ready() || supervisor_interrupt.load(std::memory_order_relaxed) != 0 ||
               mail_.overflowing();
    }
    [[nodiscard]] bool result_expected_soon() const override { return false; }
    [[nodiscard]] int sleep_budget_ms() const override { return static_cast<int>(deadlock_check_interval.count()); }
    [[nodiscard]] bool needs_loop_after(bool /*progress*/) const override { return false; }
    [[nodiscard]] bool worker_starved(Clock::time_point /*cutoff*/) const override { return false; }

    void abandon(const std::string& why) override {
        failures_.push_back(ProcessFailure{directory_.at(0).info, 0, why});
        begin_stop(Cause::failure);
    }

    void wind_down() override {
        try {
            mail_.read();
        } catch (...) {  // a corrupt ring at the very end: its messages are lost either way
        }
        host_->shut_down();
        if (const std::uint64_t lost = dead_letters(); lost != 0) {
            logs_.report(spdlog::level::warn, std::to_string(lost) +
                                                  " messages reached no one (their receiver had ended, or the "
                                                  "parent had no handler for their type)");
        }
    }

    // ----- WorkerPool::Events -----

    void worker_started(int /*slot*/) override {}

    void spawn_failed(int slot, int error) override {
        failures_.push_back(
            ProcessFailure{directory_.at(slot + 1).info, 0, std::string{"could not be forked: "} + ::strerror(error)});
        states_[static_cast<std::size_t>(slot + 1)] = NodeState::ended;
        begin_stop(Cause::failure);
    }

    void worker_exited(const WorkerExit& exit) override {
        const int node = exit.slot + 1;
        NodeStatus& status = mesh_.status(node);
        std::optional<std::string> failure;
        switch (status.ended()) {
            case EndState::returned:
            case EndState::stopped:
                break;
            case EndState::threw:
                failure = status.failure_text();
                break;
            case EndState::running:
                if (!(stopping_ && exit.killed_by_parent())) failure = ended_early(exit);
                break;
        }
        Messenger{mesh_, directory_, node}.close();  // what was still on its way to it: dead letters
        if (failure && may_restart(node)) {
            logs_.report(spdlog::level::warn,
                         "process " + describe(directory_.at(node).info) + " " + *failure + "; restarting it");
            status.reset_for_start();
            host_->spawn(exit.slot);
            return;
        }
        states_[static_cast<std::size_t>(node)] = NodeState::ended;
        if (failure && directory_.at(node).options.restart == Restart::on_failure && !stopping_) {
            *failure += " (past its restart limit: " + std::to_string(directory_.at(node).options.max_restarts) +
                        " restarts within restart_period)";
        }
        if (failure) {
            logs_.report(spdlog::level::err, "process " + describe(directory_.at(node).info) + " (pid " +
                                                 std::to_string(exit.pid) + ") " + *failure);
            failures_.push_back(ProcessFailure{directory_.at(node).info, exit.pid, *failure});
            begin_stop(Cause::failure);
            return;
        }
        tell_residents_if_due();
    }

    static std::string ended_early(const WorkerExit& exit) {
        if (WIFEXITED(exit.status)) return exit.reason + " before run() returned (exit() was called)";
        return exit.reason;
    }

    // ----- ends, stops, restarts -----

    bool may_restart(int node) {
        const ProcessOptions& options = directory_.at(node).options;
        if (stopping_ || options.restart != Restart::on_failure) return false;
        auto& times = restarts_[static_cast<std::size_t>(node)];
        const auto now = Clock::now();
        while (!times.empty() && now - times.front() > options.restart_period) times.pop_front();
        if (times.size() >= options.max_restarts) return false;
        times.push_back(now);
        return true;
    }

    void tell_residents_if_due() {
        if (residents_told_ || stopping_) return;
        for (std::size_t node = 1; node < directory_.size(); ++node) {
            if (!directory_.at(static_cast<int>(node)).options.resident && states_[node] == NodeState::running) return;
        }
        residents_told_ = true;
        for (std::size_t node = 1; node < directory_.size(); ++node) {
            if (!directory_.at(static_cast<int>(node)).options.resident) continue;
            mesh_.status(static_cast<int>(node)).residents_end.store(1, std::memory_order_release);
            mesh_.doorbell(static_cast<int>(node)).ring();
        }
    }

    void begin_stop(Cause cause) {
        if (stopping_) return;
        stopping_ = true;
        cause_ = cause;
        kill_deadline_ = Clock::now() + options_.stop_timeout;
        for (std::size_t node = 1; node < directory_.size(); ++node) {
            mesh_.status(static_cast<int>(node)).stop_requested.store(1, std::memory_order_seq_cst);
            mesh_.doorbell(static_cast<int>(node)).ring();
        }
    }

    void kill_everyone() {
        killed_ = true;
        for (std::size_t node = 1; node < directory_.size(); ++node) {
            if (states_[node] != NodeState::running || host_->pid(static_cast<int>(node - 1)) == 0) continue;
            if (!host_->kill(static_cast<int>(node - 1), "it did not stop within stop_timeout")) break;
        }
        if (options_.in_process) {
            logs_.report(spdlog::level::warn,
                         "in-process: a process did not stop within stop_timeout; "
                         "waiting for it to reach a receive() or send()");
        }
    }

    void check_deadlock() {
        std::vector<bool> live(directory_.size());
        for (std::size_t node = 1; node < directory_.size(); ++node) live[node] = states_[node] == NodeState::running;
        auto blocked = deadlocks_.check(mesh_, directory_, live, !mail_.overflowing(), mail_.sends());
        if (!blocked) return;
        deadlocked_ = std::move(*blocked);
        logs_.report(spdlog::level::err, std::string{Deadlock{deadlocked_}.what()}.substr(sizeof "multiworker: " - 1));
        begin_stop(Cause::deadlock);
    }

    const SupervisorOptions& options_;
    const ProcessDirectory& directory_;
    std::vector<ProcessBody> bodies_;
    MessageMesh mesh_;
    LogCollector logs_;
    ParentMail mail_;
    std::unique_ptr<ProcessHost> host_;
    std::vector<NodeState> states_;
    std::vector<std::deque<Clock::time_point>> restarts_;

    bool stopping_ = false;
    bool killed_ = false;
    bool residents_told_ = false;
    Cause cause_ = Cause::none;
    int interrupt_signal_ = 0;
    Clock::time_point kill_deadline_{};
    std::vector<ProcessFailure> failures_;

    Clock::time_point next_deadlock_check_{};
    DeadlockWatch deadlocks_;
    std::vector<ProcessInfo> deadlocked_;

    EventLoop loop_;
};

}  // namespace multiworker::detail
