#pragma once

// The whois protocol (RFC 3912) for the whois example, both ends of it: the
// client asks a real registry or the embedded server the same way, so the
// example works without internet and, with --server whois.arin.net:43, against
// the real thing.
//
// RFC 3912 in brief: the client connects to TCP port 43, sends one query line
// ending in CR LF; the server sends its answer, any number of lines, and closes
// the connection, which is the only end-of-answer mark there is.
//
// WhoisServer answers from made-up registration data: the owner of an address
// is one of example_owners, chosen by the address's first two octets
// (expected_owner() says which), so a test can predict the example's report.
// Each answer waits a configurable delay first, standing in for the network
// round trip and the registry's lookup, which is what makes the lookups worth
// running in parallel.

#include "ipv4.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

namespace whois_example {

/// The organisations the embedded server's made-up registry knows; the owner
/// of an address is one of these, never anything else, so a report can be
/// checked entry by entry.
inline constexpr std::array<std::string_view, 8> example_owners{
    "Example Networks Ltd", "Acme Hosting Inc",     "Globex Telecom SA",   "Initech Cloud Services",
    "Northwind Broadband",  "Contoso Data Centres", "Fabrikam Fibre GmbH", "Tyrell Mobile Co"};

namespace detail {

using Clock = std::chrono::steady_clock;

/// Closes its file descriptor when it goes, so that no exception path of the
/// server or the client leaks a socket.
class UniqueFd {
public:
    /// No descriptor.
    UniqueFd() noexcept = default;
    /// Takes `fd` over; a negative one means none (a failed socket() call).
    explicit UniqueFd(int fd) noexcept : fd_{fd} {}
    /// Moves ownership: exactly one object closes the descriptor.
    UniqueFd(UniqueFd&& other) noexcept : fd_{std::exchange(other.fd_, -1)} {}
    /// Closes the descriptor held so far, then takes `other`'s.
    UniqueFd& operator=(UniqueFd&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    /// The descriptor, still owned, for the system calls.
    [[nodiscard]] int get() const noexcept { return fd_; }
    /// Whether there is one.
    explicit operator bool() const noexcept { return fd_ >= 0; }
    /// Closes it now rather than at destruction (the listening socket at stop()).
    void reset() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

/// Throws the std::system_error for `error` (an errno value, saved by the
/// caller right after the failing call, before building the message can
/// overwrite it), naming the call and its target in what().
[[noreturn]] inline void throw_system_error(int error, const std::string& what) {
    throw std::system_error{error, std::system_category(), what};
}

/// throw_system_error for errno as it is now, with a fixed message: nothing
/// runs between the failing call and the read of errno.
[[noreturn]] inline void throw_errno(const char* what) {
    const int error = errno;
    throw_system_error(error, what);
}

/// getaddrinfo()'s own error codes (EAI_*), which are not errno values: a
/// failed name lookup is still a std::system_error, with gai_strerror's text.
inline const std::error_category& getaddrinfo_category() noexcept {
    struct Category final : std::error_category {
        [[nodiscard]] const char* name() const noexcept override { return "getaddrinfo"; }
        [[nodiscard]] std::string message(int code) const override { return ::gai_strerror(code); }
    };
    static const Category category;
    return category;
}

/// How a wait_for() ended.
enum class Wait { ready, stopped, timed_out };

/// Waits until `fd` has one of `events`, `wake` is readable, or `deadline`
/// passes, whichever comes first, EINTR aside: the single blocking point of
/// both ends, so that every wait has a deadline and every server wait ends
/// at stop(). A negative `fd` or `wake` is not waited for (poll ignores it),
/// Clock::time_point::max() is no deadline. An error or hang-up on `fd`
/// counts as ready: the next call on it reports it. Throws std::system_error
/// if poll() fails.
inline Wait wait_for(int fd, short events, int wake, Clock::time_point deadline) {
    for (;;) {
        int timeout_ms = -1;
        if (deadline != Clock::time_point::max()) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
            timeout_ms = left <= 0 ? 0 : (left > INT_MAX ? INT_MAX : static_cast<int>(left));
        }
        pollfd fds[2] = {{fd, events, 0}, {wake, POLLIN, 0}};
        const int count = ::poll(fds, 2, timeout_ms);
        if (count < 0) {
            const int error = errno;
            if (error == EINTR) continue;
            throw_system_error(error, "poll");
        }
        if (fds[1].revents != 0) return Wait::stopped;
        if (fds[0].revents != 0) return Wait::ready;
        if (count == 0 && Clock::now() >= deadline) return Wait::timed_out;
    }
}

/// `text` without the blanks around it: whois lines are padded for
/// alignment and may end in CR.
inline std::string_view trim(std::string_view text) noexcept {
    constexpr std::string_view blanks = " \t\r\n\f\v";
    const std::size_t first = text.find_first_not_of(blanks);
    if (first == std::string_view::npos) return {};
    return text.substr(first, text.find_last_not_of(blanks) - first + 1);
}

/// Whether `a` and `b` are equal ignoring ASCII case: whois keys are written
/// "OrgName" by ARIN, "org-name" by RIPE and in any case by others.
inline bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

/// The index into example_owners of the owner of every address in `address`'s
/// /16: a multiplicative hash of the first two octets (top 3 bits), so
/// neighbouring networks have different owners and a few hundred random
/// addresses spread over all eight.
inline std::size_t owner_index(const Ipv4& address) noexcept {
    const std::uint32_t prefix = (std::uint32_t{address[0]} << 8) | std::uint32_t{address[1]};
    return static_cast<std::size_t>((prefix * 2654435761u) >> 29);
}

/// A short handle for an owner ("EXAMPLE-NETWORKS-LTD" style upper case, as
/// registries' handles look), for the OrgId line.
inline std::string owner_handle(std::string_view owner) {
    std::string handle;
    for (const char c : owner) {
        if (c >= 'a' && c <= 'z') {
            handle += static_cast<char>(c - 'a' + 'A');
        } else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
            handle += c;
        } else if (!handle.empty() && handle.back() != '-') {
            handle += '-';
        }
    }
    return handle;
}

}  // namespace detail

/// What the embedded server answers to `query` (one query line without its
/// CR LF), in the style of ARIN's answers: comment lines, then a network
/// block (the address's /16) and its organisation with an OrgName: line. A
/// query that is not an IPv4 address gets a "no match" answer without one.
/// Public so that a test can compare a transported answer byte for byte.
inline std::string embedded_answer(std::string_view query) {
    const std::string_view asked = detail::trim(query);
    std::string answer =
        "#\n"
        "# multiworker whois example: made-up registration data from an embedded\n"
        "# RFC 3912 server. No real registry was asked.\n"
        "#\n\n";
    const std::optional<Ipv4> address = parse_ipv4(asked);
    if (!address) {
        std::string shown;  // echoed printable only: the query came off the network
        for (const char c : asked.substr(0, 100)) shown += (c >= ' ' && c <= '~') ? c : '?';
        return answer + "No match found for \"" + shown + "\" (this server knows IPv4 addresses only).\n";
    }
    const std::string_view owner = example_owners[detail::owner_index(*address)];
    const std::string handle = detail::owner_handle(owner);
    const std::string net = std::to_string((*address)[0]) + "." + std::to_string((*address)[1]);
    answer += "NetRange:       " + net + ".0.0 - " + net + ".255.255\n";
    answer += "CIDR:           " + net + ".0.0/16\n";
    answer += "NetName:        EXAMPLE-" + std::to_string((*address)[0]) + "-" + std::to_string((*address)[1]) + "\n";
    answer += "NetType:        Direct Allocation\n";
    answer += "Organization:   " + std::string{owner} + " (" + handle + ")\n";
    answer += "RegDate:        2026-12-02\n";
    answer += "Comment:        Queried for " + std::string{asked} + "\n\n";
    answer += "OrgName:        " + std::string{owner} + "\n";
    answer += "OrgId:          " + handle + "\n";
    answer += "Country:        ZZ\n";
    return answer;
}

/// The owner that the embedded server reports for `ip` (as owner_from_answer
/// reads it from embedded_answer(ip)): one of example_owners for an IPv4
/// address, "unknown" for anything else. Lets a test predict the example's
/// report without a server.
inline std::string expected_owner(std::string_view ip) {
    const std::optional<Ipv4> address = parse_ipv4(detail::trim(ip));
    if (!address) return "unknown";
    return std::string{example_owners[detail::owner_index(*address)]};
}

/// The owner named in a whois answer: the value of its first OrgName: line
/// (ARIN), org-name: (RIPE, APNIC, AFRINIC) or owner: (LACNIC), keys in any
/// case, blanks trimmed; "unknown" when there is none with a value. Registries
/// word their answers differently, and this is the one field the example
/// reports.
inline std::string owner_from_answer(std::string_view answer) {
    while (!answer.empty()) {
        const std::size_t end = answer.find('\n');
        const std::string_view line = answer.substr(0, end);
        answer = end == std::string_view::npos ? std::string_view{} : answer.substr(end + 1);
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        const std::string_view key = line.substr(0, colon);  // indented lines are continuations: not a key
        if (!detail::equal_ignoring_case(key, "OrgName") && !detail::equal_ignoring_case(key, "org-name") &&
            !detail::equal_ignoring_case(key, "owner")) {
            continue;
        }
        const std::string_view value = detail::trim(line.substr(colon + 1));
        if (!value.empty()) return std::string{value};
    }
    return "unknown";
}

/// An RFC 3912 whois server on 127.0.0.1, on a port the kernel picks (so that
/// any number can run at once, in tests too), answering embedded_answer() for
/// each query after `delay`. Runs from construction to stop() or destruction.
///
/// Threads: one accepting connections, plus one per open connection (at most
/// `max_connections` at a time; more clients wait in the listen backlog, not
/// refused), all in the constructing process and all joined by stop(). A
/// connection is closed after its answer, after 10 s without a complete query
/// line, or at stop(), which interrupts every wait (a read, the delay, a
/// write) at once, so it returns promptly even while clients are connected;
/// their unanswered queries end with the connection closed. No signal
/// handlers; writes use MSG_NOSIGNAL, so a client gone early raises no
/// SIGPIPE.
///
/// Forking: its threads are not in a forked child. The object's copy in a
/// child does nothing when destroyed there (the owner's threads and sockets
/// stay the owner's; the child's copies of the descriptors close when it
/// exits). Since a fork copies the locks that other threads hold
/// at that moment, fork (start a multiworker Processor or Pipeline) while no
/// query is being answered: an idle server's threads wait in poll() holding
/// no lock.
class WhoisServer {
public:
    /// Listens before returning, so clients may connect at once. Throws
    /// std::system_error naming the call (pipe2, socket, bind, listen,
    /// getsockname, or std::thread's own) if it cannot, std::invalid_argument
    /// for a negative delay or no connections.
    explicit WhoisServer(std::chrono::milliseconds delay = std::chrono::milliseconds{0},
                         std::size_t max_connections = 64)
        : state_{std::make_unique<State>()} {
        if (delay.count() < 0) throw std::invalid_argument{"WhoisServer: negative delay"};
        if (max_connections == 0) throw std::invalid_argument{"WhoisServer: max_connections must be at least 1"};
        State& state = *state_;
        state.delay = delay;
        state.max_connections = max_connections;

        int wake[2];
        if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) detail::throw_errno("pipe2 (whois server)");
        state.wake_read = detail::UniqueFd{wake[0]};
        state.wake_write = detail::UniqueFd{wake[1]};

        state.listener = detail::UniqueFd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
        if (!state.listener) detail::throw_errno("socket (whois server)");
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = 0;  // the kernel picks a free port
        if (::bind(state.listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
            detail::throw_errno("bind to 127.0.0.1:0 (whois server)");
        }
        if (::listen(state.listener.get(), SOMAXCONN) != 0) detail::throw_errno("listen (whois server)");
        socklen_t length = sizeof address;
        if (::getsockname(state.listener.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
            detail::throw_errno("getsockname (whois server)");
        }
        port_ = ntohs(address.sin_port);
        state.acceptor = std::thread{[shared = &state] { accept_connections(*shared); }};
    }

    WhoisServer(const WhoisServer&) = delete;
    WhoisServer& operator=(const WhoisServer&) = delete;

    /// stop(). In a forked copy, nothing: that process has none of the
    /// threads, and the state is left to the process's end.
    ~WhoisServer() {
        if (::getpid() != owner_) {
            static_cast<void>(state_.release());  // its std::threads name the owner's threads: never join them here
            return;
        }
        stop();
    }

    /// The port it listens on, on 127.0.0.1: what clients connect to
    /// (whois_query("127.0.0.1", server.port(), ...)). Still the same after stop().
    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }

    /// How many answers it has sent completely. A client's whois_query()
    /// returns only after the count includes its answer (the count goes up
    /// before the server's end of the connection is closed).
    [[nodiscard]] std::size_t answered() const noexcept { return state_->answered.load(); }

    /// Stops accepting, ends every connection's wait, joins every thread and
    /// closes the listening socket; later connections are refused. Returns
    /// within milliseconds whatever the clients do. Idempotent, from any
    /// thread but the server's own (there is no callback into user code that
    /// could run there). Does nothing in a forked copy.
    void stop() noexcept {
        if (!state_ || ::getpid() != owner_) return;
        State& state = *state_;
        const std::lock_guard one_stop{state.stop_mutex};  // a second caller waits for the first to finish
        {
            const std::lock_guard lock{state.mutex};
            state.stopping = true;
        }
        state.changed.notify_all();
        const char byte = 1;  // never read: the pipe stays readable, so every present and future wait ends
        if (::write(state.wake_write.get(), &byte, 1) < 0) {
            // Only EAGAIN is possible (a full pipe), and then it is readable already.
        }
        if (state.acceptor.joinable()) state.acceptor.join();
        std::list<Connection> connections;  // no more to come: the acceptor has gone
        {
            const std::lock_guard lock{state.mutex};
            connections.swap(state.connections);
        }
        for (Connection& connection : connections) connection.thread.join();
        // shutdown() first: it ends the listening on the socket itself, so connections are refused even
        // while a forked child (a multiworker fork server, a worker) still holds a copy of the descriptor.
        ::shutdown(state.listener.get(), SHUT_RDWR);
        state.listener.reset();
    }

private:
    // One connection's thread; `finished` (under State::mutex) is set as its last act, so the
    // acceptor knows it can join it without waiting.
    struct Connection {
        std::thread thread;
        bool finished = false;
    };

    // Everything the threads use, on the heap: it stays at one address while they run, and a
    // forked copy can leave it alone (see the destructor).
    struct State {
        std::chrono::milliseconds delay{0};
        std::size_t max_connections = 0;
        detail::UniqueFd listener;
        detail::UniqueFd wake_read;  // readable once stop() has begun
        detail::UniqueFd wake_write;
        std::mutex mutex;  // stopping, active, connections and each Connection::finished
        std::condition_variable changed;
        bool stopping = false;
        std::size_t active = 0;  // connection threads not finished yet
        std::list<Connection> connections;
        std::thread acceptor;
        std::mutex stop_mutex;
        std::atomic<std::size_t> answered{0};
    };

    static constexpr std::chrono::seconds query_timeout{10};  // to send a whole query line
    static constexpr std::size_t longest_query = 1024;

    // The acceptor thread: accepts until stop(), a thread for each connection, joining finished
    // ones as it goes. Errors of the moment (a client gone before accept, out of descriptors)
    // pause it briefly instead of ending it.
    static void accept_connections(State& state) noexcept {
        const auto pause = [&state] {
            try {
                detail::wait_for(-1, 0, state.wake_read.get(), detail::Clock::now() + std::chrono::milliseconds{100});
            } catch (...) {
                std::this_thread::sleep_for(std::chrono::milliseconds{100});
            }
        };
        for (;;) {
            {
                std::unique_lock lock{state.mutex};
                state.changed.wait(lock, [&state] { return state.stopping || state.active < state.max_connections; });
                if (state.stopping) return;
            }
            join_finished(state);
            detail::Wait waited = detail::Wait::stopped;
            try {
                waited = detail::wait_for(state.listener.get(), POLLIN, state.wake_read.get(),
                                          detail::Clock::time_point::max());
            } catch (...) {
                pause();
                continue;
            }
            if (waited == detail::Wait::stopped) return;
            detail::UniqueFd connection{
                ::accept4(state.listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)};
            if (!connection) {
                const int error = errno;
                if (error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM) pause();
                continue;  // EAGAIN, ECONNABORTED, EINTR, ...: the next one
            }
            const std::lock_guard lock{state.mutex};
            if (state.stopping) return;  // `connection` closes unanswered
            try {
                Connection& record = state.connections.emplace_back();
                try {
                    record.thread =
                        std::thread{[shared = &state, own = &record, client = std::move(connection)]() mutable {
                            serve(*shared, std::move(client));
                            {
                                const std::lock_guard finished{shared->mutex};
                                own->finished = true;
                                --shared->active;
                            }
                            shared->changed.notify_all();
                        }};
                    ++state.active;
                } catch (...) {
                    state.connections.pop_back();  // no thread: the socket closed with the lambda
                }
            } catch (...) {
                // emplace_back's std::bad_alloc: the connection closes unanswered
            }
        }
    }

    // Joins the connection threads that have finished, outside the lock.
    static void join_finished(State& state) noexcept {
        std::list<Connection> finished;
        {
            const std::lock_guard lock{state.mutex};
            for (auto it = state.connections.begin(); it != state.connections.end();) {
                const auto next = std::next(it);
                if (it->finished) finished.splice(finished.end(), state.connections, it);
                it = next;
            }
        }
        for (Connection& connection : finished) connection.thread.join();
    }

    // One connection: read a query line, wait the delay, write the answer, close. Every wait ends
    // at stop(); any failure just closes the connection.
    static void serve(State& state, detail::UniqueFd connection) noexcept {
        try {
            const int fd = connection.get();
            const int wake = state.wake_read.get();
            const auto deadline = detail::Clock::now() + query_timeout;
            std::string query;
            bool too_long = false;
            for (;;) {
                if (const std::size_t newline = query.find('\n'); newline != std::string::npos) {
                    query.resize(newline);
                    break;
                }
                if (query.size() > longest_query) {
                    too_long = true;
                    break;
                }
                if (detail::wait_for(fd, POLLIN, wake, deadline) != detail::Wait::ready) return;
                char buffer[512];
                const ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
                if (got < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                    return;
                }
                if (got == 0) {
                    if (query.empty()) return;  // connected and closed: nothing asked
                    break;                      // a last line without CR LF: answered all the same
                }
                query.append(buffer, static_cast<std::size_t>(got));
            }
            if (!query.empty() && query.back() == '\r') query.pop_back();

            if (state.delay.count() > 0 &&
                detail::wait_for(-1, 0, wake, detail::Clock::now() + state.delay) == detail::Wait::stopped) {
                return;
            }
            const std::string answer =
                too_long ? "% Error: a query line is at most " + std::to_string(longest_query) + " bytes.\n"
                         : embedded_answer(query);
            std::size_t sent = 0;
            const auto write_deadline = detail::Clock::now() + query_timeout;
            while (sent < answer.size()) {
                const ssize_t wrote = ::send(fd, answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL);
                if (wrote >= 0) {
                    sent += static_cast<std::size_t>(wrote);
                } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    if (detail::wait_for(fd, POLLOUT, wake, write_deadline) != detail::Wait::ready) return;
                } else if (errno != EINTR) {
                    return;
                }
            }
            ++state.answered;
            // The end of the answer. Then read until the client closes its end too (briefly): closing
            // with unread input would reset the connection, which can destroy the answer in flight.
            ::shutdown(fd, SHUT_WR);
            const auto drain_deadline = detail::Clock::now() + std::chrono::seconds{2};
            while (detail::wait_for(fd, POLLIN, wake, drain_deadline) == detail::Wait::ready) {
                char buffer[512];
                const ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
            }
        } catch (...) {
            // std::bad_alloc or a failed poll(): the connection closes
        }
    }

    pid_t owner_ = ::getpid();  // the process whose threads these are
    std::unique_ptr<State> state_;
    std::uint16_t port_ = 0;
};

/// Asks the whois server at `host`:`port` (a name or an address, IPv4 or
/// IPv6: "whois.arin.net", 43 or "127.0.0.1", server.port()) about `query`
/// (one line, sent with CR LF) and returns its whole answer, read until the
/// server closes the connection. One connection per query, as RFC 3912 has it.
///
/// `timeout` bounds connecting, sending and receiving together; when it
/// passes, throws std::system_error with std::errc::timed_out. The name lookup
/// (getaddrinfo) is not bounded by it: instant for an address, the resolver's
/// own timeouts for a name. Throws std::system_error naming the call and the
/// server when the lookup, connect, send or receive fails (a getaddrinfo error
/// in getaddrinfo_category), std::runtime_error when the server closes without
/// sending anything (as WhoisServer does to the queries it has not answered
/// when it stops) or sends over 4 MiB, std::invalid_argument for a query with
/// a line break or a timeout <= 0. Blocks only the calling thread; installs no
/// signal handler (MSG_NOSIGNAL).
inline std::string whois_query(const std::string& host, std::uint16_t port, const std::string& query,
                               std::chrono::milliseconds timeout) {
    if (query.find_first_of("\r\n") != std::string::npos) {
        throw std::invalid_argument{"whois_query: the query must be a single line"};
    }
    if (timeout.count() <= 0) throw std::invalid_argument{"whois_query: the timeout must be positive"};
    const auto deadline = detail::Clock::now() + timeout;
    const std::string server =
        (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
    const auto timed_out = [&] {
        return std::system_error{std::make_error_code(std::errc::timed_out),
                                 "whois query '" + query + "' to " + server + ": no complete answer within " +
                                     std::to_string(timeout.count()) + " ms"};
    };

    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (const int code = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); code != 0) {
        const int error = errno;
        if (code == EAI_SYSTEM) detail::throw_system_error(error, "getaddrinfo for whois server " + server);
        throw std::system_error{code, detail::getaddrinfo_category(), "getaddrinfo for whois server " + server};
    }
    const std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses{found, ::freeaddrinfo};

    detail::UniqueFd connected;
    int last_error = EHOSTUNREACH;
    std::string last_call = "connect";
    for (const addrinfo* candidate = addresses.get(); candidate != nullptr; candidate = candidate->ai_next) {
        detail::UniqueFd attempt{::socket(candidate->ai_family, candidate->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                          candidate->ai_protocol)};
        if (!attempt) {
            last_error = errno;
            last_call = "socket";
            continue;
        }
        if (::connect(attempt.get(), candidate->ai_addr, candidate->ai_addrlen) != 0) {
            const int error = errno;
            if (error != EINPROGRESS && error != EINTR) {  // after EINTR the connection goes on, as after EINPROGRESS
                last_error = error;
                last_call = "connect";
                continue;
            }
            if (detail::wait_for(attempt.get(), POLLOUT, -1, deadline) == detail::Wait::timed_out) throw timed_out();
            int result = 0;
            socklen_t length = sizeof result;
            if (::getsockopt(attempt.get(), SOL_SOCKET, SO_ERROR, &result, &length) != 0) result = errno;
            if (result != 0) {
                last_error = result;
                last_call = "connect";
                continue;
            }
        }
        connected = std::move(attempt);
        break;
    }
    if (!connected) detail::throw_system_error(last_error, last_call + " to whois server " + server);

    const std::string request = query + "\r\n";
    std::size_t sent = 0;
    while (sent < request.size()) {
        const ssize_t wrote = ::send(connected.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (wrote >= 0) {
            sent += static_cast<std::size_t>(wrote);
            continue;
        }
        const int error = errno;
        if (error == EINTR) continue;
        if (error != EAGAIN && error != EWOULDBLOCK)
            detail::throw_system_error(error, "send to whois server " + server);
        if (detail::wait_for(connected.get(), POLLOUT, -1, deadline) == detail::Wait::timed_out) throw timed_out();
    }

    constexpr std::size_t largest_answer = std::size_t{4} << 20;
    std::string answer;
    for (;;) {
        if (detail::wait_for(connected.get(), POLLIN, -1, deadline) == detail::Wait::timed_out) throw timed_out();
        char buffer[4096];
        const ssize_t got = ::recv(connected.get(), buffer, sizeof buffer, 0);
        if (got == 0) {            // the server closed: the answer is complete
            if (answer.empty()) {  // never a valid answer: a server stopped, overloaded or not a whois server
                throw std::runtime_error{"whois query '" + query + "' to " + server +
                                         ": the server closed the connection without an answer"};
            }
            return answer;
        }
        if (got < 0) {
            const int error = errno;
            if (error == EAGAIN || error == EWOULDBLOCK || error == EINTR) continue;
            detail::throw_system_error(error, "recv from whois server " + server);
        }
        answer.append(buffer, static_cast<std::size_t>(got));
        if (answer.size() > largest_answer) {
            throw std::runtime_error{"whois query '" + query + "' to " + server + ": answer larger than 4 MiB"};
        }
    }
}

}  // namespace whois_example
