#pragma once

/// @file
/// PipelineResult, StageStats and PipelineError: what a pipeline run gives back.

#include <multiworker/error.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace multiworker {

/// What happened to the items of one pipeline element. For every element,
/// `in == completed + failed + unprocessed`.
struct StageStats {
    std::string name;               ///< "source", "stage 1", a StageOptions::name, "sink"
    std::uint64_t in = 0;           ///< items that reached it (a source: its one run)
    std::uint64_t out = 0;          ///< items it handed on
    std::uint64_t completed = 0;    ///< inputs whose method returned
    std::uint64_t failed = 0;       ///< inputs that ended in an error
    std::uint64_t retried = 0;      ///< runs repeated after a worker's death (or a retried exception)
    std::uint64_t dropped = 0;      ///< completed inputs that emitted nothing (a filter's rejects)
    std::uint64_t unprocessed = 0;  ///< inputs never run because the run stopped early
};

/// An item's error in a pipeline: which element, and the TaskError, whose
/// task() is the item's position (1, 2, ...) in that element's input.
struct ItemError {
    std::size_t element;       ///< 0 is the first element (the source)
    std::string element_name;  ///< as StageStats::name gives it
    TaskError error;           ///< what went wrong; task() is the item's position in the element's input
};

/// A whole run's failure: the source or the sink failed, or an item failed
/// under OnError::stop. what() names the first error; errors() has them all.
class PipelineError : public std::runtime_error {
public:
    /// The run's failure, described by `what`, with every item error it recorded.
    PipelineError(const std::string& what, std::vector<ItemError> errors)
        : std::runtime_error{what}, errors_{std::move(errors)} {}

    /// Every error the run recorded, in the order they arrived.
    [[nodiscard]] const std::vector<ItemError>& errors() const noexcept { return errors_; }

private:
    std::vector<ItemError> errors_;
};

/// The outcome of Pipeline::run(): the sink's finish() value (for a sink
/// without finish(), or a pipeline without a sink, `Value` is void), the
/// statistics of every element, and every item's error.
template <class Value>
class PipelineResult {
public:
    /// A run's outcome: `value`, the element statistics and the item errors.
    PipelineResult(std::optional<Value> value, std::vector<StageStats> stats, std::vector<ItemError> errors)
        : value_{std::move(value)}, stats_{std::move(stats)}, errors_{std::move(errors)} {}

    /// What the sink's finish() returned.
    [[nodiscard]] const Value& value() const& { return *value_; }
    /// What the sink's finish() returned, moved out.
    [[nodiscard]] Value value() && { return std::move(*value_); }
    /// Per element, from the source to the sink.
    [[nodiscard]] const std::vector<StageStats>& stats() const noexcept { return stats_; }
    /// Every item's error, in the order they arrived.
    [[nodiscard]] const std::vector<ItemError>& errors() const noexcept { return errors_; }

private:
    std::optional<Value> value_;
    std::vector<StageStats> stats_;
    std::vector<ItemError> errors_;
};

/// The outcome of a run whose sink has no finish().
template <>
class PipelineResult<void> {
public:
    /// A run's outcome: the element statistics and the item errors.
    PipelineResult(std::vector<StageStats> stats, std::vector<ItemError> errors)
        : stats_{std::move(stats)}, errors_{std::move(errors)} {}

    /// Per element, from the source to the sink.
    [[nodiscard]] const std::vector<StageStats>& stats() const noexcept { return stats_; }
    /// Every item's error, in the order they arrived.
    [[nodiscard]] const std::vector<ItemError>& errors() const noexcept { return errors_; }

private:
    std::vector<StageStats> stats_;
    std::vector<ItemError> errors_;
};

}  // namespace multiworker
