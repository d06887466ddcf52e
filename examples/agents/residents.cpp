// The guide's "RESIDENT Processes": a process that only reacts to messages, needed while the others
// run and not after. With ProcessOptions{.resident = true} it is sent multiworker::ResidentsEnd (the
// guide's ipc.ResidentTermMessage) once every non-resident process has ended, after every message
// they sent; run() returns when it has ended too. Its body is the guide's loop: running = true;
// while (running) receive and handle, where handle_message() clears `running` on ResidentsEnd.
// Two "worker" processes each send it three events and end.
//
// Prints (the events of each worker in the order it sent them; one sender's messages keep theirs):
//   My process 0 saw 6 events, then ResidentsEnd
//   from worker 0: event 1, event 2, event 3
//   from worker 1: event 1, event 2, event 3

#include "common.hpp"

#include <cstddef>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace agents {

/// An event a worker reports.
struct Event {
    std::string what;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& what;
    }
};

/// The resident's account of what it saw, for the parent: the events by sender ("worker 1").
struct Seen {
    std::map<std::string, std::vector<std::string>> events;
    bool residents_end = false;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& events& residents_end;
    }
};

struct Resident {
    bool running = false;
    Seen seen{};

    void handle_message(multiworker::Context& ctx, const std::variant<Event, multiworker::ResidentsEnd>& m) {
        if (std::holds_alternative<multiworker::ResidentsEnd>(m)) {
            seen.residents_end = true;
            running = false;
        } else {
            seen.events[multiworker::describe(ctx.info(ctx.sender()))].push_back(std::get<Event>(m).what);
        }
    }

    void run(multiworker::Context& ctx) {
        running = true;
        while (running) handle_message(ctx, ctx.receive<Event, multiworker::ResidentsEnd>());
        ctx.send(multiworker::parent, seen);  // the parent still listens while the residents end
    }
};

struct Worker {
    void run(multiworker::Context& ctx) {
        for (int i = 1; i <= 3; ++i) ctx.send(ctx.ids("My process"), Event{"event " + std::to_string(i)});
    }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv);
        multiworker::Supervisor sup{agents::supervisor_options(line)};
        sup.add("My process", agents::Resident{}, {.resident = true});
        sup.add("worker", agents::Worker{}, {.copies = 2});

        std::vector<agents::Seen> reports;
        sup.on<agents::Seen>([&](const agents::Seen& seen) { reports.push_back(seen); });
        sup.run();  // the workers end, the resident gets ResidentsEnd and ends, run() returns

        if (reports.size() != 1) throw std::runtime_error{"expected one report from the resident"};
        const agents::Seen& seen = reports.front();
        std::size_t total = 0;
        for (const auto& [from, events] : seen.events) total += events.size();
        std::printf("My process 0 saw %zu events, then %s\n", total,
                    seen.residents_end ? "ResidentsEnd" : "no ResidentsEnd");
        for (const auto& [from, events] : seen.events) {
            std::string list;
            for (const std::string& e : events) list += (list.empty() ? "" : ", ") + e;
            std::printf("from %s: %s\n", from.c_str(), list.c_str());
        }
        return total == 6 && seen.residents_end ? 0 : 1;
    });
}
