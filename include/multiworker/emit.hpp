#pragma once

/// @file
/// Emit: how a pipeline source or stage hands on its items.

#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/item_channel.hpp>

#include <stdexcept>

namespace multiworker {

/// The output of a pipeline source (`void read(Emit<U>&)`) or emitting stage
/// (`void m(const In&, Emit<U>&)`): each emit() hands one item to the next
/// stage. emit() may wait while the next stage has `capacity` items queued:
/// a source that outruns its stages waits here instead of growing memory.
template <class T>
class Emit {
public:
    /// Made by the library around each call of the element's method.
    explicit Emit(detail::ItemChannel& channel) noexcept : channel_{channel} {}

    Emit(const Emit&) = delete;
    Emit& operator=(const Emit&) = delete;

    /// Hands `value` on. After stop(), does nothing.
    void emit(const T& value) {
        if (stopped_) return;
        encoded_.clear();
        detail::encode_values(encoded_, value);
        channel_.send_item(encoded_);
    }

    /// Ends the whole run early: the upstream elements stop, items not yet
    /// processed are counted as unprocessed, and the sink's finish() runs on
    /// what it received. Items emitted after this call are ignored.
    void stop() {
        if (stopped_) return;
        stopped_ = true;
        channel_.request_stop();
    }

    /// stop() was called: a long loop of emits may end.
    [[nodiscard]] bool stopped() const noexcept { return stopped_; }

private:
    detail::ItemChannel& channel_;
    detail::Bytes encoded_;
    bool stopped_ = false;
};

}  // namespace multiworker
