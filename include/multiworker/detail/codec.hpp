#pragma once

// Encoding of argument tuples and results into bytes and back.
//
// A message of only plain values (numbers, strings, arrays, the standard
// containers of them, optionals, pairs and tuples: plain_encoding.hpp) is
// copied with no archive. Everything else goes through one Boost binary
// archive per message. Decoding treats its input as untrusted: any mismatch
// throws DecodeError, never reads out of bounds or allocates more than the
// message could hold (see plain_encoding.hpp and bounded_archive.hpp).

#include <multiworker/detail/bounded_archive.hpp>
#include <multiworker/detail/plain_encoding.hpp>
#include <multiworker/detail/system.hpp>
#include <multiworker/serialization.hpp>

#include <boost/archive/binary_oarchive.hpp>

// GCC 12 at -O2 and above reports -Wstringop-overread inside small_vector's
// move constructor wherever a Bytes is moved: it copies an inline buffer of
// size() bytes, at most the 32 the buffer holds, and GCC cannot see that
// bound through the inlining. A false positive (the copy runs only while the
// contents are inline, so size() <= 32); the warning is silenced for that
// header's code only, which the diagnostic is attributed to.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overread"
#endif
#include <boost/container/small_vector.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace multiworker::detail {

/// An encoded message. Most messages (numbers, a string of up to 24 characters)
/// fit in the inline buffer, so a task or result costs no heap allocation; larger ones
/// spill to the heap and then move without copying. Views as a span.
class Bytes : public boost::container::small_vector<char, 32> {
public:
    using small_vector::small_vector;
    operator std::span<const char>() const noexcept { return {data(), size()}; }
    operator std::span<char>() noexcept { return {data(), size()}; }
};

/// Makes `to` hold `head` then `body`, each copied with one memcpy: large
/// messages pass through here, and Bytes copies from a span's iterators
/// element by element (many times slower, under sanitizers above all).
inline void assign_bytes(Bytes& to, std::span<const char> head, std::span<const char> body = {}) {
    to.resize(head.size() + body.size(), boost::container::default_init);
    if (!head.empty()) std::memcpy(to.data(), head.data(), head.size());
    if (!body.empty()) std::memcpy(to.data() + head.size(), body.data(), body.size());
}

/// A copy of `bytes` (see assign_bytes()).
inline Bytes copy_bytes(std::span<const char> bytes) {
    Bytes copy;
    assign_bytes(copy, bytes);
    return copy;
}

/// Message buffers are kept for reuse up to this capacity (no allocation per
/// task), and given back to the allocator above it (a worker's memory stays small).
inline constexpr std::size_t retained_buffer_capacity = 64 * 1024;

/// A streambuf that appends everything written to a byte vector.
class BytesWriteBuffer final : public std::streambuf {
public:
    explicit BytesWriteBuffer(Bytes& out) : out_{out} {}

protected:
    std::streamsize xsputn(const char* data, std::streamsize count) override {
        out_.insert(out_.end(), data, data + count);
        return count;
    }
    int_type overflow(int_type ch) override {
        if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
        out_.push_back(traits_type::to_char_type(ch));
        return ch;
    }

private:
    Bytes& out_;
};

/// A read-only streambuf over a span; reading past its end fails instead of overrunning.
class SpanReadBuffer final : public std::streambuf {
public:
    explicit SpanReadBuffer(std::span<const char> in) {
        // std::streambuf wants non-const pointers but never writes through get-area pointers.
        char* begin = const_cast<char*>(in.data());
        setg(begin, begin, begin + in.size());
    }
    [[nodiscard]] std::size_t remaining() const noexcept { return static_cast<std::size_t>(egptr() - gptr()); }
};

inline constexpr unsigned archive_flags = boost::archive::no_header | boost::archive::no_codecvt;

/// Appends the encoding of `values` to `out`.
template <class... Ts>
void encode_values(Bytes& out, const Ts&... values) {
    if constexpr ((plain_codable<Ts> && ...)) {
        // Sized once, then filled by plain copies: a number is a copy of a
        // size known at compile time, not a call.
        const std::size_t start = out.size();
        const std::size_t size = (std::size_t{0} + ... + plain_size(values));
        if (out.capacity() - start < size) {
            out.reserve(start + size);  // one allocation, however large
            advise_huge_pages(out.data() + start, size);
        }
        out.resize(start + size, boost::container::default_init);
        char* cursor = out.data() + start;
        (put_plain(cursor, values), ...);
    } else {
        BytesWriteBuffer buffer{out};
        boost::archive::binary_oarchive archive{buffer, archive_flags};
        ((archive << values), ...);
    }
}

/// From this size on, a plain buffer travels without a buffer of the
/// library's in between: it is written into the ring from the value
/// (encode_borrowing()) and read out of it into the value (see LargePayload).
inline constexpr std::size_t large_buffer_bytes = 64 * 1024;

/// Encodes `value` as encode_values(out, value) does, except that the bytes of
/// a large string or vector of bitwise values are not copied into `out` but
/// returned as a view of `value`: the encoding is `out` followed by that view.
/// Sending a large result thus costs no copy before it reaches the ring.
template <class T>
std::span<const char> encode_borrowing(Bytes& out, const T& value) {
    if constexpr (is_plain_buffer<T>) {
        const std::size_t bytes = value.size() * sizeof(typename T::value_type);
        if (bytes >= large_buffer_bytes) {
            const std::uint64_t count = value.size();
            const char* raw_count = reinterpret_cast<const char*>(&count);
            out.insert(out.end(), raw_count, raw_count + sizeof count);
            return {reinterpret_cast<const char*>(value.data()), bytes};
        }
    }
    encode_values(out, value);
    return {};
}

/// Decodes exactly the bytes of `in` into a tuple of `Ts` (each default-constructible).
template <class... Ts>
std::tuple<Ts...> decode_values(std::span<const char> in) {
    std::tuple<Ts...> values;
    if constexpr ((plain_codable<Ts> && ...)) {
        PlainReader reader{in};
        std::apply([&reader](auto&... value) { (reader.read(value), ...); }, values);
        if (reader.remaining() != 0) {
            throw DecodeError{"malformed message: " + std::to_string(reader.remaining()) + " trailing bytes"};
        }
    } else {
        SpanReadBuffer buffer{in};
        try {
            BoundedBinaryIArchive archive{buffer, archive_flags};
            std::apply([&archive](auto&... value) { ((archive >> value), ...); }, values);
        } catch (const std::exception& e) {
            throw DecodeError{std::string{"malformed message: "} + e.what()};
        }
        if (buffer.remaining() != 0) {
            throw DecodeError{"malformed message: " + std::to_string(buffer.remaining()) + " trailing bytes"};
        }
    }
    return values;
}

}  // namespace multiworker::detail
