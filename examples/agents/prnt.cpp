// The guide's "ipc.client.Process.prnt()": printing from a process, first as is, then through a
// handler in the parent. A forked process's stdout is a pipe to the parent, which passes it on a
// whole line at a time (lines of different processes never mix), so a plain printf works; the
// guide's prntHandler is a parent handler for a message that carries the text.
//
// Prints:
//   DEBUG: 1234           (from the process itself)
//   CAUGHT DEBUG: 1234    (the process sends a Prnt; the parent's handler prints it)

#include "common.hpp"

#include <cstdio>
#include <string>

namespace agents {

/// What prnt() hands to the parent: the text to print.
struct Prnt {
    std::string text;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& text;
    }
};

/// Prints "DEBUG: <arg>" from its own process.
struct MyProcess {
    int arg_one = 0;

    void run(multiworker::Context& /*ctx*/) { std::printf("DEBUG: %d\n", arg_one); }
};

/// Sends "DEBUG: <arg>" to the parent, whose handler decides what printing means.
struct MyPrntProcess {
    int arg_one = 0;

    void run(multiworker::Context& ctx) { ctx.send(multiworker::parent, Prnt{"DEBUG: " + std::to_string(arg_one)}); }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv);
        {
            multiworker::Supervisor sup{agents::supervisor_options(line)};
            sup.add("My process", agents::MyProcess{1234});
            sup.run();  // the process's line is out before run() returns
        }
        {
            multiworker::Supervisor sup{agents::supervisor_options(line)};  // one run per Supervisor
            sup.add("My process", agents::MyPrntProcess{1234});
            sup.on<agents::Prnt>([](const agents::Prnt& p) { std::printf("CAUGHT %s\n", p.text.c_str()); });
            sup.run();
        }
        return 0;
    });
}
