// The program multiworker was written for: a single-threaded crawler that
// checks which of Wikipedia's year pages 1950-1999 mention a text, made to run
// in 5 worker processes by changing a few lines.
//
//   example_crawler                 crawl a local stand-in for Wikipedia
//   example_crawler --base https://en.wikipedia.org/wiki/%s
//   example_crawler --serial        the same Checker in-process, one page at a time
//   options: --workers N, --delay-ms D (local server), --progress (progress bar); --help

#include "checker.hpp"
#include "year_server.hpp"

#include <multiworker/multiworker.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using Clock = std::chrono::steady_clock;

struct Crawl {
    std::vector<int> years;  // pages that mention the text
    int fetched = 0;
    int failures = 0;
    double seconds = 0;
};

Crawl crawl(const std::vector<std::string>& urls, const std::string& text, unsigned workers, bool progress) {
    const auto began = Clock::now();
    multiworker::Processor<crawler::Checker, &crawler::Checker::check> p{
        crawler::Checker{}, {.workers = workers, .progress_bar = progress}};
    for (const auto& url : urls) p.add(url, text);
    p.start();
    while (!p.done()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    Crawl result;
    for (const auto& r : p.get_results()) {
        if (!r.ok()) {
            ++result.failures;
            std::fprintf(stderr, "failed: %s\n", r.error().what());
            continue;
        }
        ++result.fetched;
        if (r.value().second) result.years.push_back(std::stoi(r.value().first));
    }
    std::sort(result.years.begin(), result.years.end());
    result.seconds = std::chrono::duration<double>(Clock::now() - began).count();
    return result;
}

int main(int argc, char** argv) {
    std::string base;
    unsigned workers = 5;
    bool serial_only = false;
    bool progress = false;
    int delay_ms = 80;
    CLI::App app{"Which of Wikipedia's year pages 1950-1999 mention Marilyn Monroe, in worker processes."};
    app.add_option("--base", base, "URL pattern, %s for the year (default: a local stand-in for Wikipedia)");
    app.add_option("--workers", workers, "worker processes")->capture_default_str();
    app.add_option("--delay-ms", delay_ms, "the local server's delay per request")->capture_default_str();
    app.add_flag("--serial", serial_only, "the same Checker in-process, one page at a time");
    app.add_flag("--progress", progress, "a progress bar");
    CLI11_PARSE(app, argc, argv);
    std::optional<crawler::YearServer> server;  // without --base: a local stand-in for Wikipedia
    if (base.empty()) base = server.emplace(std::chrono::milliseconds{delay_ms}).base();

    const std::string text = "marilyn monroe";
    std::vector<std::string> urls;
    for (int year = 1950; year < 2000; ++year) {
        urls.push_back(base.substr(0, base.find("%s")) + std::to_string(year) + base.substr(base.find("%s") + 2));
    }
    const Crawl run = crawl(urls, text, serial_only ? 0 : workers, progress);
    std::printf("Years in which '%s' appears:", text.c_str());
    for (int year : run.years) std::printf(" %d", year);
    std::printf("\n%d pages fetched, %d failures, %.2f s with %s", run.fetched, run.failures, run.seconds,
                serial_only ? "the serial loop" : (std::to_string(workers) + " workers").c_str());
    if (!serial_only) {
        const Crawl serial = crawl(urls, text, 0, false);
        std::printf("; serial loop %.2f s: %.1fx faster", serial.seconds, serial.seconds / run.seconds);
    }
    std::printf("\n");
    return run.failures == 0 ? 0 : 1;
}
