// Minimal multiworker consumer, built by both consumer tests (find_package and add_subdirectory).
// Exits non-zero if the library does not behave as documented.
#include <cstdio>
#include <multiworker/multiworker.hpp>
#include <multiworker/version.hpp>
#include <string_view>

struct Sq {
    int square(int x) const { return x * x; }
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
    std::puts("consumer OK");
    return 0;
}
