#pragma once

// FunctionRef: a non-owning reference to a callable, for callbacks that are
// called during the call that receives them and never stored (C++26 has it
// as std::function_ref).
//
// A worker passes two such callbacks per task (the result's way out of the
// method's runner, and the outcome's way to the ring). As std::function, each
// was built, called through and destroyed through its manager on every task;
// this is two pointers and one indirect call.

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace multiworker::detail {

template <class Signature>
class FunctionRef;

/// Refers to a callable that must outlive every call through the reference:
/// a lambda passed as an argument lives until the end of the full
/// expression, which is as long as the call it is passed to.
template <class R, class... Args>
class FunctionRef<R(Args...)> {
public:
    // Implicit, as it stands in for a lambda argument.
    template <class F>
    FunctionRef(F&& callable) noexcept  // NOLINT(google-explicit-constructor)
        requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> && std::is_invocable_r_v<R, F&, Args...>)
        : callable_{const_cast<void*>(static_cast<const void*>(std::addressof(callable)))},
          call_{[](void* target, Args... args) -> R {
              return std::invoke(*static_cast<std::remove_reference_t<F>*>(target), std::forward<Args>(args)...);
          }} {}

    R operator()(Args... args) const { return call_(callable_, std::forward<Args>(args)...); }

private:
    void* callable_;
    R (*call_)(void*, Args...);
};

}  // namespace multiworker::detail
