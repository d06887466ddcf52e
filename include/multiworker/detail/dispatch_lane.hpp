#pragma once

// The parent's view of one worker slot as a task dispatcher sees it: the
// tasks it was sent and has not answered, the frame being streamed to it,
// the frame being read from it, and how long its tasks take. The window of
// tasks kept in flight per worker adapts to that duration: about a
// millisecond of work, at least two tasks (one running, one ready, so a
// worker never waits on the parent) and at most max_window. Short tasks thus
// travel many per wake-up. A long task's window is two: when no task is left
// to hand out and a worker idles, the task queued behind a long one is taken
// back for it (TaskDispatcher::take_back_for_idle_workers()).

#include <multiworker/detail/ring.hpp>
#include <multiworker/detail/wire.hpp>
#include <multiworker/detail/worker_loop.hpp>
#include <multiworker/task_id.hpp>

#include <boost/container/deque.hpp>
#include <boost/container/options.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace multiworker::detail {

// A FIFO whose elements stay in place (frames borrow their bytes) and which
// allocates once per few dozen tasks, not once per few.
template <class T>
using BlockDeque =
    boost::container::deque<T, void, boost::container::deque_options_t<boost::container::block_bytes<8192>>>;

// Constructors, not aggregates: emplace_back() builds them in place, and
// clang before 16 has no parenthesized aggregate initialization.
struct QueuedTask {
    QueuedTask(TaskId task_id, Bytes&& task_arguments) noexcept : id{task_id}, arguments{std::move(task_arguments)} {}

    TaskId id;
    Bytes arguments;        // kept until the result, to run the task again if need be
    unsigned failures = 0;  // runs that ended in a worker death (or a retried exception)
    bool closing = false;   // the element's closing call (a sink's finish()), not a task
};

struct InFlight {
    InFlight(std::uint64_t task_sequence, QueuedTask&& queued) noexcept
        : sequence{task_sequence}, task{std::move(queued)} {}
    /// A task still to be filled in where it lies (see Backlog::take_next_into()).
    explicit InFlight(std::uint64_t task_sequence) noexcept : sequence{task_sequence}, task{TaskId{}, Bytes{}} {}

    std::uint64_t sequence;
    QueuedTask task;
};

struct DispatchLane {
    using Clock = std::chrono::steady_clock;

    static constexpr std::size_t max_window = 4096;
    static constexpr std::chrono::nanoseconds window_target{std::chrono::milliseconds{1}};
    // Below this measured task time the loop spins for the result. The
    // measure runs from dispatch to collection, so a trivial task sent to a
    // sleeping worker measures its wake-up too: 50-100 us on a virtual machine.
    static constexpr double short_task_ns = 200'000;

    int index = 0;                   // among its dispatcher's lanes: the worker index users see
    int slot = 0;                    // in the pool and the channels
    BlockDeque<InFlight> in_flight;  // sent, no result yet; oldest first
    std::optional<FrameWriter> sending;
    std::optional<FrameReader> receiving;
    std::vector<Bytes> held_items;    // emitted by the running task, held until its result (see ItemMode)
    std::uint64_t items_of_task = 0;  // items the running task emitted so far
    std::uint64_t last_sequence = 0;
    std::uint64_t dispatched = 0;  // tasks sent to this process (for recycling)
    std::uint64_t completed = 0;   // results received from this process
    bool shutdown_sent = false;
    double task_ns = 0;           // moving average of task duration; 0 = unknown; kept across processes
    std::size_t pass_window = 0;  // window() as this dispatch pass began
    Clock::time_point last_collect{};

    /// Forgets the previous process's traffic, for a new one in the slot.
    void reset(std::size_t max_message_bytes, const LargePayloadMaker& make_large) {
        receiving.emplace(max_message_bytes, make_large);
        in_flight.clear();
        sending.reset();
        held_items.clear();
        items_of_task = 0;
        last_sequence = 0;
        dispatched = 0;
        completed = 0;
        shutdown_sent = false;
        last_collect = {};
    }

    /// The place in flight of the next task sent, numbered in order.
    InFlight& open_slot() {
        ++dispatched;
        if (last_collect == Clock::time_point{}) last_collect = Clock::now();  // its wait for a result starts
        return in_flight.emplace_back(++last_sequence);
    }

    /// How many tasks to keep in flight; `single` (task_timeout) keeps one, so
    /// that a queued task never waits behind one being killed; `recycle_after`
    /// (max_tasks_per_worker, 0 = never) caps what one process is sent.
    [[nodiscard]] std::size_t window(bool single, std::uint64_t recycle_after) const {
        std::size_t tasks = 2;
        if (task_ns > 0) {
            tasks = static_cast<std::size_t>(
                std::clamp(static_cast<double>(window_target.count()) / task_ns, 2.0, static_cast<double>(max_window)));
        }
        if (single) tasks = 1;
        if (recycle_after > 0) tasks = std::min<std::size_t>(tasks, in_flight.size() + (recycle_after - dispatched));
        return tasks;
    }

    /// A result may come within the loop's spin: its tasks are short, or a
    /// large frame streams through the ring (its next piece is a ring-full
    /// away, and the worker waits for the space).
    [[nodiscard]] bool expects_result_soon() const noexcept {
        return task_ns < short_task_ns || receiving->mid_frame();
    }

    /// It has had tasks since before `cutoff` and returned no result.
    [[nodiscard]] bool waiting_since(Clock::time_point cutoff) const noexcept {
        return !in_flight.empty() && last_collect != Clock::time_point{} && last_collect < cutoff;
    }

    /// Tasks may wait behind the one its worker runs, and they may wait
    /// long: its tasks are long, or it has returned nothing for as long as a
    /// long task takes. A short task's queue is emptied by its own worker
    /// sooner than another could take it over.
    [[nodiscard]] bool queues_behind_long_task(Clock::time_point now) const noexcept {
        const auto long_task = std::chrono::nanoseconds{static_cast<std::int64_t>(short_task_ns)};
        return in_flight.size() >= 2 && !sending && (task_ns >= short_task_ns || waiting_since(now - long_task));
    }

    /// Stages `sent`'s frame into `tasks` in one step if it fits, or else
    /// starts streaming it (borrowing the arguments from in_flight, whose
    /// elements stay in place until they leave it). Throws if the ring's
    /// shared counters are corrupt.
    void send_task(ByteRing& tasks, const InFlight& sent) {
        FrameHeader header{.kind = sent.task.closing ? FrameKind::closing : FrameKind::task,
                           .sequence = sequence_bits(sent.sequence)};
        header.length = sent.task.arguments.size();
        if (tasks.stage_whole(header_bytes(header), sent.task.arguments)) return;
        sending.emplace(header, sent.task.arguments);
        continue_sending(tasks);
    }

    /// Streams the frame being sent on; true if any of it moved. Throws as send_task().
    bool continue_sending(ByteRing& tasks) {
        if (!sending) return false;
        StagingSink sink{tasks};
        const std::size_t before = sending->written();
        if (sending->poll(sink)) {
            sending.reset();
            return true;
        }
        return sending->written() != before;
    }

    /// Moves the worker's claim counter past every task it was sent, so it
    /// will skip them (see worker_loop.hpp); returns those tasks, oldest first.
    std::vector<QueuedTask> take_back_unclaimed(std::atomic<std::uint64_t>& claimed_counter) {
        std::uint64_t claimed = claimed_counter.load(std::memory_order_acquire);
        while (claimed < last_sequence &&
               !claimed_counter.compare_exchange_weak(claimed, last_sequence, std::memory_order_acq_rel)) {
        }
        if (sending) sending->keep_payload();  // its frame may borrow from a task taken here
        std::vector<QueuedTask> unclaimed;
        while (!in_flight.empty() && in_flight.back().sequence > claimed) {
            unclaimed.push_back(std::move(in_flight.back().task));
            in_flight.pop_back();
        }
        std::reverse(unclaimed.begin(), unclaimed.end());
        dispatched -= unclaimed.size();  // this process will not run them
        return unclaimed;
    }

    /// Folds `results` collected now into the task duration estimate.
    void update_task_duration(std::size_t results) {
        const auto now = Clock::now();
        // A worker that finished every task it had may have waited for the
        // next ones for part of the interval, so its time per result then
        // only bounds the task time from above: it may lower the estimate,
        // never raise it. Otherwise a worker given few tasks, and collected
        // from seldom (the loop waiting for a core), would look slow, be
        // given fewer tasks still, and idle while the other one works.
        const bool drained = in_flight.empty();
        if (last_collect != Clock::time_point{}) {
            const double sample = static_cast<double>((now - last_collect).count()) / static_cast<double>(results);
            if (task_ns == 0) {
                task_ns = sample;
            } else if (!drained || sample < task_ns) {
                task_ns = 0.8 * task_ns + 0.2 * sample;
            }
        }
        // Only an interval during which the worker had work measures its speed.
        last_collect = drained ? Clock::time_point{} : now;
    }
};

/// What a dispatcher's workers are doing, for the loop's choice between spinning and sleeping.
enum class LaneActivity {
    idle,         // no task in flight
    long_tasks,   // tasks in flight, all long
    result_soon,  // a short task in flight, or a large frame streaming through a ring
};

/// What the lanes whose worker is alive in `pool` are doing.
template <class Pool>
LaneActivity activity_of(std::span<const DispatchLane> lanes, const Pool& pool) noexcept {
    LaneActivity seen = LaneActivity::idle;
    for (const DispatchLane& lane : lanes) {
        if (!pool.alive(lane.slot) || lane.in_flight.empty()) continue;
        if (lane.expects_result_soon()) return LaneActivity::result_soon;
        seen = LaneActivity::long_tasks;
    }
    return seen;
}

/// A lane whose worker is alive in `pool` has had tasks since before `cutoff` and returned no result.
template <class Pool>
bool lane_waiting_since(std::span<const DispatchLane> lanes, const Pool& pool, DispatchLane::Clock::time_point cutoff) {
    return std::any_of(lanes.begin(), lanes.end(),
                       [&](const DispatchLane& lane) { return pool.alive(lane.slot) && lane.waiting_since(cutoff); });
}

/// The lane with the fewest tasks in flight that can take one more in this
/// dispatch pass (see DispatchLane::pass_window); nullptr if none can.
inline DispatchLane* least_loaded_ready_lane(std::span<DispatchLane> lanes) noexcept {
    DispatchLane* best = nullptr;
    for (DispatchLane& lane : lanes) {
        if (lane.sending || lane.in_flight.size() >= lane.pass_window) continue;
        if (best == nullptr || lane.in_flight.size() < best->in_flight.size()) best = &lane;
    }
    return best;
}

/// A lane that takes tasks has none, and another has tasks queued behind the one its worker runs.
inline bool lane_idles_beside_queued_tasks(std::span<const DispatchLane> lanes) noexcept {
    const auto idles = [](const DispatchLane& l) { return l.pass_window > 0 && l.in_flight.empty(); };
    const auto queues = [](const DispatchLane& l) { return l.in_flight.size() >= 2; };
    return std::any_of(lanes.begin(), lanes.end(), idles) && std::any_of(lanes.begin(), lanes.end(), queues);
}

}  // namespace multiworker::detail
