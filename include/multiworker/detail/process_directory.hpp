#pragma once

// Every node of a Supervisor's run, fixed before the first fork: each process
// inherits its copy, so ids, names and listeners are known everywhere
// without a round trip.

#include <multiworker/message.hpp>
#include <multiworker/process_id.hpp>
#include <multiworker/supervisor_options.hpp>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace multiworker::detail {

struct NodeEntry {
    ProcessInfo info;
    ProcessOptions options;
};

class ProcessDirectory {
public:
    /// Node 0, the parent.
    ProcessDirectory() { nodes_.push_back(NodeEntry{ProcessInfo{parent, "parent", 0}, ProcessOptions{}}); }

    /// Adds `options.copies` nodes named `name`; returns their ids.
    std::vector<ProcessId> add(const std::string& name, const ProcessOptions& options) {
        std::vector<ProcessId> ids;
        const unsigned first_index = static_cast<unsigned>(ids_of(name).size());
        for (unsigned copy = 0; copy < options.copies; ++copy) {
            const ProcessId id{static_cast<int>(nodes_.size())};
            nodes_.push_back(NodeEntry{ProcessInfo{id, name, first_index + copy}, options});
            ids.push_back(id);
            for (const MessageType& type : options.listen_to) add_listener(type.key, id.value);
        }
        return ids;
    }

    /// Nodes, the parent included.
    [[nodiscard]] std::size_t size() const noexcept { return nodes_.size(); }
    [[nodiscard]] const NodeEntry& at(int node) const { return nodes_.at(static_cast<std::size_t>(node)); }

    /// Every process of that name, in the order of add(); empty if none.
    [[nodiscard]] std::vector<ProcessId> ids_of(std::string_view name) const {
        std::vector<ProcessId> ids;
        for (std::size_t node = 1; node < nodes_.size(); ++node) {
            if (nodes_[node].info.name == name) ids.push_back(nodes_[node].info.id);
        }
        return ids;
    }

    /// Every process (not the parent) whose listen_to names `type`, in node
    /// order: looked up at every send, so a send costs the same however many
    /// processes there are.
    [[nodiscard]] std::span<const int> listeners_of(std::uint64_t type) const {
        const auto found = listeners_.find(type);
        if (found == listeners_.end()) return {};
        return found->second;
    }

    /// Throws std::invalid_argument unless `id` names a process or the parent.
    void check_address(ProcessId id) const {
        if (id.value < 0 || static_cast<std::size_t>(id.value) >= nodes_.size()) {
            throw std::invalid_argument{"multiworker: no process has id " + std::to_string(id.value)};
        }
    }

private:
    void add_listener(std::uint64_t type, int node) {
        std::vector<int>& nodes = listeners_[type];
        if (nodes.empty() || nodes.back() != node) nodes.push_back(node);  // a type listed twice counts once
    }

    std::vector<NodeEntry> nodes_;
    std::unordered_map<std::uint64_t, std::vector<int>> listeners_;  // by message type
};

}  // namespace multiworker::detail
