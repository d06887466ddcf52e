#pragma once

// Backend::mpi on rank 0, where the user's Processor lives: every other rank
// of the `mpirun` job is an agent (mpi_agent.hpp) with Options::workers
// forked workers of its own. One thread ("mw-mpi") does all of rank 0's MPI:
// it sends each agent tasks while it holds fewer than its window (two per
// worker, more while tasks prove short, one once they prove long: see
// RemoteAgent), in one message, hands their outcomes to the mailbox, has an
// agent give back tasks queued behind long ones for an agent that idles, and
// exchanges heartbeats.
//
// An agent silent for Options::heartbeat_limit is lost with its host's
// workers: each task it held is run again on another agent while
// Options::retries allows, and otherwise ends with a worker_died error that
// names the host and rank. Under `mpirun --enable-recovery` rank 0 outlives
// that loss (without it, Open MPI ends the whole job); since MPI_Finalize
// would then wait for the lost rank forever, the job ends without it.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/backlog.hpp>
#include <multiworker/detail/mpi_link.hpp>
#include <multiworker/detail/mpi_remote_agent.hpp>
#include <multiworker/detail/mpi_wire.hpp>
#include <multiworker/detail/pending_limit.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/options.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace multiworker::detail {

class MpiBackend final : public ExecutionBackend {
public:
    MpiBackend(const Options& options, ResultMailbox& mailbox)
        : options_{options}, mailbox_{mailbox}, pending_{options.max_pending} {}

    MpiBackend(const MpiBackend&) = delete;
    MpiBackend& operator=(const MpiBackend&) = delete;
    ~MpiBackend() override { stop(std::chrono::milliseconds{0}, "the Processor's destructor stopped"); }

    /// Initializes MPI (in the mw-mpi thread) and waits for every agent's
    /// hello, for at most Options::start_timeout.
    void start() override {
        launch_link();
        std::unique_lock lock{mutex_};
        const bool ready =
            changed_.wait_for(lock, options_.start_timeout, [this] { return phase_ != Phase::greeting; });
        if (!ready || phase_ == Phase::failed) {
            const std::string why = ready ? start_failure_ : "not every agent rank said hello within start_timeout";
            lock.unlock();
            stop(std::chrono::milliseconds{0}, "start() failed");
            throw std::runtime_error{"multiworker::Processor::start() on MPI: " + why};
        }
    }

    void submit(TaskId id, Bytes&& arguments) override {
        if (pending_.bounded()) pending_.wait_for_room(stopping_);
        std::unique_lock lock{mutex_};
        if (stopping_) {
            lock.unlock();
            refuse_task_after_stop(mailbox_);
        }
        if (phase_ == Phase::running && agents_alive_.load() == 0) {
            lock.unlock();
            std::vector<RawResult> failed;
            failed.push_back(no_agent_result(id, "every agent was lost"));
            mailbox_.deliver(failed);
            return;
        }
        queue_.add(id, std::move(arguments));
        pending_.returned_to_queue();
    }

    std::size_t cancel() override {
        std::lock_guard lock{mutex_};
        return drop_queue();
    }

    /// Drops queued tasks, has every agent stop its workers (running tasks
    /// get `grace`), collects what they still send, and ends MPI.
    void stop(std::chrono::milliseconds grace, std::string grace_end) override {
        {
            std::lock_guard lock{mutex_};
            if (stop_requested_) return;
            stop_requested_ = true;
            stopping_ = true;
            grace_ = grace;
            grace_end_ = std::move(grace_end);
            drop_queue();
        }
        pending_.wake_all();
        launch_link();  // agents wait for rank 0 in MPI_Init even if start() never ran
        link_thread_.join();
    }

    /// Worker processes run on the agents' hosts, none here.
    [[nodiscard]] std::vector<pid_t> worker_pids() const override { return {}; }

    [[nodiscard]] std::size_t undispatched() const override { return pending_.queued(); }

private:
    using Agent = RemoteAgent;

    enum class Phase { greeting, running, failed };

    void launch_link() {
        std::call_once(launched_, [this] { link_thread_ = std::thread{[this] { run_link(); }}; });
    }

    void run_link() {
        name_this_thread("mw-mpi");
        std::optional<MpiLink> link;
        try {
            link.emplace();
            if (!greet(*link)) {
                link->finish(false);
                return;
            }
            relay(*link);
            finish_agents(*link);
        } catch (const std::exception& e) {
            // A message that does not decode, or MPI failing: nothing more can be trusted.
            fail_everything(std::string{"rank 0 stopped relaying tasks: "} + e.what());
            if (link) link->finish(false);
            return;
        }
        say_bye(*link);
    }

    void say_bye(MpiLink& link) {
        const bool all_alive = std::all_of(agents_.begin(), agents_.end(), [](const Agent& a) { return a.alive; });
        for (const Agent& agent : agents_) {
            if (!agent.alive) continue;
            mpi_wire::Writer bye;
            bye.number(static_cast<std::uint8_t>(all_alive ? 1 : 0));
            link.send(agent.rank, mpi_wire::bye, bye.take());
        }
        link.finish(all_alive);
    }

    // Settles every task (start() fails too, if it still waits).
    void fail_everything(const std::string& why) {
        spdlog::error("multiworker: {}", why);
        std::vector<RawResult> failed;
        for (Agent& agent : agents_) {
            for (auto& [id, task] : agent.in_flight) failed.push_back(no_agent_result(task.id, why));
            agent.in_flight.clear();
        }
        {
            std::lock_guard lock{mutex_};
            stopping_ = true;
            fail_queue(why, failed);
        }
        pending_.wake_all();
        mailbox_.deliver(failed);
        fail_start(why);
    }

    // Collects every agent's hello; false (and start() fails) when there is no agent or one is missing.
    bool greet(MpiLink& link) {
        if (link.size() < 2) return fail_start("the job has no agent rank (run the program with mpirun -np 2 or more)");
        if (!mpirun_recovers_lost_ranks()) {
            spdlog::warn(
                "multiworker: mpirun was started without --enable-recovery: the loss of any rank will end the whole "
                "job, this rank included");
        }
        agents_.resize(static_cast<std::size_t>(link.size() - 1));
        std::size_t greeted = 0;
        const auto deadline = MpiLink::Clock::now() + options_.start_timeout;
        IdleBackoff backoff;
        while (greeted < agents_.size()) {
            if (MpiLink::Clock::now() > deadline)
                return fail_start("not every agent rank said hello within start_timeout");
            auto message = link.receive();
            if (message && message->tag == mpi_wire::hello) {
                agents_[static_cast<std::size_t>(message->source - 1)].read_hello(message->source, message->body);
                ++greeted;
            }
            backoff.after(message.has_value(), link.transferring());
        }
        number_workers(agents_);
        agents_alive_ = agents_.size();
        set_phase(Phase::running);
        return true;
    }

    bool fail_start(std::string why) {
        std::lock_guard lock{mutex_};
        start_failure_ = std::move(why);
        phase_ = Phase::failed;
        changed_.notify_all();
        return false;
    }

    void set_phase(Phase phase) {
        std::lock_guard lock{mutex_};
        phase_ = phase;
        changed_.notify_all();
    }

    // Until stop(): tasks out, outcomes in, heartbeats, lost agents.
    void relay(MpiLink& link) {
        IdleBackoff backoff;
        while (!stopping_.load()) {
            bool busy = receive_all(link);
            busy = send_tasks(link) || busy;
            ask_for_tasks_back(link);
            keep_in_touch(link, options_.heartbeat_limit);
            backoff.after(busy, link.transferring());
        }
    }

    bool receive_all(MpiLink& link) {
        bool any = false;
        while (auto message = link.receive()) {
            any = true;
            Agent& agent = agents_[static_cast<std::size_t>(message->source - 1)];
            if (!agent.alive) continue;  // it was declared lost: what it says now is ignored
            if (message->tag == mpi_wire::results) {
                std::vector<RawResult> results = agent.read_results(message->body);
                mailbox_.deliver(results);
            }
            if (message->tag == mpi_wire::given_back) requeue(agent.read_given_back(message->body));
            if (message->tag == mpi_wire::stopped) agent.stopped = true;
        }
        return any;
    }

    // A message of tasks stops growing past this (a task larger than this goes alone).
    static constexpr std::size_t max_batch_bytes = std::size_t{256} << 10;

    // Hands queued tasks out to agents below their windows (see agent_for_next_task()), then
    // sends each its share in one message; false if none was sent.
    bool send_tasks(MpiLink& link) {
        std::vector<mpi_wire::Writer> batches(agents_.size());
        const auto batch_of = [&](const Agent& agent) -> mpi_wire::Writer& {
            return batches[static_cast<std::size_t>(agent.rank - 1)];
        };
        const auto now = std::chrono::steady_clock::now();
        {
            std::lock_guard lock{mutex_};
            const auto may_take = [&](const Agent& a) { return batch_of(a).size() < max_batch_bytes; };
            const bool spread = spread_tasks(agents_);  // windows change only as results come back
            std::size_t count = 0;
            for (; !queue_.empty(); ++count) {
                Agent* agent = agent_for_next_task(agents_, spread, may_take);
                if (agent == nullptr) break;
                QueuedTask next = queue_.take_next();
                const std::size_t bytes = next.arguments.size();
                batch_of(*agent).number(next.id.value());
                batch_of(*agent).bytes(std::span<const char>{next.arguments.data(), bytes});
                RelayedTask task{next.id, std::move(next.arguments), next.failures, now, bytes};
                if (options_.retries == 0) Bytes{}.swap(task.arguments);  // never sent again
                agent->hold(std::move(task));
            }
            pending_.left_queue(count);
        }
        bool sent = false;
        for (const Agent& agent : agents_) {
            if (batch_of(agent).empty()) continue;
            link.send(agent.rank, mpi_wire::tasks, batch_of(agent).take());
            sent = true;
        }
        return sent;
    }

    // Once no task waits here and an agent has a free worker, an agent that
    // holds tasks queued behind long ones (its first window, sent before they
    // proved long) is asked to give back those it has not started; they then
    // wait here again, first. Looked at every 10 ms.
    void ask_for_tasks_back(MpiLink& link) {
        const auto now = std::chrono::steady_clock::now();
        if (now < next_take_back_check_) return;
        next_take_back_check_ = now + std::chrono::milliseconds{10};
        if (std::lock_guard lock{mutex_}; !queue_.empty()) return;
        if (Agent* holder = agent_to_ask_for_tasks_back(agents_, now)) {
            holder->giving_back = true;
            link.send(holder->rank, mpi_wire::give_back);
        }
    }

    // Tasks an agent holds no more, unstarted, wait here again before all others (forgotten once stopping).
    void requeue(std::vector<QueuedTask>&& tasks) {
        std::lock_guard lock{mutex_};
        if (stopping_) {
            mailbox_.forget(tasks.size());
            return;
        }
        for (auto it = tasks.rbegin(); it != tasks.rend(); ++it) {
            queue_.give_back(std::move(*it));
            pending_.returned_to_queue();
        }
    }

    // Heartbeats to every agent; an agent silent for longer than `limit` is lost.
    void keep_in_touch(MpiLink& link, std::chrono::milliseconds limit) {
        const auto now = MpiLink::Clock::now();
        const bool beat = now >= next_heartbeat_;
        if (beat) next_heartbeat_ = now + options_.heartbeat_interval;
        for (Agent& agent : agents_) {
            if (!agent.alive) continue;
            if (beat) link.beat(agent.rank);
            if (link.silence_of(agent.rank) > limit) lose(link, agent);
        }
    }

    void lose(MpiLink& link, Agent& agent) {
        agent.alive = false;
        --agents_alive_;
        link.abandon(agent.rank);
        const auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(link.silence_of(agent.rank));
        const std::string why = "was lost: nothing arrived from its agent for " + std::to_string(silent.count()) +
                                " ms (heartbeat_limit " + std::to_string(options_.heartbeat_limit.count()) + " ms)";
        spdlog::error("multiworker: lost {}", agent.where());
        std::vector<RawResult> failed;
        requeue(agent.settle_loss(why, stopping_ ? 0 : options_.retries, failed));
        if (std::none_of(agents_.begin(), agents_.end(), [](const Agent& a) { return a.alive; })) {
            std::lock_guard lock{mutex_};
            fail_queue("every agent was lost, the last: " + agent.where() + " " + why, failed);
        }
        mailbox_.deliver(failed);
    }

    // Tells every agent to stop and collects what they send until each said
    // it stopped or was lost (running tasks may take the grace period).
    void finish_agents(MpiLink& link) {
        mpi_wire::Writer order;
        order.number(static_cast<std::int64_t>(grace_.count()));
        order.text(grace_end_);
        const std::vector<char> stop_order = order.take();
        for (const Agent& agent : agents_) {
            if (agent.alive) link.send(agent.rank, mpi_wire::stop, stop_order);
        }
        IdleBackoff backoff;
        const auto limit = grace_ + options_.heartbeat_limit;
        while (std::any_of(agents_.begin(), agents_.end(), [](const Agent& a) { return a.alive && !a.stopped; })) {
            const bool busy = receive_all(link);
            keep_in_touch(link, limit);
            backoff.after(busy, link.transferring());
        }
        // What an agent still holds now, its stop() discarded before a worker took it.
        for (Agent& agent : agents_) {
            mailbox_.forget(agent.in_flight.size());
            agent.in_flight.clear();
            agent.bytes_in_flight = 0;
        }
    }

    // Under mutex_: every queued task ends as a no_worker error.
    void fail_queue(const std::string& why, std::vector<RawResult>& failed) {
        pending_.left_queue(queue_.fail_all("no MPI agent can run it (" + why + ")", failed));
    }

    // Under mutex_.
    std::size_t drop_queue() {
        const std::size_t count = queue_.size();
        queue_.clear();
        pending_.left_queue(count);
        mailbox_.forget(count);
        return count;
    }

    const Options options_;
    ResultMailbox& mailbox_;
    PendingLimit pending_;
    std::once_flag launched_;
    std::thread link_thread_;

    std::mutex mutex_;  // guards what follows, shared with the mw-mpi thread
    std::condition_variable changed_;
    Backlog queue_;  // tasks waiting for an agent: packed, those an agent lost first
    Phase phase_ = Phase::greeting;
    std::string start_failure_;
    bool stop_requested_ = false;
    std::chrono::milliseconds grace_{0};
    std::string grace_end_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> agents_alive_{0};

    // Only the mw-mpi thread touches these.
    std::vector<Agent> agents_;
    MpiLink::Clock::time_point next_heartbeat_{};
    std::chrono::steady_clock::time_point next_take_back_check_{};
};

}  // namespace multiworker::detail
