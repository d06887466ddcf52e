// The guide's "Implementing self.handle_message()": a process whose body is a loop of receives that
// hands each message to a handler, until the handler says the work is done. Here that loop is
// ctx.serve<StringMessage, Quit>(*this): it calls this->on(message, ctx) for each message of those
// types, until on(const Quit&, ...) calls ctx.end_serving() (the guide's self.running = False).
// As in the guide's second snippet, "My process" forwards every string to "Process two" (the ids
// of every process are known from the start: no get_ids() round trip to cache). A third process
// sends "My process" ten strings, then Quit; the two servers report their counts to the parent.
//
// Prints:
//   My process 0 handled 10 strings ('message 1' to 'message 10'), then Quit
//   Process two 0 handled 10 strings ('message 1' to 'message 10'), then Quit

#include "common.hpp"

#include <cstddef>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace agents {

/// The guide's QuitMessage: the work is done.
struct Quit {
    template <class Archive>
    void serialize(Archive& /*archive*/, unsigned /*version*/) {}
};

/// What a server tells the parent once it has quit.
struct Count {
    std::size_t strings = 0;
    std::string first;
    std::string last;
    bool quit = false;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& strings& first& last& quit;
    }
};

/// Serves strings until Quit, passing each on to `forward_to` (if not empty) and then the Quit too.
/// What on() returns would be the reply, were the message an ask. Each on() returns a value because
/// serve() does not compile, as of this writing, with an on() that returns void (Context::dispatch
/// passes its result to answer()).
struct Server {
    std::string forward_to;
    Count count{};

    std::size_t on(const StringMessage& m, multiworker::Context& ctx) {
        if (count.strings++ == 0) count.first = m.text;
        count.last = m.text;
        if (!forward_to.empty()) ctx.send(ctx.ids(forward_to), m);
        return count.strings;
    }

    std::size_t on(const Quit& quit, multiworker::Context& ctx) {
        count.quit = true;
        if (!forward_to.empty()) ctx.send(ctx.ids(forward_to), quit);
        ctx.end_serving();
        return count.strings;
    }

    void run(multiworker::Context& ctx) {
        ctx.serve<StringMessage, Quit>(*this);
        ctx.send(multiworker::parent, count);
    }
};

struct Sender {
    void run(multiworker::Context& ctx) {
        const auto to = ctx.ids("My process");
        for (int i = 1; i <= 10; ++i) ctx.send(to, StringMessage{"message " + std::to_string(i)});
        ctx.send(to, Quit{});
    }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv);
        multiworker::Supervisor sup{agents::supervisor_options(line)};
        sup.add("My process", agents::Server{"Process two"});
        sup.add("Process two", agents::Server{});
        sup.add("Sender", agents::Sender{});

        std::map<std::string, agents::Count> counts;  // by process: printed in name order
        sup.on<agents::Count>(
            [&](const agents::Count& c, multiworker::ProcessId from) { counts[agents::name_of(sup, from)] = c; });
        sup.run();

        bool all_ten = counts.size() == 2;
        for (const auto& [name, c] : counts) {
            std::printf("%s handled %zu strings ('%s' to '%s')%s\n", name.c_str(), c.strings, c.first.c_str(),
                        c.last.c_str(), c.quit ? ", then Quit" : ", and no Quit");
            all_ten = all_ten && c.strings == 10 && c.quit;
        }
        return all_ten ? 0 : 1;
    });
}
