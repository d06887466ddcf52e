#pragma once

// The outputs of an ordered stage, held until every earlier input has
// settled. An input settles with one output (a map stage), any number of
// them (an emitting stage; all arrive in one batch, when its result does), an
// error, or nothing at all (an emitting stage's input that emitted none, which
// the dispatcher notes as silent). Inputs are numbered from 1 in the order
// they were given to the stage.
//
// The stage is handed no input `capacity` or more beyond the oldest one not
// yet released, so the unsettled inputs always fit in a ring of `capacity`
// slots indexed by input number (grown on demand up to that, so that a large
// capacity costs memory only if used). Each slot keeps its vector's storage,
// so a stream in steady state allocates nothing here: a std::multimap keyed
// by input, tried first, cost 0.10 µs an item in bench_pipeline's
// source_process_ordered (0.394 against 0.290 unordered).

#include <multiworker/detail/backend.hpp>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace multiworker::detail {

class ReorderBuffer {
public:
    /// Room for the outputs of `capacity` inputs (0: an unordered stage's, never used).
    explicit ReorderBuffer(std::size_t capacity) : capacity_{capacity} {}

    /// Holds one output of input `result.id`; an input's outputs keep their order.
    void hold(RawResult&& result) {
        Slot& slot = slot_of(result.id);
        slot.outputs.push_back(std::move(result));
    }

    /// Input `id` settled with no output.
    void settle_silent(TaskId id) { slot_of(id); }

    /// Hands `release` every output whose input and all earlier ones have
    /// settled, in input order. Call after holding a whole batch of outcomes,
    /// so that an input's outputs are all held before the first one leaves.
    template <class Release>
    void release_ready(Release&& release) {
        while (settled_ != 0) {  // so slots_ is not empty
            Slot& slot = slots_[next_ % slots_.size()];
            if (slot.input != next_) return;
            for (RawResult& output : slot.outputs) release(std::move(output));
            slot.outputs.clear();
            slot.input = 0;
            --settled_;
            ++next_;
        }
    }

    /// The oldest input not yet released: a stage hands out none `capacity` or more beyond it.
    [[nodiscard]] std::uint64_t next_release() const noexcept { return next_; }
    [[nodiscard]] bool empty() const noexcept { return settled_ == 0; }

private:
    struct Slot {
        std::uint64_t input = 0;  // the settled input it holds; 0 if none
        std::vector<RawResult> outputs;
    };

    // The slot of input `id`, marked settled (an input's outputs arrive together).
    Slot& slot_of(TaskId id) {
        const std::uint64_t input = id.value();
        if (input < next_ || input - next_ >= capacity_) {
            throw std::logic_error{"multiworker: input " + std::to_string(input) +
                                   " of an ordered stage is outside its reorder window from " + std::to_string(next_)};
        }
        if (input - next_ >= slots_.size()) grow(input - next_ + 1);
        Slot& slot = slots_[input % slots_.size()];
        if (slot.input != input) {
            slot.input = input;
            ++settled_;
        }
        return slot;
    }

    // Room for at least `needed` inputs from next_ on: each settled slot moves to its new place.
    void grow(std::size_t needed) {
        const std::size_t size = std::min(capacity_, std::max({needed, 2 * slots_.size(), std::size_t{64}}));
        std::vector<Slot> grown(size);
        for (Slot& slot : slots_) {
            if (slot.input != 0) grown[slot.input % size] = std::move(slot);
        }
        slots_ = std::move(grown);
    }

    const std::size_t capacity_;
    std::vector<Slot> slots_;
    std::uint64_t next_ = 1;
    std::size_t settled_ = 0;  // slots holding a settled input
};

}  // namespace multiworker::detail
