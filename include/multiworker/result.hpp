#pragma once

/// @file
/// Result<R>: the outcome of one task, a value or a TaskError.

#include <multiworker/error.hpp>
#include <multiworker/task_id.hpp>

#include <memory>
#include <stdexcept>
#include <utility>
#include <variant>

namespace multiworker {

/// The outcome of one task: the method's return value, or the TaskError that
/// explains why there is none. `R` is the method's return type with
/// references and cv-qualifiers removed; `Result<void>` carries no value.
///
/// The error, rare and large, is held by (shared, immutable) pointer, so that
/// a result is hardly larger than its value: collecting a million results
/// then touches a few megabytes, not a hundred.
template <class R>
class Result {
public:
    /// A success: the value the method returned for task `id`.
    Result(TaskId id, R value) : id_{id}, outcome_{std::in_place_index<0>, std::move(value)} {}
    /// A failure: task `id` has no value, for the reason `error` gives.
    Result(TaskId id, TaskError error)
        : id_{id}, outcome_{std::in_place_index<1>, std::make_shared<const TaskError>(std::move(error))} {}

    /// The task this is the result of.
    [[nodiscard]] TaskId id() const noexcept { return id_; }
    /// True when the method returned normally.
    [[nodiscard]] bool ok() const noexcept { return outcome_.index() == 0; }

    /// The method's return value; throws the TaskError when the task failed.
    [[nodiscard]] const R& value() const& {
        throw_if_failed();
        return std::get<0>(outcome_);
    }
    /// Moves the return value out of a result about to be discarded; throws the TaskError when the task
    /// failed.
    [[nodiscard]] R&& value() && {
        throw_if_failed();
        return std::get<0>(std::move(outcome_));
    }

    /// Why the task failed; throws std::logic_error when it did not.
    [[nodiscard]] const TaskError& error() const {
        if (ok()) throw std::logic_error{"multiworker::Result::error() called on a successful result"};
        return *std::get<1>(outcome_);
    }

private:
    void throw_if_failed() const {
        if (!ok()) throw *std::get<1>(outcome_);
    }

    TaskId id_;
    std::variant<R, std::shared_ptr<const TaskError>> outcome_;
};

/// The outcome of a task whose method returns void.
template <>
class Result<void> {
public:
    /// A success of task `id`.
    explicit Result(TaskId id) : id_{id} {}
    /// A failure of task `id`, for the reason `error` gives.
    Result(TaskId id, TaskError error) : id_{id}, error_{std::make_shared<const TaskError>(std::move(error))} {}

    /// The task this is the result of.
    [[nodiscard]] TaskId id() const noexcept { return id_; }
    /// True when the method returned normally.
    [[nodiscard]] bool ok() const noexcept { return error_ == nullptr; }

    /// Returns when the task succeeded; throws its TaskError otherwise.
    void value() const {
        if (error_) throw *error_;
    }

    /// Why the task failed; throws std::logic_error when it did not.
    [[nodiscard]] const TaskError& error() const {
        if (ok()) throw std::logic_error{"multiworker::Result::error() called on a successful result"};
        return *error_;
    }

private:
    TaskId id_;
    std::shared_ptr<const TaskError> error_;
};

}  // namespace multiworker
