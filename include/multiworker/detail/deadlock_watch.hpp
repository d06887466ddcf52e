#pragma once

// Deadlock detection for a Supervisor's run: every live process waits in a
// receive() or send() without a timeout, its wait epoch unchanged across the
// check, with no message in any ring into a receiving one and no parent send
// in between, on two checks in a row. A waiter can only be woken by a
// message, and only a process that is not waiting (or the parent) can send
// one, so such a state never ends by itself. A parent thread that would send
// later is not foreseen (docs/messages.md says so).

#include <multiworker/detail/message_mesh.hpp>
#include <multiworker/detail/process_directory.hpp>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace multiworker::detail {

class DeadlockWatch {
public:
    /// One check. `live[node]` says which processes run; `parent_idle` that the
    /// parent holds no unsent message; `parent_sends` counts its sends so far.
    /// Returns the waiting processes once a deadlock is certain.
    std::optional<std::vector<ProcessInfo>> check(const MessageMesh& mesh, const ProcessDirectory& directory,
                                                  const std::vector<bool>& live, bool parent_idle,
                                                  std::uint64_t parent_sends) {
        std::vector<std::pair<std::uint32_t, std::uint64_t>> before;
        std::vector<ProcessInfo> blocked;
        for (std::size_t node = 1; node < directory.size(); ++node) {
            if (!live[node]) continue;
            const NodeStatus& status = mesh.status(static_cast<int>(node));
            const auto state = status.wait_state.load(std::memory_order_seq_cst);
            if (state == static_cast<std::uint32_t>(WaitState::running)) return forget();
            before.emplace_back(state, status.wait_epoch.load(std::memory_order_seq_cst));
            blocked.push_back(directory.at(static_cast<int>(node)).info);
            if (state == static_cast<std::uint32_t>(WaitState::receiving_forever) &&
                mail_waiting_for(mesh, static_cast<int>(node)))
                return forget();
        }
        if (blocked.empty() || !parent_idle || mail_waiting_for(mesh, 0)) return forget();
        std::size_t i = 0;
        for (std::size_t node = 1; node < directory.size(); ++node) {
            if (!live[node]) continue;
            if (mesh.status(static_cast<int>(node)).wait_epoch.load(std::memory_order_seq_cst) != before[i++].second)
                return forget();
        }
        if (candidate_ && before == snapshot_ && parent_sends == sends_) return blocked;
        candidate_ = true;
        snapshot_ = std::move(before);
        sends_ = parent_sends;
        return std::nullopt;
    }

private:
    std::nullopt_t forget() noexcept {
        candidate_ = false;
        return std::nullopt;
    }

    static bool mail_waiting_for(const MessageMesh& mesh, int node) {
        for (std::size_t from = 0; from < mesh.nodes(); ++from) {
            const MessageLane& lane = mesh.lane(static_cast<int>(from), node);
            if (lane.sent.load(std::memory_order_seq_cst) != lane.received.load(std::memory_order_seq_cst)) return true;
        }
        return false;
    }

    bool candidate_ = false;  // the previous check saw the same waits
    std::vector<std::pair<std::uint32_t, std::uint64_t>> snapshot_;
    std::uint64_t sends_ = 0;
};

}  // namespace multiworker::detail
