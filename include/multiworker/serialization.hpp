#pragma once

/// @file
/// What can cross a process boundary: every type Boost.Serialization handles.
/// This header brings in Boost's support for the common standard containers,
/// and adds std::tuple where the installed Boost lacks it, so a method's
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

#include <tuple>

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
