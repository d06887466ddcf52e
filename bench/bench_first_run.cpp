// The first run of a fresh Processor, as a new user's program sees it (bench/compare_first_run.py
// runs each scenario in a fresh process per repetition, beside Python's multiprocessing.Pool).
//
//   bench_first_run batch add-then-start|start-then-add N [LATER]
//       A fresh Processor (2 workers, `int f(int)`): N tasks added and start()ed in the order
//       named, wait(), get_results(); then LATER (default 3) more batches of N on the same
//       Processor. Prints the first batch's and each later batch's time per task (start()
//       included in the first), the parent's RSS growth per task held, and each batch's CPU
//       time per task of the caller, the event loop and the workers ([caller, loop, workers],
//       ns; the first batch's includes the event loop's and the workers' start).
//   bench_first_run round-trip K
//       A fresh Processor with 1 worker, start(), then K add() + pop_result() back to back from
//       the very first: the median and 99th percentile of their latency.
//   bench_first_run cpu-bound parallel|serial N
//       N tasks that each burn 1 ms of CPU, on 2 workers with start() and the Processor's
//       teardown included (teardown_ms: the teardown alone), or the same loop in this process
//       without a Processor.
//   bench_first_run memory N
//       RSS growth per task while N tasks wait (added, not started), then per Result<int> held
//       after start(), wait() and get_results() (RSS from before the first add, the run's
//       tasks included), then after the results are dropped.
//   bench_first_run uneven
//       200 sleeps on 4 workers, one in ten of 200 ms and the rest of 5 ms, in a fixed shuffled
//       order: the time from the first add() to wait()'s return, beside the ideal (their sum
//       spread evenly over the workers). What a task queued behind a long one costs at the end.
//
// Each prints one JSON object on stdout.

#include <multiworker/processor.hpp>

#include "thread_cpu.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

namespace mw = multiworker;
using Clock = std::chrono::steady_clock;

struct Inc {
    int f(int x) const { return x + 1; }
};
using IncProcessor = mw::Processor<Inc, &Inc::f>;

struct Burn {
    int f(int x) const {
        timespec start{};
        ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
        timespec now = start;
        while ((now.tv_sec - start.tv_sec) * 1'000'000'000L + (now.tv_nsec - start.tv_nsec) < 1'000'000L) {
            ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
        }
        return x;
    }
};

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

/// This process's resident memory in bytes, from /proc/self/statm.
double resident_bytes() {
    std::FILE* statm = std::fopen("/proc/self/statm", "r");
    if (statm == nullptr) return -1;
    unsigned long size_pages = 0;
    unsigned long resident_pages = 0;
    const bool read = std::fscanf(statm, "%lu %lu", &size_pages, &resident_pages) == 2;
    std::fclose(statm);
    return read ? static_cast<double>(resident_pages) * static_cast<double>(::sysconf(_SC_PAGESIZE)) : -1;
}

[[noreturn]] void fail(const std::string& why) {
    std::fprintf(stderr, "bench_first_run: %s\n", why.c_str());
    std::exit(1);
}

/// Checks that `results` are those of f(0) ... f(n - 1).
void check(const std::vector<mw::Result<int>>& results, int n) {
    if (results.size() != static_cast<std::size_t>(n)) fail("expected " + std::to_string(n) + " results");
    std::int64_t sum = 0;
    for (const auto& result : results) sum += result.value();
    if (sum != std::int64_t{n} * (n + 1) / 2) fail("wrong result values");
}

void add_batch(IncProcessor& processor, int n) {
    for (int i = 0; i < n; ++i) processor.add(i);
}

/// `cpu` as a JSON array: [caller, event loop, workers] in ns a task.
std::string cpu_json(const bench::ThreadCpu& cpu) {
    char text[96];
    std::snprintf(text, sizeof text, "[%.1f, %.1f, %.1f]", cpu.caller_ns, cpu.event_loop_ns, cpu.workers_ns);
    return text;
}

int batch(std::string_view order, int n, int later) {
    const bool start_first = order == "start-then-add";
    if (!start_first && order != "add-then-start") fail("batch: the order is add-then-start or start-then-add");
    const double rss_before = resident_bytes();
    IncProcessor processor{Inc{}, {.workers = 2}};
    const bench::ThreadCpu caller_before = bench::ThreadCpu::now({}, {});
    auto begin = Clock::now();
    if (start_first) processor.start();
    add_batch(processor, n);
    if (!start_first) processor.start();
    processor.wait();
    std::vector<mw::Result<int>> results = processor.get_results();
    const double first = seconds_since(begin);
    const double held = (resident_bytes() - rss_before) / n;
    // The event loop and the workers began within the first batch: all their CPU so far is its.
    const std::string event_loop = bench::event_loop_schedstat();
    const std::vector<pid_t> workers = processor.worker_pids();
    bench::ThreadCpu mark = bench::ThreadCpu::now(event_loop, workers);
    const bench::ThreadCpu first_cpu = mark.per_task_since(caller_before, n);
    check(results, n);
    std::vector<mw::Result<int>>{}.swap(results);  // (`= {}` would keep the capacity)
    std::string later_us;
    std::string later_cpu;
    for (int round = 0; round < later; ++round) {
        mark = bench::ThreadCpu::now(event_loop, workers);
        begin = Clock::now();
        add_batch(processor, n);
        processor.wait();
        results = processor.get_results();
        const double took = seconds_since(begin);
        const bench::ThreadCpu cpu = bench::ThreadCpu::now(event_loop, workers).per_task_since(mark, n);
        check(results, n);
        std::vector<mw::Result<int>>{}.swap(results);  // (`= {}` would keep the capacity)
        later_us += (round == 0 ? "" : ", ") + std::to_string(took / n * 1e6);
        later_cpu += (round == 0 ? "" : ", ") + cpu_json(cpu);
    }
    std::printf(R"({"scenario": "batch %s", "tasks": %d, "first_us": %.5f, "rss_bytes_per_result": %.1f, )"
                R"("later_us": [%s], "first_cpu_ns": %s, "later_cpu_ns": [%s]})"
                "\n",
                std::string{order}.c_str(), n, first / n * 1e6, held, later_us.c_str(), cpu_json(first_cpu).c_str(),
                later_cpu.c_str());
    return 0;
}

int round_trip(int k) {
    IncProcessor processor{Inc{}, {.workers = 1}};
    processor.start();
    std::vector<double> latencies;
    latencies.reserve(static_cast<std::size_t>(k));
    for (int i = 0; i < k; ++i) {
        const auto begin = Clock::now();
        processor.add(i);
        const auto result = processor.pop_result();
        latencies.push_back(seconds_since(begin) * 1e6);
        if (!result || result->value() != i + 1) fail("round-trip: a wrong result");
    }
    const double first = latencies.front();
    std::sort(latencies.begin(), latencies.end());
    const auto at = [&latencies](double q) {
        return latencies[static_cast<std::size_t>(q * static_cast<double>(latencies.size() - 1))];
    };
    std::printf(R"({"scenario": "round-trip", "round_trips": %d, "first_us": %.2f, "p50_us": %.2f, "p99_us": %.2f})"
                "\n",
                k, first, at(0.5), at(0.99));
    return 0;
}

int cpu_bound(std::string_view where, int n) {
    const auto begin = Clock::now();
    std::int64_t sum = 0;
    double results_in_hand = 0;  // parallel: the seconds up to get_results(), before the teardown
    if (where == "serial") {
        const Burn burn;
        for (int i = 0; i < n; ++i) sum += burn.f(i);
    } else if (where == "parallel") {
        mw::Processor<Burn, &Burn::f> processor{Burn{}, {.workers = 2}};
        processor.start();
        for (int i = 0; i < n; ++i) processor.add(i);
        processor.wait();
        for (const auto& result : processor.get_results()) sum += result.value();
        results_in_hand = seconds_since(begin);
    } else {
        fail("cpu-bound: serial or parallel");
    }
    const double seconds = seconds_since(begin);  // the Processor's teardown included
    if (sum != std::int64_t{n} * (n - 1) / 2) fail("cpu-bound: wrong results");
    std::printf(R"({"scenario": "cpu-bound %s", "tasks": %d, "seconds": %.5f, "teardown_ms": %.3f})"
                "\n",
                std::string{where}.c_str(), n, seconds, where == "parallel" ? (seconds - results_in_hand) * 1e3 : 0.0);
    return 0;
}

int memory(int n) {
    const double before = resident_bytes();
    IncProcessor processor{Inc{}, {.workers = 2}};
    add_batch(processor, n);
    const double queued = (resident_bytes() - before) / n;
    processor.start();
    processor.wait();
    std::vector<mw::Result<int>> results = processor.get_results();
    const double held = (resident_bytes() - before) / n;
    check(results, n);
    std::vector<mw::Result<int>>{}.swap(results);  // (`= {}` would keep the capacity)
    const double after = resident_bytes() - before;
    std::printf(R"({"scenario": "memory", "tasks": %d, "queued_bytes_per_task": %.1f, )"
                R"("held_bytes_per_result": %.1f, "growth_after_release_mib": %.2f})"
                "\n",
                n, queued, held, after / (1 << 20));
    return 0;
}

struct Sleep {
    int f(int ms) const {
        std::this_thread::sleep_for(std::chrono::milliseconds{ms});
        return ms;
    }
};

int uneven() {
    constexpr int workers = 4;
    std::vector<int> sleeps;
    for (int i = 0; i < 200; ++i) sleeps.push_back(i % 10 == 0 ? 200 : 5);
    std::shuffle(sleeps.begin(), sleeps.end(), std::mt19937{42});
    mw::Processor<Sleep, &Sleep::f> processor{Sleep{}, {.workers = workers}};
    processor.start();
    const auto begin = Clock::now();
    for (const int ms : sleeps) processor.add(ms);
    processor.wait();
    const double wall_ms = seconds_since(begin) * 1e3;
    if (processor.get_results().size() != sleeps.size()) fail("uneven: a result is missing");
    const double ideal_ms = std::accumulate(sleeps.begin(), sleeps.end(), 0.0) / workers;
    std::printf(R"({"scenario": "uneven", "tasks": %zu, "wall_ms": %.1f, "ideal_ms": %.1f})"
                "\n",
                sleeps.size(), wall_ms, ideal_ms);
    return 0;
}

int usage() {
    std::fprintf(stderr,
                 "usage: bench_first_run batch add-then-start|start-then-add N [LATER]\n"
                 "       bench_first_run round-trip K\n"
                 "       bench_first_run cpu-bound parallel|serial N\n"
                 "       bench_first_run memory N\n"
                 "       bench_first_run uneven\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string_view> args(argv + 1, argv + argc);
    const auto number = [&args](std::size_t i, int fallback) {
        return i < args.size() ? std::atoi(std::string{args[i]}.c_str()) : fallback;
    };
    if (args.empty()) return usage();
    if (args[0] == "batch" && args.size() >= 3) return batch(args[1], number(2, 0), number(3, 3));
    if (args[0] == "round-trip") return round_trip(number(1, 2000));
    if (args[0] == "cpu-bound" && args.size() >= 2) return cpu_bound(args[1], number(2, 400));
    if (args[0] == "memory") return memory(number(1, 5'000'000));
    if (args[0] == "uneven") return uneven();
    return usage();
}
