// Overhead benchmarks of multiworker::Processor (Google Benchmark).
//
// Run:
//   ./build/bench/bench_overhead --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// (with default settings the whole binary takes well under two minutes).
//
// What each figure means ("Time" is wall-clock time per iteration; items_per_second is tasks per
// wall-clock second; the *_ms counters are per-iteration averages of the named phase):
//
//   BM_TrivialThroughput/<workers>
//       A whole batch job of 100000 `int f(int)` tasks that do nothing: construct the Processor,
//       add() every task (queued, no worker yet), start() (forks), wait(), get_results(), and
//       destroy the Processor (stop + reap). items_per_second is the end-to-end dispatch rate
//       including fork and teardown. Counters: add_ms, start_ms (fork), run_ms (start() returned
//       until wait() returned), collect_ms (get_results + check), teardown_ms (destructor).
//   BM_TrivialThroughputStartedFirst/<workers>
//       The same job, but start() is called right after construction, so the workers are already
//       running while tasks are added one by one (add and execution overlap). run_ms here is from
//       the last add() until wait() returns.
//   BM_TrivialThroughputSteady/<workers>
//       One Processor started once, outside the timing; each iteration adds 100000 tasks, waits
//       and takes the results. Pure per-task cost, without fork or teardown.
//   BM_StringThroughput
//       Like BM_TrivialThroughput/2, but the method takes a 20-char `const std::string&` and
//       returns a std::string, so arguments and results go through Boost.Serialization.
//   BM_RoundTripHot
//       Latency of one add() + blocking pop_result() with 1 already-running worker, back to back,
//       so the supervisor thread and the worker are still spinning (never asleep).
//   BM_RoundTripIdle
//       The same, but 5 ms (not timed) pass before each add(), so the supervisor and the worker
//       have gone to sleep and must be woken through their eventfds.
//   BM_StartToFirstResult
//       Construct a Processor with 2 workers, add one task, start() and pop_result(): the latency
//       to a first result, including the forks. Teardown is not timed; it is reported in the
//       teardown_ms counter.
//   BM_LargeResult
//       One already-running worker returns a 64 MiB std::vector<char> per iteration (through a
//       1 MiB ring); bytes_per_second is the result bandwidth end to end (fill, encode, ring
//       copy, decode).
//   BM_CpuBoundScaling/<workers>
//       200 tasks that each burn ~1 ms of CPU (calibrated at startup, see burn_loops_per_ms in
//       the context), including construction, fork and teardown. workers = 0 runs in-process:
//       the serial baseline. Speed-up = Time(0) / Time(2). The `efficiency` counter is the ideal
//       time (200 ms / max(1, workers)) divided by the measured time: 1.0 is perfect scaling.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <multiworker/processor.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace mw = multiworker;
using Clock = std::chrono::steady_clock;

constexpr int kTasks = 100'000;

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

/// A counter holding a per-iteration average of a total accumulated over all iterations.
benchmark::Counter per_iteration(double total) {
    return benchmark::Counter(total, benchmark::Counter::kAvgIterations);
}

// ----- trivial tasks -----

struct Inc {
    int f(int x) const { return x + 1; }
};
using IncProcessor = mw::Processor<Inc, &Inc::f>;

/// Checks that `results` are the `count` results of f(0) ... f(count - 1), in any order.
template <class Results>
bool check_inc_results(benchmark::State& state, const Results& results, int count) {
    if (results.size() != static_cast<std::size_t>(count)) {
        state.SkipWithError(("expected " + std::to_string(count) + " results, got " +
                             std::to_string(results.size()))
                                .c_str());
        return false;
    }
    std::int64_t sum = 0;
    for (const auto& result : results) {
        if (!result.ok()) {
            state.SkipWithError(("task failed: " + std::string{result.error().what()}).c_str());
            return false;
        }
        sum += result.value();
    }
    const std::int64_t expected = std::int64_t{count} * (count + 1) / 2;
    if (sum != expected) {
        state.SkipWithError("results have wrong values");
        return false;
    }
    return true;
}

void BM_TrivialThroughput(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    double add_ms = 0, start_ms = 0, run_ms = 0, collect_ms = 0, teardown_ms = 0;
    for (auto _ : state) {
        bool ok = true;
        Clock::time_point teardown_start;
        {
            IncProcessor processor{Inc{}, mw::Options{.workers = workers}};
            auto t = Clock::now();
            for (int i = 0; i < kTasks; ++i) processor.add(i);
            add_ms += ms_since(t);
            t = Clock::now();
            processor.start();
            start_ms += ms_since(t);
            t = Clock::now();
            processor.wait();
            run_ms += ms_since(t);
            t = Clock::now();
            ok = check_inc_results(state, processor.get_results(), kTasks);
            collect_ms += ms_since(t);
            teardown_start = Clock::now();
        }
        teardown_ms += ms_since(teardown_start);
        if (!ok) break;
    }
    state.SetItemsProcessed(state.iterations() * kTasks);
    state.counters["add_ms"] = per_iteration(add_ms);
    state.counters["start_ms"] = per_iteration(start_ms);
    state.counters["run_ms"] = per_iteration(run_ms);
    state.counters["collect_ms"] = per_iteration(collect_ms);
    state.counters["teardown_ms"] = per_iteration(teardown_ms);
}
BENCHMARK(BM_TrivialThroughput)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_TrivialThroughputStartedFirst(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    double add_ms = 0, start_ms = 0, run_ms = 0, collect_ms = 0, teardown_ms = 0;
    for (auto _ : state) {
        bool ok = true;
        Clock::time_point teardown_start;
        {
            IncProcessor processor{Inc{}, mw::Options{.workers = workers}};
            auto t = Clock::now();
            processor.start();
            start_ms += ms_since(t);
            t = Clock::now();
            for (int i = 0; i < kTasks; ++i) processor.add(i);
            add_ms += ms_since(t);
            t = Clock::now();
            processor.wait();
            run_ms += ms_since(t);
            t = Clock::now();
            ok = check_inc_results(state, processor.get_results(), kTasks);
            collect_ms += ms_since(t);
            teardown_start = Clock::now();
        }
        teardown_ms += ms_since(teardown_start);
        if (!ok) break;
    }
    state.SetItemsProcessed(state.iterations() * kTasks);
    state.counters["add_ms"] = per_iteration(add_ms);
    state.counters["start_ms"] = per_iteration(start_ms);
    state.counters["run_ms"] = per_iteration(run_ms);
    state.counters["collect_ms"] = per_iteration(collect_ms);
    state.counters["teardown_ms"] = per_iteration(teardown_ms);
}
BENCHMARK(BM_TrivialThroughputStartedFirst)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_TrivialThroughputSteady(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    IncProcessor processor{Inc{}, mw::Options{.workers = workers}};
    processor.start();
    for (auto _ : state) {
        for (int i = 0; i < kTasks; ++i) processor.add(i);
        processor.wait();
        if (!check_inc_results(state, processor.get_results(), kTasks)) break;
    }
    state.SetItemsProcessed(state.iterations() * kTasks);
}
BENCHMARK(BM_TrivialThroughputSteady)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ----- strings -----

struct Reverse {
    std::string f(const std::string& text) const { return std::string(text.rbegin(), text.rend()); }
};

void BM_StringThroughput(benchmark::State& state) {
    const std::string text = "abcdefghijklmnopqrst";  // 20 chars
    const std::string expected(text.rbegin(), text.rend());
    for (auto _ : state) {
        mw::Processor<Reverse, &Reverse::f> processor{Reverse{}, mw::Options{.workers = 2}};
        for (int i = 0; i < kTasks; ++i) processor.add(text);
        processor.start();
        processor.wait();
        const auto results = processor.get_results();
        if (results.size() != static_cast<std::size_t>(kTasks)) {
            state.SkipWithError(("expected " + std::to_string(kTasks) + " results, got " +
                                 std::to_string(results.size()))
                                    .c_str());
            break;
        }
        bool ok = true;
        for (const auto& result : results) ok = ok && result.ok() && result.value() == expected;
        if (!ok) {
            state.SkipWithError("a string task failed or returned a wrong value");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations() * kTasks);
}
BENCHMARK(BM_StringThroughput)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

// ----- latency -----

/// One add() + blocking pop_result() on a running processor; false (and skip) on a wrong result.
bool round_trip(benchmark::State& state, IncProcessor& processor, int value) {
    processor.add(value);
    const auto result = processor.pop_result();
    if (!result || !result->ok() || result->value() != value + 1) {
        state.SkipWithError("round trip returned no result or a wrong one");
        return false;
    }
    return true;
}

void BM_RoundTripHot(benchmark::State& state) {
    IncProcessor processor{Inc{}, mw::Options{.workers = 1}};
    processor.start();
    for (int i = 0; i < 100; ++i) {  // warm up: the worker's first task faults its pages in
        if (!round_trip(state, processor, i)) return;
    }
    int value = 0;
    for (auto _ : state) {
        if (!round_trip(state, processor, value++)) break;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoundTripHot)->Iterations(20000)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_RoundTripIdle(benchmark::State& state) {
    IncProcessor processor{Inc{}, mw::Options{.workers = 1}};
    processor.start();
    if (!round_trip(state, processor, 0)) return;
    int value = 0;
    for (auto _ : state) {
        state.PauseTiming();
        std::this_thread::sleep_for(std::chrono::milliseconds{5});
        state.ResumeTiming();
        if (!round_trip(state, processor, value++)) break;
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoundTripIdle)->Iterations(200)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_StartToFirstResult(benchmark::State& state) {
    double teardown_ms = 0;
    for (auto _ : state) {
        std::optional<IncProcessor> processor;
        processor.emplace(Inc{}, mw::Options{.workers = 2});
        processor->add(41);
        processor->start();
        const auto result = processor->pop_result();
        state.PauseTiming();
        const auto teardown_start = Clock::now();
        processor.reset();
        teardown_ms += ms_since(teardown_start);
        if (!result || !result->ok() || result->value() != 42) {
            state.SkipWithError("the first result is missing or wrong");
            break;
        }
        state.ResumeTiming();
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["teardown_ms"] = per_iteration(teardown_ms);
}
BENCHMARK(BM_StartToFirstResult)->Iterations(30)->UseRealTime()->Unit(benchmark::kMillisecond);

// ----- large results -----

constexpr std::size_t kLargeBytes = std::size_t{64} << 20;

struct Large {
    std::vector<char> f(std::size_t bytes) const { return std::vector<char>(bytes, 'x'); }
};

void BM_LargeResult(benchmark::State& state) {
    mw::Processor<Large, &Large::f> processor{Large{}, mw::Options{.workers = 1}};
    processor.start();
    for (auto _ : state) {
        processor.add(kLargeBytes);
        const auto result = processor.pop_result();
        if (!result || !result->ok() || result->value().size() != kLargeBytes ||
            result->value().back() != 'x') {
            state.SkipWithError("the large result is missing or wrong");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(kLargeBytes));
}
BENCHMARK(BM_LargeResult)->Iterations(10)->UseRealTime()->Unit(benchmark::kMillisecond);

// ----- CPU-bound scaling -----

constexpr int kCpuTasks = 200;

/// Spins `loops` times on a volatile accumulator, which the optimizer cannot remove.
std::uint64_t burn(std::uint64_t loops) {
    volatile std::uint64_t accumulator = 0;
    for (std::uint64_t i = 0; i < loops; ++i) accumulator = accumulator + i;
    return accumulator;
}

/// Loops of burn() per millisecond on this machine: the best of a few runs of >= 20 ms.
std::uint64_t calibrate_loops_per_ms() {
    std::uint64_t loops = std::uint64_t{1} << 16;
    double elapsed_ms = 0;
    while (true) {
        const auto start = Clock::now();
        benchmark::DoNotOptimize(burn(loops));
        elapsed_ms = ms_since(start);
        if (elapsed_ms >= 20) break;
        loops *= 2;
    }
    for (int i = 0; i < 3; ++i) {
        const auto start = Clock::now();
        benchmark::DoNotOptimize(burn(loops));
        elapsed_ms = std::min(elapsed_ms, ms_since(start));
    }
    return static_cast<std::uint64_t>(static_cast<double>(loops) / elapsed_ms);
}

std::uint64_t loops_per_ms = 0;  // set in main()

struct Burner {
    std::uint64_t loops = 0;
    std::uint64_t f(int seed) const { return burn(loops) + static_cast<std::uint64_t>(seed); }
};

void BM_CpuBoundScaling(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    double total_ms = 0;
    for (auto _ : state) {
        const auto start = Clock::now();
        bool ok = true;
        {
            mw::Processor<Burner, &Burner::f> processor{Burner{loops_per_ms},
                                                        mw::Options{.workers = workers}};
            for (int i = 0; i < kCpuTasks; ++i) processor.add(i);
            processor.start();
            processor.wait();
            const auto results = processor.get_results();
            ok = results.size() == static_cast<std::size_t>(kCpuTasks);
            for (const auto& result : results) ok = ok && result.ok();
        }
        total_ms += ms_since(start);
        if (!ok) {
            state.SkipWithError("CPU-bound tasks failed or went missing");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations() * kCpuTasks);
    const double ideal_ms = static_cast<double>(state.iterations()) * kCpuTasks /
                            static_cast<double>(std::max(1U, workers));
    state.counters["efficiency"] = total_ms > 0 ? ideal_ms / total_ms : 0.0;
}
BENCHMARK(BM_CpuBoundScaling)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    loops_per_ms = calibrate_loops_per_ms();
    benchmark::AddCustomContext("burn_loops_per_ms", std::to_string(loops_per_ms));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
