#pragma once

/// @file
/// What can cross a process boundary: every type Boost.Serialization handles.
/// This header brings in Boost's support for the common standard containers,
/// and adds std::tuple, std::optional and std::variant where the installed Boost lacks them, so a method's
/// arguments and results of those types need no further includes. A user
/// struct needs a `serialize(Archive&, unsigned)` member or free function, as
/// usual for Boost.Serialization.

#include <boost/serialization/array.hpp>
#include <boost/serialization/deque.hpp>
#include <boost/serialization/list.hpp>
#include <boost/serialization/map.hpp>
#include <boost/serialization/optional.hpp>
#include <boost/serialization/set.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/unordered_map.hpp>
#include <boost/serialization/unordered_set.hpp>
#include <boost/serialization/utility.hpp>
#include <boost/serialization/vector.hpp>

#include <boost/serialization/split_free.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <variant>

#if !__has_include(<boost/serialization/std_optional.hpp>)
namespace boost::serialization {

/// Saves a std::optional as a presence flag and, if present, the value
/// (Boost before 1.84 handles only boost::optional).
template <class Archive, class T>
void save(Archive& archive, const std::optional<T>& value, const unsigned int /*version*/) {
    const bool present = value.has_value();
    archive << present;
    if (present) archive << *value;
}

/// Loads a std::optional that save() stored.
template <class Archive, class T>
void load(Archive& archive, std::optional<T>& value, const unsigned int /*version*/) {
    bool present = false;
    archive >> present;
    if (!present) {
        value.reset();
        return;
    }
    T loaded{};
    archive >> loaded;
    value = std::move(loaded);
}

/// Serializes a std::optional through save() and load().
template <class Archive, class T>
void serialize(Archive& archive, std::optional<T>& value, const unsigned int version) {
    split_free(archive, value, version);
}

}  // namespace boost::serialization
#else
#include <boost/serialization/std_optional.hpp>
#endif

#if __has_include(<boost/serialization/std_tuple.hpp>)
#include <boost/serialization/std_tuple.hpp>
#else
namespace boost::serialization {

/// Serializes a std::tuple element by element (Boost before 1.78 has no support).
template <class Archive, class... Elements>
void serialize(Archive& archive, std::tuple<Elements...>& tuple, const unsigned int /*version*/) {
    std::apply([&archive](auto&... element) { ((archive & element), ...); }, tuple);
}

}  // namespace boost::serialization
#endif

#if __has_include(<boost/serialization/std_variant.hpp>)
#include <boost/serialization/std_variant.hpp>
#else
namespace boost::serialization {

/// Saves a std::variant as the index of its alternative and that value
/// (Boost before 1.78 handles only boost::variant).
template <class Archive, class... Alternatives>
void save(Archive& archive, const std::variant<Alternatives...>& value, const unsigned int /*version*/) {
    const std::uint32_t index = static_cast<std::uint32_t>(value.index());
    archive << index;
    std::visit([&archive](const auto& alternative) { archive << alternative; }, value);
}

/// Loads a std::variant that save() stored.
template <class Archive, class... Alternatives>
void load(Archive& archive, std::variant<Alternatives...>& value, const unsigned int /*version*/) {
    std::uint32_t index = 0;
    archive >> index;
    if (index >= sizeof...(Alternatives)) throw std::runtime_error{"std::variant index out of range"};
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
        ((index == Is ? (void)(value.template emplace<Is>(), archive >> std::get<Is>(value)) : void()), ...);
    }
    (std::index_sequence_for<Alternatives...>{});
}

/// Serializes a std::variant through save() and load().
template <class Archive, class... Alternatives>
void serialize(Archive& archive, std::variant<Alternatives...>& value, const unsigned int version) {
    split_free(archive, value, version);
}

}  // namespace boost::serialization
#endif
