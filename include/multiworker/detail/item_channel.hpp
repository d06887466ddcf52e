#pragma once

// Where a pipeline's Emit sends what user code emits: in a worker, item
// frames into its result ring (WorkerLoop); in-process, straight into the
// next element. The channel of the running task is found through
// current_item_channel(), set around each task by whoever runs it: an
// element's method signature has no room for it.

#include <span>

namespace multiworker::detail {

class ItemChannel {
public:
    /// Sends one encoded item; may wait while the receiver has no room.
    virtual void send_item(std::span<const char> encoded) = 0;
    /// Asks to end the whole run (Emit::stop()).
    virtual void request_stop() = 0;

protected:
    ~ItemChannel() = default;
};

/// The channel of the task running in this thread; null outside a task.
inline ItemChannel*& current_item_channel() noexcept {
    thread_local ItemChannel* channel = nullptr;
    return channel;
}

/// Sets current_item_channel() for a scope.
class ItemChannelScope {
public:
    explicit ItemChannelScope(ItemChannel* channel) noexcept : previous_{current_item_channel()} {
        current_item_channel() = channel;
    }
    ~ItemChannelScope() { current_item_channel() = previous_; }
    ItemChannelScope(const ItemChannelScope&) = delete;
    ItemChannelScope& operator=(const ItemChannelScope&) = delete;

private:
    ItemChannel* previous_;
};

}  // namespace multiworker::detail
