#pragma once

// Spinning before sleeping, shared by the library's waiters: the event loop,
// the workers, and a caller waiting for a result.
//
// A brief spin catches the next message of a busy stream without a system
// call; sleeping costs a wake-up of several microseconds, and on a virtual
// machine waking a halted CPU costs tens. But the library runs more threads
// than a small machine has cores (the caller, the event loop, N workers), so
// no spin may keep a core from the thread it waits for: they all yield
// often, which hands the core to any runnable thread there (the caller the
// event loop just woke, the event loop a caller or a worker waits on).

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace multiworker::detail {

/// Pause steps before a waiter sleeps: about 50 us on current x86 cores.
inline constexpr int spins_before_sleep = 2000;

/// Yields before a caller waiting for a result sleeps: about 50 us.
inline constexpr int yields_before_sleep = 128;

/// Hint to the CPU that we are spinning.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
}

/// Step `iteration` of a spin (the event loop's, a worker's): a pause, and
/// every 16th step a yield (about 0.4 us), so that a thread waiting for this
/// core runs at once. Measured on 2 cores, the round trip of one task on busy
/// workers: with these yields in the event loop 3.4 us, with none 72 us; with
/// them in the workers too, 3.7-5.7 us in every run, where workers that
/// spin ~6 us before their first yield take 10 us in about half the runs.
inline void spin_pause(int iteration) noexcept {
    if (iteration % 16 == 15) {
        ::sched_yield();
    } else {
        cpu_relax();
    }
}

}  // namespace multiworker::detail
