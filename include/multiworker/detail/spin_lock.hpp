#pragma once

// SpinLock: a mutex for critical sections of a few dozen instructions that
// two busy threads take millions of times a second (add() and the event loop
// sharing the request inbox).
//
// Why not std::mutex: when it finds the lock taken, it sleeps in the kernel
// at once (futex), and the holder pays a second system call to wake it. With
// critical sections this short, waiting a few hundred nanoseconds is far
// cheaper; measured here, std::mutex cost one futex call per ~60 tasks. After
// a short spin the waiter yields, so a holder that lost its core gets it back.

#include <multiworker/detail/spin.hpp>

#include <atomic>
#include <thread>

namespace multiworker::detail {

/// A test-and-test-and-set lock that yields after spinning (Lockable).
class SpinLock {
public:
    void lock() noexcept {
        for (int spins = 0; !try_lock();) {
            while (locked_.load(std::memory_order_relaxed)) {
                if (++spins < spins_before_yield) {
                    cpu_relax();
                } else {
                    std::this_thread::yield();
                }
            }
        }
    }

    bool try_lock() noexcept { return !locked_.exchange(true, std::memory_order_acquire); }

    void unlock() noexcept { locked_.store(false, std::memory_order_release); }

private:
    static constexpr int spins_before_yield = 100;  // a few microseconds

    std::atomic<bool> locked_{false};
};

}  // namespace multiworker::detail
