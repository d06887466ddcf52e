// The guide's "ipc.client.Process.send()": a process sends a message of a type of its own (any
// serializable struct) to the supervisor, multiworker::parent, and the parent's handler for that
// type, the guide's objHandler, prints it. The handler runs in the parent, on the run's event loop
// thread, while the processes run.
//
// Prints:
//   objHandler: DEBUG:7006652 (a MyResultsMessage from My process 0)

#include "common.hpp"

#include <cstdint>
#include <cstdio>
#include <string>

namespace agents {

/// The guide's MyResultsMessage(ipc.StringMessage): a results message of the program's own.
struct MyResultsMessage {
    std::string text;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& text;
    }
};

/// Computes arg_one * arg_two and sends it to the parent (the guide's self.sup_id).
struct MyProcess {
    std::int64_t arg_one = 0;
    std::int64_t arg_two = 0;

    void run(multiworker::Context& ctx) {
        ctx.send(multiworker::parent, MyResultsMessage{"DEBUG:" + std::to_string(arg_one * arg_two)});
    }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv);
        multiworker::Supervisor sup{agents::supervisor_options(line)};
        sup.add("My process", agents::MyProcess{1234, 5678});

        int handled = 0;
        const auto obj_handler = [&](const agents::MyResultsMessage& m, multiworker::ProcessId from) {
            std::printf("objHandler: %s (a MyResultsMessage from %s)\n", m.text.c_str(),
                        agents::name_of(sup, from).c_str());
            ++handled;
        };
        sup.on<agents::MyResultsMessage>(obj_handler);
        sup.run();
        return handled == 1 ? 0 : 1;
    });
}
