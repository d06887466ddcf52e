#pragma once

/// @file
/// TaskError: why a task has no value.

#include <multiworker/detail/exception_stack.hpp>
#include <multiworker/task_id.hpp>

#include <sys/types.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace multiworker {

/// What went wrong with a task.
enum class ErrorKind {
    exception,    ///< the method threw; type_name() and message() describe the exception
    worker_died,  ///< the worker running the task exited or was killed
    bad_message,  ///< the task's arguments or result could not be decoded
    no_worker,    ///< the task could not run because no worker was left alive
    timeout,      ///< the task ran longer than Options::task_timeout; its worker was killed
};

/// The error a failed task's Result carries. It is an exception type, so
/// `Result::value()` can throw it, and it keeps what the worker reported:
/// the remote exception's type name and message, and the worker's index and pid.
class TaskError : public std::runtime_error {
public:
    /// Index and pid used when no worker is involved.
    static constexpr int no_worker_index = -1;

    /// The error of `task`, as worker `worker_index` (pid `worker_pid`) reported it; what() says it all in one
    /// sentence.
    /// `location` names where the worker ran when that is not this machine (see location()).
    /// `stack` is the exception's stack, if it was captured (see stack_trace()).
    TaskError(ErrorKind kind, TaskId task, std::string type_name, std::string message, int worker_index,
              pid_t worker_pid, std::string location = {},
              std::shared_ptr<const detail::ExceptionStack> stack = nullptr)
        : std::runtime_error{describe(kind, task, type_name, message, worker_index, worker_pid, location)},
          kind_{kind},
          task_{task},
          type_name_{std::move(type_name)},
          message_{std::move(message)},
          worker_index_{worker_index},
          worker_pid_{worker_pid},
          location_{std::move(location)},
          stack_{std::move(stack)} {}

    /// What went wrong.
    [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }
    /// The task that failed.
    [[nodiscard]] TaskId task() const noexcept { return task_; }
    /// For ErrorKind::exception, the demangled type of the exception the method threw.
    [[nodiscard]] const std::string& type_name() const noexcept { return type_name_; }
    /// The remote exception's what(), or a description of the failure.
    [[nodiscard]] const std::string& message() const noexcept { return message_; }
    /// The worker's index (0-based), or no_worker_index.
    [[nodiscard]] int worker_index() const noexcept { return worker_index_; }
    /// The worker's process id, or 0.
    [[nodiscard]] pid_t worker_pid() const noexcept { return worker_pid_; }
    /// Where the worker ran, when not on this machine (Backend::mpi): "host h1
    /// (MPI rank 1, agent pid 4200)"; empty otherwise. what() includes it.
    [[nodiscard]] const std::string& location() const noexcept { return location_; }
    /// For ErrorKind::exception, the stack where the method threw, innermost
    /// frame first, one "#i function at file:line" line per frame of your
    /// code (file:line where debug information exists); empty when it was not
    /// captured (Options::exception_stack_traces). Symbolized on the first
    /// call, in this process, which runs addr2line: milliseconds, once per
    /// throw site.
    [[nodiscard]] std::string stack_trace() const { return stack_ ? stack_->text() : std::string{}; }

private:
    static std::string describe(ErrorKind kind, TaskId task, const std::string& type_name, const std::string& message,
                                int worker_index, pid_t worker_pid, const std::string& location) {
        const std::string id = std::to_string(task.value());
        const std::string worker = "worker " + std::to_string(worker_index) + " (pid " + std::to_string(worker_pid) +
                                   ")" + (location.empty() ? "" : " on " + location);
        switch (kind) {
            case ErrorKind::exception:
                return "task " + id + " threw " + type_name + " in " + worker + ": " + message;
            case ErrorKind::worker_died:
                return worker + " " + message + " while running task " + id;
            case ErrorKind::bad_message:
                if (worker_index == no_worker_index) return "task " + id + ": " + message;
                return "task " + id + " in " + worker + ": " + message;
            case ErrorKind::no_worker:
                return "task " + id + " could not run: " + message;
            case ErrorKind::timeout:
                return "task " + id + " " + message + " in " + worker + ", which was killed and replaced";
        }
        return "task " + id + ": " + message;
    }

    ErrorKind kind_;
    TaskId task_;
    std::string type_name_;
    std::string message_;
    int worker_index_;
    pid_t worker_pid_;
    std::string location_;
    std::shared_ptr<const detail::ExceptionStack> stack_;  // shared by copies: symbolized once
};

}  // namespace multiworker
