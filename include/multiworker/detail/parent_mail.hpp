#pragma once

// The parent's side of a Supervisor's messages: it reads the parent's
// mailbox and hands each message to its Supervisor::on() handler (answering
// an ask with the handler's reply), and sends the parent's own messages.
// Sends come from any thread and never wait: what does not fit in a full
// mailbox waits here, in order, until the event loop flushes it.

#include <multiworker/context.hpp>
#include <multiworker/detail/message_mesh.hpp>
#include <multiworker/detail/messenger.hpp>
#include <multiworker/detail/process_directory.hpp>
#include <multiworker/detail/worker_logging.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace multiworker::detail {

/// A parent handler: decodes the message, runs the user's code; for an ask, returns the reply.
struct ParentReply {
    std::uint64_t type;
    Bytes payload;
};
using ParentHandler = std::function<std::optional<ParentReply>(const StoredMessage&)>;

class ParentMail {
public:
    /// Called on the loop's thread when a handler threw at a message that was not an ask.
    using HandlerFailed = std::function<void(const std::string& what)>;

    ParentMail(MessageMesh& mesh, const ProcessDirectory& directory, std::map<std::uint64_t, ParentHandler> handlers,
               LogCollector& logs, HandlerFailed handler_failed)
        : directory_{directory},
          handlers_{std::move(handlers)},
          parent_{mesh, directory, 0},
          logs_{logs},
          handler_failed_{std::move(handler_failed)},
          overflow_(directory.size()) {}

    /// Sends `payload` to `to` (a process, a name's processes or everyone), from any thread.
    void send(ProcessId to, const MessageType& type, MessageKind kind, std::uint64_t ask, const Bytes& payload) {
        if (to == parent) throw std::invalid_argument{"multiworker: the parent cannot send to itself"};
        const MessageHeader header{type.key, ask, static_cast<std::uint32_t>(payload.size()), kind, 0};
        const std::lock_guard lock{send_mutex_};
        for (const int node : parent_.destinations(to, type)) send_or_keep(node, header, payload);
        sends_.fetch_add(1, std::memory_order_relaxed);
    }

    /// Hands up to a batch of the parent's messages to their handlers; true if any came.
    bool read() {
        bool progress = false;
        StoredMessage message;
        for (int taken = 0; taken < 256 && parent_.next_incoming(message); ++taken) {
            progress = true;
            deliver(message);
        }
        return progress;
    }

    /// Sends what waited for room; true if anything left.
    bool flush_overflow() {
        const std::lock_guard lock{send_mutex_};
        bool progress = false;
        bool left = false;
        for (std::size_t node = 0; node < overflow_.size(); ++node) {
            auto& queue = overflow_[node];
            while (!queue.empty() &&
                   parent_.try_send_one(static_cast<int>(node), queue.front().header, queue.front().payload)) {
                queue.pop_front();
                progress = true;
            }
            left |= !queue.empty();
        }
        overflowing_.store(left, std::memory_order_relaxed);
        return progress;
    }

    /// Messages wait in the parent for room in a mailbox.
    [[nodiscard]] bool overflowing() const noexcept { return overflowing_.load(std::memory_order_relaxed); }
    /// A message for the parent is waiting to be read.
    [[nodiscard]] bool incoming_ready() const { return parent_.incoming_ready(); }
    /// How many sends the parent made, for the deadlock watch.
    [[nodiscard]] std::uint64_t sends() const noexcept { return sends_.load(); }
    /// Messages to the parent of a type no handler takes.
    [[nodiscard]] std::uint64_t unhandled() const noexcept { return unhandled_; }

private:
    struct Pending {
        MessageHeader header;
        Bytes payload;
    };

    // Under send_mutex_. A message queued for a node goes after the ones already waiting.
    void send_or_keep(int node, const MessageHeader& header, const Bytes& payload) {
        auto& queue = overflow_[static_cast<std::size_t>(node)];
        if (queue.empty() && parent_.try_send_one(node, header, payload)) return;
        queue.push_back(Pending{header, payload});
        overflowing_.store(true, std::memory_order_relaxed);
    }

    void deliver(const StoredMessage& message) {
        if (message.header.kind == MessageKind::reply || message.header.kind == MessageKind::reply_error) return;
        const auto handler = handlers_.find(message.header.type);
        const ProcessId from{message.from};
        const bool ask = message.header.kind == MessageKind::ask;
        if (handler == handlers_.end()) {
            ++unhandled_;
            logs_.report(spdlog::level::err, "a message from " + describe(directory_.at(message.from).info) +
                                                 " to the parent has a type no Supervisor::on() handles");
            if (ask) answer_error(from, message.header.ask, "the parent has no handler for it");
            return;
        }
        try {
            std::optional<ParentReply> reply = handler->second(message);
            if (!ask) return;
            if (reply) {
                reply_to(from, message.header.ask, MessageKind::reply, reply->type, reply->payload);
            } else {
                answer_error(from, message.header.ask, "the parent's handler returned no reply");
            }
        } catch (...) {
            const std::string text = describe_current_exception();
            if (ask) {
                answer_error(from, message.header.ask, "the receiver threw " + text, 1);
                return;
            }
            handler_failed_("handler threw " + text);
        }
    }

    void answer_error(ProcessId to, std::uint64_t ask, const std::string& text, std::uint64_t threw = 0) {
        reply_to(to, ask, MessageKind::reply_error, threw, copy_bytes(text));
    }

    void reply_to(ProcessId to, std::uint64_t ask, MessageKind kind, std::uint64_t type, const Bytes& payload) {
        const MessageHeader header{type, ask, static_cast<std::uint32_t>(payload.size()), kind, 0};
        const std::lock_guard lock{send_mutex_};
        send_or_keep(to.value, header, payload);
    }

    const ProcessDirectory& directory_;
    std::map<std::uint64_t, ParentHandler> handlers_;
    Messenger parent_;
    LogCollector& logs_;
    HandlerFailed handler_failed_;

    std::mutex send_mutex_;  // the parent's rings out, and overflow_
    std::vector<std::deque<Pending>> overflow_;
    std::atomic<bool> overflowing_{false};
    std::atomic<std::uint64_t> sends_{0};
    std::uint64_t unhandled_ = 0;
};

}  // namespace multiworker::detail
