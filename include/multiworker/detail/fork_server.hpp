#pragma once

// The fork server: a single-threaded process, forked once at start(), from
// which every worker is forked.
//
// Why: fork() copies only the calling thread, so a child of a multithreaded
// parent inherits every lock that another parent thread held at that instant
// (malloc arenas, logger sinks, the user's own mutexes) locked forever. One
// fork from the parent is unavoidable; every later one, for respawns and
// recycling, happens in the fork server, which has a single thread and never
// runs user code, so its locks are always free. It also keeps the object as
// it was at start(): every worker, the first or the hundredth, starts from it.
//
// The fork server is the workers' parent and reaper. It talks to the
// event loop over a SOCK_SEQPACKET socket pair: the event loop asks for a
// worker in a slot; the server answers with the worker's pid and passes, by
// SCM_RIGHTS, the read end of the worker's log pipe and a pidfd (so the
// event loop can signal exactly that process, never a recycled pid); when a
// worker exits, the server reaps it and reports its wait status. Told to quit
// (or when the socket closes), it kills what is left, reaps it and exits.
//
// A worker's descendants go with it. Each worker leads a process group of its
// own, which the server kills when the worker has died (while its zombie still
// holds the group's id, so the id cannot name anyone else). The server is also
// a child subreaper: a descendant that left the group (setsid, setpgid) and
// lost its parent becomes the server's child, and is killed once it belongs to
// no live worker's group. So no process of a worker outlives it and holds its
// pipes open: the parent reaches end-of-file on them as soon as it is gone.

#include <multiworker/detail/system.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace multiworker::detail {

/// A message between the event loop and the fork server.
struct ForkServerMessage {
    enum class Kind : std::uint32_t { spawn = 1, spawned = 2, spawn_failed = 3, exited = 4, quit = 5 };
    Kind kind = Kind::spawn;
    std::int32_t slot = 0;
    std::int32_t pid = 0;
    std::int32_t value = 0;  // errno for spawn_failed, wait status for exited
};

/// Most descriptors a message carries: a worker's log, stdout and stderr pipes and its pidfd.
inline constexpr std::size_t max_attached_fds = 4;

/// Sends `message` with up to max_attached_fds descriptors attached.
inline bool send_message(int socket, const ForkServerMessage& message, std::initializer_list<int> fds = {}) {
    iovec data{const_cast<ForkServerMessage*>(&message), sizeof message};
    msghdr header{};
    header.msg_iov = &data;
    header.msg_iovlen = 1;
    alignas(cmsghdr) std::array<char, CMSG_SPACE(max_attached_fds * sizeof(int))> control{};
    if (fds.size() > max_attached_fds) return false;
    if (fds.size() > 0) {
        header.msg_control = control.data();
        header.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
        cmsghdr* attached = CMSG_FIRSTHDR(&header);
        attached->cmsg_level = SOL_SOCKET;
        attached->cmsg_type = SCM_RIGHTS;
        attached->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
        std::memcpy(CMSG_DATA(attached), std::data(fds), fds.size() * sizeof(int));
    }
    for (;;) {
        const ssize_t sent = ::sendmsg(socket, &header, MSG_NOSIGNAL);
        if (sent == static_cast<ssize_t>(sizeof message)) return true;
        if (sent < 0 && errno == EINTR) continue;
        return false;
    }
}

/// A received message and the descriptors that came with it.
struct ReceivedMessage {
    ForkServerMessage message;
    std::vector<FileDescriptor> fds;
};

/// Receives one message; empty at end-of-file, on error or on a malformed message.
inline std::optional<ReceivedMessage> receive_message(int socket) {
    ReceivedMessage received;
    iovec data{&received.message, sizeof received.message};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(max_attached_fds * sizeof(int))> control{};
    msghdr header{};
    header.msg_iov = &data;
    header.msg_iovlen = 1;
    header.msg_control = control.data();
    header.msg_controllen = control.size();
    ssize_t got = 0;
    do {
        got = ::recvmsg(socket, &header, MSG_CMSG_CLOEXEC);
    } while (got < 0 && errno == EINTR);
    for (cmsghdr* attached = CMSG_FIRSTHDR(&header); attached != nullptr; attached = CMSG_NXTHDR(&header, attached)) {
        if (attached->cmsg_level != SOL_SOCKET || attached->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (attached->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(attached) + i * sizeof(int), sizeof fd);
            received.fds.emplace_back(fd);
        }
    }
    if (got != static_cast<ssize_t>(sizeof received.message) || (header.msg_flags & MSG_CTRUNC) != 0)
        return std::nullopt;
    return received;
}

/// The write ends a new worker gets: its log pipe, and, when its output is
/// captured, the pipes that become its stdout and stderr (-1 otherwise).
struct WorkerPipes {
    int log = -1;
    int out = -1;
    int err = -1;
};

/// What the fork server runs in each new worker: (slot, its pipes, the fork
/// server's pid). Never returns.
using WorkerMain = std::function<void(int slot, const WorkerPipes& pipes, pid_t server)>;

namespace fork_server {

struct Child {
    pid_t pid;
    FileDescriptor pidfd;
};

/// The pids of this (single-threaded) process's children, workers and adopted orphans alike.
inline std::vector<pid_t> current_children() {
    std::vector<pid_t> pids;
    std::ifstream list{"/proc/self/task/" + std::to_string(::getpid()) + "/children"};
    for (pid_t pid = 0; list >> pid;) pids.push_back(pid);
    return pids;
}

/// Reaps adopted orphans that have ended, and kills those that belong to no
/// live worker's process group (their worker is gone). With `everything`, kills
/// every child and waits until none is left, adopted ones included.
inline void sweep_strays(const std::vector<Child>& workers, bool everything) {
    const auto is_worker = [&workers](pid_t pid) {
        return std::any_of(workers.begin(), workers.end(), [pid](const Child& c) { return c.pid == pid; });
    };
    for (;;) {
        bool any = false;
        for (const pid_t pid : current_children()) {
            if (!everything && is_worker(pid)) continue;
            any = true;
            if (::waitpid(pid, nullptr, WNOHANG) == pid) continue;
            if (!everything && is_worker(::getpgid(pid))) continue;  // its worker lives: its own business
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        if (!everything || !any) return;
    }
}

/// Makes the pipes of a new worker; false (errno set) if it cannot.
struct SpawnPipes {
    FileDescriptor log_read, log_write, out_read, out_write, err_read, err_write;

    bool open(bool capture_output) {
        return make(log_read, log_write) &&
               (!capture_output || (make(out_read, out_write) && make(err_read, err_write)));
    }

    static bool make(FileDescriptor& read_end, FileDescriptor& write_end) {
        int ends[2];
        if (::pipe2(ends, O_CLOEXEC) != 0) return false;
        read_end = FileDescriptor{ends[0]};
        write_end = FileDescriptor{ends[1]};
        return true;
    }
};

/// In the new worker: its own process group, and its stdout and stderr on the pipes.
inline void become_worker(const SpawnPipes& pipes) {
    ::setpgid(0, 0);
    if (pipes.out_write.valid()) {
        ::dup2(pipes.out_write.get(), STDOUT_FILENO);
        ::dup2(pipes.err_write.get(), STDERR_FILENO);
    }
}

}  // namespace fork_server

/// The fork server's body; never returns. `parent_pid` is the process it
/// serves: if that one is gone, so is the server (and with it every worker).
/// With `capture_output`, each worker's stdout and stderr are pipes whose
/// read ends go to the parent with the spawn's answer.
[[noreturn]] inline void run_fork_server(int socket, pid_t parent_pid, bool capture_output,
                                         const WorkerMain& worker_main) noexcept {
    using fork_server::Child;
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent_pid) ::_exit(0);
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    // A group of its own: a terminal's Ctrl-C reaches the user's process,
    // which decides; workers are not killed behind its back.
    ::setpgid(0, 0);
    const pid_t server_pid = ::getpid();

    std::vector<Child> children;
    std::vector<pollfd> descriptors;
    for (;;) {
        descriptors.assign(1, pollfd{socket, POLLIN, 0});
        for (const Child& child : children) descriptors.push_back(pollfd{child.pidfd.get(), POLLIN, 0});
        // The timeout: adopted orphans are swept now and then even when no worker ends.
        const int ready = ::poll(descriptors.data(), descriptors.size(), 1000);
        if (ready < 0) {
            if (errno == EINTR) continue;
            break;
        }
        // Reap first, so an exit is reported before the slot is reused.
        bool worker_ended = false;
        for (std::size_t i = descriptors.size() - 1; i >= 1; --i) {
            if (descriptors[i].revents == 0) continue;
            const pid_t pid = children[i - 1].pid;
            ::kill(-pid, SIGKILL);  // its group, while its zombie keeps the id reserved
            int status = 0;
            if (::waitpid(pid, &status, 0) != pid) status = 0;
            children.erase(children.begin() + static_cast<std::ptrdiff_t>(i - 1));
            send_message(socket, {ForkServerMessage::Kind::exited, 0, pid, status});
            worker_ended = true;
        }
        // Orphans appear when a worker ends; the timeout catches those whose
        // parent, a descendant, ended later. Not at every spawn: a thousand
        // spawns would scan a thousand children each.
        if (worker_ended || ready == 0) fork_server::sweep_strays(children, false);
        if (descriptors[0].revents == 0) continue;
        // A quit message, not end-of-file, ends the server: copies of this
        // socket may live on in the fork servers of other Processors.
        const auto request = receive_message(socket);
        if (!request || request->message.kind != ForkServerMessage::Kind::spawn) break;
        const int slot = request->message.slot;
        fork_server::SpawnPipes pipes;
        if (!pipes.open(capture_output)) {
            send_message(socket, {ForkServerMessage::Kind::spawn_failed, slot, 0, errno});
            continue;
        }
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::close(socket);
            for (Child& child : children) child.pidfd.reset();
            fork_server::become_worker(pipes);
            worker_main(slot, WorkerPipes{pipes.log_write.get(), pipes.out_write.get(), pipes.err_write.get()},
                        server_pid);
            ::_exit(70);
        }
        if (pid < 0) {
            send_message(socket, {ForkServerMessage::Kind::spawn_failed, slot, 0, errno});
            continue;
        }
        // Before the answer, so that no stray of an earlier worker, killed
        // meanwhile, could be taken for this one.
        ::setpgid(pid, pid);
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        if (pidfd < 0) {
            const int error = errno;
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            send_message(socket, {ForkServerMessage::Kind::spawn_failed, slot, 0, error});
            continue;
        }
        children.push_back(Child{pid, FileDescriptor{pidfd}});
        if (capture_output) {
            send_message(socket, {ForkServerMessage::Kind::spawned, slot, pid, 0},
                         {pipes.log_read.get(), pidfd, pipes.out_read.get(), pipes.err_read.get()});
        } else {
            send_message(socket, {ForkServerMessage::Kind::spawned, slot, pid, 0}, {pipes.log_read.get(), pidfd});
        }
    }
    for (const Child& child : children) ::kill(-child.pid, SIGKILL);
    for (const Child& child : children) ::kill(child.pid, SIGKILL);
    fork_server::sweep_strays({}, true);
    ::_exit(0);
}

}  // namespace multiworker::detail
