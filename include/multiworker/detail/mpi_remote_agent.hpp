#pragma once

// Rank 0's view of one agent rank of Backend::mpi: where it runs, which
// global worker indexes its workers have, the tasks it holds, and how its
// messages read.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/dispatch_lane.hpp>
#include <multiworker/detail/mpi_wire.hpp>
#include <multiworker/error.hpp>
#include <multiworker/task_id.hpp>

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace multiworker::detail {

/// A task an agent holds (its arguments kept only when it may have to run
/// again elsewhere). Tasks waiting on rank 0 wait packed in a Backlog.
struct RelayedTask {
    TaskId id;
    Bytes arguments;
    unsigned lost_runs;                               // times an agent was lost while it held the task
    std::chrono::steady_clock::time_point sent_at{};  // when it left for its agent
    std::size_t bytes = 0;                            // of its arguments
    bool to_free_worker = false;                      // its agent held fewer tasks than workers: it started at once
};

struct RemoteAgent {
    int rank = 0;
    std::string host;
    pid_t pid = 0;
    int first_worker = 0;  // global index of its worker 0: agents number theirs from 0
    unsigned workers = 0;
    bool alive = true;
    bool stopped = false;
    std::unordered_map<std::uint64_t, RelayedTask> in_flight;  // by task id
    std::size_t window = 0;                                    // tasks it may hold; see adapt_window()
    std::size_t bytes_in_flight = 0;                           // of the arguments of the tasks it holds
    bool long_tasks = false;                                   // see note_duration()
    bool giving_back = false;                                  // asked for its unstarted tasks, no answer yet

    /// A task that takes this long or more is long (see note_duration()).
    static constexpr std::chrono::milliseconds long_task{50};

    /// True while it should get more tasks: up to least_window() whatever
    /// their size, then up to the window while they add up to less than
    /// 1 MiB a worker (large tasks are spread over the agents, not sent
    /// by the dozen to the first).
    [[nodiscard]] bool wants_more() const noexcept {
        const std::size_t held = in_flight.size();
        return held < least_window() || (held < window && bytes_in_flight < byte_budget());
    }

    /// Bytes of arguments it may hold beyond least_window(): 1 MiB a worker.
    [[nodiscard]] std::size_t byte_budget() const noexcept { return (std::size_t{1} << 20) * std::max(1U, workers); }

    /// Takes `task`, just sent to it, into flight.
    void hold(RelayedTask&& task) {
        task.to_free_worker = in_flight.size() < std::max(1U, workers);
        bytes_in_flight += task.bytes;
        in_flight.emplace(task.id.value(), std::move(task));
    }

    /// Fewest tasks an agent holds: one running and one waiting per worker,
    /// so that a worker never waits for rank 0 between two tasks; once its
    /// tasks prove long, one per worker.
    [[nodiscard]] std::size_t least_window() const noexcept {
        const std::size_t each = std::max(1U, workers);
        return long_tasks ? each : std::max<std::size_t>(4, 2 * each);
    }

    /// Short tasks want many in flight (a message carries many, and one
    /// round trip over the network is worth many tasks); long ones want few
    /// (each task held is one cancel() cannot discard and one another agent
    /// could have run). So the window doubles while results come back within
    /// a millisecond of their sending and halves when they take longer than
    /// five: it settles where an agent holds about a millisecond of work.
    void adapt_window(std::chrono::steady_clock::duration slowest) {
        constexpr std::size_t most = 4096;
        if (slowest < std::chrono::milliseconds{1}) window = std::min(most, window * 2);
        if (slowest > std::chrono::milliseconds{5}) window = std::max(least_window(), window / 2);
        if (long_tasks) window = least_window();
    }

    /// Its tasks came back within a millisecond: its window grew past the least.
    [[nodiscard]] bool tasks_proven_short() const noexcept { return window > least_window(); }

    /// A task's time from sending to result, `taken`, tells how long its
    /// tasks are when it went to a free worker (else it counts the wait in
    /// the queue too): 50 ms or more makes them long, until one takes under
    /// 5. A long task then waits on the agent only while it runs, never
    /// queued behind another while a second agent idles; a worker waits for
    /// rank 0 between two tasks one round trip, well under 1 % of such a task.
    void note_duration(const RelayedTask& task, std::chrono::steady_clock::duration taken) {
        if (!task.to_free_worker) return;
        if (taken >= long_task) long_tasks = true;
        if (taken < std::chrono::milliseconds{5}) long_tasks = false;
    }

    /// Its tasks are long as soon as one sent to a free worker has run
    /// long_task without a result, not only once it ends.
    void note_running_tasks(std::chrono::steady_clock::time_point now) {
        const auto long_running = [now](const auto& entry) {
            return entry.second.to_free_worker && now - entry.second.sent_at >= long_task;
        };
        if (long_tasks || !std::any_of(in_flight.begin(), in_flight.end(), long_running)) return;
        long_tasks = true;
        window = least_window();
    }

    /// It holds more tasks than workers, and they are long: some wait behind
    /// another. Only small ones are worth giving back: a large task would
    /// cross the network twice more, and its "long" may be its own crossing.
    [[nodiscard]] bool queues_behind_long_tasks() const noexcept {
        return alive && !giving_back && long_tasks && in_flight.size() > std::max(1U, workers) &&
               bytes_in_flight <= byte_budget();
    }

    [[nodiscard]] bool has_free_worker() const noexcept { return alive && in_flight.size() < std::max(1U, workers); }

    /// The tasks in a given_back message, out of flight, with their counts of lost runs.
    std::vector<QueuedTask> read_given_back(std::span<const char> body) {
        giving_back = false;
        mpi_wire::Reader reader{body};
        std::vector<QueuedTask> tasks;
        while (!reader.at_end()) {
            const auto id = reader.number<std::uint64_t>();
            const std::span<const char> arguments = reader.bytes();
            const auto found = in_flight.find(id);
            if (found == in_flight.end()) continue;
            tasks.emplace_back(TaskId{id}, copy_bytes(arguments)).failures = found->second.lost_runs;
            bytes_in_flight -= found->second.bytes;
            in_flight.erase(found);
        }
        return tasks;
    }

    /// Its tasks once it is lost: those with fewer than `retries` lost runs
    /// are returned, to run elsewhere; the others end in `failed` as
    /// worker_died errors saying it `was_lost`.
    std::vector<QueuedTask> settle_loss(const std::string& was_lost, unsigned retries, std::vector<RawResult>& failed) {
        std::vector<QueuedTask> again;
        for (auto& [id, task] : in_flight) {
            if (task.lost_runs < retries) {
                again.emplace_back(task.id, std::move(task.arguments)).failures = task.lost_runs + 1;
                continue;
            }
            failed.push_back(RawResult{
                task.id,
                std::make_unique<TaskError>(ErrorKind::worker_died, task.id, "", was_lost, first_worker, 0, where()),
                first_worker, 0});
        }
        in_flight.clear();
        bytes_in_flight = 0;
        return again;
    }

    /// "host h (MPI rank r, agent pid p)", for errors and logs.
    [[nodiscard]] std::string where() const {
        return "host " + host + " (MPI rank " + std::to_string(rank) + ", agent pid " + std::to_string(pid) + ")";
    }

    void read_hello(int from_rank, std::span<const char> body) {
        mpi_wire::Reader hello{body};
        rank = from_rank;
        host = hello.text();
        pid = hello.number<std::int32_t>();
        workers = hello.number<std::uint32_t>();
        window = least_window();
    }

    /// The outcomes in a results message, with global worker indexes, and
    /// errors located at this agent's host and rank; they are no longer in flight.
    std::vector<RawResult> read_results(std::span<const char> body) {
        mpi_wire::Reader reader{body};
        std::vector<RawResult> results;
        const auto now = std::chrono::steady_clock::now();
        std::chrono::steady_clock::duration slowest{0};
        while (!reader.at_end()) {
            const TaskId id{reader.number<std::uint64_t>()};
            const int worker = first_worker + reader.number<std::int32_t>();
            const pid_t worker_pid = reader.number<std::int32_t>();
            const bool ok = reader.number<std::uint8_t>() != 0;
            RawResult& result = results.emplace_back(RawResult{id, Bytes{}, worker, worker_pid});
            if (ok) {
                std::get<Bytes>(result.outcome) = copy_bytes(reader.bytes());
            } else {
                const auto kind = static_cast<ErrorKind>(reader.number<std::uint32_t>());
                std::string type_name = reader.text();
                std::string message = reader.text();
                auto stack = ExceptionStack::readable(reader.text());
                result.outcome = std::make_unique<TaskError>(kind, id, std::move(type_name), std::move(message), worker,
                                                             worker_pid, where(), std::move(stack));
            }
            if (const auto found = in_flight.find(id.value()); found != in_flight.end()) {
                slowest = std::max(slowest, now - found->second.sent_at);
                note_duration(found->second, now - found->second.sent_at);
                bytes_in_flight -= found->second.bytes;
                in_flight.erase(found);
            }
        }
        adapt_window(slowest);
        return results;
    }
};

/// Gives the agents' workers global indexes, in the order of their ranks.
inline void number_workers(std::vector<RemoteAgent>& agents) {
    int next_worker = 0;
    for (RemoteAgent& agent : agents) {
        agent.first_worker = next_worker;
        next_worker += static_cast<int>(agent.workers);
    }
}

/// The error of a task no agent can run, saying `why`.
inline RawResult no_agent_result(TaskId id, const std::string& why) {
    return no_worker_result(id, "no MPI agent can run it (" + why + ")");
}

/// When an agent has a free worker, another that holds tasks queued behind
/// long ones; nullptr if there is no such pair.
inline RemoteAgent* agent_to_ask_for_tasks_back(std::vector<RemoteAgent>& agents,
                                                std::chrono::steady_clock::time_point now) {
    if (std::none_of(agents.begin(), agents.end(), [](const RemoteAgent& a) { return a.has_free_worker(); }))
        return nullptr;
    for (RemoteAgent& agent : agents) {
        if (!agent.alive || agent.in_flight.size() <= std::max(1U, agent.workers)) continue;
        agent.note_running_tasks(now);
        if (agent.queues_behind_long_tasks()) return &agent;
    }
    return nullptr;
}

/// Tasks spread over the agents until they prove short (see agent_for_next_task()).
inline bool spread_tasks(const std::vector<RemoteAgent>& agents) {
    return std::none_of(agents.begin(), agents.end(),
                        [](const RemoteAgent& a) { return a.alive && a.tasks_proven_short(); });
}

/// The live agent that wants more tasks, of those `may_take` allows; nullptr
/// if none. With `spread` (spread_tasks()), the one that holds the fewest for
/// its number of workers, so that a few long tasks spread; else the first (on
/// a machine with fewer cores than processes fewer busy agents are faster, a
/// stream of trivial tasks 1.0 against 1.5 us a task).
template <class MayTake>
RemoteAgent* agent_for_next_task(std::vector<RemoteAgent>& agents, bool spread, MayTake&& may_take) {
    RemoteAgent* best = nullptr;
    const auto load_below = [](const RemoteAgent& a, const RemoteAgent& b) {  // a.held / a.workers < b's
        return a.in_flight.size() * std::max(1U, b.workers) < b.in_flight.size() * std::max(1U, a.workers);
    };
    for (RemoteAgent& agent : agents) {
        if (!agent.alive || !agent.wants_more() || !may_take(agent)) continue;
        if (!spread) return &agent;
        if (best == nullptr || load_below(agent, *best)) best = &agent;
    }
    return best;
}

}  // namespace multiworker::detail
