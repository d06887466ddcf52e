#pragma once

// Doorbell: lets one process sleep until another has published work, without
// a system call per message.
//
// A waker rings only when the sleeper has announced it is about to sleep, so
// a busy pipeline runs on shared-memory loads alone; only an idle peer costs
// an eventfd write (about 14 us round trip here, versus well under 1 us for
// the brief spin that callers try first). Lost wake-ups are excluded by the
// classic store/fence/load pairing on both sides: the sleeper sets `sleeping`
// and then re-checks its condition; the waker publishes and then reads
// `sleeping`. With seq_cst fences between, at least one of them sees the other.

#include <multiworker/detail/spin.hpp>
#include <multiworker/detail/system.hpp>

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace multiworker::detail {

/// The shared part: whether the owner is (about to be) asleep.
struct DoorbellFlag {
    alignas(64) std::atomic<std::uint32_t> sleeping{0};
};

/// One process's view of a doorbell: the shared flag plus the eventfd.
class Doorbell {
public:
    Doorbell() noexcept = default;
    Doorbell(DoorbellFlag* flag, int eventfd) noexcept : flag_{flag}, eventfd_{eventfd} {}

    [[nodiscard]] int fd() const noexcept { return eventfd_; }

    /// Wakes the owner if it sleeps. Call after publishing what it waits for.
    /// The first waker takes the announcement down, so that further wakers
    /// (more results, a second worker) make no system call while the owner
    /// is still on its way up.
    void ring() const noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (flag_->sleeping.load(std::memory_order_relaxed) != 0 &&
            flag_->sleeping.exchange(0, std::memory_order_relaxed) != 0) {
            const std::uint64_t one = 1;
            [[maybe_unused]] const ssize_t ignored = ::write(eventfd_, &one, sizeof one);
        }
    }

    /// True if the owner has announced that it sleeps (a hint: it may be
    /// waking up already).
    [[nodiscard]] bool owner_sleeping() const noexcept { return flag_->sleeping.load(std::memory_order_relaxed) != 0; }

    /// Announces sleep, then re-checks `ready`. Returns true when the caller
    /// may sleep (poll on fd()); it must then call end_sleep() either way.
    template <class Ready>
    bool begin_sleep(Ready&& ready) const {
        flag_->sleeping.store(1, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        return !ready();
    }

    /// Clears the sleep announcement and swallows pending rings.
    void end_sleep() const noexcept {
        flag_->sleeping.store(0, std::memory_order_relaxed);
        std::uint64_t count = 0;
        [[maybe_unused]] const ssize_t ignored = ::read(eventfd_, &count, sizeof count);
    }

    /// Spins up to `spins` times, yielding now and then (see spin_pause()),
    /// then sleeps up to `timeout_ms` unless rung. Returns whether `ready()`
    /// held on return. The yields matter when the thread that will make
    /// `ready()` true shares this core: a worker spinning for its next task
    /// would otherwise keep the event loop from collecting the last result.
    template <class Ready>
    bool wait(Ready&& ready, int spins, int timeout_ms) const {
        for (int i = 0; i < spins; ++i) {
            if (ready()) return true;
            spin_pause(i);
        }
        if (begin_sleep(ready)) {
            pollfd descriptor{eventfd_, POLLIN, 0};
            ::poll(&descriptor, 1, timeout_ms);
        }
        end_sleep();
        return ready();
    }

private:
    DoorbellFlag* flag_ = nullptr;
    int eventfd_ = -1;
};

}  // namespace multiworker::detail
