#pragma once

// VectorFifo: a first-in first-out queue kept in one vector, for results that
// arrive in batches and are mostly taken all at once.
//
// Why not std::deque: a batch moves in and out whole. Appended to an empty
// queue, a batch's vector becomes the queue (a swap, no element moved), and
// take_all() hands the queue's vector over the same way; elements are taken
// from the front by index, and the storage is reused once the queue empties.

#include <multiworker/detail/system.hpp>

#include <cstddef>
#include <iterator>
#include <utility>
#include <vector>

namespace multiworker::detail {

template <class T>
class VectorFifo {
public:
    [[nodiscard]] bool empty() const noexcept { return front_ == items_.size(); }
    [[nodiscard]] std::size_t size() const noexcept { return items_.size() - front_; }

    /// Appends every element of `batch` and leaves it empty; it may get this
    /// queue's old storage in exchange for its own.
    void append(std::vector<T>& batch) {
        if (empty() && batch.capacity() >= items_.capacity()) {
            items_.clear();
            front_ = 0;
            items_.swap(batch);
        } else {
            reserve_more(batch.size());
            items_.insert(items_.end(), std::make_move_iterator(batch.begin()), std::make_move_iterator(batch.end()));
        }
        batch.clear();
    }

    /// Room for `count` more elements, prefaulted when that pays (see reserve_prefaulted()).
    void reserve_more(std::size_t count) { reserve_prefaulted(items_, items_.size() + count); }

    void push_back(T value) { items_.push_back(std::move(value)); }

    /// Takes the oldest element; the queue must not be empty.
    T pop_front() {
        T value = std::move(items_[front_++]);
        if (empty()) clear();
        return value;
    }

    /// Takes every element, oldest first, into `storage` (emptied first, its
    /// capacity reused); when nothing was taken from the front, the vectors
    /// are swapped instead.
    std::vector<T> take_all(std::vector<T> storage = {}) {
        storage.clear();
        if (front_ == 0) {
            storage.swap(items_);
        } else {
            storage.assign(std::make_move_iterator(items_.begin() + static_cast<std::ptrdiff_t>(front_)),
                           std::make_move_iterator(items_.end()));
        }
        clear();
        return storage;
    }

private:
    void clear() noexcept {
        items_.clear();
        front_ = 0;
    }

    std::vector<T> items_;  // waiting from index front_ on
    std::size_t front_ = 0;
};

}  // namespace multiworker::detail
