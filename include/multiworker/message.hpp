#pragma once

/// @file
/// The vocabulary of messages: MessageType (what `listen_to` names),
/// multiworker::listen(), and ResidentsEnd, the message residents are sent.

#include <boost/core/demangle.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

namespace multiworker {

/// A message type, as ProcessOptions::listen_to names it.
struct MessageType {
    std::uint64_t key = 0;  ///< the same in every process of one program
    std::string name{};     ///< the demangled C++ name

    /// Types are equal when their keys are.
    friend bool operator==(const MessageType& a, const MessageType& b) noexcept { return a.key == b.key; }
};

/// The MessageType of `M`. Keys are a hash of the type's mangled name, so
/// they agree between the parent and its forked processes (one program).
template <class M>
const MessageType& message_type() {
    static const MessageType type = [] {
        std::uint64_t hash = 14695981039346656037ull;  // FNV-1a
        for (const char c : std::string_view{typeid(M).name()}) {
            hash ^= static_cast<unsigned char>(c);
            hash *= 1099511628211ull;
        }
        return MessageType{hash, boost::core::demangle(typeid(M).name())};
    }();
    return type;
}

/// The types a listener listens to: `.listen_to = multiworker::listen<Progress, Error>()`.
template <class... Ms>
std::vector<MessageType> listen() {
    return {message_type<Ms>()...};
}

/// Sent by the parent to every resident process once every non-resident
/// process has ended; a resident should end when it receives it. It comes
/// after every message the non-residents sent (receive it among the types a
/// receive() asks for, or handle it in serve()).
struct ResidentsEnd {
    /// Nothing to serialize.
    template <class Archive>
    void serialize(Archive& /*archive*/, unsigned /*version*/) {}
};

}  // namespace multiworker
