#pragma once

/// @file
/// Context: what a Supervisor's process has to talk with: its own id, the
/// ids of the others by name, send, receive, ask and reply, serve.

#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/messenger.hpp>
#include <multiworker/detail/serializable.hpp>
#include <multiworker/message.hpp>
#include <multiworker/process_id.hpp>
#include <multiworker/supervisor_error.hpp>

#include <boost/core/demangle.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <variant>
#include <vector>

namespace multiworker {

class Context;

namespace detail {
void end_of_body(Context& context);

template <class M>
M decode_message(const StoredMessage& message, const ProcessDirectory& directory) {
    if constexpr (std::is_same_v<M, ResidentsEnd>) {
        return M{};
    } else {
        try {
            return std::get<0>(decode_values<M>(message.payload));
        } catch (const std::exception& e) {
            throw std::runtime_error{"multiworker: a message of type " + message_type<M>().name + " from " +
                                     describe(directory.at(message.from).info) + " does not decode: " + e.what()};
        }
    }
}

template <class... Ms>
std::variant<Ms...> decode_variant(const StoredMessage& message, const ProcessDirectory& directory) {
    std::optional<std::variant<Ms...>> value;
    ((message.header.type == message_type<Ms>().key && !value
          ? (void)value.emplace(std::in_place_type<Ms>, decode_message<Ms>(message, directory))
          : void()),
     ...);
    return std::move(*value);
}

template <class... Ms>
bool is_one_of(const StoredMessage& message) {
    return ((message.header.type == message_type<Ms>().key) || ...);
}

/// "std::runtime_error: no route": what a thrown exception says, with its type.
inline std::string describe_current_exception() {
    try {
        throw;
    } catch (const std::exception& e) {
        return boost::core::demangle(typeid(e).name()) + ": " + e.what();
    } catch (...) {
        return "an exception of unknown type";
    }
}
}  // namespace detail

/// A process's handle on the others, passed to its `run(Context&)`. Used from
/// the process's own thread only.
class Context {
public:
    /// The clock of timeouts.
    using Clock = std::chrono::steady_clock;

    /// Made by the library for each process.
    explicit Context(detail::Messenger& messenger) noexcept : messenger_{messenger} {}

    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    /// This process: its id, name and index among those of its name.
    [[nodiscard]] const ProcessInfo& self() const { return directory().at(messenger_.node()).info; }

    /// Every process named `name`, in the order they were added. Throws
    /// std::invalid_argument if none is: a misspelt name is no empty list.
    [[nodiscard]] std::vector<ProcessId> ids(std::string_view name) const {
        std::vector<ProcessId> found = directory().ids_of(name);
        if (found.empty()) throw std::invalid_argument{"multiworker: no process is named '" + std::string{name} + "'"};
        return found;
    }

    /// What the process of that id is.
    [[nodiscard]] const ProcessInfo& info(ProcessId id) const {
        directory().check_address(id);
        return directory().at(id.value).info;
    }

    /// Who sent the message the last receive() returned (or serve() handles).
    [[nodiscard]] ProcessId sender() const noexcept { return ProcessId{last_sender_}; }

    /// The parent asked the processes to stop (a failure elsewhere, Ctrl-C):
    /// a process that computes for long should look now and then, and return.
    [[nodiscard]] bool stop_requested() const noexcept {
        return messenger_.status().stop_requested.load(std::memory_order_relaxed) != 0;
    }

    /// Sends `message` to a process, the parent, `broadcast` or `listeners`
    /// (and a copy to every process listening to its type). Waits while a
    /// receiver's mailbox is full. Throws NobodyListening for `listeners`
    /// when no process listens to the type.
    template <class M>
    void send(ProcessId to, const M& message) {
        send_to(messenger_.destinations(to, message_type<M>()), message, std::nullopt);
    }

    /// As send(), to each of `to` (a copy each, in order).
    template <class M>
    void send(const std::vector<ProcessId>& to, const M& message) {
        send_to(destinations(to, message_type<M>()), message, std::nullopt);
    }

    /// As send(), waiting at most `timeout` for mailbox space; false if it
    /// passed (the message then reached only the receivers before the full one).
    template <class M, class Rep, class Period>
    bool send(ProcessId to, const M& message, std::chrono::duration<Rep, Period> timeout) {
        return send_to(messenger_.destinations(to, message_type<M>()), message, Clock::now() + timeout);
    }

    /// The next message of one of the types `Ms`, or empty after `timeout`.
    /// A message of another type is kept, in order, for a later receive
    /// that asks for its type; the oldest kept message of an asked type
    /// comes first.
    template <class... Ms, class Rep, class Period>
    std::optional<std::variant<Ms...>> receive(std::chrono::duration<Rep, Period> timeout) {
        auto message = take<Ms...>(Clock::now() + timeout);
        if (!message) return std::nullopt;
        return detail::decode_variant<Ms...>(*message, directory());
    }

    /// As receive(timeout), without a bound. If every live process waits
    /// like this with no message in flight, the run ends with Deadlock.
    template <class... Ms>
    std::variant<Ms...> receive() {
        return detail::decode_variant<Ms...>(*take<Ms...>(std::nullopt), directory());
    }

    /// Sends `request` to process `to` and waits for its reply (see reply()
    /// and serve()). Throws AskFailed if the receiver's handler threw, if the
    /// receiver ended, died or moved on without replying, or after `timeout`.
    template <class Reply, class Request, class Rep, class Period>
    Reply ask(ProcessId to, const Request& request, std::chrono::duration<Rep, Period> timeout) {
        static_assert(detail::serializable<Reply> && detail::serializable<Request>,
                      "multiworker: a message type must be serializable (see multiworker/serialization.hpp)");
        if (to.value < 0) throw std::invalid_argument{"multiworker: ask() goes to one process or the parent"};
        const Clock::time_point deadline = Clock::now() + timeout;
        const std::uint64_t number = ++asks_;
        const auto incarnation = receiver_incarnation(to);
        detail::Destinations copies = messenger_.destinations(to, message_type<Request>());
        const detail::Bytes payload = encode(request);
        const std::span<const int> nodes{copies.data(), copies.size()};
        messenger_.send(nodes.first(1), header_for<Request>(payload, detail::MessageKind::ask, number), payload,
                        deadline);
        messenger_.send(nodes.subspan(1), header_for<Request>(payload, detail::MessageKind::plain, 0), payload,
                        deadline);
        const auto is_reply = [&](const detail::StoredMessage& m) {
            return m.from == to.value && m.header.ask == number &&
                   (m.header.kind == detail::MessageKind::reply || m.header.kind == detail::MessageKind::reply_error);
        };
        for (;;) {
            auto answer =
                messenger_.receive(is_reply, std::min(deadline, Clock::now() + std::chrono::milliseconds{10}));
            if (!answer && receiver_gone(to, incarnation)) answer = messenger_.receive(is_reply, Clock::now());
            if (answer) return read_reply<Reply>(*answer);
            if (receiver_gone(to, incarnation)) {
                throw AskFailed{AskFailed::Reason::receiver_ended,
                                "multiworker: " + describe(info(to)) + " ended without replying to an ask"};
            }
            if (Clock::now() >= deadline) {
                throw AskFailed{AskFailed::Reason::timeout,
                                "multiworker: no reply from " + describe(info(to)) + " within the timeout"};
            }
        }
    }

    /// Replies to the ask that the last receive() returned. Throws
    /// std::logic_error if it was no ask, or was answered already. An ask
    /// left unanswered when the next receive() starts, or when run()
    /// returns, is answered with AskFailed for its asker.
    template <class Reply>
    void reply(const Reply& value) {
        if (!pending_ask_) throw std::logic_error{"multiworker: reply() without an ask to answer"};
        const PendingAsk ask = *pending_ask_;
        pending_ask_.reset();
        const detail::Bytes payload = encode(value);
        const int to[] = {ask.from};
        messenger_.send(to, header_for<Reply>(payload, detail::MessageKind::reply, ask.number), payload, std::nullopt);
    }

    /// Calls `handler.on(message)` (or `handler.on(message, context)`) for
    /// every message of the types `Ms`, until the handler calls
    /// end_serving(), or a ResidentsEnd arrives (handled first if the handler
    /// takes it). For an ask, what on() returns is the reply, and an
    /// exception it throws goes to the asker instead of ending this process.
    template <class... Ms, class Handler>
    void serve(Handler& handler) {
        static_assert(sizeof...(Ms) > 0, "multiworker: serve<Ms...>(handler) needs the message types");
        serving_ = true;
        while (serving_) {
            detail::StoredMessage message = *take<Ms..., ResidentsEnd>(std::nullopt);
            dispatch<Ms...>(handler, message);
            if (message.header.type == message_type<ResidentsEnd>().key) serving_ = false;
        }
    }

    /// Makes serve() return once the handler it is calling returns.
    void end_serving() noexcept { serving_ = false; }

private:
    friend void detail::end_of_body(Context&);

    struct PendingAsk {
        int from;
        std::uint64_t number;
    };

    [[nodiscard]] const detail::ProcessDirectory& directory() const noexcept { return messenger_.directory(); }

    template <class M>
    static detail::Bytes encode(const M& message) {
        static_assert(detail::serializable<M>,
                      "multiworker: a message type must be serializable (see multiworker/serialization.hpp)");
        detail::Bytes payload;
        detail::encode_values(payload, message);
        return payload;
    }

    template <class M>
    static detail::MessageHeader header_for(const detail::Bytes& payload, detail::MessageKind kind, std::uint64_t ask) {
        return {message_type<M>().key, ask, static_cast<std::uint32_t>(payload.size()), kind, 0};
    }

    [[nodiscard]] detail::Destinations destinations(const std::vector<ProcessId>& to, const MessageType& type) const {
        detail::Destinations nodes;
        for (const ProcessId id : to) {
            for (const int node : messenger_.destinations(id, type)) {
                if (std::find(nodes.begin(), nodes.end(), node) == nodes.end()) nodes.push_back(node);
            }
        }
        return nodes;
    }

    template <class M>
    bool send_to(const detail::Destinations& nodes, const M& message, detail::Messenger::Deadline deadline) {
        const detail::Bytes payload = encode(message);
        return messenger_.send({nodes.data(), nodes.size()}, header_for<M>(payload, detail::MessageKind::plain, 0),
                               payload, deadline);
    }

    template <class... Ms>
    std::optional<detail::StoredMessage> take(detail::Messenger::Deadline deadline) {
        static_assert(sizeof...(Ms) > 0, "multiworker: receive<Ms...>() needs the message types");
        answer_pending_ask("the receiver moved on without replying");
        auto message = messenger_.receive(
            [](const detail::StoredMessage& m) {
                return m.header.kind != detail::MessageKind::reply &&
                       m.header.kind != detail::MessageKind::reply_error && detail::is_one_of<Ms...>(m);
            },
            deadline);
        if (message) {
            last_sender_ = message->from;
            if (message->header.kind == detail::MessageKind::ask)
                pending_ask_ = PendingAsk{message->from, message->header.ask};
        }
        return message;
    }

    template <class... Ms, class Handler>
    void dispatch(Handler& handler, const detail::StoredMessage& message) {
        try {
            const bool handled = (dispatch_as<Ms>(handler, message) || ...);
            if (!handled && message.header.type == message_type<ResidentsEnd>().key) {
                if constexpr (
                    requires { handler.on(ResidentsEnd{}, *this); } || requires { handler.on(ResidentsEnd{}); })
                    call(handler, ResidentsEnd{});
            }
        } catch (...) {
            if (!pending_ask_) throw;
            const std::string text = detail::describe_current_exception();
            answer_pending_ask("the receiver threw " + text, true);
        }
    }

    // Hands `message` to the handler if it is an M; true if it was.
    template <class M, class Handler>
    bool dispatch_as(Handler& handler, const detail::StoredMessage& message) {
        if (message.header.type != message_type<M>().key) return false;
        static_assert(
            requires(const M& m) { handler.on(m, *this); } || requires(const M& m) { handler.on(m); },
            "multiworker: serve<Ms...>: the handler has no on(const M&) for one of Ms");
        call(handler, detail::decode_message<M>(message, directory()));
        return true;
    }

    // Calls on(m, context) or on(m); what it returns is the reply to an ask.
    template <class M, class Handler>
    void call(Handler& handler, const M& m) {
        if constexpr (requires { handler.on(m, *this); }) {
            if constexpr (std::is_void_v<decltype(handler.on(m, *this))>) {
                handler.on(m, *this);
            } else {
                answer(handler.on(m, *this));
            }
        } else if constexpr (std::is_void_v<decltype(handler.on(m))>) {
            handler.on(m);
        } else {
            answer(handler.on(m));
        }
    }

    // What a handler returned: the reply, if the message was an ask.
    template <class R>
    void answer(const R& value) {
        if (pending_ask_) reply(value);
    }

    // A reply_error's type field says why: 1 the handler threw, 0 no reply came.
    // A view: every receive() passes its text, and almost never sends it.
    void answer_pending_ask(std::string_view text, bool threw = false) {
        if (!pending_ask_) return;
        const PendingAsk ask = *pending_ask_;
        pending_ask_.reset();
        const int to[] = {ask.from};
        const detail::MessageHeader header{threw ? 1u : 0u, ask.number, static_cast<std::uint32_t>(text.size()),
                                           detail::MessageKind::reply_error, 0};
        messenger_.send(to, header, std::span<const char>{text.data(), text.size()}, std::nullopt);
    }

    [[nodiscard]] std::uint32_t receiver_incarnation(ProcessId to) const {
        return messenger_.mesh().status(to.value).incarnation.load(std::memory_order_acquire);
    }
    [[nodiscard]] bool receiver_gone(ProcessId to, std::uint32_t incarnation) const {
        const detail::NodeStatus& status = messenger_.mesh().status(to.value);
        return status.accepting.load(std::memory_order_acquire) == 0 ||
               status.incarnation.load(std::memory_order_acquire) != incarnation;
    }

    template <class Reply>
    Reply read_reply(const detail::StoredMessage& answer) {
        if (answer.header.kind == detail::MessageKind::reply_error) {
            throw AskFailed{
                answer.header.type == 1 ? AskFailed::Reason::receiver_threw : AskFailed::Reason::receiver_ended,
                "multiworker: " + describe(directory().at(answer.from).info) + ": " +
                    std::string{answer.payload.data(), answer.payload.size()}};
        }
        if (answer.header.type != message_type<Reply>().key) {
            throw AskFailed{AskFailed::Reason::receiver_threw,
                            "multiworker: " + describe(directory().at(answer.from).info) + " replied with a " +
                                "message of another type than " + message_type<Reply>().name};
        }
        return detail::decode_message<Reply>(answer, directory());
    }

    detail::Messenger& messenger_;
    int last_sender_ = 0;
    std::optional<PendingAsk> pending_ask_;
    std::uint64_t asks_ = 0;
    bool serving_ = false;
};

namespace detail {
/// Called by the library once run() has returned: an ask still pending is answered.
inline void end_of_body(Context& context) {
    context.answer_pending_ask("the receiver returned from run() without replying");
}
}  // namespace detail

}  // namespace multiworker
