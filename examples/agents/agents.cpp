// The guide's "ipc.client.Process.get_ids()": two agents that find each other by name. Agent two
// sends a StringMessage to every process named "Agent one" (ctx.ids() lists them all: add a second
// "Agent one" and both get a copy); Agent one waits for it, prints it from its own process, and
// reports it to the parent, which prints the report once the run is over.
//
// Prints:
//   Agent one received 'Agent two signing in' from Agent two 0
//   parent: Agent one 0 reported 'Agent two signing in'
//
// With --without-agent-two, Agent one waits for a message that nobody will send. In the guide the
// program hangs until Ctrl-C; here the supervisor sees that every live process waits for a message
// with none in flight, stops them, and run() throws multiworker::Deadlock:
//   run() threw Deadlock: multiworker: deadlock: every live process waits for a message and none is
//   in flight (Agent one 0)

#include "common.hpp"

#include <cstdio>
#include <string>
#include <variant>
#include <vector>

namespace agents {

/// Agent one's report to the parent: what it received.
struct Received {
    std::string text;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& text;
    }
};

struct AgentOne {
    void run(multiworker::Context& ctx) {
        // Blocks without a bound, like the guide's get_message(); receive<...>(timeout) would return
        // an empty optional instead after the timeout.
        const auto message = std::get<StringMessage>(ctx.receive<StringMessage>());
        const multiworker::ProcessInfo& from = ctx.info(ctx.sender());
        std::printf("Agent one received '%s' from %s\n", message.text.c_str(), multiworker::describe(from).c_str());
        ctx.send(multiworker::parent, Received{message.text});
    }
};

struct AgentTwo {
    void run(multiworker::Context& ctx) { ctx.send(ctx.ids("Agent one"), StringMessage{"Agent two signing in"}); }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv, {"--without-agent-two"});
        multiworker::Supervisor sup{agents::supervisor_options(line)};
        sup.add("Agent one", agents::AgentOne{});
        if (!line.has("--without-agent-two")) sup.add("Agent two", agents::AgentTwo{});

        std::vector<std::string> reports;
        sup.on<agents::Received>([&](const agents::Received& r, multiworker::ProcessId from) {
            reports.push_back(agents::name_of(sup, from) + " reported '" + r.text + "'");
        });
        try {
            sup.run();
        } catch (const multiworker::Deadlock& e) {
            std::printf("run() threw Deadlock: %s\n", e.what());
            return line.has("--without-agent-two") ? 0 : 1;
        }
        for (const std::string& report : reports) std::printf("parent: %s\n", report.c_str());
        return reports.size() == 1 && !line.has("--without-agent-two") ? 0 : 1;
    });
}
