#pragma once

// What rank 0 and the agent ranks of Backend::mpi say to each other. Every
// message is one MPI_BYTE buffer; its tag says what it is. Numbers are in
// the machine's own byte order: the ranks of one job run the same binary
// (Open MPI's heterogeneous mode is not supported).

#include <multiworker/detail/codec.hpp>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace multiworker::detail::mpi_wire {

/// Message kinds, as MPI tags.
enum Tag : int {
    hello = 1,      // agent -> 0: host name, worker count, worker pids (once, at start)
    tasks = 2,      // 0 -> agent: tasks, each [id][length][arguments]
    results = 3,    // agent -> 0: outcomes, each [id][worker][pid][ok: value | error]
    heartbeat = 4,  // both ways, empty: "still here"
    stop = 5,       // 0 -> agent: [grace ms][grace_end]: stop the workers, send what is left
    stopped = 6,    // agent -> 0, empty: its last results are sent
    bye = 7,        // 0 -> agent: [clean]: finalize MPI (clean) or just exit, then exit
    // The link's own (mpi_link.hpp): a message larger than one piece crosses
    // as a `large` header, [tag][size], then its bytes in `piece`s, in order.
    large = 8,
    piece = 9,
    give_back = 10,   // 0 -> agent, empty: send back the tasks no worker has started
    given_back = 11,  // agent -> 0: those tasks, each [id][length][arguments] (maybe none)
};

/// Appends fields to a message.
class Writer {
public:
    template <class N>
    requires std::is_arithmetic_v<N>
    void number(N value) {
        const auto* bytes = reinterpret_cast<const char*>(&value);
        buffer_.insert(buffer_.end(), bytes, bytes + sizeof value);
    }

    void bytes(std::span<const char> value) {
        number(static_cast<std::uint64_t>(value.size()));
        buffer_.insert(buffer_.end(), value.begin(), value.end());
    }

    void text(const std::string& value) { bytes(std::span<const char>{value.data(), value.size()}); }

    [[nodiscard]] std::size_t size() const noexcept { return buffer_.size(); }
    [[nodiscard]] bool empty() const noexcept { return buffer_.empty(); }
    /// The message so far; the writer is left empty.
    std::vector<char> take() { return std::exchange(buffer_, {}); }

private:
    std::vector<char> buffer_;
};

/// Reads the fields of a message back; throws DecodeError past its end.
class Reader {
public:
    explicit Reader(std::span<const char> message) : rest_{message} {}

    template <class N>
    requires std::is_arithmetic_v<N> N number() {
        N value;
        std::memcpy(&value, take(sizeof value).data(), sizeof value);
        return value;
    }

    std::span<const char> bytes() { return take(number<std::uint64_t>()); }

    std::string text() {
        const std::span<const char> value = bytes();
        return std::string{value.begin(), value.end()};
    }

    [[nodiscard]] bool at_end() const noexcept { return rest_.empty(); }

private:
    std::span<const char> take(std::uint64_t count) {
        if (count > rest_.size()) throw DecodeError{"an MPI message ended in the middle of a field"};
        const std::span<const char> field = rest_.first(static_cast<std::size_t>(count));
        rest_ = rest_.subspan(static_cast<std::size_t>(count));
        return field;
    }

    std::span<const char> rest_;
};

}  // namespace multiworker::detail::mpi_wire
