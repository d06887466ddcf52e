// Backend::threads beside Backend::processes, in one run, rounds alternating
// between the two so that both see the same machine. Prints one JSON line per
// (backend, workload) with the median over the rounds.
//
//   start_to_first_result_ms   construct, start(), one task, its result
//   start_large_parent_ms      the same while the program holds 1 GiB it has written
//   trivial_throughput_us      us a task, 1,000,000 `int f(int)` tasks, steady (after a first batch)
//   round_trip_us              median hot round trip (add one, pop_result), 2,000 in a row
//   sleep_efficiency           400 tasks of 1 ms sleep on 2 workers: (400 x 1 ms / 2) / elapsed
//   sleep10_efficiency_<W>     40 tasks a worker of a 10 ms sleep on W = 2, 4, 8, 16 workers
//   throw_traced_us            us a task, 100,000 tasks that throw, stack traces captured (the default)
//   throw_untraced_us          the same with Options::exception_stack_traces = false
//
// Usage: bench_backends [--rounds N] [--quick]

#include <multiworker/multiworker.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace mw = multiworker;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct Inc {
    int inc(int x) { return x + 1; }
};
struct Sleeper {
    int nap(int x) {
        std::this_thread::sleep_for(1ms);
        return x;
    }
};
using IncProcessor = mw::Processor<Inc, &Inc::inc>;
using SleepProcessor = mw::Processor<Sleeper, &Sleeper::nap>;

double since(Clock::time_point start, double unit_seconds) {
    return std::chrono::duration<double>(Clock::now() - start).count() / unit_seconds;
}

mw::Options options_for(mw::Backend backend, unsigned workers) {
    mw::Options options{.workers = workers, .backend = backend};
    options.worker_output = mw::WorkerOutput::inherit;
    return options;
}

double start_to_first_result_ms(mw::Backend backend) {
    const auto start = Clock::now();
    IncProcessor processor{Inc{}, options_for(backend, 2)};
    processor.start();
    processor.add(1);
    (void)processor.pop_result(10s);
    return since(start, 1e-3);
}

double start_large_parent_ms(mw::Backend backend) {
    std::vector<char> resident(std::size_t{1} << 30);
    std::memset(resident.data(), 1, resident.size());  // written: every page is the program's own
    const double ms = start_to_first_result_ms(backend);
    return resident[12345] == 1 ? ms : -1;
}

double trivial_throughput_us(mw::Backend backend, int tasks) {
    IncProcessor processor{Inc{}, options_for(backend, 2)};
    processor.start();
    for (int round = 0; round < 2; ++round) {  // the first batch warms up; the second is measured
        const auto start = Clock::now();
        for (int i = 0; i < tasks; ++i) processor.add(i);
        processor.wait();
        (void)processor.get_results();
        if (round == 1) return since(start, 1e-6) / tasks;
    }
    return 0;
}

double round_trip_us(mw::Backend backend, int count) {
    IncProcessor processor{Inc{}, options_for(backend, 1)};
    processor.start();
    std::vector<double> times;
    for (int i = 0; i < count + 100; ++i) {
        const auto start = Clock::now();
        processor.add(i);
        (void)processor.pop_result(10s);
        if (i >= 100) times.push_back(since(start, 1e-6));
    }
    std::nth_element(times.begin(), times.begin() + count / 2, times.end());
    return times[static_cast<std::size_t>(count / 2)];
}

double sleep_efficiency(mw::Backend backend, int tasks) {
    const auto start = Clock::now();
    SleepProcessor processor{Sleeper{}, options_for(backend, 2)};
    processor.start();
    for (int i = 0; i < tasks; ++i) processor.add(i);
    processor.wait();
    (void)processor.get_results();
    return (tasks * 1e-3 / 2) / since(start, 1.0);
}

double sleep10_efficiency(mw::Backend backend, unsigned workers) {
    struct LongSleeper {
        int nap(int x) {
            std::this_thread::sleep_for(10ms);
            return x;
        }
    };
    mw::Processor<LongSleeper, &LongSleeper::nap> processor{LongSleeper{}, options_for(backend, workers)};
    processor.start();
    const int tasks = 40 * static_cast<int>(workers);
    const auto start = Clock::now();
    for (int i = 0; i < tasks; ++i) processor.add(i);
    processor.wait();
    const double elapsed = since(start, 1.0);
    (void)processor.get_results();
    return (tasks * 10e-3 / workers) / elapsed;
}

struct Thrower {
    int fail(int x) { throw std::runtime_error{"task " + std::to_string(x) + " failed"}; }
};

double throw_us(mw::Backend backend, bool traced, int tasks) {
    mw::Options options = options_for(backend, 2);
    options.exception_stack_traces = traced;
    mw::Processor<Thrower, &Thrower::fail> processor{Thrower{}, options};
    processor.start();
    const auto start = Clock::now();
    for (int i = 0; i < tasks; ++i) processor.add(i);
    processor.wait();
    const auto results = processor.get_results();
    return results.size() == static_cast<std::size_t>(tasks) ? since(start, 1e-6) / tasks : -1;
}

double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    int rounds = 5;
    bool quick = false;
    for (int i = 1; i < argc; ++i) {
        if (std::string{argv[i]} == "--rounds" && i + 1 < argc) rounds = std::stoi(argv[++i]);
        if (std::string{argv[i]} == "--quick") quick = true;
    }
    const int tasks = quick ? 100'000 : 1'000'000;
    const std::map<std::string, mw::Backend> backends{{"processes", mw::Backend::processes},
                                                      {"threads", mw::Backend::threads}};
    std::map<std::pair<std::string, std::string>, std::vector<double>> samples;
    for (int round = 0; round < rounds; ++round) {
        for (const auto& [name, backend] : backends) {
            samples[{name, "start_to_first_result_ms"}].push_back(start_to_first_result_ms(backend));
            samples[{name, "start_large_parent_ms"}].push_back(start_large_parent_ms(backend));
            samples[{name, "trivial_throughput_us"}].push_back(trivial_throughput_us(backend, tasks));
            samples[{name, "round_trip_us"}].push_back(round_trip_us(backend, 2'000));
            samples[{name, "sleep_efficiency"}].push_back(sleep_efficiency(backend, 400));
            for (const unsigned workers : {2U, 4U, 8U, 16U}) {
                samples[{name, "sleep10_efficiency_" + std::to_string(workers)}].push_back(
                    sleep10_efficiency(backend, workers));
            }
            samples[{name, "throw_traced_us"}].push_back(throw_us(backend, true, tasks / 10));
            samples[{name, "throw_untraced_us"}].push_back(throw_us(backend, false, tasks / 10));
        }
    }
    for (const auto& [key, values] : samples) {
        std::printf("{\"backend\": \"%s\", \"workload\": \"%s\", \"median\": %.4g, \"rounds\": %zu}\n",
                    key.first.c_str(), key.second.c_str(), median(values), values.size());
    }
}
