// Progress reports: the callback's counts, its rate bound and its last call;
// the text the built-in bar prints.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <mutex>
#include <thread>

namespace {

using namespace std::chrono_literals;

struct Slow {
    int run(int ms, bool fail) const {
        std::this_thread::sleep_for(std::chrono::milliseconds{ms});
        if (fail) throw std::runtime_error{"failing on purpose"};
        return ms;
    }
};

}  // namespace

TEST_CASE("the progress callback sees the counts grow to the total - at a bounded rate") {
    test_support::Watchdog watchdog{60s};
    const unsigned workers = GENERATE(0u, 2u);
    std::mutex mutex;
    std::vector<multiworker::Progress> reports;
    const auto began = std::chrono::steady_clock::now();
    {
        multiworker::Processor<Slow, &Slow::run> processor{Slow{},
                                                           {.workers = workers,
                                                            .on_progress =
                                                                [&](const multiworker::Progress& progress) {
                                                                    std::lock_guard lock{mutex};
                                                                    reports.push_back(progress);
                                                                },
                                                            .progress_interval = 50ms}};
        for (int i = 0; i < 40; ++i) processor.add(10, i % 10 == 3);
        processor.start();
        processor.wait();
        std::this_thread::sleep_for(120ms);  // the reporter notices the last results
    }
    const double elapsed_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - began).count();
    std::lock_guard lock{mutex};
    REQUIRE_FALSE(reports.empty());
    CHECK(reports.size() <= static_cast<std::size_t>(elapsed_ms / 50) + 2);
    for (std::size_t i = 1; i < reports.size(); ++i) {
        CHECK(reports[i].done >= reports[i - 1].done);
        CHECK(reports[i].elapsed >= reports[i - 1].elapsed);
    }
    const auto& last = reports.back();
    CHECK(last.total == 40);
    CHECK(last.done == 40);
    CHECK(last.failed == 4);
    CHECK(last.finished());
    CHECK(last.rate() > 0);
}

TEST_CASE("cancelled tasks leave the total") {
    test_support::Watchdog watchdog{60s};
    multiworker::Progress last;
    {
        multiworker::Processor<Slow, &Slow::run> processor{
            Slow{}, {.workers = 1, .on_progress = [&](const multiworker::Progress& p) { last = p; }}};
        for (int i = 0; i < 10; ++i) processor.add(1, false);
        CHECK(processor.cancel() == 10);
        processor.add(1, false);
        processor.start();
        processor.wait();
    }
    CHECK(last.total == 1);
    CHECK(last.done == 1);
}

TEST_CASE("the progress line says what is done - failed - how fast and how long to go") {
    multiworker::Progress progress{.total = 50, .done = 10, .failed = 2, .elapsed = std::chrono::seconds{2}};
    CHECK(progress.rate() == Approx(5.0));
    CHECK(progress.eta().count() == Approx(8.0));
    CHECK(multiworker::format_progress(progress, 10) == "[==>       ] 10/50 done, 2 failed, 5.0 tasks/s, ETA 8 s");
    progress.done = 50;
    CHECK(multiworker::format_progress(progress, 0) == "50/50 done, 2 failed, 25.0 tasks/s, finished in 2.0 s");
}
