// Messages far larger than a ring stream through it intact: a 100 MiB
// argument and a 100 MiB result.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <map>
#include <numeric>

namespace {

using namespace std::chrono_literals;

std::vector<char> pattern(std::size_t size, std::uint32_t seed) {
    std::vector<char> bytes(size);
    std::uint32_t state = seed;
    for (char& byte : bytes) {
        state = state * 1664525u + 1013904223u;  // fast LCG: content must differ across positions
        byte = static_cast<char>(state >> 24);
    }
    return bytes;
}

std::uint64_t checksum(const std::vector<char>& bytes) {
    std::uint64_t sum = 1469598103934665603ull;
    for (char byte : bytes) sum = (sum ^ static_cast<unsigned char>(byte)) * 1099511628211ull;
    return sum;
}

struct Blobs {
    /// Returns the argument's size and checksum as the worker saw it.
    std::pair<std::size_t, std::uint64_t> digest(const std::vector<char>& blob) const {
        return {blob.size(), checksum(blob)};
    }
    std::vector<char> make(std::size_t size, std::uint32_t seed) const { return pattern(size, seed); }
};

constexpr std::size_t hundred_mib = std::size_t{100} << 20;

// stable_sort, not sort: GCC 12 at -O3 warns (-Wmaybe-uninitialized) in std::sort's heap
// fallback for a variant holding a shared_ptr, on a moved-into value that is always
// initialized (GCC bug 80635 and its kin); the merge sort has no such path.
template <class Results>
void sort_by_id(Results& results) {
    std::stable_sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.id() < b.id(); });
}

}  // namespace

TEST_CASE("a 100 MiB argument arrives intact") {
    test_support::Watchdog watchdog{110s};
    const auto blob = pattern(hundred_mib, 7);
    multiworker::Processor<Blobs, &Blobs::digest> processor{Blobs{}, {.workers = 1, .ring_bytes = 1 << 20}};
    processor.add(blob);
    processor.add(std::vector<char>{});  // an empty one after it still works
    processor.start();
    processor.wait();
    auto results = processor.get_results();
    sort_by_id(results);
    REQUIRE(results.size() == 2);
    CHECK(results[0].value() == std::pair{blob.size(), checksum(blob)});
    CHECK(results[1].value().first == 0);
}

TEST_CASE("a 100 MiB result arrives intact - also through a tiny ring", "[many_processors]") {
    test_support::Watchdog watchdog{110s};
    const std::size_t ring_bytes = GENERATE(std::size_t{1} << 20, std::size_t{64} << 10);
    multiworker::Processor<Blobs, &Blobs::make> processor{Blobs{}, {.workers = 2, .ring_bytes = ring_bytes}};
    processor.add(hundred_mib, 11u);
    processor.add(std::size_t{1000}, 12u);
    processor.start();
    processor.wait();
    auto results = processor.get_results();
    sort_by_id(results);
    REQUIRE(results.size() == 2);
    CHECK(checksum(results[0].value()) == checksum(pattern(hundred_mib, 11)));
    CHECK(results[1].value() == pattern(1000, 12));
}

TEST_CASE("a message above max_message_bytes is refused as corrupt - not allocated") {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<Blobs, &Blobs::make> processor{Blobs{}, {.workers = 1, .max_message_bytes = 1 << 20}};
    processor.add(std::size_t{2} << 20, 1u);
    processor.start();
    auto result = processor.pop_result(30s);
    REQUIRE(result);
    REQUIRE_FALSE(result->ok());
    CHECK_THAT(result->error().what(), Catch::Contains("max_message_bytes"));
}

namespace {
struct LargeValues {
    std::vector<double> numbers(std::size_t count) const {
        std::vector<double> values(count);
        for (std::size_t i = 0; i < count; ++i) values[i] = static_cast<double>(i) * 0.5;
        return values;
    }
    std::string text(std::size_t size) const { return std::string(size, 't'); }
    std::vector<std::array<float, 3>> points(std::size_t count) const {
        std::vector<std::array<float, 3>> cloud(count);
        for (std::size_t i = 0; i < count; ++i) cloud[i] = {static_cast<float>(i), 0.25f, -static_cast<float>(i)};
        return cloud;
    }
};
}  // namespace

TEST_CASE("large vectors of numbers - of arrays of numbers - and strings arrive intact - small ones too",
          "[many_processors]") {
    test_support::Watchdog watchdog{60s};
    const unsigned workers = GENERATE(0u, 1u);  // in-process takes the ordinary path
    multiworker::Processor<LargeValues, &LargeValues::numbers> numbers{LargeValues{}, {.workers = workers}};
    multiworker::Processor<LargeValues, &LargeValues::text> texts{LargeValues{}, {.workers = workers}};
    multiworker::Processor<LargeValues, &LargeValues::points> points{LargeValues{}, {.workers = workers}};
    for (std::size_t count : {std::size_t{3}, std::size_t{1} << 20}) {
        numbers.add(count);
        texts.add(count);
        points.add(count);
    }
    numbers.start();
    texts.start();
    points.start();
    numbers.wait();
    texts.wait();
    points.wait();
    for (const auto& result : points.get_results()) {
        REQUIRE(result.ok());
        CHECK(result.value() == LargeValues{}.points(result.value().size()));
        CHECK((result.value().size() == 3 || result.value().size() == std::size_t{1} << 20));
    }
    for (const auto& result : numbers.get_results()) {
        REQUIRE(result.ok());
        CHECK(result.value() == LargeValues{}.numbers(result.value().size()));
        CHECK((result.value().size() == 3 || result.value().size() == std::size_t{1} << 20));
    }
    for (const auto& result : texts.get_results()) {
        REQUIRE(result.ok());
        CHECK(result.value() == std::string(result.value().size(), 't'));
        CHECK((result.value().size() == 3 || result.value().size() == std::size_t{1} << 20));
    }
}

TEST_CASE("arguments and results of every size pass intact - read in place, across the ring's end, or streamed",
          "[many_processors]") {
    test_support::Watchdog watchdog{60s};
    // Through a 16 KiB ring, sizes from nothing to twice the ring: a frame
    // lies in the ring whole or wraps around its end, fits in one step or
    // streams through in pieces, at every offset.
    constexpr std::size_t ring_bytes = 16 << 10;
    multiworker::Processor<Blobs, &Blobs::digest> digests{Blobs{}, {.workers = 2, .ring_bytes = ring_bytes}};
    multiworker::Processor<Blobs, &Blobs::make> makers{Blobs{}, {.workers = 2, .ring_bytes = ring_bytes}};
    std::map<multiworker::TaskId, std::vector<char>> sent;
    std::map<multiworker::TaskId, std::size_t> made;
    for (std::uint32_t seed = 0; seed < 600; ++seed) {
        const std::size_t size = (std::size_t{seed} * 7919) % (2 * ring_bytes);
        auto blob = pattern(size, seed);
        sent.emplace(digests.add(blob), std::move(blob));
        made.emplace(makers.add(size, seed), seed);
    }
    digests.start();
    makers.start();
    digests.wait();
    makers.wait();
    const auto digested = digests.get_results();
    const auto returned = makers.get_results();
    REQUIRE(digested.size() == sent.size());
    REQUIRE(returned.size() == made.size());
    for (const auto& result : digested) {
        const std::vector<char>& blob = sent.at(result.id());
        CHECK(result.value() == std::pair{blob.size(), checksum(blob)});
    }
    for (const auto& result : returned) {
        const std::uint32_t seed = static_cast<std::uint32_t>(made.at(result.id()));
        CHECK(result.value() == pattern((std::size_t{seed} * 7919) % (2 * ring_bytes), seed));
    }
}

TEST_CASE("large results one after another keep their worker - none is taken for corrupt data", "[processes]") {
    test_support::Watchdog watchdog{60s};
    multiworker::Processor<Blobs, &Blobs::make> processor{Blobs{}, {.workers = 1}};
    processor.start();
    const std::vector<pid_t> pids = processor.worker_pids();
    REQUIRE(pids.size() == 1);
    // Each is read straight into its final value (see LargePayload), then a small one.
    std::map<multiworker::TaskId, std::size_t> sizes;
    for (std::uint32_t seed = 0; seed < 4; ++seed) sizes.emplace(processor.add(std::size_t{1} << 20, seed), seed);
    sizes.emplace(processor.add(std::size_t{10}, 9u), 9);
    processor.wait();
    const auto results = processor.get_results();
    REQUIRE(results.size() == sizes.size());
    for (const auto& result : results) {
        REQUIRE(result.ok());
        const auto seed = static_cast<std::uint32_t>(sizes.at(result.id()));
        CHECK(result.value() == pattern(seed == 9 ? 10 : std::size_t{1} << 20, seed));
    }
    CHECK(processor.worker_pids() == pids);  // a worker killed as corrupt would have been replaced
}
