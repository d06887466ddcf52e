#pragma once

// Encoding of argument tuples and results into bytes and back.
//
// Arithmetic and enum values are copied bit for bit (both ends are the same
// program on the same machine); everything else goes through one Boost binary
// archive per message. Decoding treats its input as untrusted: any mismatch
// throws DecodeError, never reads out of bounds or allocates more than the
// message could hold (see bounded_archive.hpp).

#include <multiworker/detail/bounded_archive.hpp>
#include <multiworker/serialization.hpp>

#include <boost/archive/binary_oarchive.hpp>

#include <cstring>
#include <span>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace multiworker::detail {

using Bytes = std::vector<char>;

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

/// Appends the encoding of `values` to `out`.
template <class... Ts>
void encode_values(Bytes& out, const Ts&... values) {
    if constexpr ((bitwise_copyable<Ts> && ...)) {
        const auto append = [&out](const auto& value) {
            const char* raw = reinterpret_cast<const char*>(&value);
            out.insert(out.end(), raw, raw + sizeof value);
        };
        (append(values), ...);
    } else {
        BytesWriteBuffer buffer{out};
        boost::archive::binary_oarchive archive{buffer, archive_flags};
        ((archive << values), ...);
    }
}

/// Decodes exactly the bytes of `in` into a tuple of `Ts` (each default-constructible).
template <class... Ts>
std::tuple<Ts...> decode_values(std::span<const char> in) {
    std::tuple<Ts...> values;
    if constexpr ((bitwise_copyable<Ts> && ...)) {
        constexpr std::size_t expected = (std::size_t{0} + ... + sizeof(Ts));
        if (in.size() != expected) {
            throw DecodeError{"expected " + std::to_string(expected) + " bytes, got " + std::to_string(in.size())};
        }
        std::size_t offset = 0;
        const auto copy_out = [&in, &offset](auto& value) {
            if constexpr (std::is_same_v<std::remove_cvref_t<decltype(value)>, bool>) {
                // Reading a bool whose byte is neither 0 nor 1 is undefined behaviour.
                if (static_cast<unsigned char>(in[offset]) > 1) throw DecodeError{"malformed message: invalid bool"};
            }
            std::memcpy(&value, in.data() + offset, sizeof value);
            offset += sizeof value;
        };
        std::apply([&copy_out](auto&... value) { (copy_out(value), ...); }, values);
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
