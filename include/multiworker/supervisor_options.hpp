#pragma once

/// @file
/// ProcessOptions and SupervisorOptions: how a Supervisor's processes run.

#include <multiworker/message.hpp>
#include <multiworker/process_id.hpp>

#include <spdlog/logger.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace multiworker {

/// What happens when a process fails (throws, crashes, calls exit()).
enum class Restart {
    never,       ///< the failure ends the run: Supervisor::run() throws ProcessFailed
    on_failure,  ///< a fresh copy of the object as registered runs in its place, within the limit
};

/// How one kind of process runs. Designated initializers read well:
/// `{.copies = 3, .resident = true}`.
struct ProcessOptions {
    /// Processes of this kind, all of the same name, each on its own copy of the object.
    unsigned copies = 1;
    /// Runs beside the others: told by a ResidentsEnd message when every
    /// non-resident process has ended, and expected to end then.
    bool resident = false;
    /// Message types this process also gets a copy of, whoever they are sent to
    /// (see multiworker::listen()); also what `listeners` reaches.
    std::vector<MessageType> listen_to{};
    /// What a failure of this process does to the run.
    Restart restart = Restart::never;
    /// Messages from any one sender that may wait unreceived in this process's
    /// mailbox; a sender to a full mailbox waits. A sender sees the mailbox as
    /// this process last reported it: after every quarter of this many
    /// messages taken (64 at most), whenever the mailbox runs empty, and before
    /// this process waits to send; so while it is busy, a sender may wait
    /// with up to a quarter of the mailbox free.
    std::size_t mailbox_capacity = 4096;
    /// With Restart::on_failure: at most this many restarts of one process
    /// within restart_period; one more failure ends the run.
    unsigned max_restarts = 3;
    /// The window of max_restarts.
    std::chrono::milliseconds restart_period{5000};
};

/// Run-wide settings of a Supervisor.
struct SupervisorOptions {
    /// Log records of the processes go here, like Options::log_file.
    std::string log_file{};
    /// Lowest level of process log records forwarded to the parent.
    spdlog::level::level_enum log_level = spdlog::level::info;
    /// Logger for process records; default: spdlog's default logger (or log_file).
    std::shared_ptr<spdlog::logger> logger{};
    /// Run each process as a thread of the calling process, for unit tests and
    /// debuggers: the same messages and semantics, except that a crash ends
    /// the program and a process is only stopped at its next receive or send.
    bool in_process = false;
    /// How long the processes have to end after a failure (or Ctrl-C) asked
    /// them to stop, before they are killed.
    std::chrono::milliseconds stop_timeout{2000};
    /// How long run() waits for the processes to be forked.
    std::chrono::milliseconds start_timeout{30'000};
    /// Bytes of the shared-memory ring from one process to another; the largest
    /// message is a few bytes less.
    std::size_t ring_bytes = std::size_t{256} << 10;
};

}  // namespace multiworker
