// Crash-proof workers: a worker that dies, hangs or is recycled loses no task
// and blocks nothing; dead workers are replaced; the parent's death takes the
// workers with it.

#include <multiworker/multiworker.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace {

using namespace std::chrono_literals;
using multiworker::ErrorKind;
using Clock = std::chrono::steady_clock;

// Workers crash on purpose here; keep them from writing core files.
const bool core_files_disabled = [] {
    const rlimit none{0, 0};
    return ::setrlimit(RLIMIT_CORE, &none) == 0;
}();

/// Spins for about `microseconds` of CPU time.
void burn(int microseconds) {
    const auto until = Clock::now() + std::chrono::microseconds{microseconds};
    while (Clock::now() < until) {
    }
}

struct Task {
    enum Action { succeed, segfault, abort_process, exit_process, hang, throw_error };
    int run(int action, int value) const {
        switch (action) {
            case segfault:
                std::raise(SIGSEGV);
                break;
            case abort_process:
                std::abort();
            case exit_process:
                std::exit(3);
            case hang:
                for (;;) std::this_thread::sleep_for(1s);
            case throw_error:
                throw std::runtime_error{"thrown"};
            default:
                break;
        }
        burn(100);
        return value;
    }
};

using TaskProcessor = multiworker::Processor<Task, &Task::run>;

/// Counts how many times each outcome occurred; fails on duplicates or strangers.
struct Tally {
    std::size_t ok = 0;
    std::map<ErrorKind, std::size_t> errors;
    std::size_t duplicated = 0;
    std::size_t lost = 0;
};

template <class Results>
Tally tally(const Results& results, const std::set<multiworker::TaskId>& added) {
    Tally counts;
    std::set<multiworker::TaskId> seen;
    for (const auto& result : results) {
        if (!seen.insert(result.id()).second) ++counts.duplicated;
        if (result.ok()) {
            ++counts.ok;
        } else {
            ++counts.errors[result.error().kind()];
        }
    }
    for (const auto& id : added) {
        if (seen.count(id) == 0) ++counts.lost;
    }
    return counts;
}

/// SIGKILLs a random live worker of `processor` every `interval` until stopped.
class Killer {
public:
    Killer(const TaskProcessor& processor, std::chrono::microseconds interval)
        : thread_{[this, &processor, interval] {
              std::mt19937 random{12345};
              while (!stop_.load()) {
                  std::this_thread::sleep_for(interval);
                  const auto pids = processor.worker_pids();
                  if (pids.empty()) continue;
                  if (::kill(pids[random() % pids.size()], SIGKILL) == 0) ++kills_;
              }
          }} {}
    ~Killer() { stop(); }
    std::size_t stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
        return kills_;
    }

private:
    std::atomic<bool> stop_{false};
    std::size_t kills_ = 0;
    std::thread thread_;
};

/// A counter in shared memory that forked workers can increment.
struct SharedCounter {
    SharedCounter() {
        void* memory =
            ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        REQUIRE(memory != MAP_FAILED);
        value = new (memory) std::atomic<int>{0};
    }
    ~SharedCounter() { ::munmap(value, sizeof(std::atomic<int>)); }
    std::atomic<int>* value;
};

}  // namespace

// Under AddressSanitizer, killing a worker every 2 ms leaves none alive long
// enough to run a task, and the run never ends.
constexpr auto torture_kill_interval = test_support::address_sanitizer ? 10ms : 2ms;

TEST_CASE("torture: workers SIGKILLed every few milliseconds lose no task") {
    test_support::Watchdog watchdog{110s, "torture"};
    const auto shm_before = test_support::shm_entries();
    const unsigned retries = GENERATE(0u, 1000u);
    constexpr int tasks = 20'000;
    TaskProcessor processor{Task{}, {.workers = 4, .log_level = spdlog::level::err, .retries = retries}};
    std::set<multiworker::TaskId> added;
    for (int i = 0; i < tasks; ++i) added.insert(processor.add(Task::succeed, i));
    const auto began = Clock::now();
    processor.start();
    Killer killer{processor, torture_kill_interval};
    processor.wait();
    const std::size_t kills = killer.stop();
    const double seconds = std::chrono::duration<double>(Clock::now() - began).count();
    const auto results = processor.get_results();
    Tally counts = tally(results, added);
    std::printf(
        "torture (retries=%u): %zu kills, %d tasks, %zu results (%zu ok, %zu worker_died), %zu lost, "
        "%zu duplicated, %.2f s\n",
        retries, kills, tasks, results.size(), counts.ok, counts.errors[ErrorKind::worker_died], counts.lost,
        counts.duplicated, seconds);
    CHECK(kills >= 100);
    CHECK(counts.lost == 0);
    CHECK(counts.duplicated == 0);
    CHECK(results.size() == static_cast<std::size_t>(tasks));
    if (retries > 0) {
        CHECK(counts.ok == static_cast<std::size_t>(tasks));
    } else {
        CHECK(counts.ok + counts.errors[ErrorKind::worker_died] == static_cast<std::size_t>(tasks));
        CHECK(counts.errors[ErrorKind::worker_died] <= kills);
    }
    processor.stop();
    CHECK(test_support::child_pids().empty());
    CHECK(test_support::shm_entries() == shm_before);
}

TEST_CASE("torture: crashing - exiting and hanging tasks each end with one result") {
    test_support::Watchdog watchdog{110s, "crash mix"};
    const auto [action, kind, text] = GENERATE(table<int, ErrorKind, std::string>({
        {Task::segfault, ErrorKind::worker_died, "was killed by SIGSEGV (its stack trace is in the log)"},
        {Task::abort_process, ErrorKind::worker_died, "was killed by SIGABRT"},
        {Task::exit_process, ErrorKind::worker_died, "exited with status 3"},
        {Task::hang, ErrorKind::timeout, "exceeded task_timeout (500 ms)"},
    }));
    // The limit leaves ordinary 100 us tasks ample room on a loaded machine under ASan.
    TaskProcessor processor{Task{}, {.workers = 4, .log_level = spdlog::level::off, .task_timeout = 500ms}};
    constexpr int tasks = 2'000;
    std::set<multiworker::TaskId> added;
    std::set<multiworker::TaskId> doomed;
    for (int i = 0; i < tasks; ++i) {
        const bool bad = i % 100 == 7;
        const auto id = processor.add(bad ? action : Task::succeed, i);
        added.insert(id);
        if (bad) doomed.insert(id);
    }
    processor.start();
    processor.wait();
    const auto results = processor.get_results();
    Tally counts = tally(results, added);
    CHECK(counts.lost == 0);
    CHECK(counts.duplicated == 0);
    CHECK(counts.ok == tasks - doomed.size());
    for (const auto& result : results) {
        if (doomed.count(result.id()) == 0) continue;
        REQUIRE_FALSE(result.ok());
        CHECK(result.error().kind() == kind);
        CHECK_THAT(result.error().what(), Catch::Contains(text));
    }
}

TEST_CASE("a task that outlives task_timeout gets a timeout error - the others run on") {
    test_support::Watchdog watchdog{60s};
    TaskProcessor processor{Task{}, {.workers = 2, .task_timeout = 1000ms}};
    const auto hung = processor.add(Task::hang, 0);
    for (int i = 1; i <= 20; ++i) processor.add(Task::succeed, i);
    const auto began = Clock::now();
    processor.start();
    processor.wait();
    CHECK(Clock::now() - began >= 1000ms);
    int ok = 0;
    for (const auto& result : processor.get_results()) {
        if (result.id() == hung) {
            REQUIRE_FALSE(result.ok());
            CHECK(result.error().kind() == ErrorKind::timeout);
            CHECK_THAT(result.error().what(), Catch::Contains("task " + std::to_string(hung.value()) +
                                                              " exceeded task_timeout (1000 ms) in worker") &&
                                                  Catch::Contains("which was killed and replaced"));
        } else {
            CHECK(result.ok());
            ++ok;
        }
    }
    CHECK(ok == 20);
    // The killed worker is replaced (the fork server answers asynchronously).
    const auto deadline = Clock::now() + 10s;
    while (processor.worker_pids().size() < 2 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    CHECK(processor.worker_pids().size() == 2);
}

TEST_CASE("retries: at least once for deaths - and exceptions only when asked") {
    test_support::Watchdog watchdog{60s};
    SharedCounter runs;
    struct Crasher {
        std::atomic<int>* runs;
        int run(bool crash) const {
            runs->fetch_add(1);
            if (crash) std::abort();
            throw std::runtime_error{"always throws"};
        }
    };
    SECTION("a task whose worker dies is run 1 + retries times, then reported") {
        multiworker::Processor<Crasher, &Crasher::run> processor{Crasher{runs.value}, {.workers = 2, .retries = 2}};
        processor.add(true);
        processor.start();
        processor.wait();
        const auto results = processor.get_results();
        REQUIRE(results.size() == 1);
        CHECK(results[0].error().kind() == ErrorKind::worker_died);
        CHECK(runs.value->load() == 3);
    }
    SECTION("a throwing task is not retried by default") {
        multiworker::Processor<Crasher, &Crasher::run> processor{Crasher{runs.value}, {.workers = 2, .retries = 2}};
        processor.add(false);
        processor.start();
        processor.wait();
        CHECK(processor.get_results().size() == 1);
        CHECK(runs.value->load() == 1);
    }
    SECTION("retry_exceptions retries a throwing task") {
        multiworker::Processor<Crasher, &Crasher::run> processor{
            Crasher{runs.value}, {.workers = 2, .retries = 3, .retry_exceptions = true}};
        processor.add(false);
        processor.start();
        processor.wait();
        const auto results = processor.get_results();
        REQUIRE(results.size() == 1);
        CHECK(results[0].error().kind() == ErrorKind::exception);
        CHECK(runs.value->load() == 4);
    }
}

TEST_CASE("max_tasks_per_worker = 1 runs every task in a fresh worker") {
    test_support::Watchdog watchdog{100s};
    struct Pid {
        int pid(int) const { return static_cast<int>(::getpid()); }
    };
    multiworker::Processor<Pid, &Pid::pid> processor{Pid{}, {.workers = 2, .max_tasks_per_worker = 1}};
    for (int i = 0; i < 1000; ++i) processor.add(i);
    processor.start();
    processor.wait();
    const auto results = processor.get_results();
    REQUIRE(results.size() == 1000);
    std::set<int> pids;
    for (const auto& result : results) {
        REQUIRE(result.ok());
        pids.insert(result.value());
    }
    CHECK(pids.size() == 1000);
}

TEST_CASE("max_tasks_per_worker recycles after exactly that many tasks") {
    test_support::Watchdog watchdog{60s};
    struct Pid {
        int pid(int) const { return static_cast<int>(::getpid()); }
    };
    multiworker::Processor<Pid, &Pid::pid> processor{Pid{}, {.workers = 3, .max_tasks_per_worker = 7}};
    for (int i = 0; i < 700; ++i) processor.add(i);
    processor.start();
    processor.wait();
    std::map<int, int> tasks_per_pid;
    for (const auto& result : processor.get_results()) ++tasks_per_pid[result.value()];
    for (const auto& [pid, count] : tasks_per_pid) CHECK(count <= 7);
    CHECK(tasks_per_pid.size() >= 100);
}

TEST_CASE("worker hooks run in every worker - a failing start hook fails tasks instead of hanging") {
    test_support::Watchdog watchdog{60s};
    auto [logger, captured] = test_support::capturing_logger();
    struct Connection {
        bool open = false;
        bool fail_start = false;
        void on_worker_start() {
            if (fail_start) throw std::runtime_error{"cannot connect"};
            open = true;
        }
        void on_worker_exit() { spdlog::info("closing connection"); }
        bool is_open(int) const { return open; }
    };
    SECTION("hooks") {
        {
            multiworker::Processor<Connection, &Connection::is_open> processor{Connection{},
                                                                               {.workers = 3, .logger = logger}};
            for (int i = 0; i < 30; ++i) processor.add(i);
            processor.start();
            processor.wait();
            for (const auto& result : processor.get_results()) CHECK(result.value());
        }
        std::size_t closes = 0;
        const std::string text = captured->text();
        for (auto at = text.find("closing connection"); at != std::string::npos;
             at = text.find("closing connection", at + 1)) {
            ++closes;
        }
        CHECK(closes == 3);
    }
    SECTION("a start hook that throws") {
        multiworker::Processor<Connection, &Connection::is_open> processor{Connection{.fail_start = true},
                                                                           {.workers = 2, .logger = logger}};
        for (int i = 0; i < 5; ++i) processor.add(i);
        processor.start();
        processor.wait();
        const auto results = processor.get_results();
        REQUIRE(results.size() == 5);
        for (const auto& result : results) CHECK(result.error().kind() == ErrorKind::no_worker);
        CHECK_THAT(captured->text(), Catch::Contains("failed to start: cannot connect"));
    }
}

TEST_CASE("a worker killed by a fatal signal logs its stack trace") {
    test_support::Watchdog watchdog{60s};
    auto [logger, captured] = test_support::capturing_logger();
    {
        TaskProcessor processor{Task{}, {.workers = 1, .logger = logger}};
        processor.add(Task::segfault, 0);
        processor.start();
        processor.wait();
        const auto results = processor.get_results();
        REQUIRE(results.size() == 1);
        CHECK_THAT(results[0].error().what(), Catch::Contains("its stack trace is in the log"));
    }
    CHECK_THAT(captured->text(), Catch::Contains("fatal signal SIGSEGV; stack trace of the worker:"));
}

namespace {

/// Crashes in a function of its own, which the crash report must name.
struct NamedCrash {
    static inline volatile int crashes_avoided = 0;
    [[gnu::noinline]] static void crash_in_user_code(int value) {
        if (value >= 0) std::raise(SIGSEGV);
        crashes_avoided =
            crashes_avoided + 1;  // keeps raise() from being a tail call, which would leave this frame out
    }
    int run(int value) const {
        crash_in_user_code(value);
        return value;
    }
};

}  // namespace

TEST_CASE("a crash report names the user function that crashed - in the log and in the error") {
    test_support::Watchdog watchdog{60s};
    auto [logger, captured] = test_support::capturing_logger();
    {
        multiworker::Processor<NamedCrash, &NamedCrash::run> processor{NamedCrash{}, {.workers = 1, .logger = logger}};
        processor.add(1);
        processor.start();
        processor.wait();
        const auto results = processor.get_results();
        REQUIRE(results.size() == 1);
        const std::string what = results[0].error().what();
        CHECK_THAT(what, Catch::Contains("was killed by SIGSEGV (its stack trace is in the log) in ") &&
                             Catch::Contains("NamedCrash::crash_in_user_code(int)"));
    }
    // The log's trace reads like a debugger's: numbered frames, function names.
    CHECK_THAT(captured->text(), Catch::Contains("#0 ") && Catch::Contains("NamedCrash::crash_in_user_code(int)"));
#ifndef NDEBUG
    CHECK_THAT(captured->text(), Catch::Contains("test_crash_recovery.cpp:"));  // debug information: file and line
#endif
}

TEST_CASE("a parent thread logging hard while workers die and respawn does not deadlock") {
    test_support::Watchdog watchdog{100s, "log while respawning"};
    const auto path =
        std::filesystem::temp_directory_path() / ("multiworker-respawn-" + std::to_string(::getpid()) + ".log");
    auto previous = spdlog::default_logger();
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("parent", std::make_shared<spdlog::sinks::basic_file_sink_mt>(path.string())));
    std::atomic<bool> stop{false};
    std::thread chatter{[&] {
        for (long i = 0; !stop.load(std::memory_order_relaxed); ++i) spdlog::info("parent record {}", i);
    }};
    // Under ASan each death and respawn takes tens of milliseconds of CPU
    // (a fork copies the shadow memory's mappings, a crash report is
    // symbolized), and with another test beside it on two cores 300 of them
    // measured 67 to 84 s: 100 there, still a fork every few records.
    const int tasks = test_support::address_sanitizer ? 100 : 300;
    std::size_t deaths = 0;
    {
        TaskProcessor processor{Task{}, {.workers = 2}};
        for (int i = 0; i < tasks; ++i) processor.add(Task::abort_process, i);
        processor.start();
        processor.wait();
        for (const auto& result : processor.get_results()) deaths += result.ok() ? 0 : 1;
    }
    stop = true;
    chatter.join();
    spdlog::set_default_logger(previous);
    std::filesystem::remove(path);
    CHECK(deaths == static_cast<std::size_t>(tasks));
}

TEST_CASE("a parent killed by a signal leaves no worker alive a second later") {
    test_support::Watchdog watchdog{60s};
    const int signal = GENERATE(SIGKILL, SIGTERM, SIGINT);
    int report[2];
    REQUIRE(::pipe(report) == 0);
    pid_t parent = ::fork();
    REQUIRE(parent >= 0);
    if (parent == 0) {
        // This process stands in for a user's program; it must not outlive the
        // test, nor return into the test framework, whatever goes wrong.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        // A plain program: the default action for these signals, not the test
        // framework's handlers, which are not async-signal-safe (one that runs
        // on a thread interrupted inside malloc deadlocks).
        ::signal(SIGTERM, SIG_DFL);
        ::signal(SIGINT, SIG_DFL);
        ::close(report[0]);
        try {
            TaskProcessor processor{Task{}, {.workers = 4}};
            processor.add(Task::hang, 0);
            processor.start();
            const auto deadline = Clock::now() + 20s;
            while (processor.worker_pids().size() < 4) {
                if (Clock::now() > deadline) ::_exit(3);
                std::this_thread::sleep_for(1ms);
            }
            for (pid_t pid : processor.worker_pids()) {
                [[maybe_unused]] const ssize_t written = ::write(report[1], &pid, sizeof pid);
            }
            ::close(report[1]);
            for (;;) ::pause();
        } catch (...) {
            ::_exit(4);
        }
    }
    ::close(report[1]);
    // Reaps the child whatever happens below, so a failure here leaves no zombie for later tests.
    const std::unique_ptr<pid_t, void (*)(pid_t*)> reaper{&parent, [](pid_t* pid) {
                                                              if (*pid <= 0) return;
                                                              ::kill(*pid, SIGKILL);
                                                              ::waitpid(*pid, nullptr, 0);
                                                          }};
    std::vector<pid_t> workers(4);
    std::size_t got = 0;
    while (got < workers.size() * sizeof(pid_t)) {
        const ssize_t n =
            ::read(report[0], reinterpret_cast<char*>(workers.data()) + got, workers.size() * sizeof(pid_t) - got);
        REQUIRE(n > 0);
        got += static_cast<std::size_t>(n);
    }
    ::close(report[0]);
    for (pid_t pid : workers) REQUIRE(test_support::process_alive(pid));
    REQUIRE(::kill(parent, signal) == 0);
    REQUIRE(::waitpid(parent, nullptr, 0) == parent);
    parent = 0;
    const auto killed = Clock::now();
    std::this_thread::sleep_for(1s);
    for (pid_t pid : workers) CHECK_FALSE(test_support::process_alive(pid));
    INFO("checked " << std::chrono::duration<double>(Clock::now() - killed).count() << " s after the kill");
}

TEST_CASE("a destructor running during an exception kills running tasks instead of waiting") {
    test_support::Watchdog watchdog{60s};
    const auto began = Clock::now();
    try {
        TaskProcessor processor{Task{}, {.workers = 2}};
        processor.add(Task::hang, 0);
        processor.add(Task::hang, 1);
        processor.start();
        std::this_thread::sleep_for(50ms);
        throw std::runtime_error{"leaving the scope"};
    } catch (const std::runtime_error&) {
    }
    CHECK(Clock::now() - began < 5s);  // stop_timeout is 10 s: it was not waited for
    CHECK(test_support::child_pids().empty());
}
