#pragma once

// One rank's end of Backend::mpi's messages: MPI_COMM_WORLD driven by a
// single thread, sends that never block (a peer that died must not stall
// the rank that talks to it), and "when did I last hear from rank r".
//
// Why never block: Open MPI 4.1 has no fault tolerance interface, and a
// blocking send or receive with a dead peer can wait forever. Run with
// `mpirun --enable-recovery`, the survivors of a lost rank keep running as
// long as they do not wait on it; heartbeats (below) tell that it is gone.

#include <multiworker/detail/mpi_wire.hpp>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <list>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace multiworker::detail {

/// This process's rank in the `mpirun` job, read from the environment
/// Open MPI's launcher sets (so it is known before MPI_Init, when the
/// agent's workers are forked); nullopt when not started by mpirun.
inline std::optional<int> mpirun_rank() {
    const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
    if (rank == nullptr) return std::nullopt;
    return std::atoi(rank);
}

/// True when the job was started with `mpirun --enable-recovery`, without
/// which Open MPI ends the whole job, rank 0 included, when one rank dies.
inline bool mpirun_recovers_lost_ranks() {
    const char* recovery = std::getenv("OMPI_MCA_orte_enable_recovery");
    return recovery != nullptr && std::string{recovery} == "1";
}

/// Sleeps a little longer each time nothing happened: a busy rank answers in
/// microseconds, an idle one costs little CPU (at most 1 ms late).
class IdleBackoff {
public:
    void after(bool something_happened) {
        if (something_happened) {
            idle_rounds_ = 0;
            return;
        }
        ++idle_rounds_;
        if (idle_rounds_ < spins) {
            std::this_thread::yield();
        } else {
            const auto shift = std::min(idle_rounds_ - spins, 6U);
            std::this_thread::sleep_for(std::chrono::microseconds{16} * (1U << shift));
        }
    }

private:
    static constexpr unsigned spins = 64;
    unsigned idle_rounds_ = 0;
};

class MpiLink {
public:
    using Clock = std::chrono::steady_clock;

    /// A message received.
    struct Message {
        int source;
        int tag;
        std::vector<char> body;
    };

    /// Initializes MPI in the calling thread, which alone uses the link.
    /// MPI_ERRORS_RETURN: a failed call is reported here, not by aborting the job.
    MpiLink() {
        int initialized = 0;
        MPI_Initialized(&initialized);
        if (initialized != 0) {
            throw std::logic_error{
                "multiworker: Backend::mpi initializes MPI itself, once per program: MPI was already initialized"};
        }
        int provided = 0;
        MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &size_);
        last_heard_.assign(static_cast<std::size_t>(size_), Clock::now());
        char name[MPI_MAX_PROCESSOR_NAME] = {};
        int length = 0;
        MPI_Get_processor_name(name, &length);
        host_.assign(name, static_cast<std::size_t>(length));
    }

    MpiLink(const MpiLink&) = delete;
    MpiLink& operator=(const MpiLink&) = delete;

    /// Ends MPI: with MPI_Finalize when every rank is known to be alive
    /// (it synchronises the whole job, so it would wait forever for a lost
    /// one), and not at all otherwise.
    void finish(bool every_rank_alive) {
        if (every_rank_alive) {
            wait_for_sends(std::chrono::seconds{10});
            MPI_Finalize();
        }
    }

    [[nodiscard]] int rank() const noexcept { return rank_; }
    [[nodiscard]] int size() const noexcept { return size_; }
    [[nodiscard]] const std::string& host() const noexcept { return host_; }

    /// Queues a message to `destination`; it leaves while poll() runs.
    void send(int destination, mpi_wire::Tag tag, std::vector<char> body = {}) {
        Outgoing& out = outgoing_.emplace_back(Outgoing{destination, std::move(body), MPI_REQUEST_NULL});
        MPI_Isend(out.body.data(), static_cast<int>(out.body.size()), MPI_BYTE, destination, tag, MPI_COMM_WORLD,
                  &out.request);
    }

    /// The next message that has arrived, if any; never waits.
    std::optional<Message> receive() {
        complete_sends();
        int arrived = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &arrived, &status);
        if (arrived == 0) return std::nullopt;
        int count = 0;
        MPI_Get_count(&status, MPI_BYTE, &count);
        Message message{status.MPI_SOURCE, status.MPI_TAG, std::vector<char>(static_cast<std::size_t>(count))};
        MPI_Recv(message.body.data(), count, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
        last_heard_[static_cast<std::size_t>(message.source)] = Clock::now();
        return message;
    }

    /// How long since the last message from `rank` (or since MPI_Init).
    [[nodiscard]] Clock::duration silence_of(int rank) const {
        return Clock::now() - last_heard_[static_cast<std::size_t>(rank)];
    }

    /// Forgets the sends still waiting for `rank`, which is gone: they
    /// would never complete. Their buffers stay allocated until the end.
    void abandon(int rank) {
        for (auto& out : outgoing_) {
            if (out.destination == rank) out.abandoned = true;
        }
    }

private:
    struct Outgoing {
        int destination;
        std::vector<char> body;  // must stay where it is until the send completes
        MPI_Request request;
        bool abandoned = false;
    };

    void complete_sends() {
        for (auto it = outgoing_.begin(); it != outgoing_.end();) {
            int done = 0;
            if (!it->abandoned) MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
            it = done != 0 ? outgoing_.erase(it) : std::next(it);
        }
    }

    void wait_for_sends(Clock::duration limit) {
        const auto deadline = Clock::now() + limit;
        while (Clock::now() < deadline) {
            complete_sends();
            bool waiting = false;
            for (const auto& out : outgoing_) waiting = waiting || !out.abandoned;
            if (!waiting) return;
        }
    }

    int rank_ = 0;
    int size_ = 1;
    std::string host_;
    std::list<Outgoing> outgoing_;  // a list: a buffer MPI holds must not move
    std::vector<Clock::time_point> last_heard_;
};

}  // namespace multiworker::detail
