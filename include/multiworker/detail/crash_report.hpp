#pragma once

// Crash reports: a worker killed by a fatal signal first sends a stack trace
// of where it died, as one critical record through its log pipe, then dies of
// the same signal (so its wait status still names it).
//
// The handler must be async-signal-safe: no malloc, no locks. backtrace() is
// warmed up at installation (its first call loads libgcc, which allocates),
// backtrace_symbols_fd() is documented not to allocate; its text goes through
// a pre-made scratch pipe into a static buffer, and out with one write(2).
// The handler runs on an alternate stack, so a stack overflow is reported too.

#include <multiworker/detail/system.hpp>
#include <multiworker/detail/worker_logging.hpp>

#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

namespace multiworker::detail {

/// The signals that get a crash report.
inline constexpr int reported_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

inline bool is_reported_signal(int signal) {
    for (int reported : reported_signals) {
        if (reported == signal) return true;
    }
    return false;
}

struct CrashReporterState {
    int log_fd = -1;
    int scratch_read = -1;
    int scratch_write = -1;
    char record[sizeof(LogRecordHeader) + 32 * 1024];
};

inline CrashReporterState& crash_reporter_state() {
    static CrashReporterState state;
    return state;
}

inline void append_text(char* buffer, std::size_t capacity, std::size_t& length, const char* text) {
    const std::size_t count = std::min(std::strlen(text), capacity - length);
    std::memcpy(buffer + length, text, count);
    length += count;
}

inline void report_crash(int signal, siginfo_t* /*info*/, void* /*context*/) {
    CrashReporterState& state = crash_reporter_state();
    const int saved_errno = errno;
    char* text = state.record + sizeof(LogRecordHeader);
    const std::size_t capacity = sizeof state.record - sizeof(LogRecordHeader);
    std::size_t length = 0;
    const char* name = ::sigabbrev_np(signal);
    append_text(text, capacity, length, "fatal signal SIG");
    append_text(text, capacity, length, name != nullptr ? name : "?");
    append_text(text, capacity, length, "; stack trace of the worker:\n");
    void* frames[64];
    const int depth = ::backtrace(frames, 64);
    ::backtrace_symbols_fd(frames, depth, state.scratch_write);
    for (;;) {
        const ssize_t got = ::read(state.scratch_read, text + length, capacity - length);
        if (got <= 0) break;
        length += static_cast<std::size_t>(got);
    }
    if (length > 0 && text[length - 1] == '\n') --length;
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    LogRecordHeader header;
    header.level = static_cast<std::uint32_t>(spdlog::level::critical);
    header.time_ns = static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
    header.text_length = static_cast<std::uint32_t>(length);
    std::memcpy(state.record, &header, sizeof header);
    write_all(state.log_fd, state.record, sizeof header + length);
    errno = saved_errno;
    // SA_RESETHAND restored the default action: this ends the process with `signal`.
    ::raise(signal);
}

/// Installs the crash reporter in a worker whose log pipe is `log_fd`.
inline void install_crash_reporter(int log_fd) {
    CrashReporterState& state = crash_reporter_state();
    state.log_fd = log_fd;
    int scratch[2];
    if (::pipe2(scratch, O_CLOEXEC | O_NONBLOCK) != 0) throw_errno("pipe2 for crash reports");
    state.scratch_read = scratch[0];
    state.scratch_write = scratch[1];
    void* warm_up[2];
    ::backtrace(warm_up, 2);

    constexpr std::size_t alternate_stack_size = 64 * 1024;
    static char* alternate_stack = new char[alternate_stack_size];
    stack_t stack{};
    stack.ss_sp = alternate_stack;
    stack.ss_size = alternate_stack_size;
    ::sigaltstack(&stack, nullptr);

    struct sigaction action {};
    action.sa_sigaction = report_crash;
    action.sa_flags = static_cast<int>(SA_SIGINFO | SA_ONSTACK | SA_RESETHAND);
    sigemptyset(&action.sa_mask);
    for (int signal : reported_signals) ::sigaction(signal, &action, nullptr);
}

}  // namespace multiworker::detail
