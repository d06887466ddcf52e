// The guide's "Loggers": a resident process that listens to some message types and only records
// them. multiworker::Logger<Progress>{record} is one (its default options: resident, listening to
// Progress); `record` runs in the logger's own process for every Progress anyone sends, here a
// percentage display on stdout. Two workers share ten items (worker i takes items i, i + 2, ...)
// and send a Progress to multiworker::listeners after each; the logger counts them, whoever sent
// them, so its lines come in the same order in every run.
//
// Prints (from the logger's process):
//   10%
//   20%
//   ...
//   100%

#include "common.hpp"

#include <chrono>
#include <cstdio>
#include <thread>
#include <variant>

namespace agents {

/// One item is done.
struct Progress {
    unsigned item = 0;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& item;
    }
};

inline constexpr unsigned items = 10;

struct Worker {
    void run(multiworker::Context& ctx) {
        const unsigned workers = static_cast<unsigned>(ctx.ids("worker").size());
        for (unsigned item = ctx.self().index; item < items; item += workers) {
            std::this_thread::sleep_for(std::chrono::milliseconds{5});  // the work
            ctx.send(multiworker::listeners, Progress{item});
        }
    }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv);
        multiworker::Supervisor sup{agents::supervisor_options(line)};
        sup.add("worker", agents::Worker{}, {.copies = 2});
        // The lambda's copy of `done` lives in the logger's process (each process has its own copy
        // of the object, and so of the function and its state).
        sup.add("progress", multiworker::Logger<agents::Progress>{
                                [done = 0u](const std::variant<agents::Progress>&, multiworker::ProcessId) mutable {
                                    ++done;
                                    std::printf("%u%%\n", done * 100 / agents::items);
                                }});
        sup.run();  // the workers end, then the logger (told by ResidentsEnd): its lines are out by now
        return 0;
    });
}
