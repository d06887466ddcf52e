#pragma once

/// @file
/// What Supervisor::run() and a process's Context throw when things go wrong.

#include <multiworker/process_id.hpp>

#include <sys/types.h>
#include <stdexcept>
#include <string>
#include <vector>

namespace multiworker {

/// One process's failure.
struct ProcessFailure {
    ProcessInfo process{};  ///< which process
    pid_t pid = 0;          ///< 0 in-process
    std::string what{};     ///< "threw std::runtime_error: no route", "was killed by SIGSEGV ..."
};

/// A process failed and the run ended: thrown by Supervisor::run().
/// what() names the first failure; failures() lists them all, first first.
class ProcessFailed : public std::runtime_error {
public:
    /// The run's `failures`, first first.
    explicit ProcessFailed(std::vector<ProcessFailure> failures)
        : std::runtime_error{message(failures)}, failures_{std::move(failures)} {}

    /// Every failure of the run, in the order the parent learnt of them.
    [[nodiscard]] const std::vector<ProcessFailure>& failures() const noexcept { return failures_; }

private:
    static std::string message(const std::vector<ProcessFailure>& failures) {
        if (failures.empty()) return "multiworker: a process failed";
        const ProcessFailure& first = failures.front();
        std::string text = "multiworker: process " + describe(first.process) +
                           (first.pid != 0 ? " (pid " + std::to_string(first.pid) + ")" : std::string{}) + " " +
                           first.what;
        if (failures.size() > 1) text += " (and " + std::to_string(failures.size() - 1) + " more failures)";
        return text;
    }

    std::vector<ProcessFailure> failures_;
};

/// Every live process waited in a receive() without a timeout with no message
/// in flight: none could ever go on. Thrown by Supervisor::run().
class Deadlock : public std::runtime_error {
public:
    /// The deadlock of the `blocked` processes.
    explicit Deadlock(std::vector<ProcessInfo> blocked)
        : std::runtime_error{message(blocked)}, blocked_{std::move(blocked)} {}

    /// The processes that were waiting.
    [[nodiscard]] const std::vector<ProcessInfo>& blocked() const noexcept { return blocked_; }

private:
    static std::string message(const std::vector<ProcessInfo>& blocked) {
        std::string text = "multiworker: deadlock: every live process waits for a message and none is in flight (";
        for (std::size_t i = 0; i < blocked.size(); ++i) text += (i ? ", " : "") + describe(blocked[i]);
        return text + ")";
    }

    std::vector<ProcessInfo> blocked_;
};

/// SIGINT or SIGTERM reached the parent during Supervisor::run(); every
/// process was stopped and reaped.
class Interrupted : public std::runtime_error {
public:
    /// An interruption by `signal`.
    explicit Interrupted(int signal)
        : std::runtime_error{"multiworker: run() interrupted by " + std::string{signal == 2 ? "SIGINT" : "SIGTERM"} +
                             "; every process was stopped"},
          signal_{signal} {}

    /// The signal that arrived.
    [[nodiscard]] int signal() const noexcept { return signal_; }

private:
    int signal_;
};

/// A message was sent to `multiworker::listeners` and no process listens to its type.
class NobodyListening : public std::runtime_error {
public:
    /// No listener for the message type named `type`.
    explicit NobodyListening(const std::string& type)
        : std::runtime_error{"multiworker: nobody listens to " + type + " (sent to multiworker::listeners)"} {}
};

/// Context::ask() got no reply: what happened instead.
class AskFailed : public std::runtime_error {
public:
    /// Why no reply came.
    enum class Reason {
        timeout,         ///< no reply within the timeout
        receiver_threw,  ///< the handler threw; what() carries its type and message
        receiver_ended,  ///< the receiver died, ended or moved on without replying
    };

    /// An ask that failed for `reason`, described by `text`.
    AskFailed(Reason reason, const std::string& text) : std::runtime_error{text}, reason_{reason} {}

    /// Why no reply came.
    [[nodiscard]] Reason reason() const noexcept { return reason_; }

private:
    Reason reason_;
};

}  // namespace multiworker
