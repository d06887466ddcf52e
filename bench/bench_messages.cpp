// The multiworker side of the message benchmark (bench/compare_messages.py
// runs it beside bench/message_peers.py and bench/zmq_messages.cpp): a
// Supervisor's processes exchanging 16-byte messages.
//
//   pingpong_busy   median round trip of a message bounced between two processes (20,000)
//   pingpong_sleep  the same, the initiator sleeping 2 ms before each round trip (300)
//   stream          one process sends 2,000,000 messages one way; per message until all are counted
//   stream_array    the same with a std::array<char, 16> (16 bytes on the wire, as ZeroMQ's stream sends)
//                   rather than a 16-character std::string (an 8-byte length first, and an allocation to
//                   receive it, since 16 characters exceed libstdc++'s in-place 15)
//   broadcast       one process broadcasts 100,000 to 8; per message until all 8 have all
//   eight_sends     the same by 8 sends, one to each receiver: what a broadcast saves
//   reqrep          Context::ask() to a process that serve()s it; median round trip (20,000)
//   idle_cpu        4 processes waiting 2 s in receive(): the busiest one's CPU time, % of a core
//
// Prints one JSON object a line (--json, the peers' format) or a table. --quick: a tenth of the
// iterations. --only WORKLOAD: that one alone. Start-up is not timed; the first 100 round trips are not counted.

#include <multiworker/multiworker.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using multiworker::Context;
using multiworker::ProcessId;

const std::string message(16, 'x');

struct Options {
    bool json = false;
    int scale = 1;               // divides the iteration counts
    const char* only = nullptr;  // one workload, for a profiler
    [[nodiscard]] bool runs(const char* workload) const { return only == nullptr || std::strcmp(only, workload) == 0; }
};

double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values.empty() ? 0 : values[values.size() / 2];
}

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// A result in the peers' format (bench/message_peers.py): round trips set
// median_us, one-way workloads per_message_us and messages_per_s.
void print(const Options& options, const char* workload, double median_us, double per_message_us) {
    if (options.json) {
        if (median_us > 0) {
            std::printf(
                "{\"peer\": \"multiworker\", \"workload\": \"%s\", \"median_us\": %.9g, "
                "\"per_message_us\": null, \"messages_per_s\": null}\n",
                workload, median_us);
        } else {
            std::printf(
                "{\"peer\": \"multiworker\", \"workload\": \"%s\", \"median_us\": null, "
                "\"per_message_us\": %.9g, \"messages_per_s\": %.9g}\n",
                workload, per_message_us, 1e6 / per_message_us);
        }
    } else if (median_us > 0) {
        std::printf("%-16s median round trip %9.3f us\n", workload, median_us);
    } else {
        std::printf("%-16s %9.4f us a message, %12.0f messages/s\n", workload, per_message_us, 1e6 / per_message_us);
    }
    std::fflush(stdout);
}

// Bounces `rounds` messages off the "pong" process; reports each round trip in us.
struct Pinger {
    int rounds;
    int sleep_us;
    void run(Context& ctx) {
        const ProcessId pong = ctx.ids("pong").front();
        std::vector<double> trips;
        for (int i = 0; i < rounds + 100; ++i) {
            if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds{sleep_us});
            const auto start = Clock::now();
            ctx.send(pong, message);
            (void)ctx.receive<std::string>();
            if (i >= 100) trips.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
        }
        ctx.send(pong, 0);  // done
        ctx.send(multiworker::parent, trips);
    }
};
struct Ponger {
    void run(Context& ctx) {
        for (;;) {
            auto m = ctx.receive<std::string, int>();
            if (std::holds_alternative<int>(m)) return;
            ctx.send(ctx.sender(), std::get<std::string>(m));
        }
    }
};

double ping_pong(int rounds, int sleep_us) {
    multiworker::Supervisor sup;
    sup.add("ping", Pinger{rounds, sleep_us});
    sup.add("pong", Ponger{});
    double result = 0;
    sup.on<std::vector<double>>([&](const std::vector<double>& trips) { result = median(trips); });
    sup.run();
    return result;
}

// Sends `count` copies of `message` to every process named "sink" (or broadcasts), then its start time to
// the parent.
enum class Route { one, broadcast, each };
template <class Message>
struct Streamer {
    int count;
    Route route;
    Message message;
    void run(Context& ctx) {
        const std::vector<ProcessId> sinks = ctx.ids("sink");
        std::this_thread::sleep_for(std::chrono::milliseconds{50});  // every sink is up
        const std::int64_t start = now_ns();
        for (int i = 0; i < count; ++i) {
            if (route == Route::one) ctx.send(sinks.front(), message);
            if (route == Route::broadcast) ctx.send(multiworker::broadcast, message);
            if (route == Route::each)
                for (const ProcessId sink : sinks) ctx.send(sink, message);
        }
        ctx.send(multiworker::parent, std::make_pair(0, start));
    }
};
// Counts `count` messages; sends the time it had them all to the parent.
template <class Message>
struct Counter {
    int count;
    void run(Context& ctx) {
        for (int i = 0; i < count; ++i) (void)ctx.receive<Message>();
        ctx.send(multiworker::parent, std::make_pair(1, now_ns()));
    }
};

template <class Message = std::string>
double stream(int count, unsigned sinks, Route route, const Message& sent = message) {
    multiworker::Supervisor sup;
    sup.add("source", Streamer<Message>{count, route, sent});
    sup.add("sink", Counter<Message>{count}, {.copies = sinks});
    std::int64_t start = 0;
    std::int64_t end = 0;
    sup.on<std::pair<int, std::int64_t>>([&](const std::pair<int, std::int64_t>& t) {
        if (t.first == 0) start = t.second;
        if (t.first == 1) end = std::max(end, t.second);
    });
    sup.run();
    return static_cast<double>(end - start) / 1e3 / count;
}

struct Asker {
    int rounds;
    void run(Context& ctx) {
        const ProcessId server = ctx.ids("server").front();
        std::vector<double> trips;
        for (int i = 0; i < rounds + 100; ++i) {
            const auto start = Clock::now();
            (void)ctx.ask<std::string>(server, message, std::chrono::seconds{10});
            if (i >= 100) trips.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
        }
        ctx.send(multiworker::parent, trips);
    }
};
struct Server {
    std::string on(const std::string& request) { return request; }
    void run(Context& ctx) { ctx.serve<std::string>(*this); }
};

double request_reply(int rounds) {
    multiworker::Supervisor sup;
    sup.add("asker", Asker{rounds});
    sup.add("server", Server{}, {.resident = true});
    double result = 0;
    sup.on<std::vector<double>>([&](const std::vector<double>& trips) { result = median(trips); });
    sup.run();
    return result;
}

// Waits 2 s for a message that never comes; reports its CPU time in us.
struct Idler {
    void run(Context& ctx) {
        (void)ctx.receive<int>(std::chrono::seconds{2});
        rusage usage{};
        ::getrusage(RUSAGE_SELF, &usage);
        const double cpu_us = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 +
                              static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
        ctx.send(multiworker::parent, cpu_us);
    }
};

double idle_cpu_percent() {
    multiworker::Supervisor sup;
    sup.add("idler", Idler{}, {.copies = 4});
    double worst = 0;
    sup.on<double>([&](double cpu_us) { worst = std::max(worst, cpu_us); });
    sup.run();
    return worst / 2e6 * 100;  // of 2 s
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--json") == 0) options.json = true;
        if (std::strcmp(argv[i], "--quick") == 0) options.scale = 10;
        if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) options.only = argv[++i];
    }
    if (options.runs("pingpong_busy")) print(options, "pingpong_busy", ping_pong(20'000 / options.scale, 0), 0);
    if (options.runs("pingpong_sleep")) print(options, "pingpong_sleep", ping_pong(300 / options.scale, 2000), 0);
    if (options.runs("stream")) print(options, "stream", 0, stream(2'000'000 / options.scale, 1, Route::one));
    if (options.runs("stream_array")) {
        std::array<char, 16> block{};
        std::memcpy(block.data(), message.data(), block.size());
        print(options, "stream_array", 0, stream(2'000'000 / options.scale, 1, Route::one, block));
    }
    if (options.runs("broadcast")) print(options, "broadcast", 0, stream(100'000 / options.scale, 8, Route::broadcast));
    if (options.runs("eight_sends")) print(options, "eight_sends", 0, stream(100'000 / options.scale, 8, Route::each));
    if (options.runs("reqrep")) print(options, "reqrep", request_reply(20'000 / options.scale), 0);
    if (!options.runs("idle_cpu")) return 0;
    const double idle = idle_cpu_percent();
    if (options.json) {
        std::printf("{\"peer\": \"multiworker\", \"workload\": \"idle_cpu\", \"percent_of_core\": %.3f}\n", idle);
    } else {
        std::printf("%-16s %.3f %% of a core per idle process\n", "idle_cpu", idle);
    }
}
