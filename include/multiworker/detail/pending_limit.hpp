#pragma once

// Options::max_pending: adders wait while that many tasks are queued and not
// yet handed to a worker. Only a bounded queue counts its tasks: the count
// costs the hot path an atomic operation on a line the event loop writes too.

#include <atomic>
#include <cstddef>

namespace multiworker::detail {

class PendingLimit {
public:
    /// `limit` 0: unbounded, nothing counted.
    explicit PendingLimit(std::size_t limit) noexcept : limit_{limit} {}

    [[nodiscard]] bool bounded() const noexcept { return limit_ > 0; }

    /// Blocks the calling thread while the limit is reached, until the loop
    /// hands tasks out or `stopping` becomes true (see wake_all()).
    void wait_for_room(const std::atomic<bool>& stopping) {
        for (;;) {
            const std::size_t waiting = queued_.load();
            if (waiting < limit_ || stopping.load()) return;
            waiters_.fetch_add(1);
            queued_.wait(waiting);
            waiters_.fetch_sub(1);
        }
    }

    /// One task more in the queue (added, or put back for a retry).
    void returned_to_queue() noexcept {
        if (bounded()) queued_.fetch_add(1, std::memory_order_relaxed);
    }

    /// `count` tasks left the queue (handed to a worker, cancelled, failed);
    /// wakes adders waiting for room.
    void left_queue(std::size_t count) noexcept {
        if (count == 0 || !bounded()) return;
        queued_.fetch_sub(count);
        if (waiters_.load() > 0) queued_.notify_all();
    }

    /// Wakes every waiting adder, to look at its stop flag.
    void wake_all() noexcept { queued_.notify_all(); }

    /// Tasks queued and not handed out (0 when unbounded).
    [[nodiscard]] std::size_t queued() const noexcept { return queued_.load(std::memory_order_relaxed); }

private:
    const std::size_t limit_;
    std::atomic<std::size_t> queued_{0};
    std::atomic<int> waiters_{0};
};

}  // namespace multiworker::detail
