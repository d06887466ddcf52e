#pragma once

// PipelineOptions::on_progress and progress_bar for a forked pipeline. The
// event loop, which owns the statistics, publishes a copy of them now and
// then (publish_due() says when: a copy per interval, not per pass); a thread
// of its own calls the user's callback and draws the bar with the latest copy
// every interval, so that a slow callback or terminal never delays the loop.
// An in-process pipeline reports once, at its end, through finish().

#include <multiworker/detail/status_line.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/pipeline_options.hpp>
#include <multiworker/pipeline_result.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace multiworker::detail {

class PipelineProgress {
public:
    using Clock = std::chrono::steady_clock;
    explicit PipelineProgress(const PipelineOptions& options)
        : callback_{options.on_progress},
          interval_{std::max(options.progress_interval, std::chrono::milliseconds{1})},
          last_report_{Clock::now()} {
        if (options.progress_bar) bar_.emplace();
    }

    PipelineProgress(const PipelineProgress&) = delete;
    PipelineProgress& operator=(const PipelineProgress&) = delete;
    ~PipelineProgress() { finish({}); }

    [[nodiscard]] bool enabled() const noexcept { return callback_ || bar_; }

    /// Starts the reporting thread (after the workers are forked: no thread of
    /// ours should run during a fork).
    void start() {
        if (!enabled()) return;
        last_report_ = Clock::now();
        thread_ = std::thread{[this] { run(); }};
        name_thread(thread_, "mw-progress");
    }

    /// For the loop: true when a fresh copy of the statistics is wanted.
    [[nodiscard]] bool publish_due(Clock::time_point now) const noexcept { return enabled() && now >= next_publish_; }

    /// For the loop: the statistics as they stand.
    void publish(std::vector<StageStats> stats, Clock::time_point now) {
        next_publish_ = now + interval_ / 2;
        std::lock_guard lock{mutex_};
        latest_ = std::move(stats);
    }

    /// Stops the thread and reports `final` (if any) once more.
    void finish(std::vector<StageStats> final) {
        {
            std::lock_guard lock{mutex_};
            if (stopping_) return;
            stopping_ = true;
            if (!final.empty()) latest_ = std::move(final);
        }
        woken_.notify_all();
        if (thread_.joinable()) thread_.join();
        if (enabled() && !latest_.empty()) report(true);
    }

private:
    void run() {
        std::unique_lock lock{mutex_};
        while (!woken_.wait_for(lock, interval_, [this] { return stopping_; })) {
            lock.unlock();
            report(false);
            lock.lock();
        }
    }

    void report(bool final) {
        std::vector<StageStats> stats;
        {
            std::lock_guard lock{mutex_};
            stats = latest_;
        }
        if (stats.empty()) return;
        const auto now = Clock::now();
        const double seconds = std::chrono::duration<double>(now - last_report_).count();
        std::vector<StageProgress> progress;
        for (std::size_t i = 0; i < stats.size(); ++i) {
            const std::uint64_t before = i < previous_.size() ? previous_[i].out : 0;
            const double rate = seconds > 0 ? static_cast<double>(stats[i].out - before) / seconds : 0;
            progress.push_back(StageProgress{stats[i].name, stats[i].in, stats[i].out, stats[i].failed, rate});
        }
        previous_ = std::move(stats);
        last_report_ = now;
        if (callback_) callback_(progress);
        if (bar_) bar_->show(format_stage_progress(progress), final);
    }

    std::function<void(const std::vector<StageProgress>&)> callback_;
    std::optional<StatusLine> bar_;
    const std::chrono::milliseconds interval_;
    Clock::time_point next_publish_{};  // the loop's
    std::mutex mutex_;
    std::condition_variable woken_;
    std::vector<StageStats> latest_;    // under mutex_
    bool stopping_ = false;             // under mutex_
    std::vector<StageStats> previous_;  // the reporting thread's
    Clock::time_point last_report_{};
    std::thread thread_;
};

}  // namespace multiworker::detail
