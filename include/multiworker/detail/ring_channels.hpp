#pragma once

// The shared memory between the parent and its worker slots: per slot a task
// ring (parent -> worker), a result ring (worker -> parent), the claim counter
// and a doorbell; one doorbell for the parent. Mapped once, before the fork
// server is forked, so every worker inherits it; a slot's state is reset for
// each new process that takes the slot.

#include <multiworker/detail/doorbell.hpp>
#include <multiworker/detail/ring.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/detail/worker_loop.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <new>
#include <vector>

namespace multiworker::detail {

class RingChannels {
public:
    RingChannels() = default;

    /// Maps `slots` channels of two rings of at least `ring_bytes` each.
    RingChannels(std::size_t slots, std::size_t ring_bytes, std::size_t max_message_bytes)
        : ring_capacity_{std::bit_ceil(std::max<std::size_t>(ring_bytes, 4096))} {
        const std::size_t slots_bytes = sizeof(DoorbellFlag) + slots * sizeof(WorkerSlotState);
        const std::size_t header_bytes = (slots_bytes + 4095) / 4096 * 4096;
        shared_ = SharedMapping{header_bytes + 2 * slots * ring_capacity_};
        prefault(shared_.data(), shared_.size());
        auto* parent_flag = new (shared_.data()) DoorbellFlag{};
        parent_doorbell_fd_ = make_eventfd();
        parent_doorbell_ = Doorbell{parent_flag, parent_doorbell_fd_.get()};
        char* rings = reinterpret_cast<char*>(shared_.data()) + header_bytes;
        auto* states = reinterpret_cast<WorkerSlotState*>(shared_.data() + sizeof(DoorbellFlag));
        channels_.resize(slots);
        for (std::size_t i = 0; i < slots; ++i) {
            Channel& channel = channels_[i];
            channel.state = new (&states[i]) WorkerSlotState{};
            channel.doorbell_fd = make_eventfd();
            channel.endpoints = WorkerEndpoints{
                .index = static_cast<int>(i),
                .parent_pid = 0,  // set in the worker: its fork server's pid
                .tasks = ByteRing{&channel.state->tasks, rings + (2 * i) * ring_capacity_, ring_capacity_},
                .results = ByteRing{&channel.state->results, rings + (2 * i + 1) * ring_capacity_, ring_capacity_},
                .own = Doorbell{&channel.state->doorbell, channel.doorbell_fd.get()},
                .parent = parent_doorbell_,
                .claimed = &channel.state->claimed,
                .started_ns = &channel.state->started_ns,
                .max_message_bytes = max_message_bytes,
            };
        }
    }

    [[nodiscard]] std::size_t size() const noexcept { return channels_.size(); }

    /// The slot's rings and doorbells as the parent uses them; a worker
    /// forked for the slot starts from a copy.
    [[nodiscard]] WorkerEndpoints& endpoints(std::size_t slot) noexcept { return channels_[slot].endpoints; }
    [[nodiscard]] const WorkerEndpoints& endpoints(std::size_t slot) const noexcept {
        return channels_[slot].endpoints;
    }

    /// The number of the last task the slot's worker claimed (see worker_loop.hpp).
    [[nodiscard]] std::atomic<std::uint64_t>& claimed(std::size_t slot) noexcept {
        return channels_[slot].state->claimed;
    }

    /// When the slot's claimed task started, in steady-clock ticks (with track_start_times).
    [[nodiscard]] std::int64_t started_ns(std::size_t slot) const noexcept {
        return channels_[slot].state->started_ns.load(std::memory_order_relaxed);
    }

    /// Fresh shared state for a new process in the slot: empty rings, nothing claimed.
    void reset(std::size_t slot) noexcept {
        Channel& channel = channels_[slot];
        channel.state->claimed.store(0, std::memory_order_relaxed);
        channel.state->started_ns.store(0, std::memory_order_relaxed);
        channel.state->doorbell.sleeping.store(0, std::memory_order_relaxed);
        channel.endpoints.tasks.reset();
        channel.endpoints.results.reset();
    }

    /// Rung by workers when they publish results or free task space.
    [[nodiscard]] Doorbell& parent_doorbell() noexcept { return parent_doorbell_; }
    [[nodiscard]] const Doorbell& parent_doorbell() const noexcept { return parent_doorbell_; }

private:
    struct Channel {
        WorkerSlotState* state = nullptr;
        FileDescriptor doorbell_fd;
        WorkerEndpoints endpoints;
    };

    std::size_t ring_capacity_ = 0;
    SharedMapping shared_;
    FileDescriptor parent_doorbell_fd_;
    Doorbell parent_doorbell_;
    std::vector<Channel> channels_;
};

}  // namespace multiworker::detail
