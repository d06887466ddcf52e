#pragma once

// The line the built-in progress bars draw on stderr: redrawn in place on a
// terminal, a plain line every few seconds otherwise (logs, CI), so that a
// log file gets a readable trace rather than a screenful of carriage returns.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace multiworker::detail {

class StatusLine {
public:
    StatusLine() : terminal_{::isatty(STDERR_FILENO) == 1} {}

    /// stderr is a terminal: a line drawn in place may be wide.
    [[nodiscard]] bool terminal() const noexcept { return terminal_; }

    /// Shows `line`; `final` ends it (and is always shown).
    void show(const std::string& line, bool final) {
        const auto now = std::chrono::steady_clock::now();
        if (terminal_) {
            std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), final ? "\n" : "");
        } else if (final || now - last_line_ >= std::chrono::seconds{2}) {
            std::fprintf(stderr, "progress: %s\n", line.c_str());
            last_line_ = now;
        }
        std::fflush(stderr);
    }

private:
    bool terminal_;
    std::chrono::steady_clock::time_point last_line_{};
};

}  // namespace multiworker::detail
