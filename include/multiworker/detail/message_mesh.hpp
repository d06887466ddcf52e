#pragma once

// The shared memory of a Supervisor: one ring from every process to every
// other (the parent is node 0), and each node's status block.
//
// Why a ring per ordered pair, and not a hub in the parent or one
// multi-producer ring per receiver: a ring has exactly one writer and one
// reader, so a sender killed at any instruction leaves only bytes it never
// published; nobody else's messages are blocked, corrupted or lost, and no
// lock is ever left held. A hub would also double every hop (sender ->
// parent -> receiver): on 2 cores, a round trip between two processes costs
// four wake-ups of three processes instead of two of two. The price is
// nodes^2 rings of address space, touched only where messages flow (256 KiB
// each by default; 9 nodes reserve 20 MiB and commit what they use).
//
// Per-pair order is the rings' order: a broadcast or a listener's copy is a
// frame in the same ring as the sender's direct messages to that receiver.
//
// The status block carries what must never wait behind user traffic: the
// parent's stop request and residents' end, and a process's own account of
// how it ended (returned, stopped, threw what).

#include <multiworker/detail/doorbell.hpp>
#include <multiworker/detail/ring.hpp>
#include <multiworker/detail/system.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace multiworker::detail {

/// What a frame in a message ring is.
enum class MessageKind : std::uint16_t {
    plain = 0,        // a message
    ask = 1,          // a message that expects a reply
    reply = 2,        // the reply to an ask
    reply_error = 3,  // the receiver of an ask threw or moved on; the payload is the text
};

/// Precedes every message's bytes in a ring.
struct MessageHeader {
    std::uint64_t type = 0;  // MessageType::key
    std::uint64_t ask = 0;   // the asker's number for an ask and its reply
    std::uint32_t size = 0;  // payload bytes after the header
    MessageKind kind = MessageKind::plain;
    std::uint16_t reserved = 0;
};
static_assert(sizeof(MessageHeader) == 24);

/// What a process is doing, for deadlock detection.
enum class WaitState : std::uint32_t {
    running = 0,
    receiving_forever = 1,  // in a receive() without a timeout, asleep
    sending_forever = 2,    // in a send() without a timeout, its receiver's mailbox full
};

/// How a process's body ended, as the process itself records it.
enum class EndState : std::uint32_t {
    running = 0,
    returned = 1,  // run() returned
    stopped = 2,   // it stopped when the parent asked
    threw = 3,     // run() threw: see NodeStatus::failure
};

/// One node's shared state.
struct NodeStatus {
    DoorbellFlag doorbell;
    alignas(64) std::atomic<std::uint32_t> wait_state{0};
    std::atomic<std::uint64_t> wait_epoch{0};  // +1 at every change of wait_state
    alignas(64) std::atomic<std::uint32_t> stop_requested{0};
    std::atomic<std::uint32_t> residents_end{0};
    std::atomic<std::uint32_t> accepting{0};    // messages to it are delivered; 0: counted as dead letters
    std::atomic<std::uint32_t> incarnation{0};  // +1 per process started for the node
    std::atomic<std::uint64_t> dead_letters{0};
    std::atomic<std::uint32_t> end_state{0};
    std::atomic<std::uint32_t> failure_length{0};
    char failure[2048]{};

    /// Records why the body failed (a process's last act; truncated to fit).
    void record_failure(const std::string& text) noexcept {
        const std::size_t length = std::min(text.size(), sizeof failure);
        std::memcpy(failure, text.data(), length);
        failure_length.store(static_cast<std::uint32_t>(length), std::memory_order_release);
        end_state.store(static_cast<std::uint32_t>(EndState::threw), std::memory_order_release);
    }
    [[nodiscard]] std::string failure_text() const {
        return {failure, std::min<std::size_t>(failure_length.load(std::memory_order_acquire), sizeof failure)};
    }
    [[nodiscard]] EndState ended() const noexcept {
        return static_cast<EndState>(end_state.load(std::memory_order_acquire));
    }
    /// Fresh state for a new process in the node (by the parent, before it starts).
    void reset_for_start() noexcept {
        wait_state.store(0, std::memory_order_relaxed);
        wait_epoch.fetch_add(1, std::memory_order_relaxed);
        end_state.store(0, std::memory_order_relaxed);
        failure_length.store(0, std::memory_order_relaxed);
        doorbell.sleeping.store(0, std::memory_order_relaxed);
        incarnation.fetch_add(1, std::memory_order_relaxed);
        accepting.store(1, std::memory_order_release);
    }
};

/// The ring from one node to another, and its message counts (for the
/// mailbox's bound, which counts messages, not bytes).
struct MessageLane {
    RingCounters ring;
    alignas(64) std::atomic<std::uint64_t> sent{0};      // written by the sender only
    alignas(64) std::atomic<std::uint64_t> received{0};  // written by the receiver only
};

class MessageMesh {
public:
    MessageMesh() = default;

    /// Maps the rings between `nodes` nodes (the parent included), each of at least `ring_bytes`.
    MessageMesh(std::size_t nodes, std::size_t ring_bytes)
        : nodes_{nodes}, ring_capacity_{std::bit_ceil(std::max<std::size_t>(ring_bytes, 4096))} {
        const std::size_t header = nodes * sizeof(NodeStatus) + nodes * nodes * sizeof(MessageLane);
        header_bytes_ = (header + 4095) / 4096 * 4096;
        shared_ = SharedMapping{header_bytes_ + nodes * nodes * ring_capacity_};
        auto* statuses = reinterpret_cast<NodeStatus*>(shared_.data());
        lanes_ = reinterpret_cast<MessageLane*>(shared_.data() + nodes * sizeof(NodeStatus));
        for (std::size_t i = 0; i < nodes; ++i) {
            statuses_.push_back(new (&statuses[i]) NodeStatus{});
            doorbell_fds_.push_back(make_eventfd());
            doorbells_.emplace_back(&statuses[i].doorbell, doorbell_fds_.back().get());
        }
        for (std::size_t i = 0; i < nodes * nodes; ++i) new (&lanes_[i]) MessageLane{};
    }

    [[nodiscard]] std::size_t nodes() const noexcept { return nodes_; }
    [[nodiscard]] std::uint64_t ring_capacity() const noexcept { return ring_capacity_; }
    /// The largest payload one message may have.
    [[nodiscard]] std::size_t max_payload() const noexcept { return ring_capacity_ - sizeof(MessageHeader); }

    [[nodiscard]] NodeStatus& status(int node) const noexcept { return *statuses_[index(node)]; }
    [[nodiscard]] const Doorbell& doorbell(int node) const noexcept { return doorbells_[index(node)]; }
    [[nodiscard]] MessageLane& lane(int from, int to) const noexcept {
        return lanes_[index(from) * nodes_ + index(to)];
    }
    /// A fresh view of the ring from `from` to `to`, synced to its counters.
    [[nodiscard]] ByteRing ring(int from, int to) const noexcept {
        char* data = reinterpret_cast<char*>(shared_.data()) + header_bytes_ +
                     (index(from) * nodes_ + index(to)) * ring_capacity_;
        return ByteRing{&lane(from, to).ring, data, ring_capacity_};
    }

private:
    static std::size_t index(int node) noexcept { return static_cast<std::size_t>(node); }

    std::size_t nodes_ = 0;
    std::uint64_t ring_capacity_ = 0;
    std::size_t header_bytes_ = 0;
    SharedMapping shared_;
    std::vector<NodeStatus*> statuses_;
    MessageLane* lanes_ = nullptr;
    std::vector<FileDescriptor> doorbell_fds_;
    std::vector<Doorbell> doorbells_;
};

}  // namespace multiworker::detail
