// A port of the Papyros demo (examples/demo.py of the Python package): a CPU-bound job (prime
// factorization) and a waiting job (a square root that sleeps first), each run by a plain serial
// loop and then by a Processor on Papyros's masters (worker processes, worker threads, in-process,
// and the hosts of an MPI job), with the wall times and the speed-up. The job code is the same for
// all of them: only Options::backend changes.
//
//   example_papyros_demo [--backend processes|threads|inprocess|mpi] [--job factorize|sqrt]
//
// Without --backend it runs processes, threads and in-process in turn. Backend::mpi runs one
// Processor per program, so it needs --job, and mpirun:
//   mpirun.openmpi --enable-recovery -np 3 ./example_papyros_demo --backend mpi --job factorize
// (docs/backends.md shows the same on two simulated hosts).
#include <chrono>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <map>
#include <multiworker/multiworker.hpp>
#if MULTIWORKER_EXAMPLE_WITH_MPI
#include <multiworker/mpi.hpp>
#endif
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

// The CPU-bound job: factorizes by trial division, so its cost grows with the second-largest
// prime factor.
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

// The waiting job: most of its time is spent asleep (think of a network call), not computing.
struct SlowSqrt {
    double compute(double x) const {
        std::this_thread::sleep_for(50ms);
        return std::sqrt(x);
    }
};

std::uint64_t next_prime(std::uint64_t n) {
    while (PrimeFactors{}.factorize(n).size() != 1) ++n;
    return n;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs Method over the inputs with a Processor of `workers` workers and returns the values in the
// order of the inputs (results arrive in completion order, so they are placed by TaskId).
template <auto Method, class Job, class Input>
auto run_processor(const Job& job, const std::vector<Input>& inputs, unsigned workers, multiworker::Backend backend,
                   bool one_by_one) {
    multiworker::Processor<Job, Method> p{job, {.workers = workers, .backend = backend}};
    std::map<multiworker::TaskId, std::size_t> position;
    for (std::size_t i = 0; i < inputs.size(); ++i) position[p.add(inputs[i])] = i;
    p.start();

    std::vector<multiworker::Result<typename decltype(p)::result_type>> results;
    if (one_by_one) {
        // Papyros: `for job in iter(lambda: master.popProcessedJob(timeout=2), None)`. Ends when
        // no result came within 2 s of the previous one, or when every task has its result.
        while (auto r = p.pop_result(2s)) results.push_back(std::move(*r));
    } else {
        // Papyros: `master.processedJobs(timeout=10)`: whatever arrives within 10 s in total.
        results = p.results_within(10s);
    }
    if (results.size() != inputs.size()) throw std::runtime_error{"some results did not arrive"};

    std::vector<typename decltype(p)::result_type> values(inputs.size());
    for (auto& r : results) values[position.at(r.id())] = r.value();  // throws a task's TaskError
    return values;
}

// One line of the report; false when the results differ from the serial loop's. The serial loop
// itself passes serial_seconds = 0.
bool report(const std::string& how, double seconds, double serial_seconds = 0, bool same = true) {
    std::cout << std::fixed << std::setprecision(3) << "  " << std::left << std::setw(24) << how << seconds << " s";
    if (serial_seconds > 0) {
        std::cout << "   speed-up " << std::setprecision(2) << serial_seconds / seconds << "x   "
                  << (same ? "same results as the serial loop" : "DIFFERENT RESULTS");
    }
    std::cout << '\n';
    return same;
}

// What the command line asks for.
struct Choice {
    std::vector<multiworker::Backend> backends{multiworker::Backend::processes, multiworker::Backend::threads,
                                               multiworker::Backend::in_process};
    bool factorize = true;
    bool sqrt = true;
};

Choice parse(int argc, char** argv) {
    using multiworker::Backend;
    const std::map<std::string, Backend> names{{"processes", Backend::processes},
                                               {"threads", Backend::threads},
                                               {"inprocess", Backend::in_process},
                                               {"mpi", Backend::mpi}};
    Choice choice;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string option = argv[i];
        const std::string value = argv[i + 1];
        if (option == "--backend" && names.contains(value)) {
            choice.backends = {names.at(value)};
        } else if (option == "--job" && (value == "factorize" || value == "sqrt")) {
            choice.factorize = value == "factorize";
            choice.sqrt = value == "sqrt";
        } else {
            throw std::invalid_argument{
                "usage: example_papyros_demo [--backend processes|threads|inprocess|mpi] "
                "[--job factorize|sqrt]"};
        }
    }
    if (choice.backends == std::vector{Backend::mpi} && choice.factorize && choice.sqrt) {
        throw std::invalid_argument{"--backend mpi runs one Processor per program: add --job factorize or --job sqrt"};
    }
    return choice;
}

std::string describe(multiworker::Backend backend, unsigned workers) {
    switch (backend) {
        case multiworker::Backend::processes:
            return std::to_string(workers) + " worker processes";
        case multiworker::Backend::threads:
            return std::to_string(workers) + " worker threads";
        case multiworker::Backend::in_process:
            return "in-process";
        case multiworker::Backend::mpi:
            return std::to_string(workers) + " workers an MPI agent";
    }
    return "?";
}

int main(int argc, char** argv) try {
    const Choice choice = parse(argc, argv);
    bool ok = true;

    if (choice.factorize) {
        // Numbers k * p * q with primes p of 12-27 million and q of about a billion: trial division
        // runs up to p, so the serial loop takes well under a second on one core.
        std::vector<std::uint64_t> numbers;
        for (std::uint64_t i = 0; i < 16; ++i)
            numbers.push_back((i + 2) * next_prime(12'000'000 + i * 1'000'000) * next_prime(1'000'000'000 + i * 7'919));
        const PrimeFactors factors;
        std::cout << "prime factorization (CPU-bound), " << numbers.size() << " numbers:\n";
        auto start = std::chrono::steady_clock::now();
        std::vector<std::vector<std::uint64_t>> serial_factors;
        for (std::uint64_t n : numbers) serial_factors.push_back(factors.factorize(n));
        const double serial_s = seconds_since(start);
        report("serial loop", serial_s);
        for (const auto backend : choice.backends) {
            // In-process, every task runs in this thread on the Processor's own object (handy in a
            // debugger), through the same encoding; it must give exactly what the workers gave.
            const unsigned workers = backend == multiworker::Backend::mpi ? 1 : 2;
            start = std::chrono::steady_clock::now();
            const auto got = run_processor<&PrimeFactors::factorize>(factors, numbers, workers, backend, true);
            ok &= report(describe(backend, workers), seconds_since(start), serial_s, got == serial_factors);
        }
    }

    if (choice.sqrt) {
        std::vector<double> squares;
        for (int i = 1; i <= 24; ++i) squares.push_back(i * 1.5);
        std::cout << "slow square root (sleeps 50 ms), " << squares.size() << " numbers:\n";
        const SlowSqrt slow_sqrt;
        auto start = std::chrono::steady_clock::now();
        std::vector<double> serial_roots;
        for (double x : squares) serial_roots.push_back(slow_sqrt.compute(x));
        const double serial_s = seconds_since(start);
        report("serial loop", serial_s);
        for (const auto backend : choice.backends) {
            if (backend == multiworker::Backend::in_process) continue;  // it would only repeat the serial loop
            // Waiting tasks need no core each: 8 workers overlap their sleeps on 2 cores.
            const unsigned workers = backend == multiworker::Backend::mpi ? 4 : 8;
            start = std::chrono::steady_clock::now();
            const auto got = run_processor<&SlowSqrt::compute>(slow_sqrt, squares, workers, backend, false);
            ok &= report(describe(backend, workers), seconds_since(start), serial_s, got == serial_roots);
        }
    }
    return ok ? 0 : 1;
} catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
}
