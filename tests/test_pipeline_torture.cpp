// 100,000 items through three stages while stage workers are SIGKILLed
// every few milliseconds: with retries every item arrives exactly once;
// without, every item arrives exactly once as a value or an error.

#include "support.hpp"

#include <multiworker/multiworker.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

constexpr int item_count = 100'000;
constexpr std::size_t pid_slots = 16;

/// A stage whose workers publish their pids for the killer (slot per stage and worker).
struct Step {
    std::atomic<long long>* pids = nullptr;
    std::size_t slot = 0;
    long long offset = 0;
    void on_worker_start() {
        // Each worker takes the first free slot of its stage's range of four.
        for (std::size_t i = slot; i < slot + 4; ++i) {
            long long free = 0;
            if (pids[i].compare_exchange_strong(free, ::getpid())) return;
        }
        pids[slot].store(::getpid());
    }
    long long apply(const long long& x) { return x + offset; }
};

struct Keep {
    std::vector<long long> seen;
    void add(const long long& x) { seen.push_back(x); }
    std::vector<long long> finish() { return seen; }
};

std::vector<long long> inputs() {
    std::vector<long long> values(item_count);
    std::iota(values.begin(), values.end(), 0LL);
    return values;
}

/// The parent of `pid`, or 0 if it is gone.
pid_t parent_of(pid_t pid) {
    std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
    std::string line;
    if (!std::getline(in, line)) return 0;
    const auto close = line.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream fields{line.substr(close + 2)};
    char state = 0;
    pid_t parent = 0;
    fields >> state >> parent;
    return parent;
}

/// True if `pid` is a grandchild of this process (a worker of our fork
/// server): a published pid whose worker ended may belong to another process by now.
bool is_our_worker(pid_t pid) {
    const pid_t parent = parent_of(pid);
    const std::vector<pid_t> children = test_support::child_pids();
    return parent != 0 && std::find(children.begin(), children.end(), parent) != children.end();
}

/// Kills a random published stage worker every `period` until stopped.
class Killer {
public:
    Killer(test_support::SharedCounters& pids, std::chrono::milliseconds period)
        : thread_{[this, &pids, period] {
              std::minstd_rand random{42};
              while (!stop_.load()) {
                  std::this_thread::sleep_for(period);
                  const long long pid = pids[random() % pid_slots].exchange(0);
                  if (pid > 0 && is_our_worker(static_cast<pid_t>(pid)) &&
                      ::kill(static_cast<pid_t>(pid), SIGKILL) == 0)
                      ++kills_;
              }
          }} {}
    ~Killer() {
        stop_.store(true);
        thread_.join();
    }
    [[nodiscard]] int kills() const { return kills_.load(); }

private:
    std::atomic<bool> stop_{false};
    std::atomic<int> kills_{0};
    std::thread thread_;
};

}  // namespace

TEST_CASE("torture: stage workers SIGKILLed every few ms - retries deliver every item exactly once") {
    test_support::Watchdog watchdog{300s};
    const auto period = test_support::address_sanitizer ? 40ms : 5ms;
    for (const unsigned retries : {20U, 0U}) {
        DYNAMIC_SECTION("retries = " << retries) {
            test_support::SharedCounters pids{pid_slots};
            Killer killer{pids, period};
            multiworker::Pipeline pipeline{
                multiworker::from(inputs()),
                multiworker::stage<&Step::apply>(Step{&pids[0], 0, 1}, {.workers = 2, .retries = retries}),
                multiworker::stage<&Step::apply>(Step{&pids[0], 4, 10}, {.workers = 2, .retries = retries}),
                multiworker::stage<&Step::apply>(Step{&pids[0], 8, 100}, {.workers = 2, .retries = retries}),
                multiworker::sink<&Keep::add, &Keep::finish>(Keep{})};
            auto result = pipeline.run();
            std::vector<long long> seen = result.value();
            std::sort(seen.begin(), seen.end());
            CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());  // no item twice
            CHECK(killer.kills() > 0);
            if (retries > 0) {
                std::vector<long long> expected = inputs();
                for (long long& x : expected) x += 111;
                CHECK(seen == expected);
                CHECK(result.errors().empty());
            } else {
                // Every item: a value at the sink, or one error on its way.
                CHECK(seen.size() + result.errors().size() == item_count);
                for (const auto& error : result.errors())
                    CHECK(error.error.kind() == multiworker::ErrorKind::worker_died);
            }
            for (const auto& element : result.stats()) {
                INFO(element.name);
                CHECK(element.in == element.completed + element.failed + element.unprocessed);
            }
            INFO("workers killed: " << killer.kills());
        }
    }
    CHECK(test_support::child_pids().empty());
}
