#pragma once

/// @file
/// Progress: how far a Processor's run has come, for callbacks and the progress bar.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace multiworker {

/// A snapshot of a run, passed to Options::on_progress.
struct Progress {
    std::uint64_t total = 0;                  ///< tasks added and not cancelled
    std::uint64_t done = 0;                   ///< tasks with a result (successful or not)
    std::uint64_t failed = 0;                 ///< of those, results that are errors
    std::chrono::duration<double> elapsed{};  ///< since start()
    /// Results per second since start().
    [[nodiscard]] double rate() const noexcept {
        return elapsed.count() > 0 ? static_cast<double>(done) / elapsed.count() : 0.0;
    }
    /// Estimated time to finish at the current rate; negative when unknown.
    [[nodiscard]] std::chrono::duration<double> eta() const noexcept {
        const double per_second = rate();
        if (per_second <= 0) return std::chrono::duration<double>{-1};
        return std::chrono::duration<double>{static_cast<double>(total - done) / per_second};
    }
    /// True when every task has its result.
    [[nodiscard]] bool finished() const noexcept { return done == total; }
};

/// Renders `progress` as one line: a bar when `bar_width` > 0, then counts,
/// rate and ETA. What the built-in progress bar (Options::progress_bar) prints.
inline std::string format_progress(const Progress& progress, int bar_width) {
    std::string line;
    if (bar_width > 0) {
        const double fraction =
            progress.total == 0 ? 1.0 : static_cast<double>(progress.done) / static_cast<double>(progress.total);
        const int filled = static_cast<int>(fraction * bar_width);
        line += '[';
        line.append(static_cast<std::size_t>(filled), '=');
        if (filled < bar_width) line += '>';
        line.append(static_cast<std::size_t>(std::max(0, bar_width - filled - 1)), ' ');
        line += "] ";
    }
    char text[160];
    const double eta = progress.eta().count();
    std::snprintf(text, sizeof text, "%llu/%llu done, %llu failed, %.1f tasks/s, ",
                  static_cast<unsigned long long>(progress.done), static_cast<unsigned long long>(progress.total),
                  static_cast<unsigned long long>(progress.failed), progress.rate());
    line += text;
    if (progress.finished()) {
        std::snprintf(text, sizeof text, "finished in %.1f s", progress.elapsed.count());
    } else if (eta < 0) {
        std::snprintf(text, sizeof text, "ETA unknown");
    } else {
        std::snprintf(text, sizeof text, "ETA %.0f s", eta);
    }
    line += text;
    return line;
}

}  // namespace multiworker
