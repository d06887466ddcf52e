#pragma once

// The plain encoding: what most tasks, results and messages carry (numbers,
// strings, arrays, the standard containers of them, optionals, pairs and
// tuples) copied straight into a message, with no Boost archive. Both ends
// are the same program on the same machine, so a number is its bytes; a
// string or container is an 8-byte count and then its elements. The archive
// costs far more than the copy for small values: a stream of bench_mpi's
// tasks, `(long, std::string)` to `std::pair<long, std::size_t>`, took 1.8
// to 4.1 µs a task with the pair through the archive and 0.59 to 1.25 with
// it plain; ten strings of 20 characters in a vector take 1.46 µs to encode
// and decode through the archive and 0.27 plain (docs/performance.md).
//
// Decoding treats its input as untrusted: every length is checked against
// what is left of the message, and a count that the rest of the message
// could not hold is refused before anything is allocated.

#include <multiworker/detail/system.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace multiworker::detail {

/// Thrown when bytes do not decode into the expected types.
class DecodeError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// ----- which types are plain -----

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

/// std::map and std::unordered_map (default comparison, hash and allocator).
template <class T>
inline constexpr bool is_map = false;
template <class K, class V>
inline constexpr bool is_map<std::map<K, V>> = true;
template <class K, class V>
inline constexpr bool is_map<std::unordered_map<K, V>> = true;

/// std::set and std::unordered_set (default comparison, hash and allocator).
template <class T>
inline constexpr bool is_set = false;
template <class K>
inline constexpr bool is_set<std::set<K>> = true;
template <class K>
inline constexpr bool is_set<std::unordered_set<K>> = true;

template <class T>
inline constexpr bool is_optional = false;
template <class T>
inline constexpr bool is_optional<std::optional<T>> = true;

/// Types with the plain encoding; the others go through the archive.
template <class T>
struct PlainCodable : std::bool_constant<bitwise_copyable<T> || is_bitwise_array<T> || is_plain_buffer<T>> {};
// Elements are read in place, so a const one (a map's std::pair<const K, V>) goes through the archive.
template <class T>
inline constexpr bool plain_element = PlainCodable<T>::value && !std::is_const_v<T>;
template <class A, class B>
struct PlainCodable<std::pair<A, B>> : std::bool_constant<plain_element<A> && plain_element<B>> {};
template <class... Ts>
struct PlainCodable<std::tuple<Ts...>> : std::bool_constant<(plain_element<Ts> && ...)> {};
template <class T>
struct PlainCodable<std::optional<T>> : std::bool_constant<plain_element<T>> {};

/// The fewest bytes one value of `T` takes in the plain encoding: what
/// bounds the element count a container may claim in a message of a given size.
template <class T>
constexpr std::size_t min_plain_size() noexcept {
    if constexpr (is_pair_or_tuple<T>) {
        return []<std::size_t... I>(std::index_sequence<I...>) {
            return (std::size_t{0} + ... + min_plain_size<std::tuple_element_t<I, T>>());
        }
        (std::make_index_sequence<std::tuple_size_v<T>>{});
    } else if constexpr (std::is_same_v<T, std::string> || is_vector<T> || is_map<T> || is_set<T>) {
        return sizeof(std::uint64_t);
    } else if constexpr (is_optional<T>) {
        return 1;
    } else {
        return sizeof(T);
    }
}

/// Containers of plain elements that are not one block: a count, then each
/// element (a map's key, then its value). Not vector<bool> (it packs bits),
/// nor elements that may encode to nothing (an empty tuple), whose count no
/// message size would bound.
template <class... Elements>
inline constexpr bool plain_elements = (plain_element<Elements> && ...) &&
                                       (std::size_t{0} + ... + min_plain_size<Elements>()) > 0;
template <class T>
struct PlainCodable<std::vector<T>>
    : std::bool_constant<is_bitwise_vector<std::vector<T>> || (!std::is_same_v<T, bool> && plain_elements<T>)> {};
template <class K, class V>
struct PlainCodable<std::map<K, V>> : std::bool_constant<plain_elements<K, V>> {};
template <class K, class V>
struct PlainCodable<std::unordered_map<K, V>> : std::bool_constant<plain_elements<K, V>> {};
template <class K>
struct PlainCodable<std::set<K>> : std::bool_constant<plain_elements<K>> {};
template <class K>
struct PlainCodable<std::unordered_set<K>> : std::bool_constant<plain_elements<K>> {};

template <class T>
inline constexpr bool plain_codable = PlainCodable<T>::value;

/// A plain container encoded element by element (see plain_elements).
template <class T>
inline constexpr bool is_plain_collection =
    plain_codable<T> && !is_plain_buffer<T> && (is_vector<T> || is_map<T> || is_set<T>);

// ----- encoding -----

/// Bytes of the plain encoding of `value`.
template <class T>
std::size_t plain_size(const T& value) noexcept {
    if constexpr (is_pair_or_tuple<T>) {
        return std::apply([](const auto&... element) { return (std::size_t{0} + ... + plain_size(element)); }, value);
    } else if constexpr (is_plain_buffer<T>) {
        return sizeof(std::uint64_t) + value.size() * sizeof(typename T::value_type);
    } else if constexpr (is_plain_collection<T>) {  // a map's element is a pair: its key, then its value
        std::size_t size = sizeof(std::uint64_t);
        for (const auto& element : value) size += plain_size(element);
        return size;
    } else if constexpr (is_optional<T>) {
        return 1 + (value ? plain_size(*value) : 0);
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
    } else if constexpr (is_plain_collection<T>) {
        const std::uint64_t count = value.size();
        put(&count, sizeof count);
        for (const auto& element : value) put_plain(cursor, element);
    } else if constexpr (is_optional<T>) {
        put_plain(cursor, value.has_value());
        if (value) put_plain(cursor, *value);
    } else {
        put(&value, sizeof value);
    }
}

// ----- decoding -----

/// What a container's element is read into before it is moved in: a map's
/// key is const in its value_type.
template <class T>
struct DecodedElement {
    using type = T;
};
template <class K, class V>
struct DecodedElement<std::pair<const K, V>> {
    using type = std::pair<K, V>;
};
template <class T>
using Decoded = typename DecodedElement<T>::type;

/// Reads plain values from a span, checking every length against what is left.
class PlainReader {
public:
    explicit PlainReader(std::span<const char> in) noexcept : in_{in} {}

    template <class T>
    void read(T& value) {
        if constexpr (is_pair_or_tuple<T>) {
            std::apply([this](auto&... element) { (this->read(element), ...); }, value);
        } else if constexpr (is_plain_buffer<T>) {
            read_buffer(value);
        } else if constexpr (is_plain_collection<T> && is_vector<T>) {
            value.clear();
            value.resize(read_count(min_plain_size<typename T::value_type>()));
            for (auto& element : value) read(element);
        } else if constexpr (is_plain_collection<T>) {  // a map or a set
            using Element = Decoded<typename T::value_type>;
            value.clear();
            for (std::size_t left = read_count(min_plain_size<Element>()); left != 0; --left) {
                Element element{};
                read(element);
                value.emplace_hint(value.end(), std::move(element));  // a std::map's come sorted: at the end
            }
        } else if constexpr (is_optional<T>) {
            bool present = false;
            read(present);
            value.reset();
            if (present) read(value.emplace());
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
    /// A string or vector of bitwise values: its count, then one copy.
    template <class T>
    void read_buffer(T& value) {
        using Element = typename T::value_type;
        const std::size_t size = read_count(sizeof(Element));
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
    }

    /// An element count, refused if the rest of the message cannot hold that
    /// many elements of at least `element_bytes` each: before anything is allocated.
    std::size_t read_count(std::size_t element_bytes) {
        std::uint64_t count = 0;
        take(&count, sizeof count);
        if (count > remaining() / element_bytes) {
            throw DecodeError{"malformed message: " + std::to_string(count) + " elements claimed with only " +
                              std::to_string(remaining()) + " bytes left"};
        }
        return static_cast<std::size_t>(count);
    }

    void take(void* to, std::size_t count) {
        if (count > remaining()) {
            throw DecodeError{"malformed message: " + std::to_string(count) + " bytes wanted, " +
                              std::to_string(remaining()) + " left"};
        }
        if (count == 0) return;  // `to` may be null (an empty vector's data())
        std::memcpy(to, in_.data() + offset_, count);
        offset_ += count;
    }

    std::span<const char> in_;
    std::size_t offset_ = 0;
};

}  // namespace multiworker::detail
