#pragma once

// TaskQueue: the tasks that wait for a worker, packed back to back in chunks
// of mapped memory: each one's id, the length of its arguments, and the
// argument bytes (13 bytes for a task of one int; arguments of more than 32
// bytes, which Bytes holds on the heap anyway, are held by pointer).
//
// Why not a deque of {id, Bytes}: that is about 70 bytes a task, and on a
// first run every one of its pages is fresh; on this library's virtual
// machines a page fault costs about 11 us, so a million queued tasks cost a
// fifth of a second in faults alone. Worse, pages written before start()
// are shared copy-on-write with the fork server forked there, so the loop's
// first write to each copies it. Here, a chunk is
// - mapped with MAP_POPULATE: one system call fills its pages, no fault each;
// - marked MADV_DONTFORK: no process forked later shares it, so writing it
//   never copies a page (and a fork copies no page table for it);
// - unmapped once its tasks are taken: the memory goes back to the system,
//   not to an allocator that keeps it.
// One spare chunk is kept, so that a queue that fills and empties over and
// over maps nothing.

#include <multiworker/detail/codec.hpp>
#include <multiworker/task_id.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <utility>

namespace multiworker::detail {

class TaskQueue {
public:
    /// A queued task. `arguments` views the queue: valid until pop_front().
    struct Task {
        TaskId id;
        std::span<const char> arguments;
        bool closing = false;  // the element's closing call (a sink's finish()), not a task
    };

    TaskQueue() noexcept = default;
    TaskQueue(TaskQueue&& other) noexcept { swap(other); }
    TaskQueue& operator=(TaskQueue&& other) noexcept {
        TaskQueue{std::move(other)}.swap(*this);
        return *this;
    }
    TaskQueue(const TaskQueue&) = delete;
    TaskQueue& operator=(const TaskQueue&) = delete;
    ~TaskQueue() {
        clear();
        unmap(spare_);
    }

    void swap(TaskQueue& other) noexcept {
        std::swap(head_, other.head_);
        std::swap(tail_, other.tail_);
        std::swap(spare_, other.spare_);
        std::swap(size_, other.size_);
    }

    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

    /// Queues a task behind the others: small arguments copied in, large
    /// ones (which a copy would cost more than a move) kept where they are.
    /// Throws std::bad_alloc when no memory can be mapped.
    void push_back(TaskId id, Bytes&& arguments, bool closing = false) {
        if (arguments.size() <= copied_bytes) {
            push_record(id, {arguments.data(), arguments.size()}, closing ? closing_flag : 0);
            return;
        }
        auto held = std::make_unique<Bytes>(std::move(arguments));
        Bytes* raw = held.get();
        push_record(id, {reinterpret_cast<const char*>(&raw), sizeof raw}, held_flag | (closing ? closing_flag : 0));
        held.release();  // the record owns it now
    }

    /// Queues a copy of `arguments` behind the others.
    void push_back(TaskId id, std::span<const char> arguments, bool closing = false) {
        if (arguments.size() <= copied_bytes) {
            push_record(id, arguments, closing ? closing_flag : 0);
        } else {
            push_back(id, copy_bytes(arguments), closing);
        }
    }

    /// The oldest task; the queue must not be empty.
    [[nodiscard]] Task front() const noexcept { return read(head_->data() + head_->begin).task; }

    /// The oldest task's id (cheaper than front()); the queue must not be empty.
    [[nodiscard]] TaskId front_id() const noexcept {
        std::uint64_t raw_id = 0;
        std::memcpy(&raw_id, head_->data() + head_->begin, sizeof raw_id);
        return TaskId{raw_id};
    }

    /// Drops the oldest task; the queue must not be empty.
    void pop_front() noexcept {
        const Record record = read(head_->data() + head_->begin);
        release(record);
        advance(record);
    }

    /// The oldest task, taken out: its arguments moved out of the queue when
    /// it held them, copied otherwise. The queue must not be empty.
    struct Taken {
        TaskId id;
        Bytes arguments;
        bool closing = false;
    };
    [[nodiscard]] Taken take_front() {
        Taken taken;
        taken.closing = take_front_into(taken.id, taken.arguments);
        return taken;
    }

    /// take_front() into the caller's `id` and `arguments`, which are
    /// replaced; returns whether it is a closing call. The dispatcher takes
    /// tasks straight into their place among those in flight this way:
    /// moving a small Bytes is a copy, and a few of those per task cost as
    /// much as the rest of handing it out.
    bool take_front_into(TaskId& id, Bytes& arguments) {
        const Record record = read(head_->data() + head_->begin);
        if (record.held != nullptr) {
            arguments = std::move(*record.held);
            release(record);
        } else {
            assign_bytes(arguments, record.task.arguments);
        }
        id = record.task.id;
        const bool closing = record.task.closing;
        advance(record);
        return closing;
    }

    /// Calls `visit(const Task&)` on every task, oldest first.
    template <class Visit>
    void for_each(Visit&& visit) const {
        for (const Chunk* chunk = head_; chunk != nullptr; chunk = chunk->next) {
            const char* at = chunk->data() + chunk->begin;
            for (std::size_t i = 0; i < chunk->count; ++i) {
                const Record record = read(at);
                visit(record.task);
                at += record.size;
            }
        }
    }

    /// Drops every task.
    void clear() noexcept {
        for (Chunk* chunk = head_; chunk != nullptr; chunk = chunk->next) {
            const char* at = chunk->data() + chunk->begin;
            for (std::size_t i = 0; i < chunk->count; ++i) {
                const Record record = read(at);
                release(record);
                at += record.size;
            }
            chunk->count = 0;
        }
        while (head_ != nullptr) drop_head();
        size_ = 0;
    }

    /// Moves every task of `other` behind this queue's, oldest first, leaving
    /// `other` empty. Its full chunks change hands; the records of its last
    /// chunk are copied, so that `other` keeps that chunk for its next tasks
    /// (a queue that takes a few tasks at a time from another maps nothing).
    void append(TaskQueue& other) {
        if (other.empty()) return;
        while (other.head_ != other.tail_) {
            Chunk* chunk = std::exchange(other.head_, other.head_->next);
            chunk->next = nullptr;
            size_ += chunk->count;
            other.size_ -= chunk->count;
            link(chunk);
        }
        Chunk& last = *other.tail_;
        const std::size_t bytes = last.end - last.begin;
        Chunk& into = room_for(bytes);
        std::memcpy(into.data() + into.end, last.data() + last.begin, bytes);  // records own what they held: moved
        into.end += bytes;
        into.count += last.count;
        size_ += last.count;
        other.size_ = 0;
        last.begin = last.end = last.count = 0;
    }

private:
    // Mapped whole; a larger record gets a chunk of its own size.
    static constexpr std::size_t chunk_bytes = std::size_t{128} << 10;
    // Arguments up to this size are copied into the queue; larger ones, which
    // Bytes keeps on the heap anyway, are held by pointer (no copy in or out).
    static constexpr std::size_t copied_bytes = Bytes::static_capacity;
    // The low bits of a record's length field.
    static constexpr std::uint64_t closing_flag = 1;
    static constexpr std::uint64_t held_flag = 2;  // the record holds a Bytes* (owned), not the bytes
    static constexpr unsigned flag_bits = 2;

    struct Chunk {
        Chunk* next = nullptr;
        std::size_t capacity = 0;  // bytes of records after this header
        std::size_t begin = 0;     // the oldest record not yet taken
        std::size_t end = 0;       // where the next record goes
        std::size_t count = 0;     // records between begin and end

        [[nodiscard]] char* data() noexcept { return reinterpret_cast<char*>(this + 1); }
        [[nodiscard]] const char* data() const noexcept { return reinterpret_cast<const char*>(this + 1); }
    };

    // A record: the id (8 bytes), a varint of (payload length << 2 | flags), the payload.
    struct Record {
        Task task;
        // Owned by the record, when it holds its arguments by pointer. Not a
        // pointer to const: take_front_into() moves the arguments out (from
        // a const Bytes, std::move would copy them).
        Bytes* held = nullptr;
        std::size_t size = 0;  // bytes of the whole record
    };

    static std::size_t varint_size(std::uint64_t value) noexcept {
        std::size_t bytes = 1;
        while (value >= 0x80) {
            value >>= 7;
            ++bytes;
        }
        return bytes;
    }

    void push_record(TaskId id, std::span<const char> payload, std::uint64_t flags) {
        const std::uint64_t length_and_flags = (std::uint64_t{payload.size()} << flag_bits) | flags;
        const std::size_t size = sizeof(std::uint64_t) + varint_size(length_and_flags) + payload.size();
        Chunk& chunk = room_for(size);
        char* out = chunk.data() + chunk.end;
        const std::uint64_t raw_id = id.value();
        std::memcpy(out, &raw_id, sizeof raw_id);
        out += sizeof raw_id;
        for (std::uint64_t value = length_and_flags;; value >>= 7) {
            *out++ = static_cast<char>(value < 0x80 ? value : (value & 0x7f) | 0x80);
            if (value < 0x80) break;
        }
        if (!payload.empty()) std::memcpy(out, payload.data(), payload.size());
        chunk.end += size;
        ++chunk.count;
        ++size_;
    }

    static Record read(const char* at) noexcept {
        std::uint64_t raw_id = 0;
        std::memcpy(&raw_id, at, sizeof raw_id);
        const char* in = at + sizeof raw_id;
        std::uint64_t length_and_flags = 0;
        for (unsigned shift = 0;; shift += 7) {
            const auto byte = static_cast<unsigned char>(*in++);
            length_and_flags |= std::uint64_t{byte & 0x7fU} << shift;
            if (byte < 0x80) break;
        }
        const auto length = static_cast<std::size_t>(length_and_flags >> flag_bits);
        Record record{Task{TaskId{raw_id}, {in, length}, (length_and_flags & closing_flag) != 0}, nullptr,
                      static_cast<std::size_t>(in - at) + length};
        if ((length_and_flags & held_flag) != 0) {
            std::memcpy(&record.held, in, sizeof record.held);
            record.task.arguments = {record.held->data(), record.held->size()};
        }
        return record;
    }

    static void release(const Record& record) noexcept { delete record.held; }

    // Moves past the oldest record, `record`.
    void advance(const Record& record) noexcept {
        head_->begin += record.size;
        --head_->count;
        --size_;
        if (head_->count != 0) return;
        if (head_ == tail_) {
            head_->begin = head_->end = 0;  // empty: the chunk stays, for the next tasks
        } else {
            drop_head();
        }
    }

    Chunk& room_for(std::size_t bytes) {
        if (tail_ != nullptr && tail_->capacity - tail_->end >= bytes) return *tail_;
        Chunk* chunk = nullptr;
        if (spare_ != nullptr && spare_->capacity >= bytes) {
            chunk = std::exchange(spare_, nullptr);
        } else {
            chunk = map(std::max(chunk_bytes, sizeof(Chunk) + bytes));
        }
        link(chunk);
        return *chunk;
    }

    void link(Chunk* chunk) noexcept {
        if (tail_ != nullptr && tail_->count == 0) drop_head();  // the lone chunk of an empty queue
        if (tail_ == nullptr) {
            head_ = chunk;
        } else {
            tail_->next = chunk;
        }
        tail_ = chunk;
    }

    // Takes the head chunk, whose records are all taken, off the queue; it
    // becomes the spare, or is unmapped.
    void drop_head() noexcept {
        Chunk* chunk = std::exchange(head_, head_->next);
        if (head_ == nullptr) tail_ = nullptr;
        if (spare_ == nullptr && chunk->capacity + sizeof(Chunk) == chunk_bytes) {
            *chunk = Chunk{nullptr, chunk->capacity};
            spare_ = chunk;
        } else {
            unmap(chunk);
        }
    }

    static Chunk* map(std::size_t bytes) {
        constexpr std::size_t page = 4096;
        bytes = (bytes + page - 1) & ~(page - 1);
        void* memory =
            ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (memory == MAP_FAILED) throw std::bad_alloc{};
        ::madvise(memory, bytes, MADV_DONTFORK);  // only a hint: without it, forks share the pages copy-on-write
        return new (memory) Chunk{nullptr, bytes - sizeof(Chunk)};
    }

    static void unmap(Chunk* chunk) noexcept {
        if (chunk != nullptr) ::munmap(chunk, chunk->capacity + sizeof(Chunk));
    }

    Chunk* head_ = nullptr;   // oldest; nullptr when the queue has no chunk
    Chunk* tail_ = nullptr;   // where tasks are added
    Chunk* spare_ = nullptr;  // an empty chunk kept for reuse, or nullptr
    std::size_t size_ = 0;
};

}  // namespace multiworker::detail
