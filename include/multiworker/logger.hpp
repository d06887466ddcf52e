#pragma once

/// @file
/// Logger: a resident process that listens to some message types and only
/// records them (a progress display, a file of events).

#include <multiworker/context.hpp>
#include <multiworker/message.hpp>
#include <multiworker/process_id.hpp>
#include <multiworker/supervisor_options.hpp>

#include <functional>
#include <utility>
#include <variant>

namespace multiworker {

/// A resident listener of `Ms...` that calls `record(message, from)` for each
/// copy it gets, in its own process, until the residents' end. Add it with
/// `sup.add("progress", multiworker::Logger<Progress>{record})`: its default
/// options make it resident and listening to `Ms...`.
template <class... Ms>
class Logger {
public:
    /// What the logger does with each message; runs in the logger's process.
    using Record = std::function<void(const std::variant<Ms...>& message, ProcessId from)>;

    /// A logger that calls `record`; `finish` (optional) runs once at the residents' end.
    explicit Logger(Record record, std::function<void()> finish = {})
        : record_{std::move(record)}, finish_{std::move(finish)} {}

    /// Resident, listening to `Ms...`.
    [[nodiscard]] ProcessOptions process_options() const {
        return ProcessOptions{.resident = true, .listen_to = listen<Ms...>()};
    }

    /// The process's body: records every message until ResidentsEnd.
    void run(Context& context) {
        for (;;) {
            auto message = context.receive<Ms..., ResidentsEnd>();
            if (std::holds_alternative<ResidentsEnd>(message)) break;
            std::visit(
                [&](auto& m) {
                    if constexpr (!std::is_same_v<std::decay_t<decltype(m)>, ResidentsEnd>)
                        record_(std::variant<Ms...>{std::move(m)}, context.sender());
                },
                message);
        }
        if (finish_) finish_();
    }

private:
    Record record_;
    std::function<void()> finish_;
};

}  // namespace multiworker
