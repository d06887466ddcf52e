// multiworker's side of the pipeline benchmark (peers: bench/pipeline_peers.py, bench/tbb_pipeline.cpp;
// bench/compare_pipeline.py runs all of them side by side).
//
// Workload: items 0..N-1, a stage computing x + 1 on 2 worker processes, a sink process summing
// the outputs; the sum must equal N*(N+1)/2 (exit 1 if not). Variants:
//   range_source    from(0..N-1) iterated in the parent -> stage -> sink
//   source_process  a source process emitting 0..N-1    -> stage -> sink
//   source_process_ordered  the same with the stage ordered: what its reorder buffer costs
//   stages_K        a source process -> K stages of x + 1 (the last adds 1, the others 0) -> sink,
//                   K = 1..4: how the cost grows with the depth of the pipeline
// Each repetition builds a fresh Pipeline and is timed from before its construction to after
// run() returns with the sum: forking every process is included, as in the Python peers.
// Reported: microseconds per item and items per second, median over R repetitions.
//
// With --memory, instead: a source process emitting 10,000,000 items into one slow stage (a
// worker spending about a microsecond an item) and a sink; prints the peak RSS of the parent and
// of the source process, which back-pressure keeps from growing with the items.
//
// Usage: bench_pipeline [--items N] [--repetitions R] [--json] | bench_pipeline --memory

#include <multiworker/multiworker.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Counter {
    std::uint64_t count = 0;
    void read(multiworker::Emit<std::uint64_t>& out) {
        for (std::uint64_t i = 0; i < count; ++i) out.emit(i);
    }
};

/// Emits `count` items, then writes its own peak RSS (VmHWM, kB) to `report`.
struct MeasuredCounter {
    std::uint64_t count = 0;
    std::string report;
    void read(multiworker::Emit<std::uint64_t>& out) {
        for (std::uint64_t i = 0; i < count; ++i) out.emit(i);
        std::ifstream status{"/proc/self/status"};
        std::ofstream{report} << peak_rss_kb(status) << "\n";
    }
    static long peak_rss_kb(std::istream& status) {
        for (std::string line; std::getline(status, line);) {
            if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
        }
        return -1;
    }
};

/// x + 1 after about a microsecond of work: slower than the source.
struct SlowAdd {
    std::uint64_t apply(const std::uint64_t& x) {
        const auto until = Clock::now() + std::chrono::microseconds{1};
        while (Clock::now() < until) {
        }
        return x + 1;
    }
};

struct Add {
    std::uint64_t amount = 1;
    std::uint64_t apply(const std::uint64_t& x) { return x + amount; }
};

struct Sum {
    std::uint64_t total = 0;
    void add(const std::uint64_t& x) { total += x; }
    std::uint64_t finish() { return total; }
};

/// A range of 0..n-1 without std::views (clang 14 cannot check libstdc++ 12's range concepts).
struct Count {
    struct iterator {
        std::uint64_t value;
        std::uint64_t operator*() const { return value; }
        iterator& operator++() {
            ++value;
            return *this;
        }
        bool operator==(const iterator&) const = default;
    };
    std::uint64_t n;
    iterator begin() const { return {0}; }
    iterator end() const { return {n}; }
};

const multiworker::StageOptions two_workers{.workers = 2};

std::uint64_t range_source(std::uint64_t n) {
    multiworker::Pipeline pipeline{multiworker::from(Count{n}), multiworker::stage<&Add::apply>(Add{1}, two_workers),
                                   multiworker::sink<&Sum::add, &Sum::finish>(Sum{})};
    return pipeline.run().value();
}

std::uint64_t source_process(std::uint64_t n, bool ordered) {
    multiworker::Pipeline pipeline{multiworker::source<&Counter::read>(Counter{n}),
                                   multiworker::stage<&Add::apply>(Add{1}, {.workers = 2, .ordered = ordered}),
                                   multiworker::sink<&Sum::add, &Sum::finish>(Sum{})};
    return pipeline.run().value();
}

template <class... Stages>
std::uint64_t run_stages(std::uint64_t n, Stages... stages) {
    multiworker::Pipeline pipeline{multiworker::source<&Counter::read>(Counter{n}), std::move(stages)...,
                                   multiworker::sink<&Sum::add, &Sum::finish>(Sum{})};
    return pipeline.run().value();
}

std::uint64_t stages(std::uint64_t n, int depth) {
    const auto zero = [] { return multiworker::stage<&Add::apply>(Add{0}, two_workers); };
    const auto one = [] { return multiworker::stage<&Add::apply>(Add{1}, two_workers); };
    switch (depth) {
        case 1:
            return run_stages(n, one());
        case 2:
            return run_stages(n, zero(), one());
        case 3:
            return run_stages(n, zero(), zero(), one());
        default:
            return run_stages(n, zero(), zero(), zero(), one());
    }
}

struct Variant {
    std::string name;
    std::uint64_t (*run)(std::uint64_t n, int depth);
    int depth;
};

int memory_benchmark() {
    constexpr std::uint64_t items = 10'000'000;
    const std::string report = "/tmp/bench_pipeline_source_rss." + std::to_string(::getpid());
    const auto began = Clock::now();
    multiworker::Pipeline pipeline{multiworker::source<&MeasuredCounter::read>(MeasuredCounter{items, report}),
                                   multiworker::stage<&SlowAdd::apply>(SlowAdd{}, {.workers = 1}),
                                   multiworker::sink<&Sum::add, &Sum::finish>(Sum{})};
    const std::uint64_t sum = pipeline.run().value();
    const double seconds = std::chrono::duration<double>(Clock::now() - began).count();
    long source_kb = -1;
    std::ifstream{report} >> source_kb;
    std::remove(report.c_str());
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    std::printf("10,000,000 items into a slow stage in %.1f s (sum %s): peak RSS parent %.1f MiB, source %.1f MiB\n",
                seconds, sum == items * (items + 1) / 2 ? "right" : "WRONG",
                static_cast<double>(usage.ru_maxrss) / 1024, static_cast<double>(source_kb) / 1024);
    return sum == items * (items + 1) / 2 ? 0 : 1;
}

double median(std::vector<double> samples) {
    std::sort(samples.begin(), samples.end());
    const std::size_t mid = samples.size() / 2;
    return samples.size() % 2 == 1 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::uint64_t items = 100'000;
    int repetitions = 5;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--items" && i + 1 < argc) {
            items = std::strtoull(argv[++i], nullptr, 10);
        } else if (arg == "--repetitions" && i + 1 < argc) {
            repetitions = std::atoi(argv[++i]);
        } else if (arg == "--json") {
            json = true;
        } else if (arg == "--memory") {
            return memory_benchmark();
        } else {
            std::fprintf(stderr, "usage: bench_pipeline [--items N] [--repetitions R] [--json] | --memory\n");
            return 2;
        }
    }
    const std::vector<Variant> variants{
        {"multiworker_range_source", [](std::uint64_t n, int) { return range_source(n); }, 0},
        {"multiworker_source_process", [](std::uint64_t n, int) { return source_process(n, false); }, 0},
        {"multiworker_source_process_ordered", [](std::uint64_t n, int) { return source_process(n, true); }, 0},
        {"multiworker_stages_1", stages, 1},
        {"multiworker_stages_2", stages, 2},
        {"multiworker_stages_3", stages, 3},
        {"multiworker_stages_4", stages, 4},
    };
    const std::uint64_t expected = items * (items + 1) / 2;
    std::string out = "{";
    for (const Variant& variant : variants) {
        std::vector<double> us_per_item;
        for (int r = 0; r < repetitions; ++r) {
            const auto began = Clock::now();
            const std::uint64_t sum = variant.run(items, variant.depth);
            const double us = std::chrono::duration<double, std::micro>(Clock::now() - began).count();
            if (sum != expected) {
                std::fprintf(stderr, "bench_pipeline: %s: sum %llu, expected %llu\n", variant.name.c_str(),
                             static_cast<unsigned long long>(sum), static_cast<unsigned long long>(expected));
                return 1;
            }
            us_per_item.push_back(us / static_cast<double>(items));
        }
        const double m = median(us_per_item);
        if (json) {
            if (out.size() > 1) out += ", ";
            out += "\"" + variant.name + "\": {\"median_us_per_item\": " + std::to_string(m) +
                   ", \"items_per_s\": " + std::to_string(1e6 / m) + ", \"samples_us_per_item\": [";
            for (std::size_t i = 0; i < us_per_item.size(); ++i) {
                out += (i ? ", " : "") + std::to_string(us_per_item[i]);
            }
            out += "]}";
        } else {
            std::printf("%-28s %8.3f us/item  %10.0f items/s\n", variant.name.c_str(), m, 1e6 / m);
        }
    }
    if (json) std::printf("%s}\n", out.c_str());
    return 0;
}
