#pragma once

/// @file
/// Options: how a Processor runs its tasks.

#include <multiworker/progress.hpp>

#include <spdlog/common.h>
#include <spdlog/logger.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace multiworker {

namespace detail {
inline unsigned default_worker_count() noexcept {
    const unsigned cores = std::thread::hardware_concurrency();
    return cores == 0 ? 1 : cores;
}
}  // namespace detail

/// Where the stdout and stderr of worker processes go (Options::worker_output).
enum class WorkerOutput {
    /// To the parent's stdout and stderr, a whole line at a time: lines of
    /// different workers never mix, and nothing written is lost when a worker
    /// ends, is replaced, calls exit() or crashes (a crash or SIGKILL loses at
    /// most the line being written: a worker's stdout is line buffered).
    forward,
    /// Into the log sinks (Options::log_file, logger), one record per line at
    /// level info, tagged like the worker's log records with [stdout] or [stderr].
    log,
    /// Left alone: workers write to the descriptors they inherited, with the
    /// buffering the C library chooses (their stdio is still flushed at a normal end).
    inherit,
};

/// Where a Processor's workers run (Options::backend).
enum class Backend {
    /// Forked worker processes on this machine: a crash, an exit() or a
    /// task_timeout ends one worker, which is replaced; the others go on.
    processes,
    /// Threads of the calling process, each on its own copy of the object (so
    /// that the method still needs no thread safety). Starts in microseconds
    /// and shares the process's memory, but a crash ends the whole program,
    /// so what needs a killable worker (task_timeout, debug_worker,
    /// WorkerOutput::log, log_file, logger) is rejected at construction.
    threads,
    /// The calling thread, on the Processor's own object (as workers = 0).
    in_process,
    /// The ranks of the `mpirun` job the program runs in: rank 0 runs the
    /// program and sends tasks; every other rank is an agent that forks
    /// `workers` worker processes on its host and serves until rank 0 stops.
    /// Needs <multiworker/mpi.hpp> and the multiworker::mpi CMake target;
    /// see docs/mpi.md for the launch.
    mpi,
};

/// Settings of a Processor. Aggregate, so designated initializers work:
/// `{.workers = 5, .log_file = "/tmp/run.log"}`.
struct Options {
    /// Number of workers (processes or threads, see backend). 0 selects in-process mode: every task runs
    /// in the calling thread on the Processor's own object, with no fork and
    /// no shared memory, so a debugger can step into the method.
    unsigned workers = detail::default_worker_count();

    /// Where the workers run (see Backend). The environment variable
    /// MULTIWORKER_BACKEND (processes, threads, in_process or mpi), if set,
    /// overrides it, so that a program can be tried on another backend
    /// without a rebuild. workers = 0 selects Backend::in_process whatever
    /// this says.
    Backend backend = Backend::processes;

    /// File that receives every worker's log records (appended). Empty: none.
    std::string log_file{};

    /// Worker records below this level are dropped, in the worker itself.
    spdlog::level::level_enum log_level = spdlog::level::info;

    /// Logger that receives worker records. When neither this nor log_file is
    /// set, records go to spdlog's default logger of the parent.
    std::shared_ptr<spdlog::logger> logger{};

    /// How many times a task whose worker died while running it (crash,
    /// signal, exit) is run again before its error is reported. 0: at most
    /// once; more: at least once (the method may have partly or fully run
    /// before the death).
    unsigned retries = 0;

    /// Also retry, within `retries`, tasks whose method threw.
    bool retry_exceptions = false;

    /// A task still running this long after it started gets an
    /// ErrorKind::timeout error; its worker is killed and replaced. 0: no limit.
    std::chrono::milliseconds task_timeout{0};

    /// A worker is replaced by a fresh one after this many tasks (for code
    /// that leaks memory). 0: never.
    unsigned max_tasks_per_worker = 0;

    /// Bytes of each shared-memory ring (one for tasks and one for results per
    /// worker), rounded up to a power of two. Shared memory used is about
    /// 2 * workers * ring_bytes. Messages larger than a ring still pass: they
    /// stream through it in pieces.
    std::size_t ring_bytes = std::size_t{256} << 10;

    /// Largest encoded task or result accepted. A larger length read from a
    /// worker is treated as corruption.
    std::size_t max_message_bytes = std::size_t{1} << 31;

    /// How long stop() and the destructor let running tasks finish before the
    /// workers still alive are killed with SIGKILL.
    std::chrono::milliseconds stop_timeout{10'000};

    /// Called in the parent, from a thread of its own, with the run's progress:
    /// at most once per progress_interval, only when something changed, and
    /// once more at stop(). Must not call back into the Processor's stop().
    std::function<void(const Progress&)> on_progress{};

    /// Draws a progress bar on stderr (a plain line every few seconds when
    /// stderr is not a terminal).
    bool progress_bar = false;

    /// How often progress is reported at most.
    std::chrono::milliseconds progress_interval{200};

    /// Index of a worker that, right after it is forked, waits for a debugger
    /// to attach (or for SIGCONT) before it takes any task; -1: none. The
    /// environment variable MULTIWORKER_DEBUG_WORKER, if set, overrides it.
    int debug_worker = -1;

    /// Where the workers' stdout and stderr go (see WorkerOutput).
    WorkerOutput worker_output = WorkerOutput::forward;

    /// How long start() waits for the workers to be forked and ready before
    /// it fails with an error saying how many were not.
    std::chrono::milliseconds start_timeout{30'000};

    /// Bounds the tasks added and not yet handed to a worker: once this many
    /// wait, add() waits too, so that a program adding any number of tasks
    /// runs in bounded memory. Before start() nothing is handed out, so an
    /// add() that would have to wait throws std::logic_error instead of
    /// waiting forever. 0: no bound.
    std::size_t max_pending = 0;

    /// Backend::mpi: how often rank 0 and each agent tell each other they are alive.
    std::chrono::milliseconds heartbeat_interval{100};

    /// Backend::mpi: an agent (or rank 0, seen from an agent) silent this
    /// long is lost: its tasks are retried elsewhere within `retries`, or end
    /// with ErrorKind::worker_died errors naming its host and rank.
    std::chrono::milliseconds heartbeat_limit{3'000};

    /// Capture the stack where a task's exception is thrown, for
    /// TaskError::stack_trace(): about one backtrace() per throw inside a
    /// task (docs/backends.md gives the measured cost). false: no capture.
    bool exception_stack_traces = true;
};

}  // namespace multiworker
