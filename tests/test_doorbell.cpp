// The doorbell between processes: a sleeper's announcement and a waker's
// publication never both go unseen, so no wake-up is lost.

#include <multiworker/detail/doorbell.hpp>
#include <multiworker/detail/spin.hpp>
#include <multiworker/detail/system.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <new>

using namespace multiworker::detail;

namespace {

/// Shared by the two processes of a test.
struct SharedState {
    DoorbellFlag sleeper_flag;
    alignas(64) std::atomic<int> arrived[2] = {0, 0};
    alignas(64) std::atomic<std::uint32_t> published{0};
    alignas(64) std::atomic<int> lost{0};
};

/// Both processes wait here for the other to reach `step`.
void meet(SharedState& shared, int side, int step) {
    shared.arrived[side].store(step, std::memory_order_release);
    for (int i = 0; shared.arrived[1 - side].load(std::memory_order_acquire) < step; ++i) spin_pause(i);
}

/// The sleeper's half of a round, the other process's publication racing it.
/// Each step is given: `announce` stores the announcement and returns whether
/// the publication was missed; `publish` publishes and takes a seen
/// announcement down. A round loses a wake-up when the sleeper missed the
/// publication and its announcement is still up afterwards.
template <class Announce, class Publish>
int count_lost_wake_ups(int rounds, Announce announce, Publish publish) {
    SharedMapping mapping{sizeof(SharedState)};
    auto* shared = new (mapping.data()) SharedState{};
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    const int side = child == 0 ? 1 : 0;  // 0 sleeps, 1 wakes
    for (int round = 1; round <= rounds; ++round) {
        meet(*shared, side, 3 * round - 2);  // both start the round together
        const auto round_number = static_cast<std::uint32_t>(round);
        if (side == 0) {
            const bool missed = announce(*shared, round_number);
            meet(*shared, side, 3 * round - 1);
            if (missed && shared->sleeper_flag.sleeping.load(std::memory_order_relaxed) != 0) {
                shared->lost.fetch_add(1, std::memory_order_relaxed);
            }
            shared->sleeper_flag.sleeping.store(0, std::memory_order_relaxed);
        } else {
            publish(*shared, round_number);
            meet(*shared, side, 3 * round - 1);
        }
        meet(*shared, side, 3 * round);  // the flag is down before the next round
    }
    if (child == 0) ::_exit(0);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    return shared->lost.load();
}

}  // namespace

TEST_CASE("a doorbell's sleeper and waker racing each other never both miss the other") {
    test_support::Watchdog watchdog{std::chrono::seconds{100}};
    const int rounds = test_support::address_sanitizer ? 5'000 : 50'000;
    const FileDescriptor eventfd = make_eventfd();

    const int lost = count_lost_wake_ups(
        rounds,
        [&](SharedState& shared, std::uint32_t round) {
            const Doorbell doorbell{&shared.sleeper_flag, eventfd.get()};
            // A ring's eventfd count is never read: nothing here polls it.
            return doorbell.begin_sleep([&] { return shared.published.load(std::memory_order_acquire) == round; });
        },
        [&](SharedState& shared, std::uint32_t round) {
            shared.published.store(round, std::memory_order_release);
            Doorbell{&shared.sleeper_flag, eventfd.get()}.ring();
        });
    CHECK(lost == 0);

    // The same race without the fences: that the test sees the race at all
    // (on x86 it shows in some rounds when both processes have a core).
    const int lost_unfenced = count_lost_wake_ups(
        rounds,
        [](SharedState& shared, std::uint32_t round) {
            shared.sleeper_flag.sleeping.store(1, std::memory_order_relaxed);
            return shared.published.load(std::memory_order_relaxed) != round;
        },
        [](SharedState& shared, std::uint32_t round) {
            shared.published.store(round, std::memory_order_relaxed);
            if (shared.sleeper_flag.sleeping.load(std::memory_order_relaxed) != 0)
                shared.sleeper_flag.sleeping.store(0, std::memory_order_relaxed);
        });
    WARN("without the doorbell's fences, " << lost_unfenced << " of " << rounds << " rounds lost the wake-up");
}

TEST_CASE("a ping-pong between processes that sleep at every turn loses no wake-up") {
    test_support::Watchdog watchdog{std::chrono::seconds{100}};
    const int rounds = test_support::address_sanitizer ? 3'000 : 20'000;
    struct PingPong {
        DoorbellFlag flags[2];
        alignas(64) std::atomic<std::uint64_t> turns[2] = {0, 0};
    };
    SharedMapping mapping{sizeof(PingPong)};
    auto* shared = new (mapping.data()) PingPong{};
    const FileDescriptor eventfds[2] = {make_eventfd(), make_eventfd()};

    // Waits for each turn asleep, with no spinning, so that every ring races
    // the other's announcement. A sleep that ends by its timeout with the
    // turn already there is a lost wake-up.
    const auto play = [&](int side) {
        const int peer = 1 - side;
        const Doorbell own{&shared->flags[side], eventfds[side].get()};
        const Doorbell other{&shared->flags[peer], eventfds[peer].get()};
        int lost = 0;
        for (int round = 0; round < rounds; ++round) {
            const auto due = static_cast<std::uint64_t>(round + side);  // side 1 moves after side 0
            const auto my_turn = [&] { return shared->turns[peer].load(std::memory_order_acquire) >= due; };
            while (!my_turn()) {
                if (own.begin_sleep(my_turn)) {
                    pollfd descriptor{own.fd(), POLLIN, 0};
                    if (::poll(&descriptor, 1, 2000) == 0 && my_turn()) ++lost;
                }
                own.end_sleep();
            }
            shared->turns[side].store(static_cast<std::uint64_t>(round) + 1, std::memory_order_release);
            other.ring();
        }
        return lost;
    };

    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) ::_exit(play(1) == 0 ? 0 : 1);
    const int lost_here = play(0);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(lost_here == 0);
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(shared->turns[0].load() == static_cast<std::uint64_t>(rounds));
    CHECK(shared->turns[1].load() == static_cast<std::uint64_t>(rounds));
}
