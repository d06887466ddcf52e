#pragma once

// Backend::mpi on every rank but 0: the agent. It forks this host's workers
// (the same worker pool as Backend::processes, before MPI_Init, so that no
// process forks after MPI is up), then relays tasks from rank 0 to them and
// their outcomes back, until rank 0 says stop. A task that crashes kills one
// forked worker, which the pool reports and replaces as it does on one
// machine; the agent itself runs no user code. When rank 0 falls silent for
// Options::heartbeat_limit, the agent kills its workers and exits.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/mpi_link.hpp>
#include <multiworker/detail/mpi_wire.hpp>
#include <multiworker/options.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace multiworker::detail {

class MpiAgent {
public:
    MpiAgent(const Options& options, BackendMaker make_local)
        : options_{options}, workers_{make_local(local_results_)} {}

    /// Serves until rank 0 says bye (or is lost), then ends the process.
    [[noreturn]] void serve() {
        workers_->start();  // fork before MPI_Init
        MpiLink link;
        say_hello(link);
        const StopOrder order = relay_until_stop(link);
        workers_->stop(order.grace, order.grace_end);
        send_results(link);
        link.send(0, mpi_wire::stopped);
        const bool clean = wait_for_bye(link);
        workers_.reset();
        link.finish(clean);
        std::exit(EXIT_SUCCESS);
    }

private:
    struct StopOrder {
        std::chrono::milliseconds grace{0};
        std::string grace_end;
    };

    void say_hello(MpiLink& link) {
        mpi_wire::Writer hello;
        hello.text(link.host());
        hello.number(static_cast<std::int32_t>(::getpid()));
        const auto pids = workers_->worker_pids();
        hello.number(static_cast<std::uint32_t>(pids.size()));
        for (const pid_t pid : pids) hello.number(static_cast<std::int32_t>(pid));
        link.send(0, mpi_wire::hello, hello.take());
    }

    StopOrder relay_until_stop(MpiLink& link) {
        IdleBackoff backoff;
        for (;;) {
            bool busy = false;
            while (auto message = link.receive()) {
                busy = true;
                if (message->tag == mpi_wire::tasks) submit_tasks(message->body);
                if (message->tag == mpi_wire::give_back) give_back_unstarted(link);
                if (message->tag == mpi_wire::stop) return read_stop_order(message->body);
            }
            workers_->help_while_waiting();
            busy = send_results(link) || busy;
            keep_in_touch(link);
            backoff.after(busy, link.transferring());
        }
    }

    void submit_tasks(std::span<const char> body) {
        mpi_wire::Reader tasks{body};
        while (!tasks.at_end()) {
            const auto id = tasks.number<std::uint64_t>();
            const std::span<const char> arguments = tasks.bytes();
            // Counted by the local mailbox, but run under rank 0's id (ids
            // need only be unique), so that the outcome needs no lookup.
            (void)local_results_.expect_one();
            workers_->submit(TaskId{id}, copy_bytes(arguments));
        }
    }

    // Answers rank 0's give_back, even with no task: it waits for the answer before it asks again.
    void give_back_unstarted(MpiLink& link) {
        mpi_wire::Writer tasks;
        for (const auto& [id, arguments] : workers_->take_back_unstarted()) {
            tasks.number(id.value());
            tasks.bytes(std::span<const char>{arguments.data(), arguments.size()});
        }
        link.send(0, mpi_wire::given_back, tasks.take());
    }

    static StopOrder read_stop_order(std::span<const char> body) {
        mpi_wire::Reader order{body};
        StopOrder stop;
        stop.grace = std::chrono::milliseconds{order.number<std::int64_t>()};
        stop.grace_end = order.text();
        return stop;
    }

    // Sends every outcome the local workers delivered as one message; false when there was none.
    bool send_results(MpiLink& link) {
        ResultMailbox::Batches batches = local_results_.take_all();
        mpi_wire::Writer out;
        for (auto& batch : batches) {
            for (auto& result : batch) write_result(out, result);
        }
        local_results_.recycle(std::move(batches));
        if (out.empty()) return false;
        link.send(0, mpi_wire::results, out.take());
        return true;
    }

    static void write_result(mpi_wire::Writer& out, const RawResult& result) {
        out.number(result.id.value());
        out.number(static_cast<std::int32_t>(result.worker_index));
        out.number(static_cast<std::int32_t>(result.worker_pid));
        if (const auto* value = std::get_if<Bytes>(&result.outcome)) {
            out.number(std::uint8_t{1});
            out.bytes(std::span<const char>{value->data(), value->size()});
            return;
        }
        // No LargePayload maker is given to the local backend: the rest are errors.
        const TaskError& error = *std::get<std::unique_ptr<TaskError>>(result.outcome);
        out.number(std::uint8_t{0});
        out.number(static_cast<std::uint32_t>(error.kind()));
        out.text(error.type_name());
        out.text(error.message());
        out.text(error.stack_trace());  // symbolized here: rank 0's code lies at other addresses
    }

    // Heartbeats to rank 0; ends the process when rank 0 has gone silent.
    void keep_in_touch(MpiLink& link) {
        const auto now = MpiLink::Clock::now();
        if (now >= next_heartbeat_) {
            link.beat(0);
            next_heartbeat_ = now + options_.heartbeat_interval;
        }
        if (link.silence_of(0) > options_.heartbeat_limit) {
            workers_->stop(std::chrono::milliseconds{0}, "rank 0 was lost");
            std::_Exit(EXIT_FAILURE);  // MPI cannot end cleanly without rank 0
        }
    }

    bool wait_for_bye(MpiLink& link) {
        IdleBackoff backoff;
        for (;;) {
            while (auto message = link.receive()) {
                if (message->tag == mpi_wire::bye) return mpi_wire::Reader{message->body}.number<std::uint8_t>() != 0;
            }
            keep_in_touch(link);
            backoff.after(false, link.transferring());
        }
    }

    const Options options_;
    ResultMailbox local_results_;
    std::unique_ptr<ExecutionBackend> workers_;
    MpiLink::Clock::time_point next_heartbeat_{};
};

}  // namespace multiworker::detail
