#pragma once

// Rank 0's view of one agent rank of Backend::mpi: where it runs, which
// global worker indexes its workers have, the tasks it holds, and how its
// messages read.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/mpi_wire.hpp>
#include <multiworker/error.hpp>
#include <multiworker/task_id.hpp>

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace multiworker::detail {

/// A task waiting on rank 0, or held by an agent (its arguments kept only
/// when it may have to run again elsewhere).
struct RelayedTask {
    TaskId id;
    Bytes arguments;
    unsigned lost_runs;  // times an agent was lost while it held the task
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
    }

    /// The outcomes in a results message, with global worker indexes, and
    /// errors that name this agent's host and rank; they are no longer in flight.
    std::vector<RawResult> read_results(std::span<const char> body) {
        mpi_wire::Reader reader{body};
        std::vector<RawResult> results;
        while (!reader.at_end()) {
            const TaskId id{reader.number<std::uint64_t>()};
            const int worker = first_worker + reader.number<std::int32_t>();
            const pid_t worker_pid = reader.number<std::int32_t>();
            const bool ok = reader.number<std::uint8_t>() != 0;
            RawResult& result = results.emplace_back(RawResult{id, Bytes{}, worker, worker_pid});
            if (ok) {
                const std::span<const char> value = reader.bytes();
                std::get<Bytes>(result.outcome).assign(value.begin(), value.end());
            } else {
                const auto kind = static_cast<ErrorKind>(reader.number<std::uint32_t>());
                std::string type_name = reader.text();
                std::string message = "on " + where() + ": " + reader.text();
                result.outcome =
                    std::make_unique<TaskError>(kind, id, std::move(type_name), std::move(message), worker, worker_pid);
            }
            in_flight.erase(id.value());
        }
        return results;
    }
};

}  // namespace multiworker::detail
