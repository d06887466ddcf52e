#pragma once

// How much CPU the caller, the event loop and the workers each spent, from
// /proc/.../schedstat: on a machine with fewer cores than busy threads, their
// sum over a run, not any one of them, bounds its rate, so the benchmarks
// report each thread's share per task.

#include <sys/types.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace bench {

/// Nanoseconds a thread has run on a CPU, from its /proc/.../schedstat; 0 if unreadable.
inline double run_ns(const std::string& schedstat_path) {
    std::FILE* file = std::fopen(schedstat_path.c_str(), "r");
    if (file == nullptr) return 0;
    unsigned long long ns = 0;
    const bool read = std::fscanf(file, "%llu", &ns) == 1;
    std::fclose(file);
    return read ? static_cast<double>(ns) : 0;
}

/// The schedstat of this process's event loop thread (named mw-event-loop); empty if none.
inline std::string event_loop_schedstat() {
    for (const auto& task : std::filesystem::directory_iterator{"/proc/self/task"}) {
        std::FILE* comm = std::fopen((task.path() / "comm").c_str(), "r");
        if (comm == nullptr) continue;
        char name[64] = {};
        const bool read = std::fgets(name, sizeof name, comm) != nullptr;
        std::fclose(comm);
        if (read && std::string{name} == "mw-event-loop\n") return task.path() / "schedstat";
    }
    return {};
}

/// CPU time of the caller, the event loop and the workers, to split a run's cost by thread.
struct ThreadCpu {
    double caller_ns = 0;
    double event_loop_ns = 0;
    double workers_ns = 0;

    /// Now, for the calling thread, the event loop (whose schedstat path
    /// event_loop_schedstat() gave; empty: none yet) and these worker processes.
    static ThreadCpu now(const std::string& event_loop, const std::vector<pid_t>& workers) {
        ThreadCpu cpu{run_ns("/proc/thread-self/schedstat"), event_loop.empty() ? 0 : run_ns(event_loop), 0};
        for (pid_t pid : workers) cpu.workers_ns += run_ns("/proc/" + std::to_string(pid) + "/schedstat");
        return cpu;
    }

    /// The CPU spent between `before` and this, per task of `tasks`.
    [[nodiscard]] ThreadCpu per_task_since(const ThreadCpu& before, double tasks) const {
        return {(caller_ns - before.caller_ns) / tasks, (event_loop_ns - before.event_loop_ns) / tasks,
                (workers_ns - before.workers_ns) / tasks};
    }
};

}  // namespace bench
