#pragma once

// One node's end of the message mesh: its rings to every other node and from
// every other node, the messages it took but nobody asked for yet, and the
// waits (for a message, for mailbox space) with their stop and deadlock
// bookkeeping. A process's Context and the parent's Supervisor both speak
// through one; it is used by one thread at a time.

#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/message_mesh.hpp>
#include <multiworker/detail/process_directory.hpp>
#include <multiworker/detail/spin.hpp>
#include <multiworker/message.hpp>
#include <multiworker/supervisor_error.hpp>

#include <poll.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace multiworker::detail {

/// Thrown inside a process when the parent asks it to stop, from the receive
/// or send it waits in; unwinds run() to the library's frame. Not a
/// std::exception, so that a handler for those does not swallow it.
struct StopRequest {};

/// A message taken from a ring.
/// The nodes one message goes to; rarely more than a few.
using Destinations = boost::container::small_vector<int, 8>;

struct StoredMessage {
    int from = 0;
    MessageHeader header;
    Bytes payload;
};

class Messenger {
public:
    using Clock = std::chrono::steady_clock;
    using Deadline = std::optional<Clock::time_point>;

    Messenger(const MessageMesh& mesh, const ProcessDirectory& directory, int node)
        : mesh_{&mesh},
          directory_{&directory},
          node_{node},
          report_every_{std::clamp<std::uint64_t>(directory.at(node).options.mailbox_capacity / 4, 1, 64)} {
        const int nodes = static_cast<int>(mesh.nodes());
        for (int other = 0; other < nodes; ++other) {
            outgoing_.push_back(Outgoing{mesh.ring(node, other), &mesh.lane(node, other),
                                         mesh.lane(node, other).sent.load(std::memory_order_relaxed), 0});
            const std::uint64_t received = mesh.lane(other, node).received.load(std::memory_order_relaxed);
            incoming_.push_back(Incoming{mesh.ring(other, node), &mesh.lane(other, node), received, received});
        }
    }

    [[nodiscard]] int node() const noexcept { return node_; }
    [[nodiscard]] const MessageMesh& mesh() const noexcept { return *mesh_; }
    [[nodiscard]] const ProcessDirectory& directory() const noexcept { return *directory_; }
    [[nodiscard]] NodeStatus& status() const noexcept { return mesh_->status(node_); }
    [[nodiscard]] const Doorbell& doorbell() const noexcept { return mesh_->doorbell(node_); }

    // ----- sending -----

    /// The nodes a message of `type` sent to `to` reaches: the address's
    /// nodes, then every listener of the type not among them; never the
    /// sender itself through broadcast or listeners.
    [[nodiscard]] Destinations destinations(ProcessId to, const MessageType& type) const {
        Destinations nodes;
        const int count = static_cast<int>(directory_->size());
        if (to == broadcast) {
            for (int n = 1; n < count; ++n)
                if (n != node_) nodes.push_back(n);
            return nodes;
        }
        if (to == listeners) {
            for (const int n : directory_->listeners_of(type.key))
                if (n != node_) nodes.push_back(n);
            if (nodes.empty()) throw NobodyListening{type.name};
            return nodes;
        }
        directory_->check_address(to);
        nodes.push_back(to.value);
        for (const int n : directory_->listeners_of(type.key)) {
            if (n != node_ && n != to.value) nodes.push_back(n);
        }
        return nodes;
    }

    /// Puts the message into each destination's ring in turn, waiting while a
    /// mailbox is full until `deadline`; false if it passed (the message then
    /// reached the destinations before that one). A destination that has
    /// ended counts a dead letter instead.
    bool send(std::span<const int> to, const MessageHeader& header, std::span<const char> payload, Deadline deadline) {
        if (payload.size() > mesh_->max_payload()) {
            throw std::length_error{"multiworker: a message of " + std::to_string(payload.size()) +
                                    " bytes is larger than a message ring holds (" +
                                    std::to_string(mesh_->max_payload()) + "); raise SupervisorOptions::ring_bytes"};
        }
        for (const int destination : to) {
            if (!put_waiting(destination, header, payload, deadline)) return false;
        }
        return true;
    }

    /// One attempt to put the message into `to`'s ring; false if its mailbox
    /// is full (a destination that has ended counts a dead letter: true).
    bool try_send_one(int to, const MessageHeader& header, std::span<const char> payload) {
        return try_put(to, header, payload) != Put::full;
    }

    // ----- receiving -----

    /// The oldest message `match` accepts: first among those kept, then from
    /// the rings, keeping the others in arrival order. Waits until
    /// `deadline` (none: for ever); empty when it passes. `residents_end`
    /// is offered once the parent has said the residents' end, after every
    /// message already in the rings.
    template <class Match>
    std::optional<StoredMessage> receive(Match&& match, Deadline deadline) {
        if (auto it = std::find_if(kept_.begin(), kept_.end(), match); it != kept_.end()) {
            StoredMessage found = std::move(*it);
            kept_.erase(it);
            return found;
        }
        const RunningOnExit running{*this};
        for (int idle = 0;; ++idle) {
            StoredMessage message;
            while (next_incoming(message)) {
                set_wait_state(WaitState::running);
                if (match(message)) return message;
                if (message.header.kind == MessageKind::reply || message.header.kind == MessageKind::reply_error) {
                    continue;  // the reply to an ask that timed out: its asker has moved on
                }
                kept_.push_back(std::move(message));
            }
            if (residents_end_due()) {
                StoredMessage end{0, MessageHeader{message_type<ResidentsEnd>().key, 0, 0, MessageKind::plain, 0}, {}};
                if (match(end)) {
                    residents_end_told_ = true;
                    return end;
                }
            }
            throw_if_stop_requested();
            if (deadline && Clock::now() >= *deadline) return std::nullopt;
            wait_for_incoming(idle, deadline);
        }
    }

    /// Messages taken and kept for a later receive().
    [[nodiscard]] std::size_t kept() const noexcept { return kept_.size(); }

    /// Throws StopRequest if the parent asked this process to stop.
    void throw_if_stop_requested() const {
        if (status().stop_requested.load(std::memory_order_relaxed) != 0) throw StopRequest{};
    }

    /// The body has ended: messages to it are dead letters from now on, and
    /// so are those it never received.
    void close() noexcept {
        status().accepting.store(0, std::memory_order_seq_cst);
        std::uint64_t lost = kept_.size();
        kept_.clear();
        StoredMessage message;
        try {
            while (next_incoming(message)) ++lost;
        } catch (...) {  // a corrupt ring: what is in it is lost either way
        }
        if (lost != 0) status().dead_letters.fetch_add(lost, std::memory_order_relaxed);
    }

    /// True while some ring into this node holds a message.
    [[nodiscard]] bool incoming_ready() const noexcept {
        return std::any_of(incoming_.begin(), incoming_.end(),
                           [](const Incoming& in) { return in.ring.has_readable(); });
    }

    /// Takes the next message from any ring into this node, round robin; false if none.
    bool next_incoming(StoredMessage& out) {
        const std::size_t count = incoming_.size();
        for (std::size_t step = 0; step < count; ++step) {
            const std::size_t from = (next_ring_ + step) % count;
            if (read_one(from, out)) {
                next_ring_ = (from + 1) % count;
                return true;
            }
        }
        return false;
    }

private:
    struct Outgoing {
        ByteRing ring;
        MessageLane* lane;
        std::uint64_t sent;               // our count; lane->sent follows it
        std::uint64_t received_seen = 0;  // the receiver's count when last read
    };
    struct Incoming {
        ByteRing ring;
        MessageLane* lane;
        std::uint64_t received;
        std::uint64_t published;  // lane->received: trails `received` while more messages wait
    };
    enum class Put { sent, full, gone };

    // A wait's state lasts until the receive or send that waits returns (or
    // throws), not only while asleep: the deadlock check must not see a
    // waiter wake every 100 ms and take it for activity.
    struct RunningOnExit {
        Messenger& messenger;
        ~RunningOnExit() { messenger.set_wait_state(WaitState::running); }
    };

    [[nodiscard]] bool residents_end_due() const noexcept {
        return !residents_end_told_ && status().residents_end.load(std::memory_order_acquire) != 0;
    }

    Put try_put(int to, const MessageHeader& header, std::span<const char> payload) {
        NodeStatus& receiver = mesh_->status(to);
        if (receiver.accepting.load(std::memory_order_acquire) == 0) {
            receiver.dead_letters.fetch_add(1, std::memory_order_relaxed);
            return Put::gone;
        }
        Outgoing& out = outgoing_[static_cast<std::size_t>(to)];
        const std::size_t capacity = directory_->at(to).options.mailbox_capacity;
        if (out.sent - out.received_seen >= capacity) {
            out.received_seen = out.lane->received.load(std::memory_order_acquire);
            if (out.sent - out.received_seen >= capacity) return Put::full;
        }
        const std::span<const char> head{reinterpret_cast<const char*>(&header), sizeof header};
        if (!out.ring.stage_whole(head, payload)) return Put::full;
        out.ring.publish();
        out.lane->sent.store(++out.sent, std::memory_order_relaxed);
        mesh_->doorbell(to).ring();
        return Put::sent;
    }

    bool put_waiting(int to, const MessageHeader& header, std::span<const char> payload, Deadline deadline) {
        if (try_put(to, header, payload) != Put::full) return true;
        // The receiver may be waiting for room in our mailbox in turn.
        for (Incoming& in : incoming_) report_received(in);
        const RunningOnExit running{*this};
        for (int attempt = 0;; ++attempt) {
            if (try_put(to, header, payload) != Put::full) return true;
            throw_if_stop_requested();
            if (deadline && Clock::now() >= *deadline) return false;
            if (attempt < spins_before_sleep) {
                spin_pause(attempt);
                continue;
            }
            // A full mailbox is rare and its receiver is busy: sleep in short
            // steps rather than ask it to ring for us.
            if (!deadline) set_wait_state(WaitState::sending_forever);
            const timespec step{0, std::min(1'000'000L, 20'000L << std::min(attempt - spins_before_sleep, 6))};
            ::nanosleep(&step, nullptr);
        }
    }

    // The sender of a stream runs into the mailbox bound and polls the
    // receiver's count: were it stored for every message, its cache line
    // would move between the two cores twice a message (measured: most of a
    // send). It is stored every report_every_ messages (a quarter of the
    // mailbox, at most 64), whenever a ring runs dry (as far as its last
    // look at the tail saw: the next read looks again) and before a send
    // waits, so that the count of a process that waits is exact (the
    // deadlock check compares it with the sender's), and a sender always
    // has three quarters of the mailbox.
    static void report_received(Incoming& in) noexcept {
        if (in.published == in.received) return;
        in.published = in.received;
        in.lane->received.store(in.received, std::memory_order_release);
    }

    bool read_one(std::size_t from, StoredMessage& out) {
        Incoming& in = incoming_[from];
        if (!in.ring.has_readable()) return false;
        // A sender publishes whole messages.
        if (in.ring.readable(sizeof(MessageHeader)) < sizeof(MessageHeader)) return false;
        in.ring.take({reinterpret_cast<char*>(&out.header), sizeof out.header});
        const bool fits = out.header.size <= in.ring.capacity() - sizeof(MessageHeader);
        if (!fits || in.ring.readable(out.header.size) < out.header.size) {
            throw RingCorrupted{"message ring from node " + std::to_string(from) + " holds a malformed header"};
        }
        out.payload.resize(out.header.size, boost::container::default_init);
        in.ring.take({out.payload.data(), out.payload.size()});
        in.ring.release();
        if (++in.received - in.published >= report_every_ || in.ring.taken_all_seen()) report_received(in);
        out.from = static_cast<int>(from);
        return true;
    }

    void set_wait_state(WaitState state) noexcept {
        NodeStatus& own = status();
        if (own.wait_state.load(std::memory_order_relaxed) == static_cast<std::uint32_t>(state)) return;
        own.wait_state.store(static_cast<std::uint32_t>(state), std::memory_order_seq_cst);
        own.wait_epoch.fetch_add(1, std::memory_order_seq_cst);
    }

    // Spins, then sleeps on the doorbell; at most 100 ms at a time, so that a
    // stop request is seen even if a doorbell's ring were lost.
    void wait_for_incoming(int idle, Deadline deadline) {
        const auto ready = [this] {
            return incoming_ready() || residents_end_due() ||
                   status().stop_requested.load(std::memory_order_relaxed) != 0;
        };
        if (idle < spins_before_sleep) {
            spin_pause(idle);
            return;
        }
        int timeout_ms = 100;
        if (deadline) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
            timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, 100));
        }
        const Doorbell& own = doorbell();
        if (!deadline) set_wait_state(WaitState::receiving_forever);
        if (own.begin_sleep(ready)) {
            pollfd descriptor{own.fd(), POLLIN, 0};
            ::poll(&descriptor, 1, timeout_ms);
        }
        own.end_sleep();
    }

    const MessageMesh* mesh_;
    const ProcessDirectory* directory_;
    int node_;
    std::vector<Outgoing> outgoing_;
    std::vector<Incoming> incoming_;
    std::uint64_t report_every_;
    std::size_t next_ring_ = 0;
    std::deque<StoredMessage> kept_;
    bool residents_end_told_ = false;
};

}  // namespace multiworker::detail
