#pragma once

// Turns a crashed worker's raw stack trace (backtrace_symbols_fd's lines,
// `binary(+0x1a2b) [0x55d0c0a01a2b]`) into function names and, where debug
// information exists, file:line, as a debugger's `bt` reads.
//
// It runs in the parent, outside any signal handler. A worker is a fork of the
// parent (through the fork server), so its code lies at the same addresses as
// the parent's: the parent's /proc/self/maps says which file holds an address
// and at which offset, and addr2line (binutils, which g++ depends on) reads
// that file's debug information. If addr2line cannot be run, the raw lines
// stay as they are.

#include <multiworker/detail/system.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace multiworker::detail {

/// One frame of a symbolized trace.
struct SymbolizedFrame {
    std::uintptr_t address = 0;
    std::string function;  // demangled; empty if unknown
    std::string location;  // "file:line"; empty if unknown
    std::string raw;       // the line as backtrace_symbols_fd wrote it
};

namespace symbolize {

/// A mapping of the parent's address space that holds code from a file.
struct Mapping {
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;
    std::uintptr_t file_offset = 0;
    std::string path;
};

inline std::vector<Mapping> file_mappings() {
    std::vector<Mapping> mappings;
    std::ifstream maps{"/proc/self/maps"};
    for (std::string line; std::getline(maps, line);) {
        Mapping mapping;
        char permissions[8] = {};
        unsigned long begin = 0, end = 0, offset = 0;
        int path_at = 0;
        if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %*s %*s %n", &begin, &end, permissions, &offset, &path_at) < 4)
            continue;
        if (path_at <= 0 || static_cast<std::size_t>(path_at) >= line.size() ||
            line[static_cast<std::size_t>(path_at)] != '/')
            continue;
        mapping.begin = begin;
        mapping.end = end;
        mapping.file_offset = offset;
        mapping.path = line.substr(static_cast<std::size_t>(path_at));
        mappings.push_back(std::move(mapping));
    }
    return mappings;
}

/// The address in a backtrace_symbols_fd line: the hex number in brackets.
inline std::uintptr_t address_of(std::string_view line) {
    const auto open = line.rfind("[0x");
    if (open == std::string_view::npos) return 0;
    return static_cast<std::uintptr_t>(std::strtoull(std::string{line.substr(open + 1)}.c_str(), nullptr, 16));
}

/// Runs `addr2line -C -f -e file offsets...`; its output, or empty if it could not run.
inline std::string run_addr2line(const std::string& file, const std::vector<std::uintptr_t>& offsets) {
    std::vector<std::string> arguments{"addr2line", "-C", "-f", "-e", file};
    for (const auto offset : offsets) {
        char hex[32];
        std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(offset));
        arguments.emplace_back(hex);
    }
    std::vector<char*> argv;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) != 0) return {};
    FileDescriptor read_end{ends[0]};
    FileDescriptor write_end{ends[1]};
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
    ::posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    // posix_spawn, not fork: this runs in a multithreaded parent.
    const int failed = ::posix_spawnp(&pid, "addr2line", &actions, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    write_end.reset();
    if (failed != 0) return {};
    std::string output;
    char buffer[4096];
    for (ssize_t got; (got = ::read(read_end.get(), buffer, sizeof buffer)) > 0 || (got < 0 && errno == EINTR);) {
        if (got > 0) output.append(buffer, static_cast<std::size_t>(got));
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? output : std::string{};
}

}  // namespace symbolize

/// Symbolizes the frames of a raw trace (one backtrace_symbols_fd line each).
inline std::vector<SymbolizedFrame> symbolize_frames(const std::vector<std::string>& raw_lines) {
    std::vector<SymbolizedFrame> frames;
    const auto mappings = symbolize::file_mappings();
    // Frames grouped by file, so that addr2line runs once per file.
    std::map<std::string, std::vector<std::size_t>> by_file;
    std::vector<std::uintptr_t> offsets;
    for (const auto& line : raw_lines) {
        SymbolizedFrame frame;
        frame.raw = line;
        frame.address = symbolize::address_of(line);
        // A return address points after the call: look up the call itself.
        const std::uintptr_t lookup = frame.address > 0 ? frame.address - 1 : 0;
        std::uintptr_t offset = 0;
        for (const auto& mapping : mappings) {
            if (lookup < mapping.begin || lookup >= mapping.end) continue;
            offset = lookup - mapping.begin + mapping.file_offset;
            by_file[mapping.path].push_back(frames.size());
            break;
        }
        offsets.push_back(offset);
        frames.push_back(std::move(frame));
    }
    for (const auto& [file, indices] : by_file) {
        std::vector<std::uintptr_t> file_offsets;
        for (const std::size_t index : indices) file_offsets.push_back(offsets[index]);
        std::istringstream answer{symbolize::run_addr2line(file, file_offsets)};
        for (const std::size_t index : indices) {
            std::string function;
            std::string location;
            if (!std::getline(answer, function) || !std::getline(answer, location)) break;
            if (function != "??") frames[index].function = function;
            if (const auto note = location.find(" (discriminator"); note != std::string::npos) location.resize(note);
            const bool known = !location.starts_with("??") && !location.starts_with(":") && !location.ends_with(":?");
            if (known) frames[index].location = location;
        }
    }
    return frames;
}

/// The frame as a debugger prints it: "function at file:line", or the raw line.
inline std::string describe_frame(const SymbolizedFrame& frame) {
    if (frame.function.empty()) return frame.raw;
    return frame.location.empty() ? frame.function : frame.function + " at " + frame.location;
}

/// True for frames of the crash machinery itself, the C library's signal
/// trampoline and raise(), and a sanitizer's interceptors (of backtrace(),
/// raise()), which come before the frames of the crash.
inline bool is_crash_machinery(const SymbolizedFrame& frame) {
    const std::string_view name = frame.function.empty() ? std::string_view{frame.raw} : frame.function;
    const bool sanitizer = name.starts_with("__interceptor_") || name.starts_with("__sanitizer") ||
                           frame.raw.find("libasan.so") != std::string::npos ||
                           frame.raw.find("libubsan.so") != std::string::npos;
    return sanitizer || name.find("multiworker::detail::report_crash") != std::string_view::npos ||
           name.find("__restore_rt") != std::string_view::npos || name.find("raise") == 0 ||
           name.find("__pthread_kill") != std::string_view::npos || name.find("pthread_kill") == 0 ||
           name.find("abort") == 0 || frame.raw.find("libc.so") != std::string::npos;
}

/// Symbolizes raw frames, remembering those it has looked up (the same crash
/// and throw sites come back task after task). Not thread-safe.
class FrameCache {
public:
    std::vector<SymbolizedFrame> lookup(const std::vector<std::string>& raw_lines) {
        std::vector<std::string> unknown;
        for (const auto& line : raw_lines) {
            if (!known_.contains(line)) unknown.push_back(line);
        }
        if (!unknown.empty()) {
            for (auto& frame : symbolize_frames(unknown)) known_.emplace(frame.raw, std::move(frame));
        }
        std::vector<SymbolizedFrame> frames;
        for (const auto& line : raw_lines) frames.push_back(known_.at(line));
        return frames;
    }

private:
    std::map<std::string, SymbolizedFrame> known_;  // by raw line: it names the address
};

/// Makes crash reports readable, remembering the frames it has looked up
/// (the same crash sites come back when workers crash again and again).
class CrashSymbolizer {
public:
    /// The first line of a crash report (see crash_report.hpp).
    static bool is_crash_report(std::string_view text) noexcept { return text.starts_with("fatal signal "); }

    struct Readable {
        std::string trace;  // the report with one "#i function at file:line" line per frame
        std::string site;   // "in f at file:line, called from g ..."; empty if unknown
    };

    Readable symbolize(std::string_view report) {
        std::vector<std::string> lines;
        for (std::size_t begin = 0; begin < report.size();) {
            const std::size_t end = std::min(report.find('\n', begin), report.size());
            lines.emplace_back(report.substr(begin, end - begin));
            begin = end + 1;
        }
        if (lines.empty()) return {};
        const std::vector<SymbolizedFrame> frames = cache_.lookup({lines.begin() + 1, lines.end()});
        Readable readable{lines.front(), {}};
        for (std::size_t i = 0; i < frames.size(); ++i) {
            readable.trace += "\n#" + std::to_string(i) + " " + describe_frame(frames[i]);
        }
        readable.site = crash_site(frames);
        return readable;
    }

private:
    // Up to three frames of the user's code that crashed: after the crash
    // machinery (and the standard library's frames it called, if any), before
    // the library's own frames that called it.
    static std::string crash_site(const std::vector<SymbolizedFrame>& frames) {
        std::string site;
        int taken = 0;
        for (const auto& frame : frames) {
            if (taken == 0 && (is_crash_machinery(frame) || frame.function.starts_with("std::"))) continue;
            const bool user_code = !frame.function.empty() && !frame.function.starts_with("multiworker::") &&
                                   !frame.function.starts_with("std::");
            if (!user_code || taken == 3) break;
            site += (taken++ == 0 ? "in " : ", called from ") + describe_frame(frame);
        }
        return site;
    }

    FrameCache cache_;
};

}  // namespace multiworker::detail
