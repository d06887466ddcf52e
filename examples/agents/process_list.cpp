// The guide's "ProcessList" and "Introducing ipc.host.Supervisor": processes that each compute one
// product and give it back. Python shares a multiprocessing.Value with each process; here each
// process sends its result to the parent, whose handler (sup.on<Result>) keeps it. One run() starts
// every process added and returns once all have ended: ProcessList's start() and join() in one.
//
// Prints:
//   My process: 1234 * 5678 = 7006652
//   op_one: 1234 * 1234 = 1522756
//   op_two: 678 * 678 = 459684

#include "common.hpp"

#include <cstdint>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace agents {

/// What a process computed, for the parent.
struct Result {
    std::int64_t arg_one = 0;
    std::int64_t arg_two = 0;
    std::int64_t value = 0;

    template <class Archive>
    void serialize(Archive& archive, unsigned /*version*/) {
        archive& arg_one& arg_two& value;
    }
};

/// The guide's op(result, arg_one, arg_two), as a process: the arguments are the object's members.
struct Multiply {
    std::int64_t arg_one = 0;
    std::int64_t arg_two = 0;

    void run(multiworker::Context& ctx) { ctx.send(multiworker::parent, Result{arg_one, arg_two, arg_one * arg_two}); }
};

/// The guide's op_one(result, arg_one) and op_two(result, arg_two): a square.
struct Square {
    std::int64_t arg = 0;

    void run(multiworker::Context& ctx) { ctx.send(multiworker::parent, Result{arg, arg, arg * arg}); }
};

}  // namespace agents

int main(int argc, char** argv) {
    return agents::guarded_main([&] {
        const agents::CommandLine line = agents::parse_command_line(argc, argv);
        multiworker::Supervisor sup{agents::supervisor_options(line)};
        const std::vector<std::pair<std::string, multiworker::ProcessId>> processes{
            {"My process", sup.add("My process", agents::Multiply{1234, 5678}).front()},
            {"op_one", sup.add("op_one", agents::Square{1234}).front()},
            {"op_two", sup.add("op_two", agents::Square{678}).front()},
        };

        std::map<multiworker::ProcessId, agents::Result> results;  // by the process that sent it
        sup.on<agents::Result>(
            [&](const agents::Result& result, multiworker::ProcessId from) { results[from] = result; });
        sup.run();  // starts all three, returns when every one has ended

        for (const auto& [name, id] : processes) {
            const auto found = results.find(id);
            if (found == results.end()) throw std::runtime_error{"no result from " + name};
            const agents::Result& r = found->second;
            std::printf("%s: %lld * %lld = %lld\n", name.c_str(), static_cast<long long>(r.arg_one),
                        static_cast<long long>(r.arg_two), static_cast<long long>(r.value));
        }
        return 0;
    });
}
