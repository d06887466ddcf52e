// Backend::mpi: a Processor whose workers run on the agent ranks of an
// mpirun job. Each test case but the first is run by its own
// `mpirun.openmpi --enable-recovery -np 3` (tests/CMakeLists.txt): rank 0
// runs the case, ranks 1 and 2 serve inside the Processor's constructor and
// end there. Ranks talk over TCP on loopback, as hosts would.

#include <multiworker/detail/mpi_link.hpp>
#include <multiworker/mpi.hpp>
#include <multiworker/multiworker.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using multiworker::Backend;
using multiworker::ErrorKind;

int this_rank() {
    const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
    return rank == nullptr ? -1 : std::atoi(rank);
}

multiworker::Options on_mpi(unsigned workers_per_agent) {
    multiworker::Options options{.workers = workers_per_agent, .backend = Backend::mpi};
    options.heartbeat_interval = 50ms;
    // A loaded 2-core machine (sanitizers, a test beside this one) has
    // delayed a heartbeat past 1 s: the agent then took rank 0 for lost.
    options.heartbeat_limit = 3'000ms;
    return options;
}

// Built on every rank before the Processor: `rank` is the rank whose
// workers copy it (fork keeps it), `rank_pid` the pid of that rank's agent.
struct Probe {
    int rank = this_rank();
    pid_t rank_pid = ::getpid();

    std::pair<long, int> square(long n) {
        if (n == -1) throw std::domain_error{"no square for -1"};
        if (n == -2) std::abort();
        if (n == -3 && rank == 1) ::kill(rank_pid, SIGKILL);  // the whole of agent rank 1
        if (n < 0) std::this_thread::sleep_for(200ms);        // lets rank 1 die before the rest is done
        return {n * n, ::getpid()};
    }
};

using ProbeProcessor = multiworker::Processor<Probe, &Probe::square>;

// Sleeps, then says how long and on which rank.
struct Napper {
    int rank = this_rank();

    std::pair<int, int> nap(int ms) const {
        std::this_thread::sleep_for(std::chrono::milliseconds{ms});
        return {ms, rank};
    }
};

struct Echo {
    std::vector<char> echo(const std::vector<char>& bytes) { return bytes; }
};

std::vector<char> pattern(std::size_t size, unsigned seed) {
    std::vector<char> bytes(size);
    for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 131 + seed) % 251);
    return bytes;
}

}  // namespace

TEST_CASE("Backend::mpi outside mpirun is a clear error") {
    REQUIRE(this_rank() < 0);  // CMake runs this case without mpirun
    try {
        ProbeProcessor processor{Probe{}, {.workers = 1, .backend = Backend::mpi}};
        FAIL("constructed without mpirun");
    } catch (const std::invalid_argument& e) {
        CHECK_THAT(e.what(), Catch::Contains("not started by mpirun"));
    }
}

TEST_CASE("mpirun_command puts rank 0 on this host and an agent on each host named") {
    using Words = std::vector<std::string>;
    const Words common{"mpirun.openmpi", "--enable-recovery", "--bind-to", "none", "--oversubscribe"};
    const auto with = [&](Words words) {
        words.insert(words.begin(), common.begin(), common.end());
        return words;
    };
    CHECK(multiworker::mpirun_command({}, "/bin/prog", {"--x", "1"}) == with({"-np", "2", "/bin/prog", "--x", "1"}));
    CHECK(multiworker::mpirun_command({.agents = 3}, "/bin/prog", {}) == with({"-np", "4", "/bin/prog"}));
    const multiworker::MpiLaunch spread{.hosts = {"h1", "h2", "h1"}, .mpirun_arguments = {"--mca", "btl", "tcp,self"}};
    CHECK(multiworker::mpirun_command(spread, "/bin/prog", {}) ==
          with({"-np", "4", "--host", "localhost:1,h1:2,h2:1", "--mca", "btl", "tcp,self", "/bin/prog"}));
    CHECK(multiworker::mpirun_command({.hosts = {"localhost"}}, "/bin/prog", {}) ==
          with({"-np", "2", "--host", "localhost:2", "/bin/prog"}));
}

TEST_CASE("every task runs on an agent's worker and its result comes back") {
    ProbeProcessor processor{Probe{}, on_mpi(2)};
    REQUIRE(this_rank() == 0);  // the agents never return from the constructor
    for (long n = 0; n < 2'000; ++n) processor.add(n);
    processor.start();
    processor.wait();
    auto results = processor.get_results();
    REQUIRE(results.size() == 2'000);
    std::set<int> pids;
    for (const auto& result : results) {
        REQUIRE(result.ok());
        const long n = static_cast<long>(result.id().value()) - 1;
        CHECK(result.value().first == n * n);
        pids.insert(result.value().second);
    }
    CHECK(pids.count(::getpid()) == 0);
    CHECK(pids.size() >= 2);  // 4 workers on 2 agents: not all on one
}

TEST_CASE("a task that throws or crashes fails alone with the host and rank named") {
    ProbeProcessor processor{Probe{}, on_mpi(2)};
    processor.start();
    processor.add(-1);
    processor.add(-2);
    for (long n = 0; n < 100; ++n) processor.add(n);
    processor.wait();
    auto results = processor.get_results();
    REQUIRE(results.size() == 102);
    for (const auto& result : results) {
        if (result.id().value() == 1) {
            REQUIRE(!result.ok());
            CHECK(result.error().kind() == ErrorKind::exception);
            CHECK_THAT(result.error().message(), Catch::Contains("no square for -1"));
            CHECK_THAT(result.error().location(), Catch::StartsWith("host "));
            CHECK_THAT(result.error().what(), Catch::Contains("MPI rank"));
        } else if (result.id().value() == 2) {
            REQUIRE(!result.ok());
            CHECK(result.error().kind() == ErrorKind::worker_died);
            CHECK_THAT(result.error().what(), Catch::Contains("on host "));
        } else {
            CHECK(result.ok());
        }
    }
}

TEST_CASE("the loss of a whole agent rank fails only the tasks it held") {
    ProbeProcessor processor{Probe{}, on_mpi(2)};
    processor.start();
    for (long n = 0; n < 40; ++n) processor.add(n % 8 == 0 ? -3 : n);
    processor.wait();
    auto results = processor.get_results();
    REQUIRE(results.size() == 40);
    int lost = 0;
    for (const auto& result : results) {
        if (result.ok()) continue;
        ++lost;
        CHECK(result.error().kind() == ErrorKind::worker_died);
        CHECK_THAT(result.error().location(), Catch::Contains("MPI rank 1"));
        CHECK_THAT(result.error().message(), Catch::Contains("heartbeat_limit"));
    }
    CHECK(lost >= 1);
    CHECK(lost < 40);
    // Rank 2 still serves: tasks added after the loss run there.
    processor.add(7);
    auto late = processor.pop_result(30s);
    REQUIRE(late);
    REQUIRE(late->ok());
    CHECK(late->value().first == 49);
}

TEST_CASE("with retries the tasks of a lost agent run again on another") {
    auto options = on_mpi(2);
    options.retries = 1;
    ProbeProcessor processor{Probe{}, options};
    processor.start();
    for (long n = 0; n < 40; ++n) processor.add(n % 8 == 0 ? -3 : n);
    processor.wait();
    auto results = processor.get_results();
    REQUIRE(results.size() == 40);
    for (const auto& result : results) CHECK(result.ok());
}

// The link keeps each sender's order: a small message sent after a large one,
// which crosses in pieces, is delivered after it, even when the receiver
// finds both already here. Every rank runs this case with a link of its own.
TEST_CASE("the link delivers a rank's messages in the order it sent them") {
    namespace wire = multiworker::detail::mpi_wire;
    multiworker::detail::MpiLink link;
    const std::vector<char> large = pattern(std::size_t{256} << 10, 5);  // 8 pieces, all in flight at once
    if (link.rank() == 1) {
        link.send(0, wire::results, large);
        link.send(0, wire::stopped);
    }
    if (link.rank() == 0) {
        std::this_thread::sleep_for(500ms);  // the pieces and the small one arrive meanwhile
        std::vector<multiworker::detail::MpiLink::Message> received;
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (received.size() < 2 && std::chrono::steady_clock::now() < deadline) {
            auto message = link.receive();
            if (message && message->tag != wire::heartbeat) received.push_back(std::move(*message));
        }
        REQUIRE(received.size() == 2);
        CHECK(received[0].tag == wire::results);
        CHECK(received[0].body == large);
        CHECK(received[1].tag == wire::stopped);
    }
    link.finish(true);  // every rank: its sends delivered, then MPI_Finalize
}

TEST_CASE("a second Backend::mpi Processor is a clear error") {
    {
        ProbeProcessor first{Probe{}, on_mpi(1)};
        first.start();
        first.add(3);
        REQUIRE(first.pop_result(30s)->value().first == 9);
    }
    try {
        ProbeProcessor second{Probe{}, on_mpi(1)};
        FAIL("a second Backend::mpi Processor was constructed");
    } catch (const std::logic_error& e) {
        CHECK_THAT(e.what(), Catch::Contains("one Backend::mpi Processor per program"));
    }
}

// The cases below run only on simulated hosts (tests/mpi/simulated_hosts.sh): the
// agents on hosts h1 and h2, and commands that cut h1 off the network and mend it.
static std::string from_environment(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr) FAIL(name << " is not set: run this case with tests/mpi/simulated_hosts.sh");
    return value;
}

TEST_CASE("errors name the host of the agent that ran the task") {
    (void)from_environment("MULTIWORKER_TEST_CUT_HOST");
    ProbeProcessor processor{Probe{}, on_mpi(2)};
    processor.start();
    for (int i = 0; i < 40; ++i) processor.add(-1);
    processor.wait();
    std::set<std::string> hosts;
    for (const auto& result : processor.get_results()) {
        REQUIRE(!result.ok());
        const std::string& location = result.error().location();  // "host h1 (MPI rank 1, ...)"
        REQUIRE(location.starts_with("host "));
        hosts.insert(location.substr(5, location.find(' ', 5) - 5));
    }
    CHECK(hosts == std::set<std::string>{"h1", "h2"});
}

TEST_CASE("an agent whose host drops off the network is lost and the Processor goes on") {
    const std::string cut = from_environment("MULTIWORKER_TEST_CUT_HOST");
    const std::string mend = from_environment("MULTIWORKER_TEST_MEND_HOST");
    ProbeProcessor processor{Probe{}, on_mpi(2)};
    processor.start();
    for (long n = 0; n < 40; ++n) processor.add(-4);  // 200 ms each: some are on h1 when it goes
    std::this_thread::sleep_for(300ms);
    REQUIRE(std::system(cut.c_str()) == 0);
    processor.wait();
    REQUIRE(std::system(mend.c_str()) == 0);  // so that mpirun can end its daemon there
    int lost = 0;
    for (const auto& result : processor.get_results()) {
        if (result.ok()) continue;
        ++lost;
        CHECK(result.error().kind() == ErrorKind::worker_died);
        CHECK_THAT(result.error().location(), Catch::StartsWith("host h1 (MPI rank 1"));
        CHECK_THAT(result.error().message(), Catch::Contains("heartbeat_limit"));
    }
    CHECK(lost >= 1);
    CHECK(lost <= 4);  // at most two per worker in flight on h1
    processor.add(5);
    auto late = processor.pop_result(30s);
    REQUIRE(late);
    CHECK(late->value().first == 25);
}

// Large messages take seconds to cross a slow link, longer than the
// heartbeat limit; both ends keep polling, and sending heartbeats, while
// they cross, so no agent is counted lost and no rank 0 falls silent.
TEST_CASE("agents stay in touch while large tasks and results cross a slow link") {
    const std::string slow = from_environment("MULTIWORKER_TEST_SLOW_LINKS");
    const std::string fast = from_environment("MULTIWORKER_TEST_FAST_LINKS");
    multiworker::Options options = on_mpi(1);
    options.heartbeat_interval = 20ms;
    // 64 MiB take 2.7 s each way at 200 Mbit/s, longer than the limit. Not
    // much shorter: on a loaded machine (sanitizers, tests beside this one)
    // an agent's copies of 64 MiB messages have kept it from its heartbeats
    // for over a second.
    options.heartbeat_limit = 2'000ms;
    multiworker::Processor<Echo, &Echo::echo> processor{Echo{}, options};
    constexpr std::size_t large = std::size_t{64} << 20;
    REQUIRE(std::system(slow.c_str()) == 0);
    processor.add(pattern(large, 1));
    processor.add(pattern(16, 2));
    processor.add(pattern(large, 3));
    processor.start();
    processor.wait();
    REQUIRE(std::system(fast.c_str()) == 0);
    auto results = processor.get_results();
    REQUIRE(results.size() == 3);
    for (const auto& result : results) {
        INFO(result.id().value() << ": " << (result.ok() ? std::string{"ok"} : result.error().what()));
        REQUIRE(result.ok());
        const unsigned seed = static_cast<unsigned>(result.id().value());
        CHECK(result.value() == pattern(seed == 2 ? 16 : large, seed));
    }
}

TEST_CASE("cancel and stop settle every task") {
    ProbeProcessor processor{Probe{}, on_mpi(1)};
    processor.start();
    for (long n = 0; n < 200; ++n) processor.add(-4);  // 200 ms each
    std::this_thread::sleep_for(300ms);
    const std::size_t cancelled = processor.cancel();
    CHECK(cancelled > 150);
    processor.wait();
    CHECK(processor.get_results().size() == 200 - cancelled);
    processor.stop();
    CHECK(processor.done());
}

TEST_CASE("tasks spread over the agents and once long none waits behind another") {
    multiworker::Processor<Napper, &Napper::nap> processor{Napper{}, on_mpi(1)};
    processor.start();
    // Two tasks on two agents of one worker each: one on each, not both on the first.
    processor.add(300);
    processor.add(300);
    std::set<int> ranks;
    while (auto result = processor.pop_result(30s)) ranks.insert(result->value().second);
    CHECK(ranks == std::set<int>{1, 2});
    // Known long now: an agent holds one task per worker, so the short ones
    // all run on the agent that is free, none queued behind the long one.
    processor.add(1500);
    for (int i = 0; i < 3; ++i) processor.add(20);
    std::vector<int> finished;
    while (auto result = processor.pop_result(30s)) finished.push_back(result->value().first);
    CHECK(finished == std::vector<int>{20, 20, 20, 1500});
}

TEST_CASE("tasks queued on an agent behind a long one move to an agent that idles") {
    multiworker::Processor<Napper, &Napper::nap> processor{Napper{}, on_mpi(1)};
    // Added before start(), all eight leave in the first message: four for
    // each agent of one worker (0, 2, 4, 6 to rank 1), before any proved long.
    processor.add(1500);
    for (int i = 0; i < 7; ++i) processor.add(20);
    processor.start();
    // Rank 2 ends its four long before rank 1's first: rank 1 gives back the
    // three queued behind it, which rank 2 runs.
    std::vector<int> finished;
    std::multiset<int> ranks_of_short_tasks;
    while (auto result = processor.pop_result(30s)) {
        finished.push_back(result->value().first);
        if (result->value().first == 20) ranks_of_short_tasks.insert(result->value().second);
    }
    REQUIRE(finished.size() == 8);
    CHECK(finished.back() == 1500);
    CHECK(ranks_of_short_tasks.count(2) == 7);
}
