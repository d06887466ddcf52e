#pragma once

/// @file
/// relaunch_under_mpirun(): Backend::mpi without a launch command. A program
/// started on its own starts its own mpirun job, with itself as every rank,
/// waits for it outside the job, and exits with the status rank 0's main()
/// exited with.

#include <multiworker/detail/mpi_launch.hpp>
#include <multiworker/detail/mpi_link.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace multiworker {

/// Where relaunch_under_mpirun() starts the job: rank 0 on this host, and one
/// agent rank per entry of `hosts` (a host named twice gets two), or
/// `agents` of them on this host when `hosts` is empty.
struct MpiLaunch {
    /// An agent rank on each (as mpirun's --host names them); empty: this host only.
    std::vector<std::string> hosts{};
    /// Agent ranks on this host, when `hosts` is empty.
    unsigned agents = 1;
    /// More arguments for mpirun, before the program: transports, `--mca` settings.
    std::vector<std::string> mpirun_arguments{};
    /// The launcher: Open MPI's, named explicitly (Debian switches `mpirun` between implementations).
    std::string mpirun = "mpirun.openmpi";
};

/// The command that runs `program` with `arguments` as an mpirun job laid
/// out by `launch`. --enable-recovery: the Processor outlives a lost agent;
/// --bind-to none: an agent's forked workers must not share its one core;
/// --oversubscribe: agents relay and seldom compute, so ranks may outnumber cores.
inline std::vector<std::string> mpirun_command(const MpiLaunch& launch, const std::string& program,
                                               const std::vector<std::string>& arguments) {
    std::vector<std::string> command{launch.mpirun, "--enable-recovery", "--bind-to", "none", "--oversubscribe"};
    if (launch.hosts.empty()) {
        command.insert(command.end(), {"-np", std::to_string(1 + launch.agents)});
    } else {
        // Ranks fill the hosts in this order: rank 0 here, then the agents.
        std::vector<std::pair<std::string, unsigned>> slots{{"localhost", 1}};
        for (const std::string& host : launch.hosts) {
            const auto same = std::find_if(slots.begin(), slots.end(), [&](const auto& s) { return s.first == host; });
            if (same != slots.end()) {
                ++same->second;
            } else {
                slots.emplace_back(host, 1);
            }
        }
        std::string hosts;
        for (const auto& [host, count] : slots)
            hosts += (hosts.empty() ? "" : ",") + host + ":" + std::to_string(count);
        command.insert(command.end(), {"-np", std::to_string(1 + launch.hosts.size()), "--host", hosts});
    }
    command.insert(command.end(), launch.mpirun_arguments.begin(), launch.mpirun_arguments.end());
    command.push_back(program);
    command.insert(command.end(), arguments.begin(), arguments.end());
    return command;
}

/// Makes this program rank 0 of an mpirun job it starts itself, for
/// Backend::mpi without a launch command. Under mpirun (any rank) it returns
/// at once. Otherwise it runs `launch.mpirun --enable-recovery --bind-to none
/// --oversubscribe -np 1+agents [--host localhost:1,h1:n,...]
/// launch.mpirun_arguments... this-program argv[1]...`, waits for the job, and
/// ends this process with the status rank 0's main() exited with; it never
/// returns. Call it first in main(): everything before it runs twice.
/// Throws std::system_error if mpirun cannot be started.
inline void relaunch_under_mpirun(int argc, char** argv, const MpiLaunch& launch = {}) {
    if (const std::optional<int> rank = detail::mpirun_rank()) {
        if (*rank == 0) detail::report_exit_status_to_launcher();
        return;
    }
    const std::string program = std::filesystem::read_symlink("/proc/self/exe").string();
    const std::vector<std::string> arguments(argv + std::min(argc, 1), argv + argc);
    const std::string status_file =
        (std::filesystem::temp_directory_path() / ("multiworker_launch_status." + std::to_string(::getpid()))).string();
    std::filesystem::remove(status_file);
    const detail::LaunchedJob job = detail::run_launcher(mpirun_command(launch, program, arguments), status_file);
    std::fflush(nullptr);
    std::exit(detail::launched_job_status(status_file, job, launch.mpirun));
}

}  // namespace multiworker
