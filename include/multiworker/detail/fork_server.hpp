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
// supervisor over a SOCK_SEQPACKET socket pair: the supervisor asks for a
// worker in a slot; the server answers with the worker's pid and passes, by
// SCM_RIGHTS, the read end of the worker's log pipe and a pidfd (so the
// supervisor can signal exactly that process, never a recycled pid); when a
// worker exits, the server reaps it and reports its wait status. Told to quit
// (or when the socket closes), it kills what is left, reaps it and exits.

#include <multiworker/detail/system.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

namespace multiworker::detail {

/// A message between the supervisor and the fork server.
struct ForkServerMessage {
    enum class Kind : std::uint32_t { spawn = 1, spawned = 2, spawn_failed = 3, exited = 4, quit = 5 };
    Kind kind = Kind::spawn;
    std::int32_t slot = 0;
    std::int32_t pid = 0;
    std::int32_t value = 0;  // errno for spawn_failed, wait status for exited
};

/// Sends `message` with up to two descriptors attached.
inline bool send_message(int socket, const ForkServerMessage& message, std::initializer_list<int> fds = {}) {
    iovec data{const_cast<ForkServerMessage*>(&message), sizeof message};
    msghdr header{};
    header.msg_iov = &data;
    header.msg_iovlen = 1;
    alignas(cmsghdr) std::array<char, CMSG_SPACE(2 * sizeof(int))> control{};
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
    alignas(cmsghdr) std::array<char, CMSG_SPACE(2 * sizeof(int))> control{};
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

/// What the fork server runs in each new worker: (slot, write end of its log
/// pipe, the fork server's pid). Never returns.
using WorkerMain = std::function<void(int slot, int log_fd, pid_t server)>;

/// The fork server's body; never returns. `parent_pid` is the process it
/// serves: if that one is gone, so is the server (and with it every worker).
[[noreturn]] inline void run_fork_server(int socket, pid_t parent_pid, const WorkerMain& worker_main) noexcept {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent_pid) ::_exit(0);
    // A group of its own: a terminal's Ctrl-C reaches the user's process,
    // which decides; workers are not killed behind its back.
    ::setpgid(0, 0);
    const pid_t server_pid = ::getpid();

    struct Child {
        pid_t pid;
        FileDescriptor pidfd;
    };
    std::vector<Child> children;
    std::vector<pollfd> descriptors;
    for (;;) {
        descriptors.assign(1, pollfd{socket, POLLIN, 0});
        for (const Child& child : children) descriptors.push_back(pollfd{child.pidfd.get(), POLLIN, 0});
        if (::poll(descriptors.data(), descriptors.size(), -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        // Reap first, so an exit is reported before the slot is reused.
        for (std::size_t i = descriptors.size() - 1; i >= 1; --i) {
            if (descriptors[i].revents == 0) continue;
            int status = 0;
            const pid_t pid = children[i - 1].pid;
            if (::waitpid(pid, &status, 0) != pid) status = 0;
            children.erase(children.begin() + static_cast<std::ptrdiff_t>(i - 1));
            send_message(socket, {ForkServerMessage::Kind::exited, 0, pid, status});
        }
        if (descriptors[0].revents == 0) continue;
        // A quit message, not end-of-file, ends the server: copies of this
        // socket may live on in the fork servers of other Processors.
        const auto request = receive_message(socket);
        if (!request || request->message.kind != ForkServerMessage::Kind::spawn) break;
        const int slot = request->message.slot;
        int pipe_ends[2];
        if (::pipe2(pipe_ends, O_CLOEXEC) != 0) {
            send_message(socket, {ForkServerMessage::Kind::spawn_failed, slot, 0, errno});
            continue;
        }
        FileDescriptor log_read{pipe_ends[0]};
        FileDescriptor log_write{pipe_ends[1]};
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::close(socket);
            log_read.reset();
            for (Child& child : children) child.pidfd.reset();
            worker_main(slot, log_write.get(), server_pid);
            ::_exit(70);
        }
        if (pid < 0) {
            send_message(socket, {ForkServerMessage::Kind::spawn_failed, slot, 0, errno});
            continue;
        }
        log_write.reset();
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        if (pidfd < 0) {
            const int error = errno;
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            send_message(socket, {ForkServerMessage::Kind::spawn_failed, slot, 0, error});
            continue;
        }
        children.push_back(Child{pid, FileDescriptor{pidfd}});
        send_message(socket, {ForkServerMessage::Kind::spawned, slot, pid, 0}, {log_read.get(), pidfd});
    }
    for (const Child& child : children) ::kill(child.pid, SIGKILL);
    for (const Child& child : children) ::waitpid(child.pid, nullptr, 0);
    ::_exit(0);
}

}  // namespace multiworker::detail
