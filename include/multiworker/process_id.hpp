#pragma once

/// @file
/// Who a message goes to: ProcessId, ProcessInfo, the special addresses
/// `parent`, `broadcast` and `listeners`.

#include <compare>
#include <string>

namespace multiworker {

/// The address of a process under a Supervisor. Ids are fixed when run()
/// starts and stay the same across restarts; 1, 2, ... in the order of add().
struct ProcessId {
    /// 0 is the parent; below 0 are the special addresses.
    int value = 0;

    /// Ids compare by value.
    friend auto operator<=>(const ProcessId&, const ProcessId&) = default;
};

/// The parent: its handlers (Supervisor::on()) receive what is sent here.
inline constexpr ProcessId parent{0};
/// Every other process (not the parent).
inline constexpr ProcessId broadcast{-1};
/// Every process whose ProcessOptions::listen_to names the message's type.
inline constexpr ProcessId listeners{-2};

/// What a process is: its id, its name and its index among the copies of that name.
struct ProcessInfo {
    ProcessId id{};      ///< its address
    std::string name{};  ///< as given to Supervisor::add()
    unsigned index = 0;  ///< 0 ... copies - 1
};

/// Readable text for a process in errors and logs: "listener 2".
inline std::string describe(const ProcessInfo& info) {
    return info.name + " " + std::to_string(info.index);
}

}  // namespace multiworker
