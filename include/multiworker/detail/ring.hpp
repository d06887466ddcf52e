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

#include <multiworker/detail/system.hpp>

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

/// One process's view of a ring. Each side keeps its own position and a
/// cached copy of the peer's counter, so that a stream of small frames costs
/// no cache-line transfer per frame: the producer stages bytes and publishes
/// them in one store (publish()), the consumer takes bytes and frees their
/// space in one store (release()), and each reloads the peer's counter only
/// when its cached copy says the ring is full or empty.
class ByteRing {
public:
    ByteRing() noexcept = default;
    /// A view of `counters`, which must already hold the ring's current state.
    ByteRing(RingCounters* counters, char* data, std::uint64_t capacity) noexcept
        : counters_{counters}, data_{data}, capacity_{capacity} {
        resync();
    }

    /// Bytes the ring holds.
    [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }

    // --- producer side ---

    /// Copies as much of `bytes` as fits, without publishing it yet; returns the count.
    std::size_t stage(std::span<const char> bytes) {
        if (staged_tail_ - cached_head_ > capacity_ - bytes.size() || bytes.size() > capacity_) reload_head();
        const std::size_t count = std::min<std::uint64_t>(capacity_ - (staged_tail_ - cached_head_), bytes.size());
        if (count == 0) return 0;
        copy_in(staged_tail_, bytes.data(), count);
        staged_tail_ += count;
        return count;
    }

    /// Stages `first` and then `second` if both fit now, and nothing
    /// otherwise; true if they were staged. A small frame goes out in one
    /// step this way, with no state kept for a partial write.
    bool stage_whole(std::span<const char> first, std::span<const char> second) {
        const std::uint64_t size = first.size() + second.size();
        if (size > capacity_) return false;
        if (capacity_ - (staged_tail_ - cached_head_) < size) {
            reload_head();
            if (capacity_ - (staged_tail_ - cached_head_) < size) return false;
        }
        copy_in(staged_tail_, first.data(), first.size());
        copy_in(staged_tail_ + first.size(), second.data(), second.size());
        staged_tail_ += size;
        return true;
    }

    /// Makes every staged byte visible to the consumer; true if there were any.
    bool publish() noexcept {
        if (staged_tail_ == published_tail_) return false;
        counters_->tail.store(staged_tail_, std::memory_order_release);
        published_tail_ = staged_tail_;
        return true;
    }

    /// stage() and publish() in one.
    std::size_t write_some(std::span<const char> bytes) {
        const std::size_t count = stage(bytes);
        publish();
        return count;
    }

    /// True when a write could make progress, or when the counters are
    /// corrupt (so that the caller's next write reports it).
    [[nodiscard]] bool has_space() const noexcept {
        return staged_tail_ - counters_->head.load(std::memory_order_acquire) != capacity_;
    }

    // --- consumer side ---

    /// Bytes published and not yet taken, or at least `wanted` of them: the
    /// producer's tail is loaded only when the copy last loaded shows fewer,
    /// so that a consumer reading frame after frame does not pull the line
    /// the producer writes for every one. Throws RingCorrupted on impossible
    /// counters.
    [[nodiscard]] std::size_t readable(std::size_t wanted) {
        if (cached_tail_ - taken_head_ < wanted) reload_tail();
        return static_cast<std::size_t>(cached_tail_ - taken_head_);
    }

    /// True when every byte this consumer has seen published is taken. Loads
    /// no counter: the producer's tail stays where it is in the caches.
    [[nodiscard]] bool taken_all_seen() const noexcept { return cached_tail_ == taken_head_; }

    /// True when a read could make progress, or when the counters are corrupt.
    [[nodiscard]] bool has_readable() const noexcept {
        return cached_tail_ != taken_head_ || counters_->tail.load(std::memory_order_acquire) != taken_head_;
    }

    /// Copies up to `out.size()` published bytes out, without freeing their
    /// space yet; returns the count.
    std::size_t take(std::span<char> out) {
        if (cached_tail_ - taken_head_ < out.size()) reload_tail();
        const std::size_t count = std::min<std::uint64_t>(cached_tail_ - taken_head_, out.size());
        if (count == 0) return 0;
        copy_out(taken_head_, out.data(), count);
        taken_head_ += count;
        return count;
    }

    /// The next `count` published bytes where they lie in the ring, when all
    /// of them are published and they do not wrap around its end; empty
    /// otherwise. They stay in place until release(); skip() moves past them.
    std::span<const char> peek(std::size_t count) {
        if (cached_tail_ - taken_head_ < count) {
            reload_tail();
            if (cached_tail_ - taken_head_ < count) return {};
        }
        const std::size_t offset = static_cast<std::size_t>(taken_head_ & (capacity_ - 1));
        if (count > capacity_ - offset) return {};
        return {data_ + offset, count};
    }

    /// Takes `count` bytes that peek() returned, without copying them.
    void skip(std::size_t count) noexcept { taken_head_ += count; }

    /// Gives the space of every taken byte back to the producer; true if there was any.
    bool release() noexcept {
        if (taken_head_ == released_head_) return false;
        counters_->head.store(taken_head_, std::memory_order_release);
        released_head_ = taken_head_;
        return true;
    }

    /// take() and release() in one.
    std::size_t read_some(std::span<char> out) {
        const std::size_t count = take(out);
        release();
        return count;
    }

    /// Empties the ring; only when its peer is gone (a dead worker's rings).
    void reset() noexcept {
        counters_->head.store(0, std::memory_order_relaxed);
        counters_->tail.store(0, std::memory_order_release);
        resync();
    }

    /// Maps the ring's pages into this process at once (see prefault()):
    /// shared pages are not inherited by fork(), so each process faults them
    /// in on first use otherwise.
    void prefault_pages() const noexcept { prefault(data_, capacity_); }

    /// Forgets every cached position and reads them from the shared counters.
    void resync() noexcept {
        const std::uint64_t head = counters_->head.load(std::memory_order_acquire);
        const std::uint64_t tail = counters_->tail.load(std::memory_order_acquire);
        staged_tail_ = published_tail_ = tail;
        cached_head_ = head;
        taken_head_ = released_head_ = cached_tail_ = head;
    }

private:
    // The peer's counter is untrusted: it must only move forward, and never
    // claim more than a capacity of bytes between the two positions.
    void reload_head() {
        const std::uint64_t head = counters_->head.load(std::memory_order_acquire);
        if (head - cached_head_ > staged_tail_ - cached_head_) throw RingCorrupted{"ring head is ahead of its tail"};
        if (staged_tail_ - head > capacity_) throw RingCorrupted{"ring tail is more than a capacity ahead of its head"};
        cached_head_ = head;
    }
    void reload_tail() {
        const std::uint64_t tail = counters_->tail.load(std::memory_order_acquire);
        if (tail - taken_head_ > capacity_) throw RingCorrupted{"ring tail is more than a capacity ahead"};
        cached_tail_ = tail;
    }

    // `count` may be 0 with a null pointer (an empty payload): memcpy is
    // not called then. The second copy happens only at the wrap-around.
    void copy_in(std::uint64_t position, const char* from, std::size_t count) noexcept {
        const std::size_t offset = static_cast<std::size_t>(position & (capacity_ - 1));
        const std::size_t first = std::min<std::size_t>(count, capacity_ - offset);
        if (first != 0) std::memcpy(data_ + offset, from, first);
        if (count != first) std::memcpy(data_, from + first, count - first);
    }
    void copy_out(std::uint64_t position, char* to, std::size_t count) const noexcept {
        const std::size_t offset = static_cast<std::size_t>(position & (capacity_ - 1));
        const std::size_t first = std::min<std::size_t>(count, capacity_ - offset);
        if (first != 0) std::memcpy(to, data_ + offset, first);
        if (count != first) std::memcpy(to + first, data_, count - first);
    }

    RingCounters* counters_ = nullptr;
    char* data_ = nullptr;
    std::uint64_t capacity_ = 0;
    // Producer side.
    std::uint64_t staged_tail_ = 0;     // end of the bytes written, published or not
    std::uint64_t published_tail_ = 0;  // what the consumer has been shown
    std::uint64_t cached_head_ = 0;     // the consumer's head, last time we looked
    // Consumer side.
    std::uint64_t taken_head_ = 0;     // end of the bytes read
    std::uint64_t released_head_ = 0;  // what the producer has been given back
    std::uint64_t cached_tail_ = 0;    // the producer's tail, last time we looked
};

}  // namespace multiworker::detail
