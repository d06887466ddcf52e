#pragma once

// BoundedBinaryIArchive: Boost's binary input archive, made safe for bytes
// written by another process.
//
// A plain binary_iarchive trusts every length it reads: a corrupt string or
// container length makes it allocate (and zero) that many bytes before it
// notices the data is missing, so one bad result could exhaust the parent's
// memory. This archive reads the same format but rejects any string or
// collection length larger than the bytes left in the message, before any
// allocation. (Found by the fuzz target in tests/fuzz.)

#include <boost/archive/basic_binary_iarchive.hpp>
#include <boost/archive/basic_binary_iprimitive.hpp>
#include <boost/archive/binary_iarchive_impl.hpp>
#include <boost/archive/detail/register_archive.hpp>
#include <boost/serialization/collection_size_type.hpp>

// The member templates of a binary input archive are defined in these files;
// a new archive type instantiates them from here.
#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_binary_iarchive.ipp>
#include <boost/archive/impl/basic_binary_iprimitive.ipp>

#include <cstddef>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <utility>

namespace multiworker::detail {

/// Thrown when a message claims more data than it holds, or holds a value
/// its type cannot have.
class LengthExceedsMessage : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class BoundedBinaryIArchive
    : public boost::archive::binary_iarchive_impl<BoundedBinaryIArchive, char, std::char_traits<char>> {
    using Base = boost::archive::binary_iarchive_impl<BoundedBinaryIArchive, char, std::char_traits<char>>;
    using Primitive = boost::archive::basic_binary_iprimitive<BoundedBinaryIArchive, char, std::char_traits<char>>;
    using Archive = boost::archive::basic_binary_iarchive<BoundedBinaryIArchive>;
    friend class boost::archive::detail::interface_iarchive<BoundedBinaryIArchive>;
    friend class boost::archive::basic_binary_iarchive<BoundedBinaryIArchive>;
    friend class boost::archive::basic_binary_iprimitive<BoundedBinaryIArchive, char, std::char_traits<char>>;
    friend class boost::archive::load_access;

public:
    BoundedBinaryIArchive(std::streambuf& buffer, unsigned flags) : Base{buffer, flags}, buffer_{buffer} {
        init(flags);
    }

protected:
    using Primitive::load;

    void load(std::string& text) {
        std::size_t length = 0;
        this->load_binary(&length, sizeof length);
        require_available(length, "string");
        text.resize(length);
        if (length > 0) this->load_binary(text.data(), length);
    }

    // Any byte but 0 or 1 in a bool would be undefined behaviour once read.
    void load(bool& flag) {
        unsigned char byte = 0;
        this->load_binary(&byte, 1);
        if (byte > 1) throw LengthExceedsMessage{"bool holding " + std::to_string(byte)};
        flag = byte == 1;
    }

    template <class T>
    void load_override(T& value) {
        this->Archive::load_override(value);
    }

    // Every element takes at least one byte, so a count above the bytes left is a lie.
    void load_override(boost::serialization::collection_size_type& count) {
        this->Archive::load_override(count);
        require_available(std::as_const(count), "collection");  // the const conversion: -Wconversion
    }

private:
    void require_available(std::size_t claimed, const char* what) const {
        const auto left = static_cast<std::size_t>(buffer_.in_avail() < 0 ? 0 : buffer_.in_avail());
        if (claimed > left) {
            throw LengthExceedsMessage{std::string{what} + " of " + std::to_string(claimed) + " claimed with only " +
                                       std::to_string(left) + " bytes left"};
        }
    }

    std::streambuf& buffer_;
};

}  // namespace multiworker::detail

BOOST_SERIALIZATION_REGISTER_ARCHIVE(multiworker::detail::BoundedBinaryIArchive)
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(multiworker::detail::BoundedBinaryIArchive)
