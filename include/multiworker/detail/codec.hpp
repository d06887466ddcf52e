#pragma once

// Encoding of argument tuples and results into bytes and back.
//
// Arithmetic and enum values are copied bit for bit (both ends are the same
// program on the same machine) and strings as length and bytes; a message of
// only such values needs no archive. Everything else goes through one Boost
// binary archive per message. Decoding treats its input as untrusted: any mismatch
// throws DecodeError, never reads out of bounds or allocates more than the
// message could hold (see bounded_archive.hpp).

#include <multiworker/detail/bounded_archive.hpp>
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

#include <array>
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

/// Message buffers are kept for reuse up to this capacity (no allocation per
/// task), and given back to the allocator above it (a worker's memory stays small).
inline constexpr std::size_t retained_buffer_capacity = 64 * 1024;

/// Thrown when bytes do not decode into the expected types.
class DecodeError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

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

template <class T>
inline constexpr bool bitwise_copyable = std::is_arithmetic_v<T> || std::is_enum_v<T>;

/// A std::array of bitwise values (not of bool, whose bytes would need a
/// check each): a block of fixed size, copied whole with no count, as a
/// fixed-size message (a 16-byte key, a 3-vector) is on any wire.
template <class T>
inline constexpr bool is_bitwise_array = false;
template <class T, std::size_t N>
inline constexpr bool is_bitwise_array<std::array<T, N>> =
    bitwise_copyable<T> && !std::is_same_v<T, bool> && sizeof(std::array<T, N>) == N * sizeof(T);

/// A std::vector of bitwise values or of arrays of them (not std::vector<bool>,
/// which packs bits): a point cloud of std::array<float, 3> is one block too.
template <class T>
inline constexpr bool is_bitwise_vector = false;
template <class T>
inline constexpr bool is_bitwise_vector<std::vector<T>> =
    !std::is_same_v<T, bool> && (bitwise_copyable<T> || is_bitwise_array<T>);

/// A std::string or a vector of bitwise values: one contiguous buffer, encoded
/// as an 8-byte element count and the elements' bytes.
template <class T>
inline constexpr bool is_plain_buffer = std::is_same_v<T, std::string> || is_bitwise_vector<T>;

template <class T>
inline constexpr bool is_pair_or_tuple = false;
template <class A, class B>
inline constexpr bool is_pair_or_tuple<std::pair<A, B>> = true;
template <class... Ts>
inline constexpr bool is_pair_or_tuple<std::tuple<Ts...>> = true;

template <class T>
inline constexpr bool is_vector = false;
template <class T>
inline constexpr bool is_vector<std::vector<T>> = true;

/// Types with a direct encoding, no archive: bitwise values and arrays of
/// them, plain buffers, vectors of any of these (an 8-byte count, then each
/// element's encoding), and pairs and tuples of these (each element in turn,
/// with no padding). A message of only such values skips Boost, whose
/// archive costs far more than the copy itself for small values, and a large
/// buffer is copied once. (A stream of bench_mpi's tasks, `(long,
/// std::string)` to `std::pair<long, std::size_t>`: 1.8 to 4.1 µs a task with
/// the pair through the archive, 0.59 to 1.25 with it plain. Ten strings of
/// 20 characters in a vector: 1.46 µs to encode and decode through the
/// archive, 0.27 plain.)
template <class T>
struct PlainCodable : std::bool_constant<bitwise_copyable<T> || is_bitwise_array<T> || is_plain_buffer<T>> {};
// Elements are read in place, so a const one (a map's std::pair<const K, V>) goes through the archive.
template <class T>
inline constexpr bool plain_element = PlainCodable<T>::value && !std::is_const_v<T>;
template <class A, class B>
struct PlainCodable<std::pair<A, B>> : std::bool_constant<plain_element<A> && plain_element<B>> {};
template <class... Ts>
struct PlainCodable<std::tuple<Ts...>> : std::bool_constant<(plain_element<Ts> && ...)> {};

/// The fewest bytes one value of `T` takes in the plain encoding: what
/// bounds the element count a vector may claim in a message of a given size.
template <class T>
constexpr std::size_t min_plain_size() noexcept {
    if constexpr (is_pair_or_tuple<T>) {
        return []<std::size_t... I>(std::index_sequence<I...>) {
            return (std::size_t{0} + ... + min_plain_size<std::tuple_element_t<I, T>>());
        }
        (std::make_index_sequence<std::tuple_size_v<T>>{});
    } else if constexpr (is_vector<T> || std::is_same_v<T, std::string>) {
        return sizeof(std::uint64_t);
    } else {
        return sizeof(T);
    }
}

/// A vector of plain values that are not bitwise (strings, pairs, vectors):
/// a count, then each element. Not of bool (vector<bool> packs bits), nor of
/// elements that may encode to nothing (an empty tuple), whose count no
/// message size would bound.
template <class T>
struct PlainCodable<std::vector<T>>
    : std::bool_constant<is_bitwise_vector<std::vector<T>> ||
                         (plain_element<T> && !std::is_same_v<T, bool> && min_plain_size<T>() > 0)> {};

template <class T>
inline constexpr bool plain_codable = PlainCodable<T>::value;

/// A vector encoded element by element (see PlainCodable<std::vector<T>>).
template <class T>
inline constexpr bool is_plain_sequence = is_vector<T>&& plain_codable<T> && !is_bitwise_vector<T>;

/// Bytes of the plain encoding of `value`.
template <class T>
std::size_t plain_size(const T& value) noexcept {
    if constexpr (is_pair_or_tuple<T>) {
        return std::apply([](const auto&... element) { return (std::size_t{0} + ... + plain_size(element)); }, value);
    } else if constexpr (is_plain_buffer<T>) {
        return sizeof(std::uint64_t) + value.size() * sizeof(typename T::value_type);
    } else if constexpr (is_plain_sequence<T>) {
        std::size_t size = sizeof(std::uint64_t);
        for (const auto& element : value) size += plain_size(element);
        return size;
    } else {
        return sizeof value;
    }
}

/// Writes the plain encoding of `value` at `cursor`, and moves it past.
template <class T>
void put_plain(char*& cursor, const T& value) noexcept {
    const auto put = [&cursor](const void* data, std::size_t count) {
        if (count == 0) return;  // `data` may be null (an empty vector's data())
        std::memcpy(cursor, data, count);
        cursor += count;
    };
    if constexpr (is_pair_or_tuple<T>) {
        std::apply([&cursor](const auto&... element) { (put_plain(cursor, element), ...); }, value);
    } else if constexpr (is_plain_buffer<T>) {
        const std::uint64_t count = value.size();
        put(&count, sizeof count);
        put(value.data(), value.size() * sizeof(typename T::value_type));
    } else if constexpr (is_plain_sequence<T>) {
        const std::uint64_t count = value.size();
        put(&count, sizeof count);
        for (const auto& element : value) put_plain(cursor, element);
    } else {
        put(&value, sizeof value);
    }
}

/// Reads plain values from a span, checking every length against what is left.
class PlainReader {
public:
    explicit PlainReader(std::span<const char> in) noexcept : in_{in} {}

    template <class T>
    void read(T& value) {
        if constexpr (is_pair_or_tuple<T>) {
            std::apply([this](auto&... element) { (this->read(element), ...); }, value);
        } else if constexpr (is_plain_buffer<T>) {
            using Element = typename T::value_type;
            std::uint64_t count = 0;
            take(&count, sizeof count);
            if (count > (in_.size() - offset_) / sizeof(Element)) {
                throw DecodeError{"malformed message: " + std::to_string(count) + " elements claimed with only " +
                                  std::to_string(in_.size() - offset_) + " bytes left"};
            }
            const auto size = static_cast<std::size_t>(count);
            value.reserve(size);
            advise_huge_pages(value.data(), size * sizeof(Element));
            if constexpr (std::is_same_v<Element, char> || std::is_same_v<Element, unsigned char>) {
                const auto* first = reinterpret_cast<const Element*>(in_.data() + offset_);
                value.assign(first, first + size);  // one copy, no zero-fill first
                offset_ += size;
            } else {
                value.resize(size);
                take(value.data(), size * sizeof(Element));
            }
        } else if constexpr (is_plain_sequence<T>) {
            // Each element takes at least min_plain_size bytes, so a count
            // that claims more than the rest of the message could hold is a
            // lie, refused before anything is allocated.
            using Element = typename T::value_type;
            std::uint64_t count = 0;
            take(&count, sizeof count);
            if (count > (in_.size() - offset_) / min_plain_size<Element>()) {
                throw DecodeError{"malformed message: " + std::to_string(count) + " elements claimed with only " +
                                  std::to_string(in_.size() - offset_) + " bytes left"};
            }
            value.clear();
            value.resize(static_cast<std::size_t>(count));
            for (Element& element : value) read(element);
        } else {
            if constexpr (std::is_same_v<T, bool>) {
                // Reading a bool whose byte is neither 0 nor 1 is undefined behaviour.
                if (offset_ < in_.size() && static_cast<unsigned char>(in_[offset_]) > 1) {
                    throw DecodeError{"malformed message: invalid bool"};
                }
            }
            take(&value, sizeof value);
        }
    }

    [[nodiscard]] std::size_t remaining() const noexcept { return in_.size() - offset_; }

private:
    void take(void* to, std::size_t count) {
        if (count > in_.size() - offset_) {
            throw DecodeError{"malformed message: " + std::to_string(count) + " bytes wanted, " +
                              std::to_string(in_.size() - offset_) + " left"};
        }
        if (count == 0) return;  // `to` may be null (an empty vector's data())
        std::memcpy(to, in_.data() + offset_, count);
        offset_ += count;
    }

    std::span<const char> in_;
    std::size_t offset_ = 0;
};

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
