#pragma once

// serializable<T>: whether Boost.Serialization can save and load a T, decided
// at compile time, so that a type that cannot cross a process boundary gets
// the library's own message instead of Boost's error from deep inside its
// archives.
//
// A type serializes if Boost treats it as a primitive (numbers, enums,
// std::string), if it has a serialize() member, or if some free serialize()
// overload is written for it: in its own namespace (found by argument-
// dependent lookup) or in boost::serialization (where Boost's own overloads
// for the standard containers live, and BOOST_SERIALIZATION_SPLIT_FREE puts
// one). Boost's catch-all serialize() template, which accepts any type and
// fails only in its body, must not count. So the probe calls serialize() with
// an archive type of its own, for which one more overload exists: more
// constrained than the catch-all (chosen over it) and less specialized than
// any overload written for a type (losing to it). Its return type tells which
// one won. The archive's base class sits in boost::serialization, so that the
// lookup happens where the type is used and finds overloads declared after
// this header. Containers are checked element by element.

#include <multiworker/serialization.hpp>

#include <boost/serialization/level.hpp>

#include <concepts>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

namespace boost::serialization {
/// Makes boost::serialization an associated namespace of the probe's archive.
struct multiworker_probe_archive_base {};
}  // namespace boost::serialization

namespace multiworker::detail {

/// Stands in for an archive in the probe; never used to serialize anything.
struct ProbeArchive : boost::serialization::multiworker_probe_archive_base {
    template <class U>
    ProbeArchive& operator&(U&&) {
        return *this;
    }
    template <class U>
    ProbeArchive& operator<<(U&&) {
        return *this;
    }
    template <class U>
    ProbeArchive& operator>>(U&&) {
        return *this;
    }
};

/// What the probe's own overload returns: no overload was written for the type.
struct NoSerializeOverload {};

}  // namespace multiworker::detail

namespace boost::serialization {
/// The probe's overload; viable for the probe's archive only, so real
/// serialization never sees it. Declared, never defined: only named in decltype.
template <class Archive, class T>
requires std::same_as<Archive, multiworker::detail::ProbeArchive> multiworker::detail::NoSerializeOverload serialize(
    Archive&, T&, const unsigned int);
}  // namespace boost::serialization

namespace multiworker::detail {

template <class T>
concept boost_primitive = boost::serialization::implementation_level<T>::value == boost::serialization::primitive_type;

template <class T>
concept has_serialize_member = requires(T& value, ProbeArchive& archive) {
    value.serialize(archive, 0u);
};

template <class T>
concept has_serialize_overload =
    !std::same_as<decltype(serialize(std::declval<ProbeArchive&>(), std::declval<T&>(), 0u)), NoSerializeOverload>;

template <class T>
struct elements_serializable;

/// True when Boost.Serialization can save and load a T (see the file comment).
template <class T>
concept serializable =
    (boost_primitive<std::remove_const_t<T>> || has_serialize_member<std::remove_const_t<T>> ||
     has_serialize_overload<std::remove_const_t<T>>)&&elements_serializable<std::remove_const_t<T>>::value;

template <class T>
struct elements_serializable : std::true_type {};

template <class T>
requires requires {
    typename T::value_type;
} &&(!boost_primitive<T>)struct elements_serializable<T> : std::bool_constant<serializable<typename T::value_type>> {
};

template <class First, class Second>
struct elements_serializable<std::pair<First, Second>>
    : std::bool_constant<serializable<First> && serializable<Second>> {};

template <class... Elements>
struct elements_serializable<std::tuple<Elements...>> : std::bool_constant<(serializable<Elements> && ...)> {};

template <class... Alternatives>
struct elements_serializable<std::variant<Alternatives...>> : std::bool_constant<(serializable<Alternatives> && ...)> {
};

}  // namespace multiworker::detail
