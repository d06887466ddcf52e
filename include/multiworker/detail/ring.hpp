#pragma once

// ByteRing: a lock-free single-producer/single-consumer byte stream in shared
// memory.
//
// Why this and not a mutex-guarded queue: a worker can be killed at any
// instruction. Boost.Interprocess mutexes (and message_queue) are not robust:
// a holder that dies leaves them locked forever or "not recoverable". A ring
// with exactly one writer per position counter holds no lock at all, so a dead
// peer can only stop making progress; the survivor always knows which bytes
// were published (below `tail`) and which were consumed (below `head`). Each
// worker has its own pair of rings, so no state is shared between workers.
//
// Positions are monotonically increasing 64-bit byte counts; capacity is a
// power of two. Bytes flow as a stream: frames larger than the ring pass in
// pieces. The peer's counter is untrusted and validated on every read.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>

namespace multiworker::detail {

/// Thrown when a ring's counters are impossible: the peer corrupted it.
class RingCorrupted : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// The shared part of a ring: the two counters, each on its own cache line.
struct RingCounters {
    alignas(64) std::atomic<std::uint64_t> head{0};  // bytes consumed; written by the consumer only
    alignas(64) std::atomic<std::uint64_t> tail{0};  // bytes published; written by the producer only
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared-memory rings need lock-free 64-bit atomics");

/// A view of one ring; each process holds its own view of the same memory.
class ByteRing {
public:
    ByteRing() noexcept = default;
    ByteRing(RingCounters* counters, char* data, std::uint64_t capacity) noexcept
        : counters_{counters}, data_{data}, capacity_{capacity} {}

    // --- producer side ---

    /// Copies as much of `bytes` as fits and publishes it; returns the count.
    std::size_t write_some(std::span<const char> bytes) {
        const std::uint64_t tail = counters_->tail.load(std::memory_order_relaxed);
        const std::uint64_t used = tail - counters_->head.load(std::memory_order_acquire);
        if (used > capacity_) throw RingCorrupted{"ring head is ahead of its tail"};
        const std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(capacity_ - used, bytes.size()));
        if (count == 0) return 0;
        copy_in(tail, bytes.data(), count);
        counters_->tail.store(tail + count, std::memory_order_release);
        return count;
    }

    /// True when a write could make progress, or when the counters are
    /// corrupt (so that the caller's next write reports it).
    [[nodiscard]] bool has_space() const noexcept {
        const std::uint64_t used =
            counters_->tail.load(std::memory_order_relaxed) - counters_->head.load(std::memory_order_acquire);
        return used != capacity_;
    }

    // --- consumer side ---

    /// Bytes published and not yet consumed.
    [[nodiscard]] std::size_t readable() const {
        const std::uint64_t head = counters_->head.load(std::memory_order_relaxed);
        const std::uint64_t available = counters_->tail.load(std::memory_order_acquire) - head;
        if (available > capacity_) throw RingCorrupted{"ring tail is more than a capacity ahead"};
        return static_cast<std::size_t>(available);
    }

    /// True when a read could make progress, or when the counters are corrupt.
    [[nodiscard]] bool has_readable() const noexcept {
        return counters_->tail.load(std::memory_order_acquire) != counters_->head.load(std::memory_order_relaxed);
    }

    /// Copies up to `out.size()` published bytes out and consumes them.
    std::size_t read_some(std::span<char> out) {
        const std::size_t count = std::min(readable(), out.size());
        if (count == 0) return 0;
        const std::uint64_t head = counters_->head.load(std::memory_order_relaxed);
        copy_out(head, out.data(), count);
        counters_->head.store(head + count, std::memory_order_release);
        return count;
    }

    /// Empties the ring; only when its peer is gone (a dead worker's rings).
    void reset() noexcept {
        counters_->head.store(0, std::memory_order_relaxed);
        counters_->tail.store(0, std::memory_order_release);
    }

private:
    void copy_in(std::uint64_t position, const char* from, std::size_t count) noexcept {
        const std::size_t offset = static_cast<std::size_t>(position & (capacity_ - 1));
        const std::size_t first = std::min<std::size_t>(count, capacity_ - offset);
        std::memcpy(data_ + offset, from, first);
        std::memcpy(data_, from + first, count - first);
    }
    void copy_out(std::uint64_t position, char* to, std::size_t count) const noexcept {
        const std::size_t offset = static_cast<std::size_t>(position & (capacity_ - 1));
        const std::size_t first = std::min<std::size_t>(count, capacity_ - offset);
        std::memcpy(to, data_ + offset, first);
        std::memcpy(to + first, data_, count - first);
    }

    RingCounters* counters_ = nullptr;
    char* data_ = nullptr;
    std::uint64_t capacity_ = 0;
};

}  // namespace multiworker::detail
