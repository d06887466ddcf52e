// oneTBB peer of a multiworker Pipeline benchmark (see also bench/pipeline_peers.py).
//
// Workload: items 0..N-1, a stage computing x + 1 on 2 threads, a sink summing the outputs; the sum
// must equal N*(N+1)/2 (exit 1 if not). tbb::parallel_pipeline with three filters: a serial_in_order
// source emitting 0..N-1 and stopping with fc.stop(), a parallel x + 1, a serial_out_of_order sum.
// tbb::global_control caps the parallelism at 2 threads (the calling thread plus one TBB worker).
//
// Each repetition is timed from before parallel_pipeline starts to after it returns with the sum.
// One untimed warm-up run first, so TBB's worker thread already exists (a thread start-up, unlike
// the process start-ups the Python peers include, is not part of what a pipeline costs per item).
// Reported: microseconds per item and items per second, median over R repetitions.
//
// Usage: tbb_pipeline [--items N] [--repetitions R] [--json]
// Build: g++ -std=c++20 -O3 bench/tbb_pipeline.cpp -ltbb -o tbb_pipeline (or the CMake target)

#include <tbb/global_control.h>
#include <tbb/parallel_pipeline.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr int kThreads = 2;
// Tokens = items in flight at once. With 2 threads at most 2 items are in a filter at any moment;
// 8 (4 per thread) leaves room for the serial source and sink to run ahead of / behind the parallel
// stage without either thread waiting for a free token, while keeping the items in flight (and so
// the cache footprint) small. Measured here (2 vCPUs, N = 100,000): 4 to 32 tokens alike within
// noise (0.066-0.086 us/item), 2 tokens slower (~0.095) as a thread often finds no token free.
constexpr std::size_t kTokens = 8;

std::uint64_t run_pipeline(std::uint64_t n) {
    std::uint64_t next = 0;
    std::uint64_t sum = 0;
    tbb::parallel_pipeline(kTokens,
                           tbb::make_filter<void, std::uint64_t>(tbb::filter_mode::serial_in_order,
                                                                 [&next, n](tbb::flow_control& fc) -> std::uint64_t {
                                                                     if (next == n) {
                                                                         fc.stop();
                                                                         return 0;
                                                                     }
                                                                     return next++;
                                                                 }) &
                               tbb::make_filter<std::uint64_t, std::uint64_t>(tbb::filter_mode::parallel,
                                                                              [](std::uint64_t x) { return x + 1; }) &
                               tbb::make_filter<std::uint64_t, void>(tbb::filter_mode::serial_out_of_order,
                                                                     [&sum](std::uint64_t y) { sum += y; }));
    return sum;
}

void check_sum(std::uint64_t n, std::uint64_t sum) {
    const std::uint64_t expected = n * (n + 1) / 2;
    if (sum != expected) {
        std::fprintf(stderr, "tbb_pipeline: sum %llu != expected %llu\n", static_cast<unsigned long long>(sum),
                     static_cast<unsigned long long>(expected));
        std::exit(1);
    }
}

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr, "tbb_pipeline: %s\nusage: tbb_pipeline [--items N] [--repetitions R] [--json]\n", why);
    std::exit(2);
}

// A positive decimal integer no larger than `max` (N is capped so that N*(N+1)/2 fits in 64 bits).
std::uint64_t parse_count(std::string_view text, std::uint64_t max) {
    if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        usage("expected a positive integer");
    std::uint64_t value = 0;
    for (const char c : text) {
        value = value * 10 + static_cast<std::uint64_t>(c - '0');
        if (value > max) usage("number too large");
    }
    if (value == 0) usage("expected a positive integer");
    return value;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t mid = v.size() / 2;
    return v.size() % 2 == 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::uint64_t n = 100'000;
    std::uint64_t repetitions = 5;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg{argv[i]};
        if (arg == "--json") {
            json = true;
        } else if ((arg == "--items" || arg == "--repetitions") && i + 1 < argc) {
            const std::string_view value{argv[++i]};
            if (arg == "--items")
                n = parse_count(value, 4'000'000'000);
            else
                repetitions = parse_count(value, 1'000'000);
        } else {
            usage(("unknown or incomplete argument: " + std::string{arg}).c_str());
        }
    }

    const tbb::global_control parallelism{tbb::global_control::max_allowed_parallelism, kThreads};
    check_sum(n, run_pipeline(n));  // warm-up, untimed

    std::vector<double> samples;  // microseconds per item
    for (std::uint64_t r = 0; r < repetitions; ++r) {
        const auto start = std::chrono::steady_clock::now();
        const std::uint64_t sum = run_pipeline(n);
        const std::chrono::duration<double, std::micro> elapsed = std::chrono::steady_clock::now() - start;
        check_sum(n, sum);
        samples.push_back(elapsed.count() / static_cast<double>(n));
    }
    const double us_per_item = median(samples);
    const double items_per_s = 1e6 / us_per_item;

    if (json) {
        std::printf(
            "{\"tbb_parallel_pipeline\": {\"median_us_per_item\": %.9g, \"items_per_s\": %.9g, "
            "\"samples_us_per_item\": [",
            us_per_item, items_per_s);
        for (std::size_t i = 0; i < samples.size(); ++i) std::printf("%s%.9g", i == 0 ? "" : ", ", samples[i]);
        std::printf("]}}\n");
    } else {
        std::printf("N = %llu, median of %llu, %d threads, %zu tokens\n", static_cast<unsigned long long>(n),
                    static_cast<unsigned long long>(repetitions), kThreads, kTokens);
        std::printf("%-34s%10s%14s\n", "peer", "us/item", "items/s");
        std::printf("%-34s%10.3f%14.0f\n", "tbb_parallel_pipeline", us_per_item, items_per_s);
    }
}
