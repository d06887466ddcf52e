#pragma once

// The worker processes of one run, slot by slot: forked by the fork server
// (fork_server.hpp), watched through its exit reports, killed through their
// pidfds. The pool knows processes, not tasks: what a death means for the
// tasks a worker held, and whether its slot gets a new process, is for the
// pool's owner to decide (WorkerPool::Events).

#include <multiworker/detail/fork_server.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/detail/worker_logging.hpp>
#include <multiworker/error.hpp>

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace multiworker::detail {

/// How a child ended, in words: "exited with status 3", "was killed by SIGSEGV".
inline std::string describe_exit_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* name = ::sigabbrev_np(WTERMSIG(status));
        std::string text =
            "was killed by " + (name ? "SIG" + std::string{name} : "signal " + std::to_string(WTERMSIG(status)));
        if (is_reported_signal(WTERMSIG(status))) text += " (its stack trace is in the log)";
        return text;
    }
    return "ended with wait status " + std::to_string(status);
}

/// What a new worker process is handed: the pipes the fork server made for
/// it, the server's pid (its parent), and the parent's loggers at the fork.
struct WorkerBirth {
    const WorkerPipes& pipes;
    pid_t server;
    const std::vector<std::shared_ptr<spdlog::logger>>& inherited_loggers;
};

/// The body of a worker process for a slot; never returns.
using WorkerEntry = std::function<void(int slot, const WorkerBirth& birth)>;

/// How a worker process ended, as its owner needs to know it.
struct WorkerExit {
    int slot;
    pid_t pid;
    int status;               // the wait status
    std::string reason;       // "was killed by SIGSEGV", with why the parent killed it, and where it crashed
    std::string kill_reason;  // why the parent killed it; empty if it did not
    ErrorKind kill_kind;      // what the parent's kill means for the task it ran

    [[nodiscard]] bool killed_by_parent() const noexcept { return !kill_reason.empty(); }
};

class WorkerPool {
public:
    /// What the pool reports to its owner, from inside handle_events().
    class Events {
    public:
        virtual void worker_started(int slot) = 0;
        virtual void worker_exited(const WorkerExit& exit) = 0;
        virtual void spawn_failed(int slot, int error) = 0;

    protected:
        ~Events() = default;
    };

    /// `names` (may be empty) names each slot's worker in its log records:
    /// "worker 3" by default, "whois worker 0" for a pipeline stage's.
    WorkerPool(std::size_t slots, LogCollector& logs, bool capture_output, WorkerEntry entry,
               std::vector<std::string> names = {})
        : processes_(slots),
          logs_{logs},
          capture_output_{capture_output},
          entry_{std::move(entry)},
          names_{std::move(names)} {}

    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;
    ~WorkerPool() { shut_down(); }

    /// Forks the fork server. Call it from the thread that owns the pool for
    /// the whole run: PR_SET_PDEATHSIG fires when the forking *thread* ends.
    void start() {
        int ends[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) throw_errno("socketpair");
        FileDescriptor ours{ends[0]};
        FileDescriptor theirs{ends[1]};
        const auto inherited = loggers_to_inherit();
        const pid_t parent = ::getpid();
        // Output buffered but not yet written would otherwise be written again by every worker.
        std::fflush(nullptr);
        const pid_t pid = ::fork();
        if (pid < 0) throw_errno("fork of the fork server");
        if (pid == 0) {
            ours.reset();
            // The fork server and the workers forked from it go by the
            // program's name, not by the forking thread's.
            name_this_thread(program_invocation_short_name);
            run_fork_server(theirs.get(), parent, capture_output_,
                            [this, &inherited](int slot, const WorkerPipes& pipes, pid_t server) {
                                entry_(slot, WorkerBirth{pipes, server, inherited});
                            });
        }
        server_pid_ = pid;
        server_ = std::move(ours);
    }

    [[nodiscard]] std::size_t size() const noexcept { return processes_.size(); }

    /// Asks for a process in `slot`; it runs once handle_events() has seen the
    /// server's answer. Without a server, the slot is disabled instead.
    void spawn(int slot) {
        Process& process = at(slot);
        process.kill_reason.clear();
        process.kill_kind = ErrorKind::worker_died;
        if (!server_.valid()) {
            process.disabled = true;
            return;
        }
        process.spawning = true;
        spawn_queue_.push_back(slot);
        send_spawn_requests();
    }

    /// Kills the slot's process; its exit then reports `kind` and `why`.
    void kill(int slot, ErrorKind kind, std::string why) {
        Process& process = at(slot);
        process.kill_reason = std::move(why);
        process.kill_kind = kind;
        if (process.pidfd.valid()) ::syscall(SYS_pidfd_send_signal, process.pidfd.get(), SIGKILL, nullptr, 0);
    }

    /// Marks the slot as not to be given a process again.
    void disable(int slot) { at(slot).disabled = true; }

    [[nodiscard]] pid_t pid(int slot) const noexcept { return at(slot).pid; }
    /// A process runs in the slot (it may be killed and about to end).
    [[nodiscard]] bool alive(int slot) const noexcept { return at(slot).pid != 0; }
    /// The parent killed the slot's process: it gets and gives nothing more.
    [[nodiscard]] bool doomed(int slot) const noexcept { return !at(slot).kill_reason.empty(); }
    [[nodiscard]] bool spawning(int slot) const noexcept { return at(slot).spawning; }
    [[nodiscard]] bool disabled(int slot) const noexcept { return at(slot).disabled; }
    /// The slot has a process, or will have one.
    [[nodiscard]] bool in_service(int slot) const noexcept {
        const Process& p = at(slot);
        return p.pid != 0 || p.spawning || !p.disabled;
    }

    [[nodiscard]] std::size_t spawning_count() const noexcept {
        return static_cast<std::size_t>(
            std::count_if(processes_.begin(), processes_.end(), [](const Process& p) { return p.spawning; }));
    }
    [[nodiscard]] bool no_processes() const noexcept {
        return std::none_of(processes_.begin(), processes_.end(),
                            [](const Process& p) { return p.pid != 0 || p.spawning; });
    }
    /// The pids of the live processes, in slot order.
    [[nodiscard]] std::vector<pid_t> pids() const {
        std::vector<pid_t> live;
        for (const Process& p : processes_) {
            if (p.pid != 0) live.push_back(p.pid);
        }
        return live;
    }

    /// The fork server's socket, for poll() (-1 when it is gone).
    [[nodiscard]] int server_fd() const noexcept { return server_.valid() ? server_.get() : -1; }

    /// Handles every message the fork server has sent: spawns answered,
    /// processes ended (reported to `events`). Never blocks.
    void handle_events(Events& events) {
        while (server_.valid()) {
            pollfd server{server_.get(), POLLIN, 0};
            if (::poll(&server, 1, 0) <= 0) return;
            auto message = receive_message(server_.get());
            if (!message) {
                server_lost(events);
                return;
            }
            handle_message(std::move(*message), events);
        }
    }

    /// Waits up to `timeout_ms` for the fork server to speak, then handles
    /// every message it sent (as handle_events() does).
    void wait_for_events(int timeout_ms, Events& events) {
        if (!server_.valid()) return;
        pollfd server{server_.get(), POLLIN, 0};
        if (::poll(&server, 1, timeout_ms) > 0) handle_events(events);
    }

    /// Waits until every process asked for is forked. Throws, naming `who`
    /// ("multiworker::Processor::start()"), if `timeout` passes first, or if
    /// a fork failed.
    void await_spawns(std::chrono::milliseconds timeout, Events& events, const std::string& who) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (spawning_count() > 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                throw std::runtime_error{who + ": " + std::to_string(spawning_count()) + " of " +
                                         std::to_string(size()) + " workers were not forked within start_timeout (" +
                                         std::to_string(timeout.count()) + " ms)"};
            }
            wait_for_events(100, events);
        }
        if (first_spawn_error_ != 0) {
            errno = first_spawn_error_;
            throw_errno("fork of a worker");
        }
    }

    /// Tells the fork server to kill what is left and exit, and reaps it.
    void shut_down() {
        if (server_.valid()) send_message(server_.get(), {ForkServerMessage::Kind::quit, 0, 0, 0});
        server_.reset();
        if (server_pid_ > 0) ::waitpid(server_pid_, nullptr, 0);
        server_pid_ = 0;
    }

private:
    // More spawn requests unanswered than this, and a thousand requests fill
    // the socket's buffer before the server's answers, which then fill the
    // other way: both sides would block in sendmsg() for good.
    static constexpr int max_unanswered_spawns = 16;

    struct Process {
        pid_t pid = 0;            // 0: no process in this slot
        bool spawning = false;    // the fork server was asked for a process
        bool disabled = false;    // not to be given a process again
        FileDescriptor pidfd;     // exactly this process, for signals
        std::string kill_reason;  // why the parent killed it, if it did
        ErrorKind kill_kind = ErrorKind::worker_died;
    };

    [[nodiscard]] Process& at(int slot) noexcept { return processes_[static_cast<std::size_t>(slot)]; }
    [[nodiscard]] const Process& at(int slot) const noexcept { return processes_[static_cast<std::size_t>(slot)]; }

    void send_spawn_requests() {
        while (unanswered_spawns_ < max_unanswered_spawns && !spawn_queue_.empty()) {
            const int slot = spawn_queue_.front();
            spawn_queue_.pop_front();
            if (!server_.valid() || !send_message(server_.get(), {ForkServerMessage::Kind::spawn, slot, 0, 0})) {
                at(slot).spawning = false;
                at(slot).disabled = true;
                continue;
            }
            ++unanswered_spawns_;
        }
    }

    void handle_message(ReceivedMessage received, Events& events) {
        const ForkServerMessage& message = received.message;
        if (message.kind == ForkServerMessage::Kind::exited) {
            for (std::size_t slot = 0; slot < processes_.size(); ++slot) {
                if (processes_[slot].pid == message.pid && message.pid != 0)
                    process_ended(static_cast<int>(slot), describe_exit_status(message.value), message.value, events);
            }
            return;
        }
        if (message.slot < 0 || static_cast<std::size_t>(message.slot) >= processes_.size()) return;
        Process& process = at(message.slot);
        process.spawning = false;
        --unanswered_spawns_;
        send_spawn_requests();
        const std::size_t expected_fds = capture_output_ ? 4 : 2;
        if (message.kind == ForkServerMessage::Kind::spawn_failed || received.fds.size() != expected_fds) {
            const int error = message.value != 0 ? message.value : EIO;
            if (first_spawn_error_ == 0) first_spawn_error_ = error;
            process.disabled = true;
            logs_.report(spdlog::level::err,
                         "could not create worker " + std::to_string(message.slot) + ": " + ::strerror(error));
            events.spawn_failed(message.slot, error);
            return;
        }
        process.pid = message.pid;
        process.pidfd = std::move(received.fds[1]);
        const std::string name = static_cast<std::size_t>(message.slot) < names_.size()
                                     ? names_[static_cast<std::size_t>(message.slot)]
                                     : std::string{};
        logs_.add_source(message.slot, process.pid, std::move(received.fds[0]), LogCollector::Stream::log_records,
                         name);
        if (capture_output_) {
            logs_.add_source(message.slot, process.pid, std::move(received.fds[2]), LogCollector::Stream::stdout_bytes,
                             name);
            logs_.add_source(message.slot, process.pid, std::move(received.fds[3]), LogCollector::Stream::stderr_bytes,
                             name);
        }
        events.worker_started(message.slot);
    }

    void process_ended(int slot, const std::string& how, int status, Events& events) {
        Process& process = at(slot);
        logs_.drain_exited(process.pid);
        WorkerExit exit{slot, process.pid, status, how, process.kill_reason, process.kill_kind};
        if (exit.killed_by_parent()) exit.reason = process.kill_reason + " and " + how;
        if (const std::string site = logs_.take_crash_site(process.pid); !site.empty()) exit.reason += " " + site + ",";
        process.pid = 0;
        process.pidfd.reset();
        events.worker_exited(exit);
    }

    /// The fork server is gone (killed from outside): its workers died with it.
    void server_lost(Events& events) {
        server_.reset();
        ::waitpid(server_pid_, nullptr, 0);
        server_pid_ = 0;
        spawn_queue_.clear();
        unanswered_spawns_ = 0;
        for (std::size_t slot = 0; slot < processes_.size(); ++slot) {
            Process& process = processes_[slot];
            process.spawning = false;
            process.disabled = true;
            if (process.pid != 0) process_ended(static_cast<int>(slot), "was lost with the fork server", 0, events);
        }
    }

    std::vector<Process> processes_;
    LogCollector& logs_;
    const bool capture_output_;
    WorkerEntry entry_;
    std::vector<std::string> names_;  // per slot; empty: "worker <slot>"
    FileDescriptor server_;
    pid_t server_pid_ = 0;
    std::deque<int> spawn_queue_;  // slots whose spawn request waits (see send_spawn_requests())
    int unanswered_spawns_ = 0;
    int first_spawn_error_ = 0;  // errno of the first fork that failed (see await_spawns())
};

}  // namespace multiworker::detail
