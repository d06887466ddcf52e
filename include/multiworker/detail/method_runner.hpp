#pragma once

// How a Processor's tasks run on an object, whichever backend calls them:
// decode the arguments, call the method, encode the result while the value
// lives. The backends see only TaskRunners (backend.hpp).

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/processor_support.hpp>
#include <multiworker/detail/thread_backend.hpp>

#include <functional>
#include <memory>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>

namespace multiworker::detail {

/// `Check` is the Processor's MethodCheck<T, Method>: when it found a
/// problem, the build has already failed, and nothing here is instantiated
/// that would add errors of its own.
template <class T, auto Method, class Check>
struct MethodRunner {
    using result_type = typename Check::result_type;
    using arguments_type = typename Check::traits::stored_arguments;

    /// Runs tasks on `object` (the Processor's own in-process and in a worker
    /// process, a thread's copy on threads), encoding each result into `head`.
    static TaskRunner on(T& object, Bytes& head) {
        if constexpr (Check::usable) {
            return [&object, &head](std::span<const char> arguments, const ResultSender& send) {
                run(object, head, arguments, send);
            };
        } else {
            (void)object, (void)head;
            return [](std::span<const char>, const ResultSender&) {};
        }
    }

    /// Backend::threads: each thread's own copy of `object` (which must
    /// outlive the maker) as it was at construction.
    static WorkerCopyMaker copies_of(const T& object) {
        return [&object] {
            struct Copy {
                T object;
                Bytes head;
            };
            auto copy = std::make_shared<Copy>(Copy{object, {}});
            return WorkerCopy{on(copy->object, copy->head), hooks_of(copy->object), copy};
        };
    }

    /// Decodes, calls, encodes, and sends while the value lives.
    static void run(T& object, Bytes& head, std::span<const char> encoded_arguments, const ResultSender& send) {
        auto arguments = tuple_decoder<arguments_type>::decode(encoded_arguments);
        const auto call = [&object](auto&... values) -> decltype(auto) {
            return std::invoke(Method, object, std::move(values)...);
        };
        if constexpr (std::is_void_v<result_type>) {
            std::apply(call, arguments);
            send(EncodedView{});
        } else {
            const result_type& value = std::apply(call, arguments);
            head.clear();
            const std::span<const char> body = encode_borrowing(head, value);
            send(EncodedView{head, body});
            if (head.capacity() > retained_buffer_capacity) Bytes{}.swap(head);
        }
    }
};

}  // namespace multiworker::detail
