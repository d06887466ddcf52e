#pragma once

// SIGINT and SIGTERM during a Supervisor's run: the handler records the
// signal and wakes the event loop, which stops every process in order
// (Interrupted). Installed for the run only; the previous handlers return.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace multiworker::detail {

/// The signal that interrupted a run (0: none), set by the handler run() installs.
inline std::atomic<int> supervisor_interrupt{0};
/// The eventfd the handler writes to, to wake the event loop.
inline std::atomic<int> supervisor_interrupt_fd{-1};

extern "C" inline void supervisor_on_signal(int signal) {
    supervisor_interrupt.store(signal);
    const std::uint64_t one = 1;
    if (const int fd = supervisor_interrupt_fd.load(); fd >= 0) {
        [[maybe_unused]] const ssize_t ignored = ::write(fd, &one, sizeof one);
    }
}

/// Installs the handler for SIGINT and SIGTERM; restores the previous ones when destroyed.
class InterruptGuard {
public:
    explicit InterruptGuard(int wake_fd) {
        supervisor_interrupt.store(0);
        supervisor_interrupt_fd.store(wake_fd);
        struct sigaction action {};
        action.sa_handler = supervisor_on_signal;
        ::sigemptyset(&action.sa_mask);
        ::sigaction(SIGINT, &action, &previous_int_);
        ::sigaction(SIGTERM, &action, &previous_term_);
    }
    ~InterruptGuard() {
        ::sigaction(SIGINT, &previous_int_, nullptr);
        ::sigaction(SIGTERM, &previous_term_, nullptr);
        supervisor_interrupt_fd.store(-1);
    }
    InterruptGuard(const InterruptGuard&) = delete;
    InterruptGuard& operator=(const InterruptGuard&) = delete;

private:
    struct sigaction previous_int_ {};
    struct sigaction previous_term_ {};
};

}  // namespace multiworker::detail
