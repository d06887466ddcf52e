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
//       and takes the results. Pure per-task cost, without fork or teardown. Counters: add_ms
//       (the add() loop), wait_ms (from the last add() until wait() returns), collect_ms
//       (get_results + check); caller_ns, event_loop_ns and workers_ns, the CPU time per task
//       of the calling thread, the event loop thread and the workers together (from
//       /proc/.../schedstat): the rate is bound by their sum over the machine's cores.
//   BM_RingFloor/<workers>
//       The floor under BM_TrivialThroughputSteady: the same 100000 tasks as frames through the
//       same rings (256 KiB, at most 4096 tasks in flight per worker), with none of the library's
//       bookkeeping. One thread stages task frames and reads result frames into a vector; each
//       worker (a forked process that spins, no doorbells) answers every task frame with a
//       result frame. The gap to BM_TrivialThroughputSteady is what the library's own work
//       costs: encoding, queues, in-flight records, results delivered and decoded.
//   BM_StringThroughput
//       Like BM_TrivialThroughput/2, but the method takes a 20-char `const std::string&` and
//       returns a std::string, so arguments and results go through Boost.Serialization.
//   BM_StringThroughputSteady
//       Like BM_TrivialThroughputSteady/2 with BM_StringThroughput's method: the per-task cost of a
//       20-char string in and out, without fork or teardown.
//   BM_PayloadThroughput/<bytes>
//       Like BM_TrivialThroughputSteady/2 (one Processor with 2 workers, started once, outside the
//       timing), but the method takes a `const std::string&` of <bytes> characters and returns its
//       size (a std::size_t), so only the argument grows with <bytes>. Each iteration adds N tasks
//       one by one, waits, takes the results and checks every one; N (the tasks counter) is 50000,
//       or fewer for large payloads so that an iteration moves at most 64 MiB of arguments.
//       items_per_second is tasks per second; bytes_per_second counts argument payload only
//       (<bytes> per task, not the encoding's length prefix nor the results).
//       `python3 bench/plot.py results.json out.png` plots items_per_second against <bytes> from
//       a --benchmark_out=results.json --benchmark_out_format=json run (scripts/bench does this).
//   BM_RoundTripHot
//       Latency of one add() + blocking pop_result() with 1 already-running worker, back to back,
//       so the event loop thread and the worker are normally still spinning (not asleep).
//       p50_us and p99_us are the median and 99th percentile of the per-call latency.
//   BM_RoundTripIdle
//       The same, but 5 ms (not timed) pass before each add(), so the event loop and the worker
//       have gone to sleep and must be woken through their eventfds.
//   BM_WakeFloorIdle
//       The floor under BM_RoundTripIdle on this machine, without the library: two processes that
//       wake each other once through eventfds after 5 ms of sleep (p50_us, p99_us). The library's
//       idle round trip is four such wake-ups (caller -> event loop -> worker -> event loop ->
//       caller).
//   BM_StartToFirstResult
//       Construct a Processor with 2 workers, add one task, start() and pop_result(): the latency
//       to a first result, including the forks (fork server and workers). Teardown is not timed;
//       its average is the teardown_ms counter.
//       Every fork copies the parent's page tables, so this grows with the memory the benchmark
//       process has touched by then: its parent_rss_mb counter.
//   BM_StartToFirstResultFreshProcess
//       BM_StartToFirstResult in a fresh, small process (this binary run with --startup-probe):
//       the median over 30 Processors, as a program that starts its workers early would see it.
//       `bench_overhead --startup-probe 100` does the same after touching 100 MiB more.
//   BM_LargeResult
//       One already-running worker returns a 256 MiB std::vector<char> per iteration (through the
//       default 256 KiB ring); bytes_per_second is the result bandwidth end to end (the method's
//       own allocation and fill, encode in the worker, ring copy, decode in the parent). A first
//       result, not timed, warms both processes up; its own time is the first_ms counter: on a
//       virtual machine the first huge pages a process touches can cost far more than later ones.
//   BM_LargeResultTransport/W
//       The same, but the method returns a reference to a 256 MiB vector it built once, so the
//       figure is the library's alone (encode, ring, decode), without the method's page faults;
//       with W workers, each returning one such result per iteration at the same time.
//   BM_WorkerMemory
//       2 workers after 200000 trivial tasks: each worker's own memory (Private_Dirty in
//       /proc/<pid>/smaps_rollup: pages it wrote itself, not the ones it still shares with the
//       parent or the rings), and the shared memory the rings take (2 * ring_bytes per worker).
//   BM_IdleCpu
//       4 workers that have nothing to do, and the parent's threads, over 10 s: the CPU they use,
//       as a percentage of one core (user + system time from /proc).
//   BM_CpuBoundScaling/<workers>
//       200 tasks that each burn 1 ms of their thread's CPU time (CLOCK_THREAD_CPUTIME_ID),
//       including construction, fork and teardown.
//       workers = 0 runs in-process: the serial baseline; speed-up = Time(0) / Time(2).
//       task_ms is the mean duration of one task measured where it ran (it grows when the
//       workers compete for the CPU with each other or with other load); utilization is the
//       share of the workers' wall time spent in tasks (1.0: no dispatch overhead, no idling).
//   BM_CpuBoundScalingSteady/<workers>
//       The same 200 tasks on a Processor started once, outside the timing (workers = 0: the serial
//       loop in-process), so speed-up = Time(0) / Time(2) counts dispatch and collection only.
//
// Wall-clock figures on a shared or virtual machine vary a lot with other load; compare runs
// made under the same conditions, and prefer the repetition aggregates (median) over one run.

#include <benchmark/benchmark.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <multiworker/processor.hpp>

#include "thread_cpu.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace mw = multiworker;
namespace mwd = multiworker::detail;
using Clock = std::chrono::steady_clock;

constexpr int kTasks = 100'000;

/// This process's resident memory in MiB, from /proc/self/statm.
double resident_mib() {
    std::FILE* statm = std::fopen("/proc/self/statm", "r");
    if (statm == nullptr) return -1;
    unsigned long size_pages = 0;
    unsigned long resident_pages = 0;
    const bool read = std::fscanf(statm, "%lu %lu", &size_pages, &resident_pages) == 2;
    std::fclose(statm);
    return read ? static_cast<double>(resident_pages) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1 << 20) : -1;
}

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

/// A counter holding a per-iteration average of a total accumulated over all iterations.
benchmark::Counter per_iteration(double total) {
    return benchmark::Counter(total, benchmark::Counter::kAvgIterations);
}

/// Per-phase wall times of batch jobs, summed over iterations and reported per iteration.
struct Phases {
    double add_ms = 0, start_ms = 0, run_ms = 0, collect_ms = 0, teardown_ms = 0;

    void report(benchmark::State& state) const {
        state.counters["add_ms"] = per_iteration(add_ms);
        state.counters["start_ms"] = per_iteration(start_ms);
        state.counters["run_ms"] = per_iteration(run_ms);
        state.counters["collect_ms"] = per_iteration(collect_ms);
        state.counters["teardown_ms"] = per_iteration(teardown_ms);
    }
};

/// One whole batch job on a fresh Processor: construct, add every task (`add_all`), start(),
/// wait(), get_results() (checked by `check`), destroy. With `start_first`, start() comes right
/// after construction so that tasks are added to running workers. Returns `check`'s verdict.
template <class P, class Object, class AddAll, class Check>
bool timed_batch(Phases& phases, bool start_first, Object object, unsigned workers, AddAll&& add_all, Check&& check) {
    bool ok = true;
    Clock::time_point teardown_start;
    {
        P processor{std::move(object), mw::Options{.workers = workers}};
        auto t = Clock::now();
        if (start_first) {
            processor.start();
            phases.start_ms += ms_since(t);
            t = Clock::now();
            add_all(processor);
            phases.add_ms += ms_since(t);
        } else {
            add_all(processor);
            phases.add_ms += ms_since(t);
            t = Clock::now();
            processor.start();
            phases.start_ms += ms_since(t);
        }
        t = Clock::now();
        processor.wait();
        phases.run_ms += ms_since(t);
        t = Clock::now();
        ok = check(processor.get_results());
        phases.collect_ms += ms_since(t);
        teardown_start = Clock::now();
    }
    phases.teardown_ms += ms_since(teardown_start);
    return ok;
}

/// Skips the benchmark unless `results` holds `count` results; true when it does.
template <class Results>
bool check_count(benchmark::State& state, const Results& results, int count) {
    if (results.size() == static_cast<std::size_t>(count)) return true;
    state.SkipWithError(
        ("expected " + std::to_string(count) + " results, got " + std::to_string(results.size())).c_str());
    return false;
}

// ----- trivial tasks -----

struct Inc {
    int f(int x) const { return x + 1; }
};
using IncProcessor = mw::Processor<Inc, &Inc::f>;

void add_inc_tasks(IncProcessor& processor) {
    for (int i = 0; i < kTasks; ++i) processor.add(i);
}

/// Checks that `results` are the kTasks results of f(0) ... f(kTasks - 1), in any order.
bool check_inc_results(benchmark::State& state, const std::vector<mw::Result<int>>& results) {
    if (!check_count(state, results, kTasks)) return false;
    std::int64_t sum = 0;
    for (const auto& result : results) {
        if (!result.ok()) {
            state.SkipWithError(("task failed: " + std::string{result.error().what()}).c_str());
            return false;
        }
        sum += result.value();
    }
    if (sum != std::int64_t{kTasks} * (kTasks + 1) / 2) {
        state.SkipWithError("results have wrong values");
        return false;
    }
    return true;
}

void trivial_throughput(benchmark::State& state, bool start_first) {
    const auto workers = static_cast<unsigned>(state.range(0));
    Phases phases;
    for (auto _ : state) {
        const bool ok =
            timed_batch<IncProcessor>(phases, start_first, Inc{}, workers, add_inc_tasks,
                                      [&state](const auto& results) { return check_inc_results(state, results); });
        if (!ok) break;
    }
    state.SetItemsProcessed(state.iterations() * kTasks);
    phases.report(state);
}

void BM_TrivialThroughput(benchmark::State& state) {
    trivial_throughput(state, false);
}
BENCHMARK(BM_TrivialThroughput)->Arg(1)->Arg(2)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_TrivialThroughputStartedFirst(benchmark::State& state) {
    trivial_throughput(state, true);
}
BENCHMARK(BM_TrivialThroughputStartedFirst)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

using bench::ThreadCpu;

void BM_TrivialThroughputSteady(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    IncProcessor processor{Inc{}, mw::Options{.workers = workers}};
    processor.start();
    double add_ms = 0;      // the caller's add() loop, while the workers already run
    double wait_ms = 0;     // from the last add() until wait() returns
    double collect_ms = 0;  // get_results() and the check, with nothing else running
    const std::string event_loop = bench::event_loop_schedstat();
    const auto workers_pids = processor.worker_pids();
    const ThreadCpu before = ThreadCpu::now(event_loop, workers_pids);
    for (auto _ : state) {
        auto start = Clock::now();
        add_inc_tasks(processor);
        add_ms += ms_since(start);
        start = Clock::now();
        processor.wait();
        wait_ms += ms_since(start);
        start = Clock::now();
        const bool ok = check_inc_results(state, processor.get_results());
        collect_ms += ms_since(start);
        if (!ok) break;
    }
    state.SetItemsProcessed(state.iterations() * kTasks);
    state.counters["add_ms"] = benchmark::Counter(add_ms, benchmark::Counter::kAvgIterations);
    state.counters["wait_ms"] = benchmark::Counter(wait_ms, benchmark::Counter::kAvgIterations);
    state.counters["collect_ms"] = benchmark::Counter(collect_ms, benchmark::Counter::kAvgIterations);
    // Each thread's CPU per task: on 2 cores, what the four threads together spend is what
    // limits the rate, so this is the figure a change to the hot path should lower.
    const ThreadCpu per_task = ThreadCpu::now(event_loop, workers_pids)
                                   .per_task_since(before, static_cast<double>(state.iterations()) * kTasks);
    state.counters["caller_ns"] = per_task.caller_ns;
    state.counters["event_loop_ns"] = per_task.event_loop_ns;
    state.counters["workers_ns"] = per_task.workers_ns;
}
BENCHMARK(BM_TrivialThroughputSteady)->Arg(1)->Arg(2)->Iterations(30)->UseRealTime()->Unit(benchmark::kMillisecond);

// ----- the floor under the trivial stream -----

/// What a worker of BM_RingFloor does: answers each task frame in its ring with a result frame
/// carrying the argument + 1, until a shutdown frame. No claims, no doorbells: it spins.
[[noreturn]] void echo_increments(mwd::ByteRing tasks, mwd::ByteRing results, pid_t parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // it spins: it must not outlive a benchmark killed midway
    if (::getppid() != parent) ::_exit(0);
    tasks.resync();
    results.resync();
    mwd::FrameReader reader{64};
    for (int idle = 0;;) {
        if (!reader.poll_ring(tasks, 64)) {
            mwd::spin_pause(idle++ % 1024);
            continue;
        }
        idle = 0;
        if (reader.header().kind == mwd::FrameKind::shutdown) ::_exit(0);
        int value = 0;
        std::memcpy(&value, reader.payload().data(), sizeof value);
        ++value;
        const mwd::FrameHeader reply{
            .kind = mwd::FrameKind::result, .sequence = reader.header().sequence, .length = sizeof value};
        reader.next();
        while (!results.stage_whole(mwd::header_bytes(reply), {reinterpret_cast<const char*>(&value), sizeof value}))
            mwd::spin_pause(idle++ % 1024);
        results.publish();
        tasks.release();
    }
}

/// BM_TrivialThroughputSteady's job through the same rings and frames, with none of the
/// library's bookkeeping: one thread stages task frames for the workers (at most 4096 each in
/// flight) and reads their results into a vector, as fast as the wire allows.
void BM_RingFloor(benchmark::State& state) {
    const auto workers = static_cast<std::size_t>(state.range(0));
    constexpr std::size_t ring_bytes = 256 * 1024;
    constexpr std::size_t window = 4096;
    const std::size_t counters_bytes = (workers * 2 * sizeof(mwd::RingCounters) + 4095) / 4096 * 4096;
    mwd::SharedMapping shared{counters_bytes + workers * 2 * ring_bytes};
    mwd::prefault(shared.data(), shared.size());
    auto* counters = new (shared.data()) mwd::RingCounters[workers * 2];
    char* data = reinterpret_cast<char*>(shared.data()) + counters_bytes;
    std::vector<mwd::ByteRing> tasks;
    std::vector<mwd::ByteRing> results;
    for (std::size_t i = 0; i < workers; ++i) {
        tasks.emplace_back(&counters[2 * i], data + 2 * i * ring_bytes, ring_bytes);
        results.emplace_back(&counters[2 * i + 1], data + (2 * i + 1) * ring_bytes, ring_bytes);
    }
    std::vector<pid_t> children;
    const pid_t parent = ::getpid();
    for (std::size_t i = 0; i < workers; ++i) {
        const pid_t child = ::fork();
        if (child == 0) echo_increments(tasks[i], results[i], parent);
        children.push_back(child);
    }
    std::vector<int> answers(kTasks);
    std::vector<mwd::FrameReader> readers;
    for (std::size_t i = 0; i < workers; ++i) readers.emplace_back(64);
    for (auto _ : state) {
        std::vector<std::size_t> in_flight(workers, 0);
        int sent = 0;
        int received = 0;
        while (received < kTasks) {
            for (std::size_t i = 0; i < workers; ++i) {
                while (readers[i].poll_ring(results[i], 64)) {
                    std::memcpy(&answers[readers[i].header().sequence], readers[i].payload().data(), sizeof(int));
                    readers[i].next();
                    --in_flight[i];
                    ++received;
                }
                results[i].release();
                while (sent < kTasks && in_flight[i] < window) {
                    const mwd::FrameHeader header{.kind = mwd::FrameKind::task,
                                                  .sequence = static_cast<std::uint32_t>(sent),
                                                  .length = sizeof(int)};
                    if (!tasks[i].stage_whole(mwd::header_bytes(header),
                                              {reinterpret_cast<const char*>(&sent), sizeof sent}))
                        break;
                    ++sent;
                    ++in_flight[i];
                }
                tasks[i].publish();
            }
        }
        if (answers.front() != 1 || answers.back() != kTasks) {
            state.SkipWithError("wrong answers");
            break;
        }
    }
    for (std::size_t i = 0; i < workers; ++i) {
        const mwd::FrameHeader shutdown{.kind = mwd::FrameKind::shutdown};
        while (!tasks[i].stage_whole(mwd::header_bytes(shutdown), {})) std::this_thread::yield();
        tasks[i].publish();
    }
    for (pid_t child : children) ::waitpid(child, nullptr, 0);
    state.SetItemsProcessed(state.iterations() * kTasks);
}
BENCHMARK(BM_RingFloor)->Arg(1)->Arg(2)->Iterations(30)->UseRealTime()->Unit(benchmark::kMillisecond);

// ----- strings -----

struct Reverse {
    std::string f(const std::string& text) const { return std::string(text.rbegin(), text.rend()); }
};
using ReverseProcessor = mw::Processor<Reverse, &Reverse::f>;

const std::string kText = "abcdefghijklmnopqrst";  // 20 chars

void add_string_tasks(ReverseProcessor& processor) {
    for (int i = 0; i < kTasks; ++i) processor.add(kText);
}

/// Checks that `results` are kTasks reversals of kText.
bool check_string_results(benchmark::State& state, const std::vector<mw::Result<std::string>>& results) {
    if (!check_count(state, results, kTasks)) return false;
    const std::string expected(kText.rbegin(), kText.rend());
    const bool ok = std::all_of(results.begin(), results.end(),
                                [&expected](const auto& result) { return result.ok() && result.value() == expected; });
    if (!ok) state.SkipWithError("a string task failed or returned a wrong value");
    return ok;
}

void BM_StringThroughput(benchmark::State& state) {
    Phases phases;
    for (auto _ : state) {
        const bool ok = timed_batch<ReverseProcessor>(
            phases, false, Reverse{}, 2, add_string_tasks,
            [&state](const auto& results) { return check_string_results(state, results); });
        if (!ok) break;
    }
    state.SetItemsProcessed(state.iterations() * kTasks);
    phases.report(state);
}
BENCHMARK(BM_StringThroughput)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_StringThroughputSteady(benchmark::State& state) {
    ReverseProcessor processor{Reverse{}, mw::Options{.workers = 2}};
    processor.start();
    for (auto _ : state) {
        add_string_tasks(processor);
        processor.wait();
        if (!check_string_results(state, processor.get_results())) break;
    }
    state.SetItemsProcessed(state.iterations() * kTasks);
}
BENCHMARK(BM_StringThroughputSteady)->Iterations(20)->UseRealTime()->Unit(benchmark::kMillisecond);

// ----- payload size -----

struct Size {
    std::size_t f(const std::string& payload) const { return payload.size(); }
};
using SizeProcessor = mw::Processor<Size, &Size::f>;

/// Tasks per iteration of BM_PayloadThroughput: 50000, capped at 64 MiB of arguments.
int payload_tasks(std::size_t bytes) {
    constexpr std::size_t kMaxTasks = 50'000;
    constexpr std::size_t kMaxBytes = std::size_t{64} << 20;
    return static_cast<int>(std::clamp<std::size_t>(kMaxBytes / bytes, 1, kMaxTasks));
}

void BM_PayloadThroughput(benchmark::State& state) {
    const auto bytes = static_cast<std::size_t>(state.range(0));
    const int tasks = payload_tasks(bytes);
    std::string payload;
    for (std::size_t i = 0; i < bytes; ++i) payload.push_back(static_cast<char>('a' + i % 26));
    SizeProcessor processor{Size{}, mw::Options{.workers = 2}};
    processor.start();
    for (auto _ : state) {
        for (int i = 0; i < tasks; ++i) processor.add(payload);
        processor.wait();
        const auto results = processor.get_results();
        if (!check_count(state, results, tasks)) break;
        const bool ok = std::all_of(results.begin(), results.end(),
                                    [bytes](const auto& result) { return result.ok() && result.value() == bytes; });
        if (!ok) {
            state.SkipWithError("a payload task failed or returned a wrong size");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations() * tasks);
    state.SetBytesProcessed(state.iterations() * tasks * static_cast<std::int64_t>(bytes));
    state.counters["tasks"] = tasks;
}
BENCHMARK(BM_PayloadThroughput)
    ->Arg(8)
    ->Arg(64)
    ->Arg(512)
    ->Arg(4096)
    ->Arg(32768)
    ->Iterations(10)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ----- latency -----

/// Records one duration per iteration and reports the median and the 99th percentile, since
/// wake-up latencies have long tails that the mean ("Time") hides.
class Percentiles {
public:
    explicit Percentiles(benchmark::State& state) { samples_.reserve(static_cast<std::size_t>(state.max_iterations)); }
    void add(Clock::duration sample) { samples_.push_back(std::chrono::duration<double, std::micro>(sample).count()); }
    void report(benchmark::State& state) {
        if (samples_.empty()) return;
        std::sort(samples_.begin(), samples_.end());
        const auto at = [this](double fraction) {
            return samples_[static_cast<std::size_t>(fraction * static_cast<double>(samples_.size() - 1))];
        };
        state.counters["p50_us"] = at(0.50);
        state.counters["p99_us"] = at(0.99);
    }

private:
    std::vector<double> samples_;
};

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
    for (int i = 0; i < 100; ++i) {  // warm up: the worker's first tasks fault its pages in
        if (!round_trip(state, processor, i)) return;
    }
    Percentiles latency{state};
    int value = 0;
    for (auto _ : state) {
        const auto start = Clock::now();
        if (!round_trip(state, processor, value++)) break;
        latency.add(Clock::now() - start);
    }
    state.SetItemsProcessed(state.iterations());
    latency.report(state);
}
BENCHMARK(BM_RoundTripHot)->Iterations(20000)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_RoundTripIdle(benchmark::State& state) {
    IncProcessor processor{Inc{}, mw::Options{.workers = 1}};
    processor.start();
    if (!round_trip(state, processor, 0)) return;
    Percentiles latency{state};
    int value = 0;
    for (auto _ : state) {
        state.PauseTiming();
        std::this_thread::sleep_for(std::chrono::milliseconds{5});
        state.ResumeTiming();
        const auto start = Clock::now();
        if (!round_trip(state, processor, value++)) break;
        latency.add(Clock::now() - start);
    }
    state.SetItemsProcessed(state.iterations());
    latency.report(state);
}
BENCHMARK(BM_RoundTripIdle)->Iterations(200)->UseRealTime()->Unit(benchmark::kMicrosecond);

/// The machine's floor for BM_RoundTripIdle: no library, two processes that
/// wake each other once through eventfds after 5 ms of sleep.
void BM_WakeFloorIdle(benchmark::State& state) {
    const int ping = ::eventfd(0, EFD_CLOEXEC);
    const int pong = ::eventfd(0, EFD_CLOEXEC);
    const pid_t child = ::fork();
    if (child == 0) {
        for (std::uint64_t value = 0;;) {
            if (::read(ping, &value, sizeof value) != sizeof value || value == 2) ::_exit(0);
            if (::write(pong, &value, sizeof value) != sizeof value) ::_exit(1);
        }
    }
    Percentiles latency{state};
    std::uint64_t value = 1;
    for (auto _ : state) {
        state.PauseTiming();
        std::this_thread::sleep_for(std::chrono::milliseconds{5});
        state.ResumeTiming();
        const auto start = Clock::now();
        if (::write(ping, &value, sizeof value) != sizeof value || ::read(pong, &value, sizeof value) != sizeof value) {
            state.SkipWithError("eventfd ping-pong failed");
            break;
        }
        latency.add(Clock::now() - start);
    }
    value = 2;
    [[maybe_unused]] const ssize_t written = ::write(ping, &value, sizeof value);
    ::waitpid(child, nullptr, 0);
    ::close(ping);
    ::close(pong);
    latency.report(state);
}
BENCHMARK(BM_WakeFloorIdle)->Iterations(200)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_StartToFirstResult(benchmark::State& state) {
    double teardown_ms = 0;
    for (auto _ : state) {
        std::optional<IncProcessor> processor;
        processor.emplace(Inc{}, mw::Options{.workers = 2});
        processor->add(41);
        processor->start();
        const auto result = processor->pop_result();
        state.PauseTiming();
        const bool ok = result && result->ok() && result->value() == 42;
        const auto teardown_start = Clock::now();
        processor.reset();
        teardown_ms += ms_since(teardown_start);
        state.ResumeTiming();
        if (!ok) {
            state.SkipWithError("the first result is missing or wrong");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["teardown_ms"] = per_iteration(teardown_ms);
    state.counters["parent_rss_mb"] = resident_mib();
}
BENCHMARK(BM_StartToFirstResult)->Iterations(30)->UseRealTime()->Unit(benchmark::kMillisecond);

/// This process's peak resident memory in MiB (VmHWM), since the last reset_peak_rss().
double peak_resident_mib() {
    std::FILE* status = std::fopen("/proc/self/status", "r");
    if (status == nullptr) return -1;
    char line[256];
    double kib = -1;
    while (std::fgets(line, sizeof line, status) != nullptr) {
        if (std::sscanf(line, "VmHWM: %lf kB", &kib) == 1) break;
    }
    std::fclose(status);
    return kib / 1024;
}

/// Resets the peak that peak_resident_mib() reports to the current resident size.
void reset_peak_rss() {
    if (std::FILE* clear = std::fopen("/proc/self/clear_refs", "w")) {
        std::fputs("5", clear);
        std::fclose(clear);
    }
}

/// Options::max_pending: a producer thread adds N trivial tasks while a consumer
/// thread takes the results; the parent's peak RSS must stay bounded whatever N.
/// `peak_rss_mb` is the parent's peak resident size while they run, `peak_rss_growth_mb`
/// its growth over the resident size before (run alone, in a fresh process, for the former
/// to mean the benchmark's own: --benchmark_filter=BM_BoundedMemory).
void BM_BoundedMemory(benchmark::State& state) {
    const auto tasks = static_cast<std::uint64_t>(state.range(0));
    double growth_mb = 0;
    double peak_mb = 0;
    for (auto _ : state) {
        IncProcessor processor{Inc{}, mw::Options{.workers = 2, .max_pending = 1 << 16}};
        processor.start();
        const double before_mb = resident_mib();
        reset_peak_rss();
        std::thread producer{[&processor, tasks] {
            for (std::uint64_t i = 0; i < tasks; ++i) processor.add(static_cast<int>(i & 0xffff));
        }};
        std::uint64_t taken = 0;
        bool ok = true;
        auto last_result = Clock::now();
        while (taken < tasks && ok) {
            // pop_result() is empty also while the producer has added nothing yet.
            if (auto first = processor.pop_result(std::chrono::milliseconds{10})) {
                ok = first->ok();
                ++taken;
                last_result = Clock::now();
            } else if (Clock::now() - last_result > std::chrono::seconds{10}) {
                ok = false;
            }
            for (const auto& result : processor.get_results()) {
                ok = ok && result.ok();
                ++taken;
            }
        }
        producer.join();
        peak_mb = peak_resident_mib();
        growth_mb = peak_mb - before_mb;
        if (!ok || taken != tasks) {
            state.SkipWithError("a result is missing or failed");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(tasks));
    state.counters["peak_rss_growth_mb"] = growth_mb;
    state.counters["peak_rss_mb"] = peak_mb;
}
BENCHMARK(BM_BoundedMemory)->Arg(10'000'000)->Arg(100'000'000)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

/// A worker's pid: tells which worker ran a task.
struct WhichWorker {
    int pid() const { return static_cast<int>(::getpid()); }
};

/// start() with N workers (4 KiB rings), until every worker has served one task
/// (`all_served_ms`); the time of start() alone is the benchmark's own figure.
void BM_StartWorkers(benchmark::State& state) {
    using WhichProcessor = mw::Processor<WhichWorker, &WhichWorker::pid>;
    const auto workers = static_cast<unsigned>(state.range(0));
    double served_ms = 0;
    for (auto _ : state) {
        state.PauseTiming();
        std::optional<WhichProcessor> processor;
        processor.emplace(WhichWorker{}, mw::Options{.workers = workers, .ring_bytes = 4096});
        for (unsigned i = 0; i < 2 * workers; ++i) processor->add();
        state.ResumeTiming();
        const auto start = Clock::now();
        processor->start();
        state.PauseTiming();
        processor->wait();
        served_ms += ms_since(start);
        std::set<int> pids;
        for (const auto& result : processor->get_results()) pids.insert(result.value());
        processor.reset();
        if (pids.size() != workers) {
            state.SkipWithError("a worker did not serve");
            break;
        }
        state.ResumeTiming();
    }
    state.counters["all_served_ms"] = per_iteration(served_ms);
}
BENCHMARK(BM_StartWorkers)
    ->Arg(1)
    ->Arg(10)
    ->Arg(100)
    ->Arg(1000)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

/// `bench_overhead --startup-probe [MiB]`: prints the median of 30 start-to-first-result times, in
/// ms, and this process's resident memory in MiB, after touching MiB of extra memory (default 0),
/// to show how start-up grows with the parent's size.
int run_startup_probe(std::size_t ballast_mib) {
    const std::vector<char> ballast(ballast_mib << 20, 'x');
    std::vector<double> times;
    for (int i = 0; i < 30; ++i) {
        IncProcessor processor{Inc{}, mw::Options{.workers = 2}};
        processor.add(41);
        const auto start = Clock::now();
        processor.start();
        const auto result = processor.pop_result();
        times.push_back(ms_since(start));
        if (!result || !result->ok() || result->value() != 42) return 1;
    }
    std::sort(times.begin(), times.end());
    std::printf("%.3f %.1f\n", times[times.size() / 2], resident_mib());
    return 0;
}

void BM_StartToFirstResultFreshProcess(benchmark::State& state) {
    double median_ms = 0;
    double rss_mb = 0;
    for (auto _ : state) {
        const std::string command =
            "exec '" + std::filesystem::read_symlink("/proc/self/exe").string() + "' --startup-probe";
        std::FILE* probe = ::popen(command.c_str(), "r");
        const bool ok = probe != nullptr && std::fscanf(probe, "%lf %lf", &median_ms, &rss_mb) == 2;
        const bool exited_ok = probe != nullptr && ::pclose(probe) == 0;
        if (!ok || !exited_ok) {
            state.SkipWithError("the start-up probe process failed");
            break;
        }
    }
    state.counters["p50_ms"] = median_ms;
    state.counters["parent_rss_mb"] = rss_mb;
}
BENCHMARK(BM_StartToFirstResultFreshProcess)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// ----- large results -----

constexpr std::size_t kLargeBytes = std::size_t{256} << 20;

struct Large {
    std::vector<char> f(std::size_t bytes) const { return std::vector<char>(bytes, 'x'); }
};

/// Adds `count` tasks of a 256 MiB result at once and takes their results; false if one is
/// missing or wrong.
template <class LargeProcessor>
bool run_large_tasks(LargeProcessor& processor, int count) {
    for (int i = 0; i < count; ++i) processor.add(kLargeBytes);
    for (int i = 0; i < count; ++i) {
        const auto result = processor.pop_result();
        if (!result || !result->ok() || result->value().size() != kLargeBytes || result->value().back() != 'x') {
            return false;
        }
    }
    return true;
}

/// `per_iteration` 256 MiB results per benchmark iteration from a started Processor, the tasks
/// added at once. A worker replaced meanwhile (the parent killed it for a frame it misread, say)
/// fails the benchmark: its figures would hide a fork per result.
template <class LargeProcessor>
void time_large_results(benchmark::State& state, LargeProcessor& processor, int per_iteration = 1) {
    const auto pids = processor.worker_pids();
    for (auto _ : state) {
        if (!run_large_tasks(processor, per_iteration)) {
            state.SkipWithError("a large result is missing or wrong");
            break;
        }
        if (processor.worker_pids() != pids) {
            state.SkipWithError("a worker was replaced during the benchmark");
            break;
        }
    }
    // Bytes only: a few results a second say less, and bench/ab.py then compares GiB/s.
    state.SetBytesProcessed(state.iterations() * per_iteration * static_cast<std::int64_t>(kLargeBytes));
}

void BM_LargeResult(benchmark::State& state) {
    mw::Processor<Large, &Large::f> processor{Large{}, mw::Options{.workers = 1}};
    processor.start();
    const auto start = Clock::now();
    if (!run_large_tasks(processor, 1)) {
        state.SkipWithError("the first large result is missing or wrong");
        return;
    }
    state.counters["first_ms"] = ms_since(start);
    time_large_results(state, processor);
}
BENCHMARK(BM_LargeResult)->Iterations(4)->UseRealTime()->Unit(benchmark::kMillisecond);

/// BM_LargeResult's method alone, called in this thread: what its own
/// allocation costs (65,536 fresh 4 KiB pages, zero-filled, then written),
/// a floor for that benchmark that no transport can lower.
void BM_LargeResultMethodAlone(benchmark::State& state) {
    for (auto _ : state) {
        const std::vector<char> value = Large{}.f(kLargeBytes);
        benchmark::DoNotOptimize(value.data());
    }
    // Bytes only: a few results a second say less, and bench/ab.py then compares GiB/s.
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(kLargeBytes));
}
BENCHMARK(BM_LargeResultMethodAlone)->Iterations(4)->UseRealTime()->Unit(benchmark::kMillisecond);

/// The transport alone: the method returns a reference to a buffer it built
/// once, so no time goes to the method's own allocation (65,536 fresh pages).
struct LargeKept {
    std::vector<char> buffer = std::vector<char>(kLargeBytes, 'x');
    const std::vector<char>& f(std::size_t) const { return buffer; }
};

void BM_LargeResultTransport(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    mw::Processor<LargeKept, &LargeKept::f> processor{LargeKept{}, mw::Options{.workers = workers}};
    processor.start();
    // Warm up: first use of each worker's copy and of the buffers' memory.
    if (!run_large_tasks(processor, static_cast<int>(workers))) {
        state.SkipWithError("a warm-up large result is missing or wrong");
        return;
    }
    time_large_results(state, processor, static_cast<int>(workers));
}
BENCHMARK(BM_LargeResultTransport)->Arg(1)->Arg(2)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

// ----- CPU-bound scaling -----

constexpr int kCpuTasks = 200;

/// This thread's CPU time so far.
std::chrono::nanoseconds thread_cpu_time() {
    timespec now{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return std::chrono::seconds{now.tv_sec} + std::chrono::nanoseconds{now.tv_nsec};
}

/// Spins until this thread has used `cpu` of CPU time: a task of the same CPU cost however fast
/// the (shared, virtual) machine runs at the moment, which a loop calibrated once is not.
std::uint64_t burn(std::chrono::nanoseconds cpu) {
    const auto start = thread_cpu_time();
    volatile std::uint64_t accumulator = 0;
    while (thread_cpu_time() - start < cpu) {
        for (std::uint64_t i = 0; i < 10'000; ++i) accumulator = accumulator + i;
    }
    return accumulator;
}

/// Burns 1 ms of CPU per task and returns how long that took in nanoseconds, measured where the
/// task ran, so that the benchmark can tell slower tasks (a busy machine) from idle workers.
struct Burner {
    std::int64_t f(int seed) const {
        const auto start = Clock::now();
        benchmark::DoNotOptimize(burn(std::chrono::milliseconds{1}) + static_cast<std::uint64_t>(seed));
        return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    }
};
using BurnerProcessor = mw::Processor<Burner, &Burner::f>;

void BM_CpuBoundScaling(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    double elapsed_ms = 0;
    double task_ms = 0;  // sum of the task durations measured inside the tasks
    for (auto _ : state) {
        const auto start = Clock::now();
        bool ok = true;
        {
            BurnerProcessor processor{Burner{}, mw::Options{.workers = workers}};
            for (int i = 0; i < kCpuTasks; ++i) processor.add(i);
            processor.start();
            processor.wait();
            const auto results = processor.get_results();
            ok = results.size() == static_cast<std::size_t>(kCpuTasks);
            for (const auto& result : results) {
                ok = ok && result.ok();
                if (result.ok()) task_ms += static_cast<double>(result.value()) / 1e6;
            }
        }
        elapsed_ms += ms_since(start);
        if (!ok) {
            state.SkipWithError("CPU-bound tasks failed or went missing");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations() * kCpuTasks);
    const double tasks = static_cast<double>(state.iterations()) * kCpuTasks;
    // How long one task took where it ran: ~1 when the machine gives each worker a whole core.
    state.counters["task_ms"] = tasks > 0 ? task_ms / tasks : 0.0;
    // Share of the workers' wall time spent inside tasks: 1.0 means no dispatch, fork or
    // teardown overhead and no idle worker.
    state.counters["utilization"] =
        elapsed_ms > 0 ? task_ms / (elapsed_ms * static_cast<double>(std::max(1U, workers))) : 0.0;
}
BENCHMARK(BM_CpuBoundScaling)->Arg(0)->Arg(1)->Arg(2)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_CpuBoundScalingSteady(benchmark::State& state) {
    const auto workers = static_cast<unsigned>(state.range(0));
    BurnerProcessor processor{Burner{}, mw::Options{.workers = workers}};
    processor.start();
    double task_ms = 0;
    for (auto _ : state) {
        for (int i = 0; i < kCpuTasks; ++i) processor.add(i);
        processor.wait();
        const auto results = processor.get_results();
        const bool ok = results.size() == static_cast<std::size_t>(kCpuTasks) &&
                        std::all_of(results.begin(), results.end(), [](const auto& result) { return result.ok(); });
        if (!ok) {
            state.SkipWithError("CPU-bound tasks failed or went missing");
            break;
        }
        for (const auto& result : results) task_ms += static_cast<double>(result.value()) / 1e6;
    }
    state.SetItemsProcessed(state.iterations() * kCpuTasks);
    const double tasks = static_cast<double>(state.iterations()) * kCpuTasks;
    state.counters["task_ms"] = tasks > 0 ? task_ms / tasks : 0.0;
}
BENCHMARK(BM_CpuBoundScalingSteady)->Arg(0)->Arg(2)->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::strcmp(argv[1], "--startup-probe") == 0) {
        return run_startup_probe(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 0);
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

// ----- idle cost -----

/// CPU seconds (user + system) a process or thread has used, from /proc.
double cpu_seconds(const std::string& stat_path) {
    std::FILE* file = std::fopen(stat_path.c_str(), "r");
    if (file == nullptr) return 0;
    char line[1024] = {};
    const bool read = std::fgets(line, sizeof line, file) != nullptr;
    std::fclose(file);
    if (!read) return 0;
    const char* after_name = std::strrchr(line, ')');
    if (after_name == nullptr) return 0;
    unsigned long user = 0;
    unsigned long system = 0;
    // Fields after the name: state(3) ... utime(14) stime(15).
    if (std::sscanf(after_name + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &user, &system) != 2)
        return 0;
    return static_cast<double>(user + system) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// Sum of a kB field (e.g. "Private_Dirty:") of /proc/<pid>/smaps_rollup; -1 if unreadable.
double smaps_kb(pid_t pid, const std::string& field) {
    std::FILE* file = std::fopen(("/proc/" + std::to_string(pid) + "/smaps_rollup").c_str(), "r");
    if (file == nullptr) return -1;
    char line[256];
    double total = 0;
    while (std::fgets(line, sizeof line, file) != nullptr) {
        if (std::strncmp(line, field.c_str(), field.size()) == 0) total += std::atof(line + field.size());
    }
    std::fclose(file);
    return total;
}

void BM_WorkerMemory(benchmark::State& state) {
    const mw::Options options{.workers = 2};
    IncProcessor processor{Inc{}, options};
    processor.start();
    double worst_private_kb = 0;
    for (auto _ : state) {
        for (int i = 0; i < 2 * kTasks; ++i) processor.add(i);
        processor.wait();
        if (!check_count(state, processor.get_results(), 2 * kTasks)) break;
        for (pid_t pid : processor.worker_pids())
            worst_private_kb = std::max(worst_private_kb, smaps_kb(pid, "Private_Dirty:"));
    }
    state.counters["worker_private_kb"] = worst_private_kb;
    state.counters["ring_shared_kb"] = 2.0 * static_cast<double>(options.ring_bytes) * options.workers / 1024;
}
BENCHMARK(BM_WorkerMemory)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

/// CPU used by 4 idle workers and by the parent's threads over 10 s, as a percentage of one core.
void BM_IdleCpu(benchmark::State& state) {
    IncProcessor processor{Inc{}, mw::Options{.workers = 4}};
    processor.add(1);
    processor.start();
    processor.wait();
    const auto pids = processor.worker_pids();
    const auto total = [&pids] {
        double seconds = cpu_seconds("/proc/self/stat");
        for (pid_t pid : pids) seconds += cpu_seconds("/proc/" + std::to_string(pid) + "/stat");
        return seconds;
    };
    double used = 0;
    double wall = 0;
    for (auto _ : state) {
        std::this_thread::sleep_for(std::chrono::milliseconds{500});  // let every spin phase end
        const double before = total();
        const auto start = Clock::now();
        std::this_thread::sleep_for(std::chrono::seconds{10});
        used += total() - before;
        wall += std::chrono::duration<double>(Clock::now() - start).count();
    }
    state.counters["idle_cpu_percent_of_a_core"] = 100.0 * used / wall;
}
BENCHMARK(BM_IdleCpu)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);
