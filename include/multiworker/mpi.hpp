#pragma once

/// @file
/// Backend::mpi: a Processor whose workers run on the hosts of an `mpirun`
/// job. Include this header (and link the multiworker::mpi CMake target) in
/// the program that sets Options::backend = Backend::mpi.
///
/// The program is started with
/// `mpirun.openmpi --enable-recovery -np K [--host ...] ./program`. Every
/// rank runs main() up to the Processor's construction. There, rank 0 goes
/// on with the program and the Processor sends the tasks; every other rank
/// becomes an agent: it forks Options::workers worker processes on its host
/// (each with its own copy of the object as that rank built it), runs the
/// tasks rank 0 sends, and ends the process when rank 0's Processor stops,
/// never returning from the constructor. So the code before the Processor
/// runs on every rank, and one Backend::mpi Processor runs per program.
///
/// Or, with no launch command: relaunch_under_mpirun() first in main()
/// (mpi_launch.hpp) starts that job from the program itself.
///
/// Without --enable-recovery, Open MPI ends the whole job when any rank dies;
/// with it, the Processor outlives the loss of an agent (see
/// Options::heartbeat_limit). docs/mpi.md has the details and the figures.

#include <multiworker/detail/mpi_agent.hpp>
#include <multiworker/detail/mpi_backend.hpp>
#include <multiworker/detail/mpi_link.hpp>
#include <multiworker/detail/processor_support.hpp>
#include <multiworker/mpi_launch.hpp>
#include <multiworker/options.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>

namespace multiworker::detail {

inline std::unique_ptr<ExecutionBackend> backend_for_this_rank(const Options& options, ResultMailbox& mailbox,
                                                               BackendMaker make_local_workers) {
    const std::optional<int> rank = mpirun_rank();
    if (!rank) {
        throw std::invalid_argument{
            "multiworker::Processor: Backend::mpi runs on the ranks of an mpirun job, and this program was not "
            "started by mpirun.openmpi (OMPI_COMM_WORLD_RANK is not set)"};
    }
    if (*rank != 0) MpiAgent{options, std::move(make_local_workers)}.serve();
    // MPI is initialized once per process, and the agents end with the first Processor.
    static std::atomic<bool> constructed{false};
    if (constructed.exchange(true)) {
        throw std::logic_error{
            "multiworker::Processor: one Backend::mpi Processor per program run (the agent ranks ended with the "
            "first)"};
    }
    return std::make_unique<MpiBackend>(options, mailbox);
}

// Before main(): from then on, Processor constructs Backend::mpi through it.
inline const bool mpi_backend_registered = (mpi_backend_factory() = &backend_for_this_rank, true);

}  // namespace multiworker::detail
