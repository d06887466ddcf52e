#pragma once

// What runs inside a worker process: take a task frame from the task ring,
// claim it, run it, stream the result frame into the result ring; repeat until
// a shutdown frame arrives.
//
// Claiming: every task a parent sends to a worker has a per-worker sequence
// number 1, 2, 3, ... (both sides count the task frames; a frame carries the
// number's low bits as a check). Before running task s the worker moves the
// shared `claimed` counter from s-1 to s with a compare-and-swap. The parent
// takes back tasks not yet started (cancel(), stop(), a dead worker) by moving
// the same counter forward past them. Whoever moves the counter first owns
// the task, so a task is either run or taken back, never both, and the parent
// always knows which task a dead worker was running.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/crash_report.hpp>
#include <multiworker/detail/doorbell.hpp>
#include <multiworker/detail/item_channel.hpp>
#include <multiworker/detail/ring.hpp>
#include <multiworker/detail/wire.hpp>
#include <multiworker/detail/worker_logging.hpp>

#include <spdlog/spdlog.h>

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace multiworker::detail {

/// Longest sleep before a waiting worker re-checks that its parent lives.
inline constexpr int worker_sleep_ms = 200;

/// Adapts a ring's producer side to FrameWriter: stages bytes without
/// publishing them; the owner publishes them in one store when it is ready.
struct StagingSink {
    ByteRing& ring;
    std::size_t write_some(std::span<const char> bytes) { return ring.stage(bytes); }
};

/// The shared-memory state of one worker slot.
struct WorkerSlotState {
    DoorbellFlag doorbell;                              // the worker sleeps on this
    alignas(64) std::atomic<std::uint64_t> claimed{0};  // last task sequence claimed (see above)
    std::atomic<std::int64_t> started_ns{0};            // steady-clock time the claimed task started
    RingCounters tasks;                                 // parent -> worker
    RingCounters results;                               // worker -> parent
};

/// Everything a worker process needs, as seen from inside it.
struct WorkerEndpoints {
    int index = 0;
    pid_t parent_pid = 0;
    ByteRing tasks;
    ByteRing results;
    Doorbell own;
    Doorbell parent;
    std::atomic<std::uint64_t>* claimed = nullptr;
    std::atomic<std::int64_t>* started_ns = nullptr;
    std::size_t max_message_bytes = 0;
    bool track_start_times = false;  // for task_timeout: record when each task starts
    bool wait_for_debugger = false;  // Options::debug_worker names this worker
};

class WorkerLoop final : private ItemChannel {
public:
    /// `closing` (may be empty) runs the closing frame: a pipeline sink's finish().
    WorkerLoop(const WorkerEndpoints& endpoints, const TaskRunner& runner, const TaskRunner& closing)
        : endpoints_{endpoints}, runner_{runner}, closing_{closing}, reader_{endpoints.max_message_bytes} {
        // This process's views start from the rings' shared state, whatever
        // the views it inherited had cached.
        endpoints_.tasks.resync();
        endpoints_.results.resync();
        endpoints_.tasks.prefault_pages();
        endpoints_.results.prefault_pages();
    }

    /// Serves tasks until told to shut down.
    void run() {
        // For the whole loop, not per task: the process runs nothing else.
        const ItemChannelScope scope{this};
        for (;;) {
            // A small task runs from its frame where it lies in the ring: taken
            // now, released by the publish() after its result.
            if (!reader_.poll_ring(endpoints_.tasks, max_in_place_)) {
                wait_for_tasks();
                continue;
            }
            const bool go_on = serve(reader_.header(), reader_.payload());
            reader_.next();
            if (!go_on) return;
        }
    }

private:
    // The parent would reject the frame as corrupt; report the real cause instead.
    Bytes oversized_report(std::size_t size) const {
        return encode_failure({static_cast<std::uint32_t>(ErrorKind::bad_message), "",
                               "the result encodes to " + std::to_string(size) +
                                   " bytes, more than max_message_bytes (" +
                                   std::to_string(endpoints_.max_message_bytes) + ")"});
    }

    /// Sends the outcome of the task `task` names, then publishes it.
    void send_outcome(const FrameHeader& task, bool ok, const EncodedView& payload) {
        FrameHeader reply{.kind = ok ? FrameKind::result : FrameKind::failure, .sequence = task.sequence};
        if (payload.size() > endpoints_.max_message_bytes) {
            reply.kind = FrameKind::failure;
            send_frame(reply, oversized_report(payload.size()), {});
        } else {
            send_frame(reply, payload.head, payload.body);
        }
        // One result per publication: the parent sees each result as soon
        // as it exists, even when the next task runs for a long time.
        publish();
    }

    /// Shows the parent every staged result and frees every task byte taken,
    /// then wakes the parent if it sleeps: one doorbell check for both.
    void publish() {
        const bool published = endpoints_.results.publish();
        const bool released = endpoints_.tasks.release();
        if (!published && !released) return;
        // With the event loop asleep, the caller waiting for this result
        // collects it itself, and was often woken on this very core: let it
        // run before the system call that wakes the event loop.
        if (published && endpoints_.parent.owner_sleeping()) ::sched_yield();
        endpoints_.parent.ring();
    }

    /// Runs the task a frame carries; false on a shutdown frame.
    bool serve(const FrameHeader& header, std::span<const char> arguments) {
        if (header.kind == FrameKind::shutdown) return false;
        const bool closing = header.kind == FrameKind::closing;
        if (header.kind != FrameKind::task && !(closing && closing_)) {
            throw ProtocolError{"worker received a non-task frame"};
        }
        // Every task frame the parent wrote is read here, taken back or not,
        // so counting them gives each its full number.
        const std::uint64_t sequence = ++last_sequence_;
        if (sequence_bits(sequence) != header.sequence) {
            throw ProtocolError{"task number " + std::to_string(header.sequence) + " (mod 2^32) arrived as task " +
                                std::to_string(sequence)};
        }
        if (!claim(sequence)) return true;  // the parent took it back
        running_ = &header;
        execute_task(closing ? closing_ : runner_, arguments,
                     [this, &header](bool ok, const EncodedView& payload) { send_outcome(header, ok, payload); });
        running_ = nullptr;
        return true;
    }

    // ----- ItemChannel: a pipeline element's Emit -----

    void send_item(std::span<const char> encoded) override {
        if (encoded.size() > endpoints_.max_message_bytes) {
            throw std::length_error{"an emitted item encodes to " + std::to_string(encoded.size()) +
                                    " bytes, more than max_message_bytes (" +
                                    std::to_string(endpoints_.max_message_bytes) + ")"};
        }
        send_frame(FrameHeader{.kind = FrameKind::item, .sequence = running_->sequence}, encoded, {});
        publish();
    }

    void request_stop() override {
        send_frame(FrameHeader{.kind = FrameKind::stop_run, .sequence = running_->sequence}, {}, {});
        publish();
    }

    void wait_for_tasks() {
        publish();  // a large frame in pieces: the parent waits for the space we took
        endpoints_.own.wait([this] { return endpoints_.tasks.has_readable(); }, spins_before_sleep, worker_sleep_ms);
        exit_if_orphaned();
    }

    void send_frame(FrameHeader header, std::span<const char> payload, std::span<const char> more) {
        header.length = payload.size() + more.size();
        if (more.empty() && endpoints_.results.stage_whole(header_bytes(header), payload)) return;
        StagingSink output{endpoints_.results};
        FrameWriter writer{header, payload, more};
        while (!writer.poll(output)) {
            publish();
            endpoints_.own.wait([this] { return endpoints_.results.has_space(); }, spins_before_sleep, worker_sleep_ms);
            exit_if_orphaned();
        }
    }

    bool claim(std::uint64_t sequence) {
        // Written before the claim, so that whoever sees the claim sees this time or a later one.
        if (endpoints_.track_start_times) {
            endpoints_.started_ns->store(std::chrono::steady_clock::now().time_since_epoch().count(),
                                         std::memory_order_relaxed);
        }
        std::uint64_t expected = sequence - 1;
        if (endpoints_.claimed->compare_exchange_strong(expected, sequence, std::memory_order_acq_rel)) return true;
        if (expected >= sequence) return false;
        throw ProtocolError{"task sequence " + std::to_string(sequence) + " arrived after " + std::to_string(expected)};
    }

    void exit_if_orphaned() const {
        if (::getppid() != endpoints_.parent_pid) ::_exit(0);
    }

    WorkerEndpoints endpoints_;
    // A task frame up to this size is run from the ring in place when it
    // lies there whole; the parent stages one that fits in one step, so
    // only one that wraps around the ring's end is copied out first.
    const std::size_t max_in_place_ = endpoints_.tasks.capacity() / 4;
    const TaskRunner& runner_;
    const TaskRunner& closing_;
    FrameReader reader_;
    const FrameHeader* running_ = nullptr;  // the task frame being served
    std::uint64_t last_sequence_ = 0;       // task frames read so far
};

/// Set by SIGCONT while a worker waits for a debugger.
inline volatile std::sig_atomic_t debugger_wait_released = 0;

/// True once a debugger (any tracer) is attached to this process.
inline bool debugger_attached() {
    std::FILE* status = std::fopen("/proc/self/status", "r");
    if (status == nullptr) return false;
    char line[256];
    long tracer = 0;
    while (std::fgets(line, sizeof line, status) != nullptr) {
        if (std::sscanf(line, "TracerPid: %ld", &tracer) == 1) break;
    }
    std::fclose(status);
    return tracer != 0;
}

/// Parks a freshly forked worker until a debugger attaches or SIGCONT arrives.
inline void wait_for_debugger(const WorkerEndpoints& endpoints) {
    struct sigaction release {};
    struct sigaction previous {};
    release.sa_handler = [](int) { debugger_wait_released = 1; };
    sigemptyset(&release.sa_mask);
    ::sigaction(SIGCONT, &release, &previous);
    const pid_t pid = ::getpid();
    spdlog::warn("waiting for a debugger: gdb -p {} (or let it go on: kill -CONT {})", pid, pid);
    std::fprintf(stderr,
                 "multiworker: worker %d (pid %d) waiting for a debugger: gdb -p %d (or let it go on: kill -CONT %d)\n",
                 endpoints.index, pid, pid, pid);
    while (debugger_wait_released == 0 && !debugger_attached()) {
        ::usleep(50'000);
        if (::getppid() != endpoints.parent_pid) ::_exit(0);
    }
    ::sigaction(SIGCONT, &previous, nullptr);
    spdlog::info("no longer waiting for a debugger");
}

/// If user code in a worker calls exit(), end the process right there with its
/// status: the atexit handlers and static destructors registered by the parent
/// (test frameworks, loggers with threads, leak checkers) belong to the parent
/// and must not run in a copy of it.
inline void end_worker_on_exit() {
    ::on_exit(
        [](int status, void*) {
            std::fflush(nullptr);
            ::_exit(status);
        },
        nullptr);
}

/// Exit status of a worker that could not start (its on_worker_start threw, say).
inline constexpr int worker_start_failed_status = 70;

/// Ends the worker with `status`, its stdio flushed first (the parent's
/// atexit handlers must not run in it: see run_worker_process()).
[[noreturn]] inline void end_worker(int status) noexcept {
    std::fflush(nullptr);
    ::_exit(status);
}

/// The body of a forked worker process; never returns.
///
/// `_exit` rather than `exit`: the child is a copy of a multithreaded parent,
/// and the parent's atexit handlers and static destructors (test frameworks,
/// loggers with threads) must not run in it.
///
/// A captured stdout (`output_captured`: a pipe to the parent) is line
/// buffered, as on a terminal: a crash or SIGKILL then loses no complete
/// line, only one still being written.
[[noreturn]] inline void run_worker_process(const WorkerEndpoints& endpoints, const TaskRunner& runner,
                                            const WorkerHooks& hooks, int log_fd, bool output_captured,
                                            spdlog::level::level_enum log_level,
                                            const std::vector<std::shared_ptr<spdlog::logger>>& inherited) noexcept {
    bool logging_ready = false;
    bool started = false;
    try {
        // Die with the fork server; the check catches one that died before prctl.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != endpoints.parent_pid) ::_exit(0);
        if (output_captured) std::setvbuf(stdout, nullptr, _IOLBF, BUFSIZ);
        install_worker_loggers(log_fd, log_level, inherited);
        logging_ready = true;
        install_crash_reporter(log_fd);
        end_worker_on_exit();
        if (endpoints.wait_for_debugger) wait_for_debugger(endpoints);
        if (hooks.on_start) hooks.on_start();
        started = true;
        spdlog::debug("worker {} started", endpoints.index);
        WorkerLoop{endpoints, runner, hooks.closing}.run();
        if (hooks.on_exit) hooks.on_exit();
        spdlog::debug("worker {} stopping", endpoints.index);
    } catch (const std::exception& e) {
        const char* stage = started ? "failed" : "failed to start";
        if (logging_ready) spdlog::critical("worker {} {}: {}", endpoints.index, stage, e.what());
        std::fprintf(stderr, "multiworker: worker %d %s: %s\n", endpoints.index, stage, e.what());
        end_worker(started ? 71 : worker_start_failed_status);
    } catch (...) {
        if (logging_ready) spdlog::critical("worker {} failed with an unknown exception", endpoints.index);
        end_worker(started ? 71 : worker_start_failed_status);
    }
    end_worker(0);
}

}  // namespace multiworker::detail
