#pragma once

// BatchQueue: a first-in first-out queue of elements that arrive in batches,
// kept as the batches' own vectors.
//
// Why: the event loop delivers results a batch at a time while a caller
// takes them a batch at a time, under one lock. Appending a batch and taking
// every batch move vectors, never elements, so the event loop (the thread
// every task passes through twice) spends nothing per result on the hand-over
// and holds the lock for a few instructions.

#include <cstddef>
#include <deque>
#include <iterator>
#include <utility>
#include <vector>

namespace multiworker::detail {

template <class T>
class BatchQueue {
public:
    /// Batches taken out at once, oldest first.
    using Batches = std::vector<std::vector<T>>;

    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

    /// Appends `batch` whole; `batch` gets an empty vector in exchange, with
    /// the storage of a batch taken before when there is one.
    void append(std::vector<T>& batch) {
        if (batch.empty()) return;
        size_ += batch.size();
        batches_.push_back(std::move(batch));
        batch = take_spare();
    }

    /// Takes the oldest element; the queue must not be empty.
    T pop_front() {
        std::vector<T>& first = batches_.front();
        T value = std::move(first[front_++]);
        --size_;
        if (front_ == first.size()) {
            give_spare(std::move(first));
            batches_.pop_front();
            front_ = 0;
        }
        return value;
    }

    /// Takes every element, in the batches they came in.
    Batches take_all() {
        Batches taken;
        if (batches_.empty()) return taken;
        if (front_ != 0) {  // some were popped one by one: drop their husks
            std::vector<T>& first = batches_.front();
            first.erase(first.begin(), first.begin() + static_cast<std::ptrdiff_t>(front_));
            front_ = 0;
        }
        taken.reserve(batches_.size());
        std::move(batches_.begin(), batches_.end(), std::back_inserter(taken));
        batches_.clear();
        size_ = 0;
        return taken;
    }

    /// Takes back batches from take_all(), emptied, so that their storage
    /// serves the batches appended next.
    void recycle(Batches&& used) {
        for (std::vector<T>& batch : used) give_spare(std::move(batch));
    }

private:
    // Enough for the event loop's batch and a caller's; each at most about
    // 20 MiB of results, a larger one is given back to the allocator.
    static constexpr std::size_t max_spares = 4;
    static constexpr std::size_t max_spare_capacity = std::size_t{1} << 18;

    void give_spare(std::vector<T>&& batch) {
        batch.clear();
        if (spares_.size() < max_spares && batch.capacity() <= max_spare_capacity) spares_.push_back(std::move(batch));
    }

    std::vector<T> take_spare() {
        if (spares_.empty()) return {};
        std::vector<T> spare = std::move(spares_.back());
        spares_.pop_back();
        return spare;
    }

    std::deque<std::vector<T>> batches_;  // each non-empty
    std::size_t front_ = 0;               // elements of batches_.front() already popped
    std::size_t size_ = 0;                // elements waiting in all
    Batches spares_;                      // empty, their storage kept for reuse
};

}  // namespace multiworker::detail
