#pragma once

// The framing of messages on a ring: a fixed 16-byte header, then `length`
// payload bytes. Task frames go parent -> worker, result and failure frames
// worker -> parent. Readers and writers are incremental so that one thread
// can serve many rings and frames of any size stream through a small ring.
// The header is small because a stream of tiny tasks is mostly headers: each
// cache line of a ring that passes between two cores costs both of them, and
// a line holds three small frames instead of two.
//
// Everything a parent reads was written by a process that may have crashed
// halfway or scribbled over its memory, so FrameReader validates every header
// and throws ProtocolError instead of trusting it.

#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/ring.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace multiworker::detail {

enum class FrameKind : std::uint16_t {
    task = 1,      // payload: encoded arguments
    result = 2,    // payload: encoded return value
    failure = 3,   // payload: encoded FailureReport
    shutdown = 4,  // no payload: finish and exit
    item = 5,      // payload: one encoded output of the running task (pipelines' Emit), before its result
    stop_run = 6,  // no payload: the running task asks to end the whole run (Emit::stop())
    closing = 7,   // like task, for the element's closing call (a sink's finish())
};

struct FrameHeader {
    static constexpr std::uint16_t expected_magic = 0x574d;  // "MW"

    std::uint16_t magic = expected_magic;
    FrameKind kind = FrameKind::task;
    // The low 32 bits of the task's per-worker number 1, 2, ... (see
    // worker_loop.hpp): both sides count every task frame, so these bits
    // only check that they agree. A result names its task this way.
    std::uint32_t sequence = 0;
    std::uint64_t length = 0;  // payload bytes
};
static_assert(sizeof(FrameHeader) == 16 && std::is_trivially_copyable_v<FrameHeader>);

/// What a header carries of a task's per-worker number.
constexpr std::uint32_t sequence_bits(std::uint64_t sequence) noexcept {
    return static_cast<std::uint32_t>(sequence);
}

/// Thrown when a peer sends bytes that cannot be a valid frame.
class ProtocolError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// The header's bytes, as they go on the wire.
inline std::span<const char> header_bytes(const FrameHeader& header) noexcept {
    return {reinterpret_cast<const char*>(&header), sizeof header};
}

/// Checks a header that a peer wrote; throws ProtocolError if it cannot be valid.
inline void validate_header(const FrameHeader& header, std::size_t max_length) {
    if (header.magic != FrameHeader::expected_magic) {
        throw ProtocolError{"bad frame magic " + std::to_string(header.magic)};
    }
    const auto kind = static_cast<std::uint32_t>(header.kind);
    if (kind < static_cast<std::uint32_t>(FrameKind::task) || kind > static_cast<std::uint32_t>(FrameKind::closing)) {
        throw ProtocolError{"bad frame kind " + std::to_string(kind)};
    }
    if (header.length > max_length) {
        throw ProtocolError{"frame of " + std::to_string(header.length) + " bytes exceeds max_message_bytes (" +
                            std::to_string(max_length) + ")"};
    }
}

/// What a worker reports when a task fails inside it.
struct FailureReport {
    std::uint32_t kind = 0;  // an ErrorKind
    std::string type_name;
    std::string message;
    std::string trace{};  // an exception's raw frames, one "[0x...]" line each (throw_trace.hpp); may be empty
};

inline Bytes encode_failure(const FailureReport& report) {
    Bytes out;
    encode_values(out, report.kind, report.type_name, report.message, report.trace);
    return out;
}

inline FailureReport decode_failure(std::span<const char> payload) {
    auto [kind, type_name, message, trace] =
        decode_values<std::uint32_t, std::string, std::string, std::string>(payload);
    return FailureReport{kind, std::move(type_name), std::move(message), std::move(trace)};
}

/// A payload in two pieces, back to back: the rest of the piece that the
/// byte at `offset` belongs to (the reader's and the writer's next step).
template <class Char>
std::span<Char> rest_of_piece(const std::array<std::span<Char>, 2>& pieces, std::size_t offset) noexcept {
    if (offset < pieces[0].size()) return pieces[0].subspan(offset);
    return pieces[1].subspan(offset - pieces[0].size());
}

/// A large result frame's payload read straight into the value it encodes,
/// instead of into a buffer that a decoder then copies from. Made, for a
/// payload of a given size, by whoever knows the result type (the Processor);
/// it holds the value being built.
class LargePayload {
public:
    virtual ~LargePayload() = default;
    /// Where the payload's bytes go: these first, then body().
    virtual std::span<char> head() noexcept = 0;
    virtual std::span<char> body() noexcept = 0;
};

/// Makes the LargePayload for a result payload of this many bytes, or null
/// when that payload is not one value it can read into.
using LargePayloadMaker = std::function<std::unique_ptr<LargePayload>(std::size_t payload_bytes)>;

/// The LargePayload of a string or vector of bitwise values in the plain
/// encoding (an 8-byte element count, then the elements' bytes): the
/// elements are read straight into the final value.
template <class T>
requires is_plain_buffer<T>
class PlainValuePayload final : public LargePayload {
    using Element = typename T::value_type;

public:
    /// The payload for `payload_bytes`, or null if no value encodes to that size.
    static std::unique_ptr<PlainValuePayload> make(std::size_t payload_bytes) {
        if (payload_bytes < sizeof(std::uint64_t) || (payload_bytes - sizeof(std::uint64_t)) % sizeof(Element) != 0) {
            return nullptr;
        }
        return std::unique_ptr<PlainValuePayload>{
            new PlainValuePayload{(payload_bytes - sizeof(std::uint64_t)) / sizeof(Element)}};
    }

    std::span<char> head() noexcept override { return {reinterpret_cast<char*>(&count_), sizeof count_}; }
    std::span<char> body() noexcept override {
        return {reinterpret_cast<char*>(value_.data()), value_.size() * sizeof(Element)};
    }

    /// The value, once every byte arrived; DecodeError if the count it
    /// carried does not match its size.
    T take() {
        if (count_ != value_.size()) {
            throw DecodeError{"malformed message: " + std::to_string(count_) + " elements claimed in " +
                              std::to_string(value_.size() * sizeof(Element)) + " bytes"};
        }
        return std::move(value_);
    }

private:
    explicit PlainValuePayload(std::size_t elements) {
        value_.reserve(elements);
        advise_huge_pages(value_.data(), elements * sizeof(Element));
        value_.resize(elements);
    }

    std::uint64_t count_ = 0;
    T value_;
};

/// A frame read where it lies in a ring, its payload not copied out.
struct FrameInPlace {
    FrameHeader header;
    std::span<const char> payload;  // in the ring: valid until the ring's release()

    /// Bytes the frame takes in the ring.
    [[nodiscard]] std::size_t size() const noexcept { return sizeof(FrameHeader) + payload.size(); }
};

/// The next frame in `ring`, if it is whole, in one piece and its payload
/// no larger than `max_in_place`; the caller moves past it with
/// ring.skip(frame.size()). Otherwise empty, and nothing taken (see
/// FrameReader::poll_ring()). Throws ProtocolError on an invalid header.
inline std::optional<FrameInPlace> peek_whole_frame(ByteRing& ring, std::size_t max_length, std::size_t max_in_place) {
    const std::span<const char> raw_header = ring.peek(sizeof(FrameHeader));
    if (raw_header.empty()) return std::nullopt;
    FrameInPlace frame{};
    std::memcpy(&frame.header, raw_header.data(), sizeof frame.header);
    validate_header(frame.header, max_length);
    if (frame.header.length > max_in_place) return std::nullopt;
    const std::span<const char> whole = ring.peek(sizeof(FrameHeader) + frame.header.length);
    if (whole.empty()) return std::nullopt;
    frame.payload = whole.subspan(sizeof(FrameHeader));
    return frame;
}

/// Adapts a ring's consumer side to FrameReader: takes bytes without freeing
/// their space; the owner releases them in one store when it is ready.
struct TakingSource {
    ByteRing& ring;
    std::size_t read_some(std::span<char> out) { return ring.take(out); }
};

/// Reassembles frames from a byte source with `std::size_t read_some(std::span<char>)`.
class FrameReader {
public:
    /// With `make_large`, result frames of large_buffer_bytes or more are
    /// read into what it makes (see take_large()).
    explicit FrameReader(std::size_t max_length, LargePayloadMaker make_large = {}) noexcept
        : max_length_{max_length}, make_large_{std::move(make_large)} {}

    /// Pulls what is available; true once a whole frame is held (see header()
    /// and take_payload()). Throws ProtocolError on an invalid header.
    template <class Source>
    bool poll(Source& source) {
        if (complete_) return true;
        if (header_filled_ < header_bytes_.size()) {
            header_filled_ += source.read_some(std::span{header_bytes_}.subspan(header_filled_));
            if (header_filled_ < header_bytes_.size()) return false;
            std::memcpy(&header_, header_bytes_.data(), sizeof header_);
            validate_header(header_, max_length_);
            prepare_targets(static_cast<std::size_t>(header_.length));
        }
        while (payload_filled_ < targets_[0].size() + targets_[1].size()) {
            const std::size_t count = source.read_some(rest_of_piece(targets_, payload_filled_));
            if (count == 0) return false;
            payload_filled_ += count;
        }
        complete_ = true;
        return true;
    }

    /// poll() on a ring's consumer side, taking bytes without releasing their
    /// space (the owner releases them in one store when it is ready). A whole
    /// frame of up to `max_in_place` payload bytes that lies in the ring in
    /// one piece is held where it lies: payload() then views the ring, valid
    /// until the ring's release(). A stream of small frames is thus read
    /// without a copy into the reader's buffer, which is most of the cost of
    /// tiny tasks.
    bool poll_ring(ByteRing& ring, std::size_t max_in_place) {
        if (between_frames()) {
            if (auto frame = peek_whole_frame(ring, max_length_, max_in_place)) {
                ring.skip(frame->size());
                header_ = frame->header;
                in_place_ = frame->payload;
                held_in_place_ = true;
                complete_ = true;
                return true;
            }
        }
        TakingSource source{ring};
        return poll(source);
    }

    [[nodiscard]] const FrameHeader& header() const noexcept { return header_; }

    /// Part of a frame is read and the rest is still to come.
    [[nodiscard]] bool mid_frame() const noexcept { return header_filled_ != 0 && !complete_; }

    /// The complete frame's payload when it was read into a LargePayload
    /// (take_payload() is then empty); null otherwise. Call before take_payload().
    std::unique_ptr<LargePayload> take_large() noexcept { return std::move(large_); }

    /// Hands over the payload of the complete frame and readies for the next.
    Bytes take_payload() {
        Bytes payload;
        take_payload_into(payload);
        next();
        return payload;
    }

    /// Moves or copies the payload of the complete frame into `out`, which
    /// is replaced; next() readies for the next frame.
    void take_payload_into(Bytes& out) {
        if (held_in_place_) {
            // Raw pointers, not span iterators: the range is copied with memcpy, not byte by byte.
            out.assign(in_place_.data(), in_place_.data() + in_place_.size());
        } else {
            out = std::move(payload_);
            payload_ = Bytes{};
        }
    }

    /// The payload of the complete frame, valid until next().
    [[nodiscard]] std::span<const char> payload() const noexcept {
        return held_in_place_ ? in_place_ : std::span<const char>{payload_};
    }

    /// Readies for the next frame, keeping a small buffer for reuse (no
    /// allocation per frame) but not a large one (a worker's memory stays small).
    void next() noexcept {
        if (payload_.capacity() > retained_buffer_capacity) Bytes{}.swap(payload_);
        large_.reset();
        header_filled_ = 0;
        held_in_place_ = false;
        complete_ = false;
    }

private:
    [[nodiscard]] bool between_frames() const noexcept { return header_filled_ == 0 && !complete_; }

    // Where a payload of `length` bytes goes: a LargePayload if one is made
    // for it, or else payload_ (sized without zero-fill: every byte is read into).
    void prepare_targets(std::size_t length) {
        payload_filled_ = 0;
        if (make_large_ && header_.kind == FrameKind::result && length >= large_buffer_bytes) {
            large_ = make_large_(length);
            if (large_) {
                payload_.clear();
                targets_ = {large_->head(), large_->body()};
                if (targets_[0].size() + targets_[1].size() != length) {
                    throw std::logic_error{"multiworker: a large payload of the wrong size was made"};
                }
                return;
            }
        }
        if (length > payload_.capacity()) {
            payload_.clear();
            payload_.reserve(length);
            advise_huge_pages(payload_.data(), length);
        }
        payload_.resize(length, boost::container::default_init);
        targets_ = {std::span<char>{payload_}, std::span<char>{}};
    }

    std::size_t max_length_;
    LargePayloadMaker make_large_;
    std::array<char, sizeof(FrameHeader)> header_bytes_{};
    std::size_t header_filled_ = 0;
    FrameHeader header_{};
    Bytes payload_;
    std::unique_ptr<LargePayload> large_;
    std::array<std::span<char>, 2> targets_;  // payload_, or large_'s head and body
    std::size_t payload_filled_ = 0;
    std::span<const char> in_place_;  // the payload in the ring, if held_in_place_
    bool held_in_place_ = false;
    bool complete_ = false;
};

/// Streams one frame into a sink with `std::size_t write_some(std::span<const char>)`.
/// The payload, given as up to two pieces sent back to back, is borrowed: the
/// caller keeps it alive until the frame is written, or calls keep_payload()
/// before it lets its own copy go.
class FrameWriter {
public:
    FrameWriter(FrameHeader header, std::span<const char> payload, std::span<const char> more = {}) noexcept
        : pieces_{payload, more} {
        header.length = payload.size() + more.size();
        std::memcpy(header_bytes_.data(), &header, sizeof header);
    }

    /// Writes what fits; true once the whole frame is out.
    template <class Sink>
    bool poll(Sink& sink) {
        if (written_ < header_bytes_.size()) {
            written_ += sink.write_some(std::span<const char>{header_bytes_}.subspan(written_));
            if (written_ < header_bytes_.size()) return false;
        }
        while (!done()) {
            const std::size_t count = sink.write_some(rest_of_piece(pieces_, written_ - header_bytes_.size()));
            if (count == 0) return false;
            written_ += count;
        }
        return true;
    }

    /// Copies the payload into the writer, so that the caller may drop its own.
    void keep_payload() {
        kept_.assign(pieces_[0].begin(), pieces_[0].end());
        kept_.insert(kept_.end(), pieces_[1].begin(), pieces_[1].end());
        pieces_ = {std::span<const char>{kept_}, std::span<const char>{}};
    }

    /// Bytes of the frame written so far.
    [[nodiscard]] std::size_t written() const noexcept { return written_; }

    [[nodiscard]] bool done() const noexcept {
        return written_ == header_bytes_.size() + pieces_[0].size() + pieces_[1].size();
    }

private:
    std::array<char, sizeof(FrameHeader)> header_bytes_{};
    std::vector<char> kept_;  // a heap buffer: the writer may move, the spans stay valid
    std::array<std::span<const char>, 2> pieces_;
    std::size_t written_ = 0;
};

}  // namespace multiworker::detail
