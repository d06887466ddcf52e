// The guide's "BROADCAST and LISTENERS". multiworker::broadcast is an address like any other: a
// message sent to it reaches every other process (not the parent). A listener names message types
// in ProcessOptions::listen_to (the guide's LISTEN_TO) and gets a copy of every message of those
// types, whoever it was sent to: it snoops on the others. multiworker::listeners is the address
// "whoever listens to this type"; when nobody does, send() throws multiworker::NobodyListening.
//
// "Process one" broadcasts an EmptyMessage, sends Notes 1 to 3 to "Process two", Note 4 to
// listeners, then an Unheard to listeners (nobody listens to that: it catches NobodyListening), and
// tells Process two it is done. "Snoop" is a resident listener of Note. Each process reports what it
// received to the parent, which prints the reports in name order:
//
//   Process one 0 caught NobodyListening: multiworker: nobody listens to agents::Unheard (sent to
//   multiworker::listeners)
//   Process two 0 received EmptyMessage from Process one 0
//   Process two 0 received Note 1 from Process one 0
//   ... Note 2, Note 3; then Snoop's: the EmptyMessage, and Notes 1, 2, 3 (its copies of those sent
//   to Process two) and 4 (sent to listeners), each from Process one 0.

#include "common.hpp"

#include <cstdio>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace agents {

/// The guide's EmptyMessage.
struct EmptyMessage {
    template <class Archive>
    void serialize(Archive& /*archive*/, unsigned /*version*/) {}
};

/// A note from one process to another, which the snoop overhears.
struct Note {
    int value = 0;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& value;
    }
};

/// A type that nobody listens to.
struct Unheard {
    template <class Archive>
    void serialize(Archive& /*archive*/, unsigned /*version*/) {}
};

/// Process one is done sending.
struct Done {
    template <class Archive>
    void serialize(Archive& /*archive*/, unsigned /*version*/) {}
};

/// What a process tells the parent: a line for each message it received (or exception it caught).
struct Report {
    std::vector<std::string> lines;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& lines;
    }
};

/// "Note 3 from Process one 0": a received message, and who sent it.
inline std::string line_for(multiworker::Context& ctx, const std::variant<EmptyMessage, Note>& m) {
    const std::string what =
        std::holds_alternative<Note>(m) ? "Note " + std::to_string(std::get<Note>(m).value) : "EmptyMessage";
    return "received " + what + " from " + multiworker::describe(ctx.info(ctx.sender()));
}

struct ProcessOne {
    void run(multiworker::Context& ctx) {
        Report report;
        ctx.send(multiworker::broadcast, EmptyMessage{});
        const auto two = ctx.ids("Process two");
        for (int i = 1; i <= 3; ++i) ctx.send(two, Note{i});
        ctx.send(multiworker::listeners, Note{4});  // "I don't care who receives this"
        try {
            ctx.send(multiworker::listeners, Unheard{});
            report.lines.push_back("sent an Unheard to listeners");
        } catch (const multiworker::NobodyListening& e) {
            report.lines.push_back(std::string{"caught NobodyListening: "} + e.what());
        }
        ctx.send(two, Done{});
        ctx.send(multiworker::parent, report);
    }
};

struct ProcessTwo {
    void run(multiworker::Context& ctx) {
        Report report;
        for (;;) {
            const auto m = ctx.receive<EmptyMessage, Note, Done>();
            if (std::holds_alternative<Done>(m)) break;
            if (std::holds_alternative<Note>(m)) {
                report.lines.push_back(line_for(ctx, std::get<Note>(m)));
            } else {
                report.lines.push_back(line_for(ctx, std::get<EmptyMessage>(m)));
            }
        }
        ctx.send(multiworker::parent, report);
    }
};

/// Resident, listening to Note: added with {.resident = true, .listen_to = listen<Note>()}.
struct Snoop {
    void run(multiworker::Context& ctx) {
        Report report;
        for (;;) {
            const auto m = ctx.receive<EmptyMessage, Note, multiworker::ResidentsEnd>();
            if (std::holds_alternative<multiworker::ResidentsEnd>(m)) break;
            if (std::holds_alternative<Note>(m)) {
                report.lines.push_back(line_for(ctx, std::get<Note>(m)));
            } else {
                report.lines.push_back(line_for(ctx, std::get<EmptyMessage>(m)));
            }
        }
        ctx.send(multiworker::parent, report);
    }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv);
        multiworker::Supervisor sup{agents::supervisor_options(line)};
        sup.add("Process one", agents::ProcessOne{});
        sup.add("Process two", agents::ProcessTwo{});
        sup.add("Snoop", agents::Snoop{}, {.resident = true, .listen_to = multiworker::listen<agents::Note>()});

        std::map<std::string, std::vector<std::string>> reports;  // by process name: printed in order
        sup.on<agents::Report>([&](const agents::Report& r, multiworker::ProcessId from) {
            reports[agents::name_of(sup, from)] = r.lines;
        });
        sup.run();

        for (const auto& [name, lines] : reports)
            for (const std::string& l : lines) std::printf("%s %s\n", name.c_str(), l.c_str());
        return reports.size() == 3 ? 0 : 1;
    });
}
