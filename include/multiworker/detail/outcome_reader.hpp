#pragma once

// Reading a worker's frames: each complete frame in a lane's reader becomes
// an item, a result or an error of the task the worker runs, or its request
// to stop the run. What a frame cannot be (a kind out of place, a task the
// worker was not given) throws ProtocolError: the dispatcher then kills the
// worker and settles its tasks as for a crash.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/dispatch_lane.hpp>
#include <multiworker/detail/function_ref.hpp>
#include <multiworker/detail/wire.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace multiworker::detail {

/// What becomes of the items a task emits (FrameKind::item) before its result.
enum class ItemMode {
    none,      // tasks emit nothing: their result is their output (a Processor, a map stage)
    held,      // outputs once the task's result arrives, dropped if it fails (an emitting stage:
               // a retried input must not emit twice)
    streamed,  // outputs at once (a source process: one task that runs all along)
};

/// What a dispatcher does with its tasks.
struct DispatchPolicy {
    unsigned retries = 0;
    bool retry_exceptions = false;
    std::chrono::milliseconds task_timeout{0};  // > 0: one task in flight per worker, start times tracked
    std::uint64_t max_tasks_per_worker = 0;
    std::size_t max_message_bytes = 0;
    ItemMode items = ItemMode::none;
    bool ordered = false;  // held items: outputs leave in input order, so an input that emitted none is noted
    std::string label{};   // names the workers in messages: "whois " gives "whois worker 3 (pid 123)"
};

/// Counts of the tasks' fates, for a pipeline's statistics.
struct OutcomeTally {
    std::uint64_t completed = 0;  // ran to their result
    std::uint64_t dropped = 0;    // completed without emitting an item (ItemMode held or streamed)
    std::uint64_t retried = 0;    // runs repeated after a death or a retried exception
};

class OutcomeReader {
public:
    /// Puts a failed task back in the queue if its retries allow; false if not.
    using Retry = FunctionRef<bool(QueuedTask& task, const std::string& why)>;

    /// Outcomes go to `finished`, counts to `tally`; with `note_silent`, the
    /// tasks that completed without emitting an item go to silent().
    OutcomeReader(ItemMode items, bool retry_exceptions, bool note_silent, std::vector<RawResult>& finished,
                  OutcomeTally& tally) noexcept
        : items_{items},
          retry_exceptions_{retry_exceptions},
          note_silent_{note_silent},
          finished_{finished},
          tally_{tally} {}

    [[nodiscard]] std::vector<TaskId>& silent() noexcept { return silent_; }

    /// A task asked to end the whole run (Emit::stop()).
    [[nodiscard]] bool stop_requested() const noexcept { return stop_requested_; }

    /// Accepts every complete frame in the lane's result ring, then frees
    /// their space in one store (waking the worker if it waits for it);
    /// returns how many. Throws as accept().
    std::size_t accept_all(DispatchLane& lane, pid_t pid, WorkerEndpoints& endpoints, const Retry& retry) {
        std::size_t count = 0;
        // A large result is read into its final value instead (see LargePayload).
        while (lane.receiving->poll_ring(endpoints.results, large_buffer_bytes - 1)) {
            accept(lane, pid, *lane.receiving, retry);
            ++count;
        }
        if (endpoints.results.release()) endpoints.own.ring();
        return count;
    }

    /// Makes the complete frame in `reader` an item or the outcome of the
    /// worker's oldest task, and readies the reader for the next frame.
    void accept(DispatchLane& lane, pid_t pid, FrameReader& reader, const Retry& retry) {
        const FrameHeader header = reader.header();
        if (lane.in_flight.empty() || sequence_bits(lane.in_flight.front().sequence) != header.sequence) {
            throw ProtocolError{"a frame for its task number " + std::to_string(header.sequence) +
                                " (mod 2^32), which it was not running"};
        }
        QueuedTask& task = lane.in_flight.front().task;
        switch (header.kind) {
            case FrameKind::item:
                accept_item(lane, task.id, pid, reader);
                break;
            case FrameKind::stop_run:
                stop_requested_ = true;
                break;
            case FrameKind::result:
                accept_result(lane, task.id, pid, reader);
                break;
            case FrameKind::failure:
                accept_failure(lane, task, pid, reader.payload(), retry);
                break;
            default:
                throw ProtocolError{"unexpected frame kind " + std::to_string(static_cast<std::uint32_t>(header.kind))};
        }
        reader.next();
    }

private:
    void accept_item(DispatchLane& lane, TaskId id, pid_t pid, FrameReader& reader) {
        if (items_ == ItemMode::none) throw ProtocolError{"an item from a task that emits none"};
        if (items_ == ItemMode::streamed) {
            accept_value(lane, id, pid, reader);
        } else {
            reader.take_payload_into(lane.held_items.emplace_back());
        }
        ++lane.items_of_task;
    }

    void accept_result(DispatchLane& lane, TaskId id, pid_t pid, FrameReader& reader) {
        if (items_ == ItemMode::none || lane.in_flight.front().task.closing) {
            accept_value(lane, id, pid, reader);
        } else {
            for (Bytes& item : lane.held_items) {
                finished_.push_back(RawResult{id, std::move(item), lane.index, pid});
            }
            if (lane.items_of_task == 0) {
                ++tally_.dropped;
                if (note_silent_) silent_.push_back(id);
            }
        }
        ++tally_.completed;
        end_task(lane);
    }

    void accept_failure(DispatchLane& lane, QueuedTask& task, pid_t pid, std::span<const char> report,
                        const Retry& retry) {
        TaskError error = error_from_report(task.id, report, lane.index, pid);
        if (error.kind() != ErrorKind::exception || !retry_exceptions_ || !retry(task, error.what())) {
            finished_.push_back(RawResult{task.id, std::make_unique<TaskError>(std::move(error)), lane.index, pid});
        }
        end_task(lane);
    }

    void end_task(DispatchLane& lane) {
        ++lane.completed;
        lane.held_items.clear();
        lane.items_of_task = 0;
        lane.in_flight.pop_front();
    }

    void accept_value(const DispatchLane& lane, TaskId id, pid_t pid, FrameReader& reader) {
        if (std::unique_ptr<LargePayload> large = reader.take_large()) {
            finished_.push_back(RawResult{id, std::move(large), lane.index, pid});
            return;
        }
        // Built where it stays, the payload copied straight into it: a small
        // value is not moved from record to record on its way.
        RawResult& result = finished_.emplace_back();
        result.id = id;
        result.worker_index = lane.index;
        result.worker_pid = pid;
        try {
            reader.take_payload_into(std::get<Bytes>(result.outcome));
        } catch (...) {
            finished_.pop_back();  // the task stays in flight, to be accounted for with the worker
            throw;
        }
    }

    const ItemMode items_;
    const bool retry_exceptions_;
    const bool note_silent_;
    std::vector<RawResult>& finished_;
    OutcomeTally& tally_;
    std::vector<TaskId> silent_;
    bool stop_requested_ = false;
};

}  // namespace multiworker::detail
