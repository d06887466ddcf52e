#pragma once

/// @file
/// StageOptions and PipelineOptions: how a pipeline's stages and its run behave.

#include <spdlog/logger.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace multiworker {

/// How one pipeline stage runs. Designated initializers read well:
/// `{.workers = 12, .retries = 2}`.
struct StageOptions {
    /// Worker processes running the stage, each on its own copy of the object.
    unsigned workers = 1;
    /// How many times an item whose worker died runs again before it is an error.
    unsigned retries = 0;
    /// Also run an item again when the method threw (up to `retries` times).
    bool retry_exceptions = false;
    /// Kill a worker whose item runs longer than this (0: no limit); the item is an error.
    std::chrono::milliseconds task_timeout{0};
    /// Replace each worker process after this many items (0: never).
    std::uint64_t max_tasks_per_worker = 0;
    /// Outputs leave the stage in the order of its inputs; an emitting
    /// stage's outputs of one input leave together, in the order emitted.
    /// Costs a reorder buffer of the outputs of up to `capacity` inputs, and
    /// an item that takes long holds back those behind it.
    bool ordered = false;
    /// Items queued ahead of the stage; upstream waits while it is full.
    std::size_t capacity = 4096;
    /// How the stage is named in errors, statistics and logs (default: "stage N").
    std::string name{};
};

/// One element's progress, as PipelineOptions::on_progress reports it.
struct StageProgress {
    std::string name;           ///< as StageStats::name
    std::uint64_t in = 0;       ///< items that reached it so far
    std::uint64_t out = 0;      ///< items it handed on so far
    std::uint64_t failed = 0;   ///< inputs that ended in an error so far
    double out_per_second = 0;  ///< items handed on per second since the previous report
};

/// Renders every element's progress as one line, as PipelineOptions::progress_bar
/// shows it: `source 300 in, 300 out, 0 failed, 150.0/s | stage 1 ...`.
inline std::string format_stage_progress(const std::vector<StageProgress>& stages) {
    std::string line;
    for (const StageProgress& stage : stages) {
        char counts[128];
        std::snprintf(counts, sizeof counts, " %llu in, %llu out, %llu failed, %.1f/s",
                      static_cast<unsigned long long>(stage.in), static_cast<unsigned long long>(stage.out),
                      static_cast<unsigned long long>(stage.failed), stage.out_per_second);
        if (!line.empty()) line += " | ";
        line += stage.name;
        line += counts;
    }
    return line;
}

/// What a pipeline does when an item's method throws or its worker dies.
enum class OnError {
    record,  ///< record the error in PipelineResult::errors() and go on
    stop,    ///< end the run at the first error; run() throws PipelineError
};

/// Run-wide settings of a pipeline, given as its first constructor argument.
struct PipelineOptions {
    /// Worker log records go here, like Options::log_file.
    std::string log_file{};
    /// Lowest level of worker records forwarded to the parent.
    spdlog::level::level_enum log_level = spdlog::level::info;
    /// Logger for worker records; default: spdlog's default logger (or log_file).
    std::shared_ptr<spdlog::logger> logger{};
    /// What an item's error does to the run.
    OnError on_error = OnError::record;
    /// Run every element in the calling thread, for unit tests and debuggers.
    bool in_process = false;
    /// How long stop() (or an early stop) lets running items finish before their workers are killed.
    std::chrono::milliseconds stop_timeout{10'000};
    /// How long start() waits for the workers to be forked.
    std::chrono::milliseconds start_timeout{30'000};
    /// Bytes of each shared-memory ring between the parent and one worker (like Options::ring_bytes).
    std::size_t ring_bytes = std::size_t{256} << 10;
    /// Called every progress_interval while the run goes on, and once at its
    /// end, from a thread of the library's (in-process: once, at the end).
    std::function<void(const std::vector<StageProgress>&)> on_progress{};
    /// Draws every element's progress on stderr, one line (format_stage_progress()):
    /// redrawn in place on a terminal, a plain line every few seconds otherwise.
    bool progress_bar = false;
    /// How often on_progress is called (and the progress bar drawn).
    std::chrono::milliseconds progress_interval{1000};
};

}  // namespace multiworker
