#pragma once

// The stack where a task's exception was thrown (TaskError::stack_trace()).
//
// C++ keeps no trace of where an exception came from, and by the time a
// catch block runs the stack that threw it is gone. So the library stands
// in for the C++ runtime's __cxa_throw, which every `throw` expression
// calls: while a task runs with traces on (ThrowTraceCapture), it records the
// return addresses of the throwing stack with backtrace() into a
// thread-local buffer, then passes the exception on to the runtime's own
// __cxa_throw, found with dlsym(RTLD_NEXT). A rethrow (`throw;`) goes through
// __cxa_rethrow and keeps the original throw's trace. Outside a capture, a
// throw anywhere in the program costs one thread-local read more.
//
// The addresses are turned into names later and elsewhere (symbolize.hpp):
// in the parent of a worker process, which has the same code at the same
// addresses, and only when someone asks for the trace.

#include <dlfcn.h>
#include <execinfo.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <typeinfo>

namespace multiworker::detail {

/// The last throw's return addresses in this thread, while capturing.
struct ThrowTrace {
    static constexpr int max_frames = 64;
    std::array<void*, max_frames> frames{};
    int depth = 0;
    bool capturing = false;
};

inline thread_local ThrowTrace current_throw_trace;

/// Whether worker processes capture traces (Options::exception_stack_traces,
/// set in each worker process before its first task).
inline std::atomic<bool>& worker_exception_traces() noexcept {
    static std::atomic<bool> enabled{true};
    return enabled;
}

using CxaThrow = void (*)(void*, std::type_info*, void (*)(void*));

inline CxaThrow runtime_cxa_throw() noexcept {
    static const auto next = reinterpret_cast<CxaThrow>(::dlsym(RTLD_NEXT, "__cxa_throw"));
    return next;
}

// The linker knows it as __cxa_throw (the asm label), so a program that
// includes the library calls it for every throw; the C++ name keeps it clear
// of the compiler's own declaration of the runtime function. `used`: emitted
// in every translation unit that includes it, though nothing calls it by name.
[[noreturn]] __attribute__((used)) inline void interposed_cxa_throw(void* object, std::type_info* type,
                                                                    void (*destroy)(void*)) __asm__("__cxa_throw");

[[noreturn]] __attribute__((used)) inline void interposed_cxa_throw(void* object, std::type_info* type,
                                                                    void (*destroy)(void*)) {
    ThrowTrace& trace = current_throw_trace;
    if (trace.capturing) trace.depth = ::backtrace(trace.frames.data(), ThrowTrace::max_frames);
    runtime_cxa_throw()(object, type, destroy);
    __builtin_unreachable();
}

/// Captures the trace of throws in this thread for its lifetime (when `on`).
class ThrowTraceCapture {
public:
    explicit ThrowTraceCapture(bool on) noexcept : was_capturing_{current_throw_trace.capturing} {
        current_throw_trace.capturing = on;
        current_throw_trace.depth = 0;
    }
    ~ThrowTraceCapture() { current_throw_trace.capturing = was_capturing_; }
    ThrowTraceCapture(const ThrowTraceCapture&) = delete;
    ThrowTraceCapture& operator=(const ThrowTraceCapture&) = delete;

    /// The last throw's frames, one "[0x...]" line each (the form
    /// symbolize_frames() reads); empty when nothing was captured.
    [[nodiscard]] static std::string raw_lines() {
        std::string lines;
        const ThrowTrace& trace = current_throw_trace;
        for (int i = 0; i < trace.depth; ++i) {
            char line[32];
            std::snprintf(line, sizeof line, "[0x%jx]\n",
                          static_cast<std::uintmax_t>(
                              reinterpret_cast<std::uintptr_t>(trace.frames[static_cast<std::size_t>(i)])));
            lines += line;
        }
        return lines;
    }

private:
    bool was_capturing_;
};

}  // namespace multiworker::detail
