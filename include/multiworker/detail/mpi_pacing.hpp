#pragma once

// What the threads that drive Backend::mpi need besides the link itself:
// which rank of the job this process is, before MPI_Init, and how to wait
// between polls.

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

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
/// microseconds, an idle one costs little CPU (at most 1 ms late). While a
/// message is crossing (`transfer_under_way`) it only yields: the bytes move
/// only while this thread calls into MPI.
class IdleBackoff {
public:
    void after(bool something_happened, bool transfer_under_way = false) {
        if (something_happened) {
            idle_rounds_ = 0;
            return;
        }
        if (!transfer_under_way) ++idle_rounds_;
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

}  // namespace multiworker::detail
