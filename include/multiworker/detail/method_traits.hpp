#pragma once

// Decomposes a pointer to member function into its class, return type and
// parameters, for every cv/ref/noexcept qualification a method may carry.

#include <tuple>
#include <type_traits>

namespace multiworker::detail {

template <class Method>
struct method_traits;  // only member function pointers are supported

#define MULTIWORKER_DETAIL_METHOD_TRAITS(QUALIFIERS)                    \
    template <class C, class R, class... A>                             \
    struct method_traits<R (C::*)(A...) QUALIFIERS> {                   \
        using object_type = C;                                          \
        using return_type = R;                                          \
        using parameters = std::tuple<A...>;                            \
        using stored_arguments = std::tuple<std::remove_cvref_t<A>...>; \
    };

#define MULTIWORKER_DETAIL_METHOD_TRAITS_NOEXCEPT(QUALIFIERS) \
    MULTIWORKER_DETAIL_METHOD_TRAITS(QUALIFIERS)              \
    MULTIWORKER_DETAIL_METHOD_TRAITS(QUALIFIERS noexcept)

MULTIWORKER_DETAIL_METHOD_TRAITS_NOEXCEPT()
MULTIWORKER_DETAIL_METHOD_TRAITS_NOEXCEPT(const)
MULTIWORKER_DETAIL_METHOD_TRAITS_NOEXCEPT(&)
MULTIWORKER_DETAIL_METHOD_TRAITS_NOEXCEPT(const&)

#undef MULTIWORKER_DETAIL_METHOD_TRAITS_NOEXCEPT
#undef MULTIWORKER_DETAIL_METHOD_TRAITS

template <class Method>
concept member_function_pointer = requires {
    typename method_traits<Method>::object_type;
};

}  // namespace multiworker::detail
