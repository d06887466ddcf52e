// Papyros's distributed master, on MPI: the same factorization job as papyros_demo, on the
// workers of an mpirun job's agent ranks. Start it with
//
//   mpirun.openmpi --enable-recovery -np 3 ./example_mpi_factorize
//
// (add --host a,b,c for hosts), or with no launch command as `./example_mpi_factorize --launch`,
// which starts that job itself (relaunch_under_mpirun) and exits with rank 0's status. Rank 0 runs
// main() past the Processor and prints; ranks 1 and 2 each fork 2 workers on their host and serve
// inside the Processor's constructor.
#include <multiworker/mpi.hpp>
#include <multiworker/multiworker.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <iostream>
#include <map>
#include <vector>

struct PrimeFactors {
    std::vector<std::uint64_t> factorize(std::uint64_t n) const {
        std::vector<std::uint64_t> factors;
        for (; n % 2 == 0; n /= 2) factors.push_back(2);
        for (std::uint64_t d = 3; d * d <= n; d += 2)
            for (; n % d == 0; n /= d) factors.push_back(d);
        if (n > 1) factors.push_back(n);
        return factors;
    }
};

int main(int argc, char** argv) {
    // Started on its own: becomes rank 0 of `mpirun.openmpi ... -np 3 ./example_mpi_factorize --launch`.
    if (argc > 1 && std::strcmp(argv[1], "--launch") == 0)
        multiworker::relaunch_under_mpirun(argc, argv, {.agents = 2});
    // Everything before the Processor runs on every rank: keep it cheap and the same everywhere.
    multiworker::Processor<PrimeFactors, &PrimeFactors::factorize> p{
        PrimeFactors{}, {.workers = 2, .backend = multiworker::Backend::mpi}};

    // From here on, only rank 0.
    std::map<multiworker::TaskId, std::uint64_t> numbers;
    for (std::uint64_t i = 0; i < 24; ++i) {
        const std::uint64_t n = (i + 2) * 1'000'003ULL * (1'000'000'007ULL + 2 * i);
        numbers[p.add(n)] = n;
    }
    p.start();
    p.wait();
    int failures = 0;
    for (const auto& r : p.get_results()) {
        if (!r.ok()) {
            std::cerr << r.error().what() << '\n';
            ++failures;
            continue;
        }
        std::uint64_t product = 1;
        for (std::uint64_t f : r.value()) product *= f;
        if (product != numbers.at(r.id())) ++failures;
    }
    std::cout << numbers.size() << " numbers factorized on the agents' workers, " << failures << " failures\n";
    return failures == 0 ? 0 : 1;
}
