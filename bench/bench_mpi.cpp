// Backend::mpi's per-task cost, run under mpirun: rank 0 measures, the other
// ranks are agents with one worker each (as many workers as mpi4py.futures
// has worker ranks in bench/mpi_peers.py). Prints one JSON line per workload:
//
//   round_trip_us    median of 2,000 one-by-one round trips (add, pop_result)
//   throughput_us    us a task, 20,000 trivial tasks added at once, then waited for
//   large_ms         ms a task, 50 tasks of 1 MiB of arguments each, returning its size
//
// or, with --sleep-efficiency W (W workers on each agent), one workload:
//
//   sleep_efficiency_<total workers>   40 tasks a worker of a 10 ms sleep: (tasks x 10 ms /
//                                      workers) / the time from the first add to the last result
//
// or, with --uneven W (W workers on each agent), two figures:
//
//   uneven_ms         200 sleeps added at once, one in ten of 200 ms and the rest of 5 ms, in a
//                     fixed shuffled order (bench_first_run uneven's): from the first add to wait()
//   uneven_ideal_ms   their sum spread evenly over the workers
//
// or, with --queue-memory N, one workload:
//
//   queued_task_bytes   rank 0's RSS growth a task while N `int f(int)` tasks wait, added before
//                       start() (then they run, and every result is checked)
//
// or, with --transport-floor, the floor under round_trip_us, without the library:
//
//   transport_round_trip_us   median of 2,000 MPI_Send/MPI_Recv ping-pongs of 16 bytes between
//                             ranks 0 and 1 (the other ranks only initialise and finalise)
//
// Usage: mpirun.openmpi --enable-recovery -np 3 bench_mpi
//            [--quick | --sleep-efficiency W | --uneven W | --queue-memory N | --transport-floor]

#include <multiworker/mpi.hpp>
#include <multiworker/multiworker.hpp>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace mw = multiworker;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct Work {
    long inc(long x) { return x + 1; }
    std::size_t size(const std::string& text) { return text.size(); }
};

double median(std::vector<double> values) {
    const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
    std::nth_element(values.begin(), middle, values.end());
    return *middle;
}

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

void report(const char* workload, double value) {
    std::printf("{\"peer\": \"multiworker\", \"workload\": \"%s\", \"value\": %.4g}\n", workload, value);
}

}  // namespace

struct Sleeper {
    int nap(int x) {
        std::this_thread::sleep_for(10ms);
        return x;
    }
};

int sleep_efficiency(unsigned workers_per_agent) {
    mw::Processor<Sleeper, &Sleeper::nap> processor{Sleeper{},
                                                    {.workers = workers_per_agent, .backend = mw::Backend::mpi}};
    processor.start();
    const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
    const unsigned workers = workers_per_agent * static_cast<unsigned>(std::atoi(size) - 1);
    const int tasks = 40 * static_cast<int>(workers);
    const auto start = Clock::now();
    for (int i = 0; i < tasks; ++i) processor.add(i);
    processor.wait();
    const double elapsed = seconds_since(start);
    (void)processor.get_results();
    const std::string workload = "sleep_efficiency_" + std::to_string(workers);
    report(workload.c_str(), (tasks * 0.010 / workers) / elapsed);
    return 0;
}

long resident_kib() {
    std::ifstream status{"/proc/self/status"};
    for (std::string key; status >> key;) {
        if (key == "VmRSS:") {
            long kib = 0;
            status >> kib;
            return kib;
        }
    }
    return 0;
}

struct Napper {
    int nap(int ms) {
        std::this_thread::sleep_for(std::chrono::milliseconds{ms});
        return ms;
    }
};

// What a task queued behind a long one costs at the end of a run.
int uneven(unsigned workers_per_agent) {
    std::vector<int> sleeps;
    for (int i = 0; i < 200; ++i) sleeps.push_back(i % 10 == 0 ? 200 : 5);
    std::shuffle(sleeps.begin(), sleeps.end(), std::mt19937{42});
    mw::Processor<Napper, &Napper::nap> processor{Napper{},
                                                  {.workers = workers_per_agent, .backend = mw::Backend::mpi}};
    processor.start();
    const unsigned workers =
        workers_per_agent * static_cast<unsigned>(std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")) - 1);
    const auto start = Clock::now();
    for (const int ms : sleeps) processor.add(ms);
    processor.wait();
    report("uneven_ms", seconds_since(start) * 1e3);
    report("uneven_ideal_ms", std::accumulate(sleeps.begin(), sleeps.end(), 0.0) / workers);
    std::fflush(stdout);
    return processor.get_results().size() == sleeps.size() ? 0 : 1;
}

struct Increment {
    int apply(int x) const { return x + 1; }
};

// The same task as bench_first_run's memory workload, for the same figure on one machine.
int queue_memory(int tasks) {
    mw::Processor<Increment, &Increment::apply> processor{Increment{}, {.workers = 1, .backend = mw::Backend::mpi}};
    const long before = resident_kib();
    for (int i = 0; i < tasks; ++i) processor.add(i);
    report("queued_task_bytes", static_cast<double>(resident_kib() - before) * 1024 / tasks);
    processor.start();
    processor.wait();
    long wrong = 0;
    for (const auto& result : processor.get_results()) wrong += result.ok() && result.value() > 0 ? 0 : 1;
    std::fflush(stdout);
    if (wrong != 0) std::fprintf(stderr, "bench_mpi: %ld results missing or wrong\n", wrong);
    return wrong == 0 ? 0 : 1;
}

// Plain MPI, no Processor: what two messages between ranks cost on this transport.
int transport_floor() {
    ::MPI_Init(nullptr, nullptr);
    int rank = 0;
    ::MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    constexpr int trips = 2'000;
    char buffer[16] = {};
    std::vector<double> times;
    for (int i = 0; i < trips + 100 && rank < 2; ++i) {
        const auto start = Clock::now();
        if (rank == 0) {
            ::MPI_Send(buffer, sizeof buffer, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
            ::MPI_Recv(buffer, sizeof buffer, MPI_CHAR, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            ::MPI_Recv(buffer, sizeof buffer, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            ::MPI_Send(buffer, sizeof buffer, MPI_CHAR, 0, 0, MPI_COMM_WORLD);
        }
        if (i >= 100) times.push_back(seconds_since(start) * 1e6);
    }
    if (rank == 0) report("transport_round_trip_us", median(times));
    std::fflush(stdout);
    ::MPI_Finalize();
    return 0;
}

int main(int argc, char** argv) {
    if (argc > 1 && std::string{argv[1]} == "--transport-floor") return transport_floor();
    if (argc > 2 && std::string{argv[1]} == "--queue-memory") return queue_memory(std::stoi(argv[2]));
    if (argc > 2 && std::string{argv[1]} == "--uneven") return uneven(static_cast<unsigned>(std::stoi(argv[2])));
    if (argc > 2 && std::string{argv[1]} == "--sleep-efficiency") {
        return sleep_efficiency(static_cast<unsigned>(std::stoi(argv[2])));
    }
    const bool quick = argc > 1 && std::string{argv[1]} == "--quick";
    // Two Processors would need MPI twice: one Processor, with a method per workload.
    struct Both {
        Work work;
        std::pair<long, std::size_t> run(long x, const std::string& text) { return {work.inc(x), work.size(text)}; }
    };
    mw::Processor<Both, &Both::run> processor{Both{}, {.workers = 1, .backend = mw::Backend::mpi}};
    processor.start();

    const int trips = quick ? 200 : 2'000;
    std::vector<double> times;
    for (int i = 0; i < trips + 100; ++i) {
        const auto start = Clock::now();
        processor.add(i, std::string{});
        (void)processor.pop_result(30s);
        if (i >= 100) times.push_back(seconds_since(start) * 1e6);
    }
    report("round_trip_us", median(times));

    const int tasks = quick ? 2'000 : 20'000;
    auto start = Clock::now();
    for (int i = 0; i < tasks; ++i) processor.add(i, std::string{});
    processor.wait();
    (void)processor.get_results();
    report("throughput_us", seconds_since(start) * 1e6 / tasks);

    const int large = quick ? 10 : 50;
    const std::string mebibyte(std::size_t{1} << 20, 'x');
    start = Clock::now();
    for (int i = 0; i < large; ++i) processor.add(i, mebibyte);
    processor.wait();
    (void)processor.get_results();
    report("large_ms", seconds_since(start) * 1e3 / large);
    std::fflush(stdout);
}
