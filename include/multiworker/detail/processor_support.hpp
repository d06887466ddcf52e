#pragma once

// What Processor and Pipeline share besides the engine: the log sinks the
// options name, the per-worker hooks of a user's type, the checks of options
// that in-process mode cannot honour, and how a large result is read.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/wire.hpp>
#include <multiworker/options.hpp>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace multiworker::detail {

template <class Tuple>
struct tuple_decoder;
template <class... Ts>
struct tuple_decoder<std::tuple<Ts...>> {
    static std::tuple<Ts...> decode(std::span<const char> bytes) { return decode_values<Ts...>(bytes); }
};

/// The sinks that receive worker log records, as Options describes them.
inline std::vector<std::shared_ptr<spdlog::logger>> log_destinations(const Options& options) {
    std::vector<std::shared_ptr<spdlog::logger>> destinations;
    if (!options.log_file.empty()) {
        auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.log_file);
        auto file_logger = std::make_shared<spdlog::logger>("multiworker", std::move(sink));
        file_logger->set_level(spdlog::level::trace);
        destinations.push_back(std::move(file_logger));
    }
    if (options.logger) destinations.push_back(options.logger);
    if (destinations.empty()) destinations.push_back(spdlog::default_logger());
    return destinations;
}

/// T's optional per-worker hooks (on_worker_start, on_worker_exit: to open
/// and close a connection, say), called on `object`: each worker's copy.
template <class T>
WorkerHooks hooks_of(T& object) {
    WorkerHooks hooks;
    if constexpr (requires { object.on_worker_start(); }) hooks.on_start = [&object] { object.on_worker_start(); };
    if constexpr (requires { object.on_worker_exit(); }) hooks.on_exit = [&object] { object.on_worker_exit(); };
    return hooks;
}

/// In-process, a task runs in the caller's thread: nothing can stop it at a
/// deadline, and no fresh process can replace the object.
inline void reject_in_process_options(const Options& options) {
    const auto reject = [](const char* option, const char* why) {
        throw std::invalid_argument{std::string{"multiworker::Processor: Options::"} + option +
                                    " needs worker processes (workers >= 1): " + why};
    };
    if (options.task_timeout.count() != 0) {
        reject("task_timeout",
               "in-process mode (workers = 0) runs each task in the calling thread, "
               "where nothing can stop it at a deadline");
    }
    if (options.max_tasks_per_worker != 0) {
        reject("max_tasks_per_worker", "in-process mode (workers = 0) has no worker process to replace");
    }
}

/// The backend named by MULTIWORKER_BACKEND; throws for a name it does not know.
inline Backend backend_named(std::string_view name) {
    if (name == "processes") return Backend::processes;
    if (name == "threads") return Backend::threads;
    if (name == "in_process") return Backend::in_process;
    if (name == "mpi") return Backend::mpi;
    throw std::invalid_argument{"multiworker: MULTIWORKER_BACKEND=" + std::string{name} +
                                " names no backend (processes, threads, in_process or mpi)"};
}

/// `options` with what the environment asks for (MULTIWORKER_DEBUG_WORKER,
/// MULTIWORKER_BACKEND), and with the backend workers = 0 selects.
inline Options with_environment(Options options) {
    if (const char* debug = std::getenv("MULTIWORKER_DEBUG_WORKER"); debug != nullptr && *debug != '\0') {
        options.debug_worker = std::atoi(debug);
    }
    if (const char* backend = std::getenv("MULTIWORKER_BACKEND"); backend != nullptr && *backend != '\0') {
        options.backend = backend_named(backend);
    }
    if (options.workers == 0) options.backend = Backend::in_process;
    return options;
}

/// Worker threads share the process: nothing can kill one, stop a debugger
/// in one alone, or give it a log sink or stdout of its own.
inline void reject_thread_options(const Options& options) {
    const auto reject = [](const char* option, const char* why) {
        throw std::invalid_argument{std::string{"multiworker::Processor: Options::"} + option +
                                    " needs worker processes (Backend::processes), not Backend::threads: " + why};
    };
    if (options.task_timeout.count() != 0) reject("task_timeout", "a thread cannot be stopped at a deadline");
    if (options.debug_worker >= 0) {
        reject("debug_worker", "threads run in the calling process; attach the debugger to it instead");
    }
    if (options.worker_output == WorkerOutput::log) {
        reject("worker_output = WorkerOutput::log", "threads write to the process's own stdout and stderr");
    }
    if (!options.log_file.empty() || options.logger) {
        reject(options.logger ? "logger" : "log_file",
               "worker threads log through the process's own spdlog default logger "
               "(spdlog::set_default_logger() chooses it)");
    }
}

/// Makes Backend::mpi's backend for this rank, given what runs this host's
/// workers (on agent ranks it serves and ends the process instead of
/// returning). Set by <multiworker/mpi.hpp>, so that only programs that use
/// MPI include and link it.
using MpiBackendFactory = std::unique_ptr<ExecutionBackend> (*)(const Options& options, ResultMailbox& mailbox,
                                                                BackendMaker make_local_workers);

inline MpiBackendFactory& mpi_backend_factory() noexcept {
    static MpiBackendFactory factory = nullptr;
    return factory;
}

inline std::unique_ptr<ExecutionBackend> make_mpi_backend(const Options& options, ResultMailbox& mailbox,
                                                          BackendMaker make_local_workers) {
    if (mpi_backend_factory() == nullptr) {
        throw std::invalid_argument{
            "multiworker::Processor: Backend::mpi needs #include <multiworker/mpi.hpp> and the multiworker::mpi "
            "CMake target (which links MPI)"};
    }
    return mpi_backend_factory()(options, mailbox, std::move(make_local_workers));
}

/// A string or vector of numbers is read from the ring straight into the
/// value the caller receives (see LargePayload); other types are decoded
/// from a buffer (an empty maker).
template <class R>
LargePayloadMaker large_result_maker() {
    if constexpr (is_plain_buffer<R>) {
        return [](std::size_t payload_bytes) -> std::unique_ptr<LargePayload> {
            return PlainValuePayload<R>::make(payload_bytes);
        };
    } else {
        return {};
    }
}

}  // namespace multiworker::detail
