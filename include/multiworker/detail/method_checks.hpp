#pragma once

// What makes a method usable by a Processor, checked in order so that a
// newcomer's mistake produces one message of the library's own: the first
// problem found is the only one reported (MethodCheck::problem), and the
// Processor instantiates no encoding or call of the method unless there is
// none (MethodCheck::usable), so no follow-on errors from deep inside Boost
// or the standard library bury the message.

#include <multiworker/detail/method_traits.hpp>
#include <multiworker/detail/serializable.hpp>

#include <tuple>
#include <type_traits>

namespace multiworker::detail {

/// The traits of something that is not a member function pointer: enough to
/// name the Processor's types while its static_assert reports the mistake.
struct no_method_traits {
    using object_type = void;
    using return_type = void;
    using parameters = std::tuple<>;
    using stored_arguments = std::tuple<>;
};

template <class Parameter>
inline constexpr bool is_output_parameter =
    std::is_lvalue_reference_v<Parameter> && !std::is_const_v<std::remove_reference_t<Parameter>>;

/// The first reason a method cannot be used, in the order they are checked.
enum class MethodProblem {
    none,
    not_a_method,
    not_a_member_of_t,
    object_not_copyable,
    output_parameter,
    pointer_parameter,
    parameter_not_default_constructible,
    parameter_not_serializable,
    pointer_result,
    result_not_default_constructible,
    result_not_serializable,
};

template <class Parameters>
struct parameter_checks;
template <class... Parameters>
struct parameter_checks<std::tuple<Parameters...>> {
    static constexpr MethodProblem problem =
        (is_output_parameter<Parameters> || ...)                      ? MethodProblem::output_parameter
        : (std::is_pointer_v<std::remove_cvref_t<Parameters>> || ...) ? MethodProblem::pointer_parameter
        : !(std::is_default_constructible_v<std::remove_cvref_t<Parameters>> && ...)
            ? MethodProblem::parameter_not_default_constructible
        : !(serializable<std::remove_cvref_t<Parameters>> && ...) ? MethodProblem::parameter_not_serializable
                                                                  : MethodProblem::none;
};

template <class Result>
inline constexpr MethodProblem result_problem =
    std::is_void_v<Result>                     ? MethodProblem::none
    : std::is_pointer_v<Result>                ? MethodProblem::pointer_result
    : !std::is_default_constructible_v<Result> ? MethodProblem::result_not_default_constructible
    : !serializable<Result>                    ? MethodProblem::result_not_serializable
                                               : MethodProblem::none;

/// Checks `Method` for use by Processor<T, Method>; see the file comment.
template <class T, auto Method>
struct MethodCheck {
    static constexpr bool is_method = member_function_pointer<decltype(Method)>;
    using traits = std::conditional_t<is_method, method_traits<decltype(Method)>, no_method_traits>;
    using result_type = std::remove_cvref_t<typename traits::return_type>;

    static constexpr MethodProblem problem = [] {
        if constexpr (!is_method) {
            return MethodProblem::not_a_method;
        } else if constexpr (!std::is_base_of_v<typename traits::object_type, T>) {
            return MethodProblem::not_a_member_of_t;
        } else if constexpr (!std::is_copy_constructible_v<T>) {
            return MethodProblem::object_not_copyable;
        } else if constexpr (parameter_checks<typename traits::parameters>::problem != MethodProblem::none) {
            return parameter_checks<typename traits::parameters>::problem;
        } else {
            return result_problem<result_type>;
        }
    }();

    static constexpr bool usable = problem == MethodProblem::none;
};

/// The static_assert that names `Check`'s problem, with the library's words;
/// instantiated by Processor through `reported`, so that a user who gets the
/// method wrong reads one error, the first problem's.
template <class Check>
struct MethodProblemReport {
    static_assert(Check::problem != MethodProblem::not_a_method,
                  "multiworker::Processor<T, Method>: Method must be a pointer to a member function, e.g. &T::run");
    static_assert(Check::problem != MethodProblem::not_a_member_of_t,
                  "multiworker::Processor<T, Method>: Method must be a member function of T");
    static_assert(Check::problem != MethodProblem::object_not_copyable,
                  "multiworker::Processor<T, Method>: T must be copyable (each worker runs on its own copy)");
    static_assert(Check::problem != MethodProblem::output_parameter,
                  "multiworker::Processor: the method takes a non-const lvalue reference; a worker "
                  "cannot write back into the caller's variables, so take it by value or const&");
    static_assert(Check::problem != MethodProblem::pointer_parameter,
                  "multiworker::Processor: the method takes a pointer; an address means nothing in "
                  "another process, so take the value (or a container) instead");
    static_assert(Check::problem != MethodProblem::parameter_not_default_constructible,
                  "multiworker::Processor: every parameter type must be default-constructible "
                  "(it is rebuilt from bytes in the worker)");
    static_assert(Check::problem != MethodProblem::parameter_not_serializable,
                  "multiworker::Processor: a parameter type of the method cannot be serialized: give it a "
                  "serialize(Archive&, unsigned) member or a free serialize() function (Boost.Serialization), "
                  "or include Boost's header for it (see multiworker/serialization.hpp)");
    static_assert(Check::problem != MethodProblem::pointer_result,
                  "multiworker::Processor: a pointer cannot be returned across processes; return a value");
    static_assert(Check::problem != MethodProblem::result_not_default_constructible,
                  "multiworker::Processor: the return type must be default-constructible "
                  "(it is rebuilt from bytes in the parent)");
    static_assert(Check::problem != MethodProblem::result_not_serializable,
                  "multiworker::Processor: the method's return type cannot be serialized: give it a "
                  "serialize(Archive&, unsigned) member or a free serialize() function (Boost.Serialization), "
                  "or include Boost's header for it (see multiworker/serialization.hpp)");
    static constexpr bool reported = true;
};

}  // namespace multiworker::detail
