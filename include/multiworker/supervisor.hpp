#pragma once

/// @file
/// Supervisor: named, long-running processes that talk by typed messages.

#include <multiworker/context.hpp>
#include <multiworker/detail/processor_support.hpp>
#include <multiworker/detail/supervisor_run.hpp>
#include <multiworker/message.hpp>
#include <multiworker/process_id.hpp>
#include <multiworker/supervisor_error.hpp>
#include <multiworker/supervisor_options.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace multiworker {

/// Runs a set of named processes, each `object.run(context)` on its own copy
/// of an object, that exchange messages through their Context; the parent
/// takes part through on() and send(). One run per Supervisor.
///
/// ```cpp
/// multiworker::Supervisor sup{{.log_file = "/tmp/agents.log"}};
/// sup.add("greeter", Greeter{});
/// sup.add("listener", Listener{}, {.copies = 3});
/// sup.on<int>([](int seen, multiworker::ProcessId from) { ... });
/// sup.run();
/// ```
class Supervisor {
public:
    /// A Supervisor with no process yet.
    explicit Supervisor(SupervisorOptions options = {}) : options_{std::move(options)} {}

    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;

    /// Registers `options.copies` processes named `name`, each running
    /// `object.run(context)` on its own copy of `object` (a restart starts
    /// from the object as registered here). Returns their ids. `T` may give
    /// its default options through `ProcessOptions process_options() const`
    /// (as Logger does); explicit options win.
    template <class T>
    std::vector<ProcessId> add(std::string name, T object) {
        ProcessOptions options = default_options(object);
        return add(std::move(name), std::move(object), std::move(options));
    }

    /// As add(name, object), with these options.
    template <class T>
    std::vector<ProcessId> add(std::string name, T object, ProcessOptions options) {
        static_assert(std::is_copy_constructible_v<T>, "multiworker: a process's object must be copyable");
        static_assert(
            requires(T & t, Context & c) { t.run(c); },
            "multiworker: a process's object needs a member `void run(multiworker::Context&)`");
        throw_if_started("add()");
        const ProcessOptions& chosen = options;
        if (chosen.copies == 0)
            throw std::invalid_argument{"multiworker: Supervisor::add(): copies must be at least 1"};
        if (chosen.mailbox_capacity == 0)
            throw std::invalid_argument{"multiworker: Supervisor::add(): mailbox_capacity must be at least 1"};
        std::vector<ProcessId> ids = directory_.add(name, chosen);
        for (std::size_t i = 0; i < ids.size(); ++i) {
            bodies_.push_back([object](Context& context) {
                T copy = object;
                copy.run(context);
            });
        }
        return ids;
    }

    /// Calls `handler(message, from)` (or `handler(message)`) in the parent
    /// for every `M` sent to `multiworker::parent`, from the run's event loop
    /// thread. For an ask, what the handler returns is the reply. A handler
    /// that throws for a plain message fails the run.
    template <class M, class Handler>
    void on(Handler handler) {
        static_assert(detail::serializable<M>,
                      "multiworker: a message type must be serializable (see multiworker/serialization.hpp)");
        throw_if_started("on()");
        handlers_[message_type<M>().key] =
            [this, handler = std::move(handler)](
                const detail::StoredMessage& stored) mutable -> std::optional<detail::ParentReply> {
            const M message = detail::decode_message<M>(stored, directory_);
            const ProcessId from{stored.from};
            if constexpr (requires { handler(message, from); }) {
                return to_reply(handler, message, from);
            } else {
                return to_reply(handler, message);
            }
        };
    }

    /// Sends `message` from the parent to a process, `broadcast` or
    /// `listeners`, while run() is underway (from a handler or any thread).
    /// Never waits: what a full mailbox cannot take yet waits in the parent,
    /// in order.
    template <class M>
    void send(ProcessId to, const M& message) {
        static_assert(detail::serializable<M>,
                      "multiworker: a message type must be serializable (see multiworker/serialization.hpp)");
        detail::Bytes payload;
        detail::encode_values(payload, message);
        const std::lock_guard lock{active_mutex_};
        if (active_run_ == nullptr) throw std::logic_error{"multiworker: Supervisor::send() outside run()"};
        active_run_->send(to, message_type<M>(), detail::MessageKind::plain, 0, payload);
    }

    /// Starts every process and returns when every non-resident process has
    /// ended and then every resident (told by ResidentsEnd). Throws
    /// ProcessFailed if a process failed (after stopping and reaping the
    /// others), Deadlock if none could go on, Interrupted on SIGINT/SIGTERM.
    void run() {
        throw_if_started("run()");
        started_ = true;
        if (directory_.size() == 1) throw std::logic_error{"multiworker: Supervisor::run() with no process added"};
        Options log_options;
        log_options.log_file = options_.log_file;
        log_options.logger = options_.logger;
        std::vector<detail::ProcessBody> bodies;
        bodies.emplace_back();  // node 0, the parent, has no body
        for (auto& body : bodies_) bodies.push_back(body);
        detail::SupervisorRun run{options_, directory_, std::move(bodies), handlers_,
                                  detail::log_destinations(log_options)};
        set_active_run(&run);
        try {
            run.run();
        } catch (...) {
            dead_letters_ = run.dead_letters();
            set_active_run(nullptr);
            throw;
        }
        dead_letters_ = run.dead_letters();
        set_active_run(nullptr);
    }

    /// Every process, in the order of add() (ids 1, 2, ...).
    [[nodiscard]] std::vector<ProcessInfo> processes() const {
        std::vector<ProcessInfo> all;
        for (std::size_t node = 1; node < directory_.size(); ++node)
            all.push_back(directory_.at(static_cast<int>(node)).info);
        return all;
    }

    /// After run(): messages that reached no one (sent to a process that had
    /// ended or died, or to the parent with no handler for their type).
    [[nodiscard]] std::uint64_t dead_letters() const noexcept { return dead_letters_; }

private:
    template <class T>
    static ProcessOptions default_options(const T& object) {
        if constexpr (requires {
                          { object.process_options() } -> std::convertible_to<ProcessOptions>;
                      }) {
            return object.process_options();
        } else {
            return ProcessOptions{};
        }
    }

    template <class Handler, class... Args>
    static std::optional<detail::ParentReply> to_reply(Handler& handler, const Args&... args) {
        using R = decltype(handler(args...));
        if constexpr (std::is_void_v<R>) {
            handler(args...);
            return std::nullopt;
        } else {
            detail::ParentReply reply{message_type<R>().key, {}};
            detail::encode_values(reply.payload, handler(args...));
            return reply;
        }
    }

    void set_active_run(detail::SupervisorRun* run) {
        const std::lock_guard lock{active_mutex_};
        active_run_ = run;
    }

    void throw_if_started(const char* what) const {
        if (started_) throw std::logic_error{std::string{"multiworker: Supervisor::"} + what + " after run()"};
    }

    SupervisorOptions options_;
    detail::ProcessDirectory directory_;
    std::vector<detail::ProcessBody> bodies_;
    std::map<std::uint64_t, detail::ParentHandler> handlers_;
    std::mutex active_mutex_;  // send() from other threads against the run's end
    detail::SupervisorRun* active_run_ = nullptr;
    std::uint64_t dead_letters_ = 0;
    bool started_ = false;
};

}  // namespace multiworker
