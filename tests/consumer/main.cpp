// Minimal multiworker consumer, built by every consumer test (find_package, add_subdirectory,
// FetchContent, pkg-config). Exits non-zero if the library does not behave as documented.
#include <cstdio>
#include <multiworker/multiworker.hpp>
#include <multiworker/version.hpp>
#include <string_view>

// A user type with serialize() goes through a Boost archive, which needs libboost_serialization
// at link time (an int does not, nor does a std::string): the consumer's link line must carry it.
struct Pair {
    int x = 0;
    int y = 0;
    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& x& y;
    }
};

struct Sq {
    int square(int x) const { return x * x; }
    Pair pair(int x) const { return Pair{x, x * x}; }
};

int main() {
    const std::string_view version = multiworker::version_string();
    std::printf("multiworker %.*s\n", static_cast<int>(version.size()), version.data());
    if (version.empty()) {
        std::fputs("empty version string\n", stderr);
        return 1;
    }

    multiworker::Processor<Sq, &Sq::square> p{Sq{}, {.workers = 2}};
    for (int i = 0; i < 100; ++i) {
        p.add(i);
    }
    p.start();
    p.wait();
    auto results = p.get_results();

    if (results.size() != 100) {
        std::fprintf(stderr, "expected 100 results, got %zu\n", results.size());
        return 1;
    }
    long long sum = 0;
    for (const auto& r : results) {
        if (!r.ok()) {
            std::fputs("a task failed\n", stderr);
            return 1;
        }
        sum += r.value();
    }
    if (sum != 328350) {  // sum of i*i for i in [0, 100)
        std::fprintf(stderr, "expected sum 328350, got %lld\n", sum);
        return 1;
    }

    multiworker::Processor<Sq, &Sq::pair> q{Sq{}, {.workers = 1}};
    q.add(3);
    q.start();
    q.wait();
    auto pairs = q.get_results();
    if (pairs.size() != 1 || !pairs[0].ok() || pairs[0].value().x != 3 || pairs[0].value().y != 9) {
        std::fputs("expected one result {3, 9}\n", stderr);
        return 1;
    }
    std::puts("consumer OK");
    return 0;
}
