// The headline usage: run Checker::check over many documents in 5 worker processes.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <multiworker/multiworker.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// Each worker runs on its own copy of the Checker (forked at start()), so the corpus that the
// first call builds is built once per worker and reused by all of that worker's later calls.
class Checker {
public:
    static constexpr int documents = 40;
    static std::string document(int i) { return fmt::format("doc-{:02}", i); }

    std::pair<std::string, bool> check(const std::string& name, const std::string& phrase) {
        if (corpus_.empty()) {
            static constexpr const char* words[] = {"norma ", "jeane ", "marilyn ", "monroe ",
                                                    "film ",  "star ",  "blonde ",  "hollywood "};
            unsigned x = 1;  // a fixed-seed generator: every worker builds the same 30-word texts
            for (int i = 0; i < documents; ++i)
                for (int w = 0; w < 30; ++w, x = x * 1103515245u + 12345u) corpus_[document(i)] += words[(x >> 16) % 8];
            spdlog::info("built a corpus of {} documents", corpus_.size());
        }
        const bool found = corpus_.at(name).find(phrase) != std::string::npos;
        spdlog::debug("call {} in this worker: {} -> {}", ++calls_, name, found);
        return {name, found};
    }

private:
    std::map<std::string, std::string> corpus_;
    int calls_ = 0;
};

int main() {
    std::vector<std::string> names, expected, matches;
    for (int i = 0; i < Checker::documents; ++i) names.push_back(Checker::document(i));

    // The expected answer, computed serially on a local Checker (its info line goes to stdout,
    // spdlog's default logger; the workers' records all go to the log file).
    Checker local;
    for (auto& name : names)
        if (local.check(name, "marilyn monroe").second) expected.push_back(name);

    const std::string log_file = fmt::format("/tmp/multiworker-basic-{}.log", ::getpid());
    multiworker::Processor<Checker, &Checker::check> p{
        Checker{}, {.workers = 5, .log_file = log_file, .log_level = spdlog::level::debug}};
    for (auto& name : names) p.add(name, "marilyn monroe");
    p.start();
    while (!p.done()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto results = p.get_results();  // in completion order, not in the order added
    int failed = 0;
    for (auto& r : results) {
        if (r.ok()) {
            if (r.value().second) matches.push_back(r.value().first);
        } else {
            std::cerr << r.error().what() << '\n';
            ++failed;
        }
    }
    p.stop();  // reaps the workers and flushes their last log records into the log file

    // The state persisted: at most one corpus build per worker, not one per call.
    std::ifstream log{log_file};
    int builds = 0;
    for (std::string line; std::getline(log, line);) builds += line.find("built a corpus") != std::string::npos;
    std::filesystem::remove(log_file);

    std::sort(matches.begin(), matches.end());
    for (auto& m : matches) std::cout << m << ' ';
    std::cout << '\n'
              << matches.size() << " of " << results.size() << " documents match; " << builds << " corpus builds for "
              << names.size() << " calls\n";
    const bool ok = results.size() == names.size() && failed == 0 && matches == expected && builds >= 1 && builds <= 5;
    return ok ? 0 : 1;
}
