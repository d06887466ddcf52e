#pragma once

// VectorFifo: a first-in first-out queue kept in one vector, for decoded
// results that are mostly taken all at once.
//
// Why not std::deque: take_all() hands the queue's vector over whole (a swap,
// no element moved); elements are taken from the front by index, and the
// storage is reused once the queue empties.

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

    /// Room for `count` more elements, prefaulted when that pays (see
    /// reserve_prefaulted()); when it grows, room for `likely_after` more after them.
    void reserve_more(std::size_t count, std::size_t likely_after = 0) {
        reserve_prefaulted(items_, items_.size() + count, items_.size() + count + likely_after);
    }

    void push_back(T value) { items_.push_back(std::move(value)); }

    /// Takes the oldest element; the queue must not be empty.
    T pop_front() {
        T value = std::move(items_[front_++]);
        if (empty()) clear();
        return value;
    }

    /// Takes every element, oldest first; when nothing was taken from the
    /// front, the queue's vector itself.
    std::vector<T> take_all() {
        std::vector<T> taken;
        if (front_ == 0) {
            taken.swap(items_);
        } else {
            taken.assign(std::make_move_iterator(items_.begin() + static_cast<std::ptrdiff_t>(front_)),
                         std::make_move_iterator(items_.end()));
        }
        clear();
        return taken;
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
