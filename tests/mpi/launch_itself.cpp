// relaunch_under_mpirun(), as a user's program calls it: started on its own,
// this program starts an mpirun job of itself (rank 0 and two agent ranks,
// TCP on loopback), squares 100 numbers on the agents' workers, and prints
// what it saw. `launch_itself STATUS` makes rank 0's main() return STATUS,
// which the launcher must exit with; `launch_itself --missing-mpirun` names
// an mpirun that does not exist, which must be a clear error.

#include <multiworker/mpi.hpp>
#include <multiworker/multiworker.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <utility>

namespace {

struct Square {
    int rank = std::atoi(std::getenv("OMPI_COMM_WORLD_RANK") ? std::getenv("OMPI_COMM_WORLD_RANK") : "-1");
    std::pair<long, int> apply(long n) const { return {n * n, rank}; }
};

}  // namespace

int main(int argc, char** argv) {
    const bool missing = argc > 1 && std::string{argv[1]} == "--missing-mpirun";
    multiworker::MpiLaunch launch{.agents = 2,
                                  .mpirun_arguments = {"--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo",
                                                       "--mca", "oob_tcp_if_include", "lo"}};
    if (missing) launch.mpirun = "multiworker-no-such-mpirun";
    try {
        multiworker::relaunch_under_mpirun(argc, argv, launch);
    } catch (const std::system_error& error) {
        std::printf("launch failed: %s\n", error.what());
        return 9;
    }
    multiworker::Processor<Square, &Square::apply> processor{Square{},
                                                             {.workers = 1, .backend = multiworker::Backend::mpi}};
    // From here on, rank 0 only.
    std::map<multiworker::TaskId, long> numbers;
    for (long n = 0; n < 100; ++n) numbers[processor.add(n)] = n;
    processor.start();
    processor.wait();
    long wrong = 0;
    std::set<int> ranks;
    for (const auto& result : processor.get_results()) {
        const long n = numbers.at(result.id());
        if (!result.ok() || result.value().first != n * n) ++wrong;
        if (result.ok()) ranks.insert(result.value().second);
    }
    std::printf("rank %s: 100 squares, %ld wrong, computed on ranks", std::getenv("OMPI_COMM_WORLD_RANK"), wrong);
    for (const int rank : ranks) std::printf(" %d", rank);
    std::printf("\n");
    return argc > 1 ? std::atoi(argv[1]) : 0;
}
