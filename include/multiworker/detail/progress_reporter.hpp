#pragma once

// Reports progress from a thread of its own, so that a slow callback or a
// slow terminal never delays the event loop or the caller.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/status_line.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/progress.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace multiworker::detail {

/// Draws Options::progress_bar: the bar, counts, rate and ETA.
class ProgressBar {
public:
    void operator()(const Progress& progress) {
        line_.show(format_progress(progress, line_.terminal() ? 30 : 0), progress.finished());
    }

private:
    StatusLine line_;
};

class ProgressReporter {
public:
    using Callback = std::function<void(const Progress&)>;

    ProgressReporter(const ResultMailbox& mailbox, Callback callback, std::chrono::milliseconds interval)
        : mailbox_{mailbox}, callback_{std::move(callback)}, interval_{interval} {}
    ProgressReporter(const ProgressReporter&) = delete;
    ProgressReporter& operator=(const ProgressReporter&) = delete;
    ~ProgressReporter() { stop(); }

    void start() {
        started_at_ = std::chrono::steady_clock::now();
        thread_ = std::thread{[this] { run(); }};
        name_thread(thread_, "mw-progress");
    }

    /// Sends a last report if anything changed since the previous one, and ends the thread.
    void stop() {
        if (!thread_.joinable()) return;
        {
            std::lock_guard lock{mutex_};
            stopping_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }

private:
    void run() {
        std::unique_lock lock{mutex_};
        for (;;) {
            const bool stopping = wake_.wait_for(lock, interval_, [this] { return stopping_; });
            lock.unlock();
            report_if_changed();
            lock.lock();
            if (stopping) return;
        }
    }

    void report_if_changed() {
        const ResultMailbox::Counts counts = mailbox_.counts();
        if (reported_ && counts.total == last_.total && counts.delivered == last_.delivered) return;
        reported_ = true;
        last_ = counts;
        callback_(
            Progress{counts.total, counts.delivered, counts.failed, std::chrono::steady_clock::now() - started_at_});
    }

    const ResultMailbox& mailbox_;
    Callback callback_;
    std::chrono::milliseconds interval_;
    std::chrono::steady_clock::time_point started_at_{};
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    bool reported_ = false;
    ResultMailbox::Counts last_{};
    std::thread thread_;
};

}  // namespace multiworker::detail
