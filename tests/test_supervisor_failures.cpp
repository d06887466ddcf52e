// Supervisor when things go wrong: a process that throws, crashes or calls
// exit(); restarts within and past their limit; dead letters; a deadlock;
// Ctrl-C and SIGTERM to the parent; the parent SIGKILLed. Each run must end
// (no hang), name what failed and leave no process behind.

#include "support.hpp"

#include <multiworker/multiworker.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using multiworker::Context;
using multiworker::ProcessId;

namespace {

struct Ping {
    template <class A>
    void serialize(A&, unsigned) {}
};

// Waits for ever for a message nobody sends (until the parent stops it).
struct Waiter {
    void run(Context& ctx) { (void)ctx.receive<Ping>(); }
};

struct Thrower {
    void run(Context&) {
        std::this_thread::sleep_for(50ms);
        throw std::runtime_error{"boom"};
    }
};

}  // namespace

TEST_CASE("a process that throws stops the others and run() throws ProcessFailed naming it") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    multiworker::Supervisor sup{{.in_process = in_process}};
    sup.add("waiter", Waiter{}, {.copies = 2});
    sup.add("thrower", Thrower{});
    try {
        sup.run();
        FAIL("run() returned");
    } catch (const multiworker::ProcessFailed& e) {
        CHECK_THAT(e.what(), Contains("thrower 0") && Contains("std::runtime_error") && Contains("boom"));
        REQUIRE(e.failures().size() == 1);  // the waiters were stopped, not failed
        CHECK(e.failures()[0].process.name == "thrower");
        CHECK((e.failures()[0].pid != 0) == !in_process);
    }
    CHECK(test_support::child_pids().empty());
}

namespace {

struct Crasher {
    int how = 0;
    void run(Context&) {
        std::this_thread::sleep_for(50ms);
        if (how == 0) std::abort();
        if (how == 1) std::exit(3);
        ::raise(SIGKILL);
    }
};
// Ignores the parent's stop request: it must be killed after stop_timeout.
struct Stubborn {
    void run(Context& ctx) {
        while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
        for (;;) std::this_thread::sleep_for(1s);
    }
};

}  // namespace

TEST_CASE("a process that aborts - calls exit() - is killed fails the run with the cause and every process is reaped") {
    test_support::Watchdog watchdog{60s};
    const int how = GENERATE(0, 1, 2);
    multiworker::Supervisor sup{{.stop_timeout = 300ms}};
    sup.add("waiter", Waiter{});
    sup.add("stubborn", Stubborn{});
    sup.add("crasher", Crasher{how});
    const auto start = std::chrono::steady_clock::now();
    try {
        sup.run();
        FAIL("run() returned");
    } catch (const multiworker::ProcessFailed& e) {
        const char* expected[] = {"SIGABRT", "exited with status 3 before run() returned", "SIGKILL"};
        CHECK_THAT(e.what(), Contains("crasher 0") && Contains(expected[how]));
        CHECK(e.failures().size() == 1);  // the stubborn one was killed by the parent: no failure of its own
    }
    CHECK(std::chrono::steady_clock::now() - start < 10s);
    CHECK(test_support::child_pids().empty());
}

namespace {

// Fails on its first `failures` runs (counted across restarts in shared memory), then returns.
struct Flaky {
    std::atomic<long long>* runs;
    long long failures;
    void run(Context&) {
        if (++*runs <= failures) throw std::runtime_error{"flaky"};
    }
};

}  // namespace

TEST_CASE("restart on failure restarts a process within its limit and fails the run past it") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    test_support::SharedCounters runs{2};
    multiworker::Supervisor sup{{.in_process = in_process}};
    const multiworker::ProcessOptions restarting{.restart = multiworker::Restart::on_failure, .max_restarts = 2};
    SECTION("within the limit") {
        sup.add("flaky", Flaky{&runs[0], 2}, restarting);
        sup.run();
        CHECK(runs[0].load() == 3);
    }
    SECTION("past the limit") {
        sup.add("flaky", Flaky{&runs[1], 100}, restarting);
        CHECK_THROWS_WITH(sup.run(), Contains("flaky 0") && Contains("flaky"));
        CHECK(runs[1].load() == 3);  // the first run and two restarts
    }
    CHECK(test_support::child_pids().empty());
}

namespace {

struct Quick {
    void run(Context&) {}
};
// Sends 5 messages to a process that has ended by then.
struct LateSender {
    void run(Context& ctx) {
        std::this_thread::sleep_for(300ms);
        for (int i = 0; i < 5; ++i) ctx.send(ctx.ids("quick").front(), i);
    }
};

}  // namespace

TEST_CASE("messages to a process that has ended are counted as dead letters") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto [logger, sink] = test_support::capturing_logger();
    multiworker::Supervisor sup{{.logger = logger, .in_process = in_process}};
    sup.add("quick", Quick{});
    sup.add("late", LateSender{});
    sup.run();
    CHECK(sup.dead_letters() == 5);
    CHECK_THAT(sink->text(), Contains("5 messages reached no one"));
}

TEST_CASE("every live process waiting for a message nobody sends is a Deadlock naming them") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    multiworker::Supervisor sup{{.in_process = in_process}};
    sup.add("quick", Quick{});
    sup.add("waiter", Waiter{}, {.copies = 2});
    try {
        sup.run();
        FAIL("run() returned");
    } catch (const multiworker::Deadlock& e) {
        CHECK_THAT(e.what(), Contains("deadlock") && Contains("waiter 0") && Contains("waiter 1"));
        CHECK(e.blocked().size() == 2);
    }
    CHECK(test_support::child_pids().empty());
}

namespace {

// Sends 100 ints (not a multiple of the receiver's reporting batch) to the
// waiter, which keeps them while it waits for a Ping, and ends.
struct IntSender {
    void run(Context& ctx) {
        for (int i = 0; i < 100; ++i) ctx.send(ctx.ids("waiter").front(), i);
    }
};

}  // namespace

TEST_CASE("a process waiting for ever with messages of other types kept is still a Deadlock") {
    // Its count of received messages is what tells the deadlock check that no
    // mail waits for it: it must be exact once the waiter has taken them all.
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    multiworker::Supervisor sup{{.in_process = in_process}};
    sup.add("sender", IntSender{});
    sup.add("waiter", Waiter{});
    try {
        sup.run();
        FAIL("run() returned");
    } catch (const multiworker::Deadlock& e) {
        CHECK_THAT(e.what(), Contains("waiter 0"));
        CHECK(e.blocked().size() == 1);
    }
    CHECK(test_support::child_pids().empty());
}

TEST_CASE("SIGINT or SIGTERM to the parent during run() stops and reaps every process and throws Interrupted") {
    test_support::Watchdog watchdog{60s};
    const int signal = GENERATE(SIGINT, SIGTERM);
    multiworker::Supervisor sup;
    sup.add("stubborn", Stubborn{});  // sleeps through the stop request: killed after stop_timeout
    sup.add("waiter", Waiter{});
    std::thread interrupter{[signal] {
        std::this_thread::sleep_for(300ms);
        ::kill(::getpid(), signal);
    }};
    try {
        sup.run();
        FAIL("run() returned");
    } catch (const multiworker::Interrupted& e) {
        CHECK(e.signal() == signal);
    }
    interrupter.join();
    CHECK(test_support::child_pids().empty());
}

namespace {

// Records its pid, then waits for ever.
struct Registered {
    std::atomic<long long>* slots;
    void run(Context& ctx) {
        slots[ctx.self().id.value - 1].store(::getpid());
        while (!ctx.receive<Ping>(100ms)) {  // timed waits: no deadlock to declare
        }
    }
};

}  // namespace

TEST_CASE("a parent SIGKILLed during run() leaves no process of it alive a second later") {
    test_support::Watchdog watchdog{60s};
    test_support::SharedCounters pids{3};
    pid_t parent = ::fork();
    REQUIRE(parent >= 0);
    if (parent == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        try {
            multiworker::Supervisor sup;
            sup.add("registered", Registered{&pids[0]}, {.copies = 3});
            sup.run();
        } catch (...) {
        }
        ::_exit(4);
    }
    const std::unique_ptr<pid_t, void (*)(pid_t*)> reaper{&parent, [](pid_t* pid) {
                                                              if (*pid <= 0) return;
                                                              ::kill(*pid, SIGKILL);
                                                              ::waitpid(*pid, nullptr, 0);
                                                          }};
    std::vector<pid_t> children;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (children.size() < 3) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::sleep_for(1ms);
        children.clear();
        for (std::size_t i = 0; i < 3; ++i)
            if (pids[i].load() != 0) children.push_back(static_cast<pid_t>(pids[i].load()));
    }
    REQUIRE(::kill(parent, SIGKILL) == 0);
    REQUIRE(::waitpid(parent, nullptr, 0) == parent);
    parent = 0;
    std::this_thread::sleep_for(1s);
    for (const pid_t pid : children) CHECK_FALSE(test_support::process_alive(pid));
}

namespace {

// Streams 1..count to the checker; records its pid first, so the test can kill it mid-stream.
struct Streamer {
    std::atomic<long long>* pid;
    int count;
    void run(Context& ctx) {
        pid->store(::getpid());
        const ProcessId checker = ctx.ids("checker").front();
        for (int i = 1; i <= count; ++i) ctx.send(checker, i);
    }
};
// Sends 1..1000 as longs to the checker, then Stop.
struct Steady {
    void run(Context& ctx) {
        const ProcessId checker = ctx.ids("checker").front();
        for (long i = 1; i <= 1000; ++i) {
            ctx.send(checker, i);
            if (i % 100 == 0) std::this_thread::sleep_for(20ms);
        }
        ctx.send(checker, Ping{});
    }
};
// Checks that each sender's numbers come in order (a restarted streamer starts again at 1).
struct Checker {
    void run(Context& ctx) {
        int last_int = 0;
        long last_long = 0;
        int broken = 0;
        for (;;) {
            auto m = ctx.receive<int, long, Ping>();
            if (std::holds_alternative<Ping>(m)) break;
            if (const int* i = std::get_if<int>(&m)) {
                if (*i != last_int + 1 && *i != 1) ++broken;
                last_int = *i;
            } else {
                if (std::get<long>(m) != last_long + 1) ++broken;
                last_long = std::get<long>(m);
            }
        }
        ctx.send(multiworker::parent, std::make_pair(broken, last_long));
    }
};

}  // namespace

TEST_CASE("a sender killed mid-stream corrupts and delays nobody else's messages") {
    test_support::Watchdog watchdog{60s};
    test_support::SharedCounters pid{1};
    multiworker::Supervisor sup;
    sup.add("streamer", Streamer{&pid[0], 1'000'000},
            {.restart = multiworker::Restart::on_failure, .mailbox_capacity = 64, .max_restarts = 1});
    sup.add("steady", Steady{});
    sup.add("checker", Checker{});
    std::pair<int, long> outcome{-1, 0};
    sup.on<std::pair<int, long>>([&](const std::pair<int, long>& o) { outcome = o; });
    std::thread killer{[&] {
        while (pid[0].load() == 0) std::this_thread::sleep_for(1ms);
        std::this_thread::sleep_for(50ms);
        ::kill(static_cast<pid_t>(pid[0].load()), SIGKILL);
    }};
    // The checker ends at Stop: the restarted streamer's further messages are dead letters.
    sup.run();
    killer.join();
    CHECK(outcome.first == 0);
    CHECK(outcome.second == 1000);
    CHECK(test_support::child_pids().empty());
}
