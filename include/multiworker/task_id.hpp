#pragma once

/// @file
/// TaskId: the handle `Processor::add` returns for each task.

#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>

namespace multiworker {

/// Identifies one task of one Processor. Ids are assigned in the order tasks
/// are added, starting at 1; every id receives at most one Result.
class TaskId {
public:
    constexpr TaskId() noexcept = default;
    /// The id whose number is `value`. A Processor numbers its tasks from 1; 0, the default, is no task's.
    constexpr explicit TaskId(std::uint64_t value) noexcept : value_{value} {}

    /// The number behind the id, as used in error messages and logs.
    [[nodiscard]] constexpr std::uint64_t value() const noexcept { return value_; }

    /// Ids compare as their numbers: in the order their tasks were added.
    friend constexpr auto operator<=>(TaskId, TaskId) noexcept = default;

    /// Writes the number, as error messages and logs show it.
    friend std::ostream& operator<<(std::ostream& out, TaskId id) { return out << id.value_; }

private:
    std::uint64_t value_ = 0;
};

}  // namespace multiworker

/// Hashes a TaskId as its number, so that ids can key std::unordered_map and std::unordered_set.
template <>
struct std::hash<multiworker::TaskId> {
    /// The hash of the id's number.
    std::size_t operator()(multiworker::TaskId id) const noexcept { return std::hash<std::uint64_t>{}(id.value()); }
};
