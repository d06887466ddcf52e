#pragma once

// From a backend's RawResult to the Result<R> users see, for Processor and
// Pipeline alike.

#include <multiworker/detail/backend.hpp>
#include <multiworker/detail/codec.hpp>
#include <multiworker/detail/wire.hpp>
#include <multiworker/result.hpp>

#include <memory>
#include <string>
#include <type_traits>
#include <variant>

namespace multiworker::detail {

/// Decodes `raw` (taken by reference: only an error or a large value is
/// moved out, a small result's record is read where it lies). An outcome
/// that does not decode becomes a bad_message error. `Decodable` false (a
/// type a static_assert has rejected already) instantiates no decoder.
template <class R, bool Decodable = true>
Result<R> decode_raw_result(RawResult& raw) {
    if (auto* error = std::get_if<std::unique_ptr<TaskError>>(&raw.outcome))
        return Result<R>{raw.id, std::move(**error)};
    try {
        if (auto* large = std::get_if<std::unique_ptr<LargePayload>>(&raw.outcome)) {
            if constexpr (!std::is_void_v<R> && is_plain_buffer<R>) {
                return Result<R>{raw.id, static_cast<PlainValuePayload<R>&>(**large).take()};
            } else {
                throw DecodeError{"a large payload arrived for a type that has none"};
            }
        }
        const auto& bytes = std::get<Bytes>(raw.outcome);
        if constexpr (std::is_void_v<R>) {
            if (!bytes.empty()) throw DecodeError{"a void method sent a value"};
            return Result<void>{raw.id};
        } else if constexpr (Decodable) {
            auto [value] = decode_values<R>(bytes);
            return Result<R>{raw.id, std::move(value)};
        } else {
            throw DecodeError{"the method cannot be used (see the static_assert above)"};
        }
    } catch (const DecodeError& e) {
        return Result<R>{raw.id, TaskError{ErrorKind::bad_message, raw.id, "",
                                           std::string{"result could not be decoded: "} + e.what(), raw.worker_index,
                                           raw.worker_pid}};
    }
}

}  // namespace multiworker::detail
