// Supervisor and Context when things go right: names and ids, sends to one
// and to many, broadcast, listeners and their snoop, residents, loggers, the
// parent's handlers and sends, ask and reply, receive's timeout and kept
// messages, per-pair order, bounded mailboxes. Every case runs forked and
// in-process, with the same assertions.

#include "support.hpp"

#include <multiworker/multiworker.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using multiworker::Context;
using multiworker::ProcessId;

namespace {

struct Hello {
    std::string text;
    template <class A>
    void serialize(A& a, unsigned) {
        a& text;
    }
};
struct Stop {
    template <class A>
    void serialize(A&, unsigned) {}
};
struct Note {
    int value = 0;
    template <class A>
    void serialize(A& a, unsigned) {
        a& value;
    }
};
/// What a process tells the parent about itself: id, name, index, and a number.
using Report = std::tuple<int, std::string, unsigned, int>;

Report report_of(Context& ctx, int number) {
    return {ctx.self().id.value, ctx.self().name, ctx.self().index, number};
}

multiworker::Supervisor make_supervisor(bool in_process) {
    return multiworker::Supervisor{{.in_process = in_process, .stop_timeout = 5s}};
}

struct Greeter {
    void run(Context& ctx) {
        for (auto id : ctx.ids("listener")) ctx.send(id, Hello{"hi from " + std::to_string(ctx.self().index)});
        ctx.send(multiworker::broadcast, Stop{});
    }
};
struct Listener {
    int seen = 0;
    void run(Context& ctx) {
        while (auto m = ctx.receive<Hello, Stop>(5s)) {
            if (std::holds_alternative<Stop>(*m)) break;
            if (std::get<Hello>(*m).text == "hi from 0") ++seen;
        }
        ctx.send(multiworker::parent, report_of(ctx, seen));
    }
};

}  // namespace

TEST_CASE("names and ids: each process knows itself and the others by name") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    const auto greeter = sup.add("greeter", Greeter{});
    const auto listeners = sup.add("listener", Listener{}, {.copies = 3});
    REQUIRE(greeter.size() == 1);
    REQUIRE(listeners.size() == 3);
    CHECK(greeter[0].value == 1);
    CHECK(listeners[2].value == 4);
    std::map<int, Report> reports;
    sup.on<Report>([&](const Report& r, ProcessId from) {
        CHECK(std::get<0>(r) == from.value);
        reports[from.value] = r;
    });
    sup.run();
    REQUIRE(reports.size() == 3);
    for (unsigned i = 0; i < 3; ++i) {
        const Report& r = reports.at(listeners[i].value);
        CHECK(std::get<1>(r) == "listener");
        CHECK(std::get<2>(r) == i);
        CHECK(std::get<3>(r) == 1);  // one Hello each, then the broadcast Stop
    }
    CHECK(sup.dead_letters() == 0);
    CHECK(test_support::child_pids().empty());
}

namespace {

// Sends Note{1} to a list of ids, Note{2} by broadcast, then Stop to the same list.
struct Sender {
    void run(Context& ctx) {
        std::vector<ProcessId> targets = ctx.ids("target");
        targets.pop_back();  // not the last target
        ctx.send(targets, Note{1});
        ctx.send(multiworker::broadcast, Note{2});
        ctx.send(multiworker::broadcast, Stop{});
    }
};
// Sums the Notes it gets until Stop; reports the sum.
struct Summer {
    void run(Context& ctx) {
        int sum = 0;
        for (;;) {
            auto m = ctx.receive<Note, Stop>();
            if (std::holds_alternative<Stop>(m)) break;
            sum += std::get<Note>(m).value;
        }
        ctx.send(multiworker::parent, report_of(ctx, sum));
    }
};

}  // namespace

TEST_CASE("send to a list of ids and broadcast reach exactly those processes and not the sender") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    sup.add("sender", Sender{});
    const auto targets = sup.add("target", Summer{}, {.copies = 3});
    std::map<int, int> sums;
    sup.on<Report>([&](const Report& r, ProcessId from) { sums[from.value] = std::get<3>(r); });
    sup.run();
    REQUIRE(sums.size() == 3);
    CHECK(sums.at(targets[0].value) == 3);
    CHECK(sums.at(targets[1].value) == 3);
    CHECK(sums.at(targets[2].value) == 2);  // left out of the list: the broadcast only
}

namespace {

// Sends Note{i} for i = 1..10 straight to "b", then Stop to b; a listener snoops.
struct DirectSender {
    void run(Context& ctx) {
        const ProcessId b = ctx.ids("b").front();
        for (int i = 1; i <= 10; ++i) ctx.send(b, Note{i});
        ctx.send(b, Stop{});
        // Nobody listens to Hello: sending it to `listeners` is an error the sender sees.
        try {
            ctx.send(multiworker::listeners, Hello{"anyone?"});
            ctx.send(multiworker::parent, std::string{"no error"});
        } catch (const multiworker::NobodyListening& e) {
            ctx.send(multiworker::parent, std::string{e.what()});
        }
        // A Note to `listeners` reaches the spy only.
        ctx.send(multiworker::listeners, Note{100});
    }
};
// Listens to Note: gets a copy of each sent to b, and the one sent to listeners.
struct Spy {
    void run(Context& ctx) {
        int sum = 0;
        int count = 0;
        while (count < 11) {
            sum += std::get<Note>(ctx.receive<Note>()).value;
            ++count;
        }
        ctx.send(multiworker::parent, report_of(ctx, sum));
    }
};

}  // namespace

TEST_CASE("a listener gets a copy of every message of its types and listeners reaches only it") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    sup.add("a", DirectSender{});
    const auto b = sup.add("b", Summer{});
    const auto spy = sup.add("spy", Spy{}, {.listen_to = multiworker::listen<Note>()});
    std::map<int, int> sums;
    std::string error;
    sup.on<Report>([&](const Report& r, ProcessId from) { sums[from.value] = std::get<3>(r); });
    sup.on<std::string>([&](const std::string& text) { error = text; });
    sup.run();
    CHECK(sums.at(b[0].value) == 55);
    CHECK(sums.at(spy[0].value) == 155);
    CHECK_THAT(error, Contains("nobody listens to") && Contains("Hello"));
}

namespace {

struct Worker {
    void run(Context& ctx) {
        std::this_thread::sleep_for(std::chrono::milliseconds{20 * (ctx.self().index + 1)});
        ctx.send(ctx.ids("counter").front(), Note{1});
    }
};
// A resident that counts Notes until it is told the others have ended.
struct ResidentCounter {
    void run(Context& ctx) {
        int count = 0;
        for (;;) {
            auto m = ctx.receive<Note, multiworker::ResidentsEnd>();
            if (std::holds_alternative<multiworker::ResidentsEnd>(m)) break;
            ++count;
        }
        ctx.send(multiworker::parent, report_of(ctx, count));
    }
};

}  // namespace

TEST_CASE("residents are told when every other process has ended - after all their messages - and run() returns") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    sup.add("worker", Worker{}, {.copies = 4});
    sup.add("counter", ResidentCounter{}, {.resident = true});
    int counted = -1;
    sup.on<Report>([&](const Report& r) { counted = std::get<3>(r); });
    sup.run();
    CHECK(counted == 4);
}

namespace {

struct Progress {
    int done = 0;
    template <class A>
    void serialize(A& a, unsigned) {
        a& done;
    }
};
struct Stepper {
    void run(Context& ctx) {
        for (int i = 1; i <= 5; ++i) ctx.send(multiworker::listeners, Progress{i});
    }
};

}  // namespace

TEST_CASE("a Logger is a resident listener that records every message of its types") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    test_support::SharedCounters counters{2};  // [0]: messages recorded, [1]: the sum of their values
    auto sup = make_supervisor(in_process);
    sup.add("stepper", Stepper{}, {.copies = 2});
    sup.add("progress", multiworker::Logger<Progress>{[&counters](const std::variant<Progress>& m, ProcessId from) {
                if (from.value >= 1) ++counters[0];
                counters[1] += std::get<Progress>(m).done;
            }});
    sup.run();
    CHECK(counters[0].load() == 10);
    CHECK(counters[1].load() == 30);
}

namespace {

struct Ping {
    int n = 0;
    template <class A>
    void serialize(A& a, unsigned) {
        a& n;
    }
};
// Pings the parent, waits for the parent's Pong (a plain send), then asks the parent.
struct Pinger {
    void run(Context& ctx) {
        ctx.send(multiworker::parent, Ping{ctx.self().id.value});
        auto pong = ctx.receive<int>(10s);
        REQUIRE(pong);
        const int doubled = ctx.ask<int>(ctx.ids("echo").front(), Ping{std::get<int>(*pong)}, 10s);
        const int tripled = ctx.ask<int>(multiworker::parent, Note{ctx.self().id.value}, 10s);
        ctx.send(multiworker::parent, report_of(ctx, doubled + 1000 * tripled));
    }
};
// Answers asks: a Ping's n, doubled; throws for 13; ends at ResidentsEnd.
struct Echo {
    int on(const Ping& ping) {
        if (ping.n == 13) throw std::domain_error{"thirteen"};
        return 2 * ping.n;
    }
    void run(Context& ctx) { ctx.serve<Ping>(*this); }
};

}  // namespace

TEST_CASE("the parent handles messages and sends while run() is underway") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    const auto pingers = sup.add("pinger", Pinger{}, {.copies = 2});
    sup.add("echo", Echo{}, {.resident = true});
    std::map<int, int> results;
    sup.on<Ping>([&](const Ping& ping, ProcessId from) {
        CHECK(ping.n == from.value);
        sup.send(from, 10 * from.value);  // from the handler
    });
    sup.on<Note>([](const Note& note) { return 3 * note.value; });  // answers asks to the parent
    sup.on<Report>([&](const Report& r, ProcessId from) { results[from.value] = std::get<3>(r); });
    sup.run();
    REQUIRE(results.size() == 2);
    for (const ProcessId id : pingers) CHECK(results.at(id.value) == 20 * id.value + 3000 * id.value);
    CHECK_THROWS_AS(sup.send(pingers[0], 1), std::logic_error);  // after run()
}

namespace {

// Asks the echo for each outcome and reports what happened, as text, to the parent.
struct Asker {
    void run(Context& ctx) {
        const ProcessId echo = ctx.ids("echo").front();
        const ProcessId mute = ctx.ids("mute").front();
        std::string outcome = "reply " + std::to_string(ctx.ask<int>(echo, Ping{21}, 10s));
        try {
            (void)ctx.ask<int>(echo, Ping{13}, 10s);
        } catch (const multiworker::AskFailed& e) {
            outcome += e.reason() == multiworker::AskFailed::Reason::receiver_threw ? "; threw " : "; ? ";
            outcome += e.what();
        }
        try {
            (void)ctx.ask<int>(mute, Ping{1}, 200ms);
        } catch (const multiworker::AskFailed& e) {
            outcome += e.reason() == multiworker::AskFailed::Reason::timeout ? "; timeout" : "; ?";
        }
        ctx.send(mute, Stop{});
        try {
            (void)ctx.ask<int>(mute, Ping{2}, 10s);  // mute takes it, then returns without replying
        } catch (const multiworker::AskFailed& e) {
            outcome += e.reason() == multiworker::AskFailed::Reason::receiver_ended ? "; ended" : "; ?";
        }
        ctx.send(multiworker::parent, outcome);
    }
};
// Takes a Ping and never answers it in time; after Stop, takes one more and returns.
struct Mute {
    void run(Context& ctx) {
        (void)ctx.receive<Stop>();
        (void)ctx.receive<Ping>();  // the timed-out ask, kept
        (void)ctx.receive<Ping>();  // the last ask: run() returns with it unanswered
    }
};

}  // namespace

TEST_CASE("ask gets exactly one of a reply - the receiver's error - a timeout - the receiver's end") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    sup.add("asker", Asker{});
    sup.add("echo", Echo{}, {.resident = true});
    sup.add("mute", Mute{});
    std::string outcome;
    sup.on<std::string>([&](const std::string& text) { outcome = text; });
    sup.run();
    CHECK_THAT(outcome, Contains("reply 42; threw "));
    CHECK_THAT(outcome, Contains("std::domain_error") && Contains("thirteen"));
    CHECK_THAT(outcome, Contains("; timeout; ended"));
}

namespace {

struct Mixed {
    void run(Context& ctx) {
        const ProcessId r = ctx.ids("receiver").front();
        ctx.send(r, Note{1});
        ctx.send(r, Hello{"first"});
        ctx.send(r, Note{2});
        ctx.send(r, Hello{"second"});
    }
};
// Asks for Hello first: the Notes before them are kept, in order, for later.
struct Picky {
    void run(Context& ctx) {
        std::string order;
        order += std::get<Hello>(ctx.receive<Hello>()).text + " ";
        order += std::get<Hello>(ctx.receive<Hello>()).text + " ";
        order += std::to_string(std::get<Note>(ctx.receive<Note>()).value) + " ";
        order += std::to_string(std::get<Note>(ctx.receive<Note>()).value);
        const auto start = std::chrono::steady_clock::now();
        const bool timed_out = !ctx.receive<Note, Hello>(100ms).has_value();
        const bool waited = std::chrono::steady_clock::now() - start >= 100ms;
        ctx.send(multiworker::parent, order + (timed_out && waited ? " timeout" : " no timeout"));
    }
};

}  // namespace

TEST_CASE("a message of a type not asked for is kept for a later receive - receive times out") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    sup.add("mixed", Mixed{});
    sup.add("receiver", Picky{});
    std::string order;
    sup.on<std::string>([&](const std::string& text) { order = text; });
    sup.run();
    CHECK(order == "first second 1 2 timeout");
}

namespace {

// Sends numbered Notes to "b" by every route in turn: direct, broadcast, listeners.
struct Router {
    void run(Context& ctx) {
        const ProcessId b = ctx.ids("b").front();
        for (int i = 1; i <= 3000; ++i) {
            if (i % 3 == 0) ctx.send(b, Note{i});
            if (i % 3 == 1) ctx.send(multiworker::broadcast, Note{i});
            if (i % 3 == 2) ctx.send(multiworker::listeners, Note{i});
        }
        ctx.send(b, Stop{});
    }
};
// Listens to Note; checks that they come in the order they were sent.
struct OrderChecker {
    void run(Context& ctx) {
        int last = 0;
        int out_of_order = 0;
        for (;;) {
            auto m = ctx.receive<Note, Stop>();
            if (std::holds_alternative<Stop>(m)) break;
            const int value = std::get<Note>(m).value;
            if (value != last + 1) ++out_of_order;
            last = value;
        }
        ctx.send(multiworker::parent, report_of(ctx, out_of_order == 0 ? last : -out_of_order));
    }
};

}  // namespace

TEST_CASE("messages from one process to another arrive in order whatever route carried them") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    sup.add("router", Router{});
    sup.add("b", OrderChecker{}, {.listen_to = multiworker::listen<Note>(), .mailbox_capacity = 64});
    int last = 0;
    sup.on<Report>([&](const Report& r) { last = std::get<3>(r); });
    sup.run();
    CHECK(last == 3000);
}

namespace {

// Fills a mailbox of 4 that nobody reads yet: the fifth send waits, and times out.
struct Filler {
    void run(Context& ctx) {
        const ProcessId slow = ctx.ids("slow").front();
        int sent = 0;
        while (sent < 10 && ctx.send(slow, Note{sent + 1}, 100ms)) ++sent;
        ctx.send(multiworker::parent, report_of(ctx, sent));
        ctx.send(slow, Stop{});  // waits until slow has read
    }
};
struct Slow {
    void run(Context& ctx) {
        std::this_thread::sleep_for(500ms);
        int sum = 0;
        for (;;) {
            auto m = ctx.receive<Note, Stop>();
            if (std::holds_alternative<Stop>(m)) break;
            sum += std::get<Note>(m).value;
        }
        ctx.send(multiworker::parent, report_of(ctx, sum));
    }
};

}  // namespace

TEST_CASE("a full mailbox makes its sender wait - send with a timeout returns false") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    const auto filler = sup.add("filler", Filler{});
    const auto slow = sup.add("slow", Slow{}, {.mailbox_capacity = 4});
    std::map<int, int> reports;
    sup.on<Report>([&](const Report& r, ProcessId from) { reports[from.value] = std::get<3>(r); });
    sup.run();
    CHECK(reports.at(filler[0].value) == 4);
    CHECK(reports.at(slow[0].value) == 1 + 2 + 3 + 4);
}

namespace {

// "a" sends b nine ints (b's mailbox holds 8), then takes b's nine. "b",
// after a has filled its mailbox, takes one, then sends a nine: each then
// waits in a send for room the other makes only by the one message b took.
// Takes ints until nine are taken in all, then reports the count.
void take_up_to_nine(Context& ctx, int taken) {
    while (taken < 9 && ctx.receive<int>(10s)) ++taken;
    ctx.send(multiworker::parent, report_of(ctx, taken));
}
struct FillFirst {
    void run(Context& ctx) {
        const ProcessId b = ctx.ids("b").front();
        for (int i = 0; i < 9; ++i) ctx.send(b, i);
        take_up_to_nine(ctx, 0);
    }
};
struct TakeOneThenFill {
    void run(Context& ctx) {
        std::this_thread::sleep_for(200ms);  // a's ninth send waits by now
        const int taken = ctx.receive<int>(10s) ? 1 : 0;
        const ProcessId a = ctx.ids("a").front();
        for (int i = 0; i < 9; ++i) ctx.send(a, i);
        take_up_to_nine(ctx, taken);
    }
};

}  // namespace

TEST_CASE("a message taken makes room for its sender even while the receiver is itself waiting to send") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    const auto a = sup.add("a", FillFirst{}, {.mailbox_capacity = 8});
    const auto b = sup.add("b", TakeOneThenFill{}, {.mailbox_capacity = 8});
    std::map<int, int> taken;
    sup.on<Report>([&](const Report& r, ProcessId from) { taken[from.value] = std::get<3>(r); });
    sup.run();
    CHECK(taken.at(a[0].value) == 9);
    CHECK(taken.at(b[0].value) == 9);
}

TEST_CASE("misuse gets a clear error") {
    multiworker::Supervisor sup;
    CHECK_THROWS_AS(sup.run(), std::logic_error);  // no process
    multiworker::Supervisor second;
    CHECK_THROWS_AS(second.add("none", Greeter{}, {.copies = 0}), std::invalid_argument);
    CHECK_THROWS_AS(second.send(ProcessId{1}, 1), std::logic_error);  // not running
}

namespace {

struct Tick {
    template <class A>
    void serialize(A&, unsigned) {}
};
struct Ticker {
    void run(Context& ctx) {
        for (int i = 0; i < 3; ++i) ctx.send(ctx.ids("serving").front(), Tick{});
    }
};
// A resident serving with handlers that return nothing, one of them for ResidentsEnd.
struct VoidHandlers {
    int ticks = 0;
    bool told = false;
    void on(const Tick&) { ++ticks; }
    void on(const multiworker::ResidentsEnd&, Context& ctx) {
        told = true;
        ctx.send(multiworker::parent, report_of(ctx, ticks));
    }
    void run(Context& ctx) { ctx.serve<Tick>(*this); }
};
struct VoidHandlersAskingForTheEnd : VoidHandlers {
    void run(Context& ctx) { ctx.serve<Tick, multiworker::ResidentsEnd>(*this); }
};

}  // namespace

TEST_CASE("serve calls handlers that return nothing and hands ResidentsEnd to a handler that takes it") {
    test_support::Watchdog watchdog{60s};
    const bool in_process = GENERATE(false, true);
    auto sup = make_supervisor(in_process);
    sup.add("ticker", Ticker{});
    sup.add("serving", VoidHandlers{}, {.resident = true});
    sup.add("serving", VoidHandlersAskingForTheEnd{}, {.resident = true});
    std::vector<int> ticks;
    sup.on<Report>([&](const Report& r) { ticks.push_back(std::get<3>(r)); });
    sup.run();
    std::sort(ticks.begin(), ticks.end());
    CHECK(ticks == std::vector<int>{0, 3});  // the ticker sends to the first "serving" only
}
