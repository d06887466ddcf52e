#pragma once

// A task exception's stack as TaskError::stack_trace() gives it: made from
// the raw frames captured at the throw (throw_trace.hpp) and turned into
// "function at file:line" lines the first time someone asks, in the process
// that asks (whose code lies at the addresses the frames name: the parent of
// a worker process, or the process of a worker thread). Only the frames of
// the user's code are kept: from the throw down to where the library called
// the method.

#include <multiworker/detail/symbolize.hpp>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace multiworker::detail {

class ExceptionStack {
public:
    /// From captured frames, one "[0x...]" line each; null when there are none.
    static std::shared_ptr<const ExceptionStack> from_frames(const std::string& raw_lines) {
        if (raw_lines.empty()) return nullptr;
        auto stack = std::make_shared<ExceptionStack>();
        stack->raw_lines_ = raw_lines;
        return stack;
    }

    /// From a trace already made readable (by an MPI agent, on its own host).
    static std::shared_ptr<const ExceptionStack> readable(std::string text) {
        if (text.empty()) return nullptr;
        auto stack = std::make_shared<ExceptionStack>();
        std::call_once(stack->made_, [&] { stack->text_ = std::move(text); });
        return stack;
    }

    /// "#0 f(int) at file.cpp:12" lines, the throwing frame first.
    [[nodiscard]] const std::string& text() const {
        std::call_once(made_, [this] { text_ = make_text(); });
        return text_;
    }

private:
    std::string make_text() const {
        std::vector<std::string> lines;
        for (std::size_t begin = 0; begin < raw_lines_.size();) {
            const std::size_t end = std::min(raw_lines_.find('\n', begin), raw_lines_.size());
            lines.push_back(raw_lines_.substr(begin, end - begin));
            begin = end + 1;
        }
        const std::vector<SymbolizedFrame> frames = symbolized(lines);
        // From the frame below the capture (itself, and a sanitizer's frames above it) ...
        std::size_t first = 0;
        for (std::size_t i = 0; i < frames.size(); ++i) {
            const std::string& name = frames[i].function;  // addr2line names it by its symbol, __cxa_throw
            if (name == "__cxa_throw" || name.find("interposed_cxa_throw") != std::string::npos) first = i + 1;
        }
        // ... to the library's call of the method, without std::invoke's frames before it.
        std::size_t last = first;
        while (last < frames.size() && frames[last].function.find("multiworker::") == std::string::npos) ++last;
        while (last > first && is_invoke_machinery(frames[last - 1].function)) --last;
        std::string text;
        for (std::size_t i = first; i < last; ++i) {
            text += "#" + std::to_string(i - first) + " " + describe_frame(frames[i]) + "\n";
        }
        return text;
    }

    // std::invoke's and std::apply's frames (their names start with their
    // return types, which may name these templates too).
    static bool is_invoke_machinery(std::string_view function) {
        for (const std::string_view part :
             {"std::__invoke", "std::invoke", "std::__apply", "std::apply", "std::_Function_handler"}) {
            if (function.find(part) != std::string_view::npos) return true;
        }
        return false;
    }

    // One cache for the process: TaskErrors are read from any thread.
    static std::vector<SymbolizedFrame> symbolized(const std::vector<std::string>& lines) {
        static std::mutex mutex;
        static FrameCache cache;
        std::lock_guard lock{mutex};
        return cache.lookup(lines);
    }

    std::string raw_lines_;
    mutable std::once_flag made_;
    mutable std::string text_;
};

}  // namespace multiworker::detail
