// What every program of examples/agents shares: its command line (`--in-process` runs each process as
// a thread of the program, for gdb and unit tests), a Supervisor's options that send the library's own
// records to stderr (stdout carries only the program's result, which its test compares), the message
// most examples pass around, and main()'s error handling.
#pragma once

#include <multiworker/multiworker.hpp>

#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace agents {

/// The command line of an example: `--in-process`, and the extra flags that example accepts.
struct CommandLine {
    bool in_process = false;
    std::vector<std::string> flags;  ///< the extra flags given

    [[nodiscard]] bool has(std::string_view flag) const {
        return std::find(flags.begin(), flags.end(), flag) != flags.end();
    }
};

/// Reads `argv`: `--in-process` and any of `extra`; throws std::invalid_argument on anything else.
inline CommandLine parse_command_line(int argc, char** argv, const std::vector<std::string>& extra = {}) {
    CommandLine line;
    for (int i = 1; i < argc; ++i) {
        const std::string arg{argv[i]};
        if (arg == "--in-process") {
            line.in_process = true;
        } else if (std::find(extra.begin(), extra.end(), arg) != extra.end()) {
            line.flags.push_back(arg);
        } else {
            std::string usage = std::string{"usage: "} + argv[0] + " [--in-process]";
            for (const std::string& flag : extra) usage += " [" + flag + "]";
            throw std::invalid_argument{"unknown argument '" + arg + "'; " + usage};
        }
    }
    return line;
}

/// A Supervisor's options: forked processes, or threads with `--in-process`; the library's records
/// (a process's spdlog lines, dead letters, failures) on stderr.
inline multiworker::SupervisorOptions supervisor_options(const CommandLine& line) {
    static const auto records =
        std::make_shared<spdlog::logger>("multiworker", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    return multiworker::SupervisorOptions{.logger = records, .in_process = line.in_process};
}

/// The guide's ipc.StringMessage: a line of text.
struct StringMessage {
    std::string text;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& text;
    }
};

/// "Agent two 0": the name and index of the process `id`, as the parent knows it.
inline std::string name_of(const multiworker::Supervisor& sup, multiworker::ProcessId id) {
    for (const multiworker::ProcessInfo& info : sup.processes())
        if (info.id == id) return multiworker::describe(info);
    return id == multiworker::parent ? "the parent" : "process " + std::to_string(id.value);
}

/// Runs `body` (which returns main()'s status); an exception is printed on stderr and makes it 1.
template <class Body>
int guarded_main(Body body) {
    try {
        return body();
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}

}  // namespace agents
